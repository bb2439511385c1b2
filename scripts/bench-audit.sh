#!/usr/bin/env bash
# Issue 12 benchmarks of the verifiable history (docs/BENCHMARKS.md, "Verifiable history"):
#
#   startup   time from starting `serve` to its {"listening":...} line, on a small and a large
#             store, OLD binary against NEW (NEW with the signing key outside the data directory,
#             and NEW with the same key inside it, where start-up refolds by design), alternating;
#   proofs    inclusion and consistency proofs over HTTP on the large store (NEW binary, key
#             outside): csp-ledger-tools loadgen at a fixed rate over random positions and sizes,
#             plus single curl spot checks.
#
# usage: scripts/bench-audit.sh OLD_BIN NEW_BIN TOOLS_BIN WORK_DIR [startup|proofs|all] [ROUNDS]
#   OLD_BIN    csp-ledger of the commit before the tree (e033216^1)
#   NEW_BIN    csp-ledger of main
#   TOOLS_BIN  csp-ledger-tools (generate, loadgen)
# env: SMALL_COMMANDS (180000), LARGE_COMMANDS (1800000), RATE (2000), SECONDS_PER_RUN (30),
#      CONNECTIONS (16), PATHS (10000)
# The stores are built once under WORK_DIR (apply --fsync false) and reused by later calls.
set -euo pipefail
old=$1 new=$2 tools=$3 work=$4 what=${5:-all} rounds=${6:-3}
small=${SMALL_COMMANDS:-180000}
large=${LARGE_COMMANDS:-1800000}
rate=${RATE:-2000}
seconds=${SECONDS_PER_RUN:-30}
connections=${CONNECTIONS:-16}
npaths=${PATHS:-10000}
mkdir -p "$work/keys"
work=$(cd "$work" && pwd)

# Prints the seconds from exec to the {"listening":...} line, then stops the server with
# SIGTERM and waits for it (it writes a projection checkpoint on the way out only if it appended).
# Its stderr goes to $work/last-serve.err; opened() then says how the state was opened.
startup() {
  python3 - "$work/last-serve.err" "$@" <<'PY'
import json, os, signal, subprocess, sys, time
err = open(sys.argv[1], "w")
env = dict(os.environ, CSP_LEDGER_LOG="info")  # to see "Opened from checkpoint."
start = time.monotonic()
p = subprocess.Popen(sys.argv[2:], stdout=subprocess.PIPE, stderr=err, text=True, env=env)
listening = None
for line in p.stdout:
    if '"listening"' in line:
        listening = time.monotonic() - start
        break
p.send_signal(signal.SIGTERM)
p.wait()
if listening is None:
    sys.exit(f"no listening line (exit {p.returncode}), see {sys.argv[1]}")
print(f"{listening:.3f}")
PY
}

# The stores: old-S and new-S for S in small, large, each built by its own binary (the old one
# cannot read the new projection checkpoint format); new-S-keyin is a copy of new-S with its
# (outside) key copied to the default place inside the data directory. `serve` writes a
# projection checkpoint on stop only when it appended, and `apply` only when 250,000 events are
# due, so `rebuild --write` puts one at the head of every store; then one start and stop.
build_stores() {
  for size in small large; do
    commands=$small; [ "$size" = large ] && commands=$large
    file="$work/commands-$size.jsonl"
    [ -f "$file" ] || "$tools" generate --commands "$commands" > "$file"
    if [ ! -d "$work/old-$size" ]; then
      echo "== old-$size: apply $commands commands, rebuild --write" >&2
      "$old" --data-dir "$work/old-$size" --fsync false apply "$file" > /dev/null
      "$old" --data-dir "$work/old-$size" rebuild --write >&2
      startup "$old" --data-dir "$work/old-$size" serve --http 127.0.0.1:0 > /dev/null
    fi
    if [ ! -d "$work/new-$size" ]; then
      echo "== new-$size: apply $commands commands, rebuild --write" >&2
      "$new" --data-dir "$work/new-$size" --signing-key "$work/keys/new-$size.key" --fsync false apply "$file" > /dev/null
      "$new" --data-dir "$work/new-$size" --signing-key "$work/keys/new-$size.key" rebuild --write >&2
      startup "$new" --data-dir "$work/new-$size" --signing-key "$work/keys/new-$size.key" serve --http 127.0.0.1:0 > /dev/null
    fi
    if [ ! -d "$work/new-$size-keyin" ]; then
      cp -a "$work/new-$size" "$work/new-$size-keyin"
      cp -a "$work/keys/new-$size.key" "$work/new-$size-keyin/signing.key"
      startup "$new" --data-dir "$work/new-$size-keyin" serve --http 127.0.0.1:0 > /dev/null
    fi
    echo "$size stores: $(du -sh "$work/old-$size" "$work/new-$size" | tr '\n\t' '  ')" >&2
  done
}

opened() {
  if grep -q 'Opened from checkpoint' "$work/last-serve.err"; then echo "checkpoint";
  else echo "refold from 1"; fi
}

run_startup() {
  echo "== start-up to listening (s), $rounds rounds, alternating; load: $(cut -d' ' -f1-3 /proc/loadavg)"
  for size in small large; do
    for r in $(seq 1 "$rounds"); do
      o=$(startup "$old" --data-dir "$work/old-$size" serve --http 127.0.0.1:0)
      ohow=$(opened)
      n=$(startup "$new" --data-dir "$work/new-$size" --signing-key "$work/keys/new-$size.key" serve --http 127.0.0.1:0)
      nhow=$(opened)
      i=$(startup "$new" --data-dir "$work/new-$size-keyin" serve --http 127.0.0.1:0)
      ihow=$(opened)
      echo "$size round $r: old $o ($ohow)  new, key outside $n ($nhow)  new, key inside $i ($ihow)  load $(cut -d' ' -f1 /proc/loadavg)"
    done
  done
}

run_proofs() {
  local dir=$work/new-large
  "$new" --data-dir "$dir" --signing-key "$work/keys/new-large.key" serve --http 127.0.0.1:0 > "$work/serve.out" 2> "$work/serve.err" &
  server=$!
  trap 'kill $server 2>/dev/null || true' EXIT
  for _ in $(seq 1 600); do grep -q listening "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
  addr=$(grep listening "$work/serve.out" | python3 -c "import json,sys; print(json.loads(sys.stdin.readline())['listening'])")
  head=$(curl -s "http://$addr/v1/audit/checkpoint" | sed -n 2p)
  echo "== serving $dir on $addr, signed head $head; load: $(cut -d' ' -f1-3 /proc/loadavg)"
  python3 - "$work" "$head" "$npaths" <<'PY'
import random, sys
work, head, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(12)
def size():  # one in ten at the head, the rest anywhere up to it
    return head if random.random() < 0.1 else random.randint(1, head)
with open(f"{work}/inclusion.txt", "w") as f:
    for _ in range(n):
        t = size(); f.write(f"/v1/audit/proof/inclusion?position={random.randint(1, t)}&tree_size={t}\n")
with open(f"{work}/consistency.txt", "w") as f:
    for _ in range(n):
        t = size(); f.write(f"/v1/audit/proof/consistency?from={random.randint(1, t)}&to={t}\n")
PY
  echo "== spot checks (curl, one request each, new connection)"
  for p in "$(sed -n 1p "$work/inclusion.txt")" "$(sed -n 2p "$work/inclusion.txt")" \
           "/v1/audit/proof/inclusion?position=1&tree_size=$head" \
           "/v1/audit/proof/inclusion?position=$head&tree_size=$head" \
           "$(sed -n 1p "$work/consistency.txt")" "/v1/audit/proof/consistency?from=1&to=$head" \
           "/v1/audit/proof/consistency?from=$((head - 1))&to=$head"; do
    out=$(curl -s -o "$work/spot.json" -w '%{http_code} %{time_total}' "http://$addr$p")
    echo "$p -> $out s, $(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(len(d.get('hashes', [])), 'hashes', (d.get('hashes') or [''])[0][:16], d.get('error', ''))" "$work/spot.json")"
  done
  curl -s -o /dev/null -w 'out of range -> %{http_code}\n' "http://$addr/v1/audit/proof/inclusion?position=1&tree_size=$((head + 1))"
  local tck; tck=$(getconf CLK_TCK)
  for kind in inclusion consistency; do
    echo "== loadgen $kind: $rate requests/s for ${seconds}s, $connections connections; load: $(cut -d' ' -f1-3 /proc/loadavg)"
    cpu0=$(awk '{print $14 + $15}' /proc/$server/stat)
    "$tools" loadgen --target "$addr" --paths "$work/$kind.txt" --rate "$rate" --seconds "$seconds" --connections "$connections"
    cpu1=$(awk '{print $14 + $15}' /proc/$server/stat)
    echo "server CPU: $(( (cpu1 - cpu0) * 1000000 / tck / (rate * seconds) )) us per request; load after: $(cut -d' ' -f1-3 /proc/loadavg)"
    # The server's own time per answer (handler only, no queueing in the kernel or the runtime).
    curl -s "http://$addr/metrics" | python3 -c '
import re, sys
route = "/v1/audit/proof/" + sys.argv[1]
buckets, total, count = [], 0.0, 0
for line in sys.stdin:
    if f"route=\"{route}\",code=\"200\"" not in line: continue
    m = re.search(r"le=\"([^\"]+)\"\} (\d+)", line)
    if m: buckets.append((m[1], int(m[2])))
    elif line.startswith("csp_ledger_query_seconds_sum"): total = float(line.split()[-1])
    elif line.startswith("csp_ledger_query_seconds_count"): count = int(line.split()[-1])
if count:
    share = {le: n / count for le, n in buckets}
    a, b, c = share.get("0.0005", 0), share.get("0.001", 0), share.get("0.0025", 0)
    print(f"server-side (since start): {count} answers, mean {total / count * 1e6:.0f} us, "
          f"<= 0.5 ms {a:.1%}, <= 1 ms {b:.1%}, <= 2.5 ms {c:.1%}")
' "$kind"
  done
  grep -E 'VmRSS|VmHWM' /proc/$server/status
  kill -TERM $server; wait $server || true
  trap - EXIT
}

build_stores
case $what in
  startup) run_startup ;;
  proofs) run_proofs ;;
  all) run_startup; run_proofs ;;
esac
