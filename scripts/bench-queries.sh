#!/usr/bin/env bash
# Query benchmark: builds a store of >= 100,000 partners and >= 1,000,000 events, measures the
# rebuild (events/s, peak memory), serves it over HTTP and loads it from a second process on
# loopback: csp-ledger-tools loadgen (open loop, fixed rate, latency from the scheduled send time)
# and wrk (closed loop, maximum throughput). Prints a JSON report per step.
#
# usage: scripts/bench-queries.sh [WORK_DIR]     (default /tmp/csp-ledger-bench-queries)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/csp-ledger-bench-queries}
commands=${COMMANDS:-1400000}
rate=${RATE:-20000}
seconds=${SECONDS_PER_RUN:-10}
mkdir -p "$work"
cargo build --release -q -p csp-ledger -p csp-ledger-tools
bin=$PWD/target/release/csp-ledger
tools=$PWD/target/release/csp-ledger-tools
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }

if [ ! -d "$work/data" ]; then
  echo "== generating $commands commands (lean profile) and applying them" >&2
  "$tools" generate --profile lean --commands "$commands" > "$work/commands.jsonl"
  "$bin" --data-dir "$work/data" apply "$work/commands.jsonl" > /dev/null
fi

echo "== rebuild from position 1 (compared with the checkpoint)" >&2
"$bin" --data-dir "$work/data" rebuild

echo "== request paths" >&2
python3 - "$work" <<'PY'
import json, random, sys
work = sys.argv[1]
partners, pairs, customers = [], [], []
with open(f"{work}/commands.jsonl") as f:
    for line in f:
        c = json.loads(line)
        t, p = c["type"], c["payload"]
        if t == "EnrollPartner": partners.append(p["partner_id"])
        elif t == "InviteReseller": pairs.append((p["provider_id"], p["reseller_id"]))
        elif t == "RegisterCustomer": customers.append(p["customer_id"])
random.seed(7)
paths = []
for _ in range(50000):
    r = random.random()
    if r < 0.35: paths.append(f"/v1/partners/{random.choice(partners)}/eligibility")
    elif r < 0.55: paths.append(f"/v1/partners/{random.choice(partners)}")
    elif r < 0.80:
        p, s = random.choice(pairs); paths.append(f"/v1/relationships/{p}/{s}")
    elif r < 0.95: paths.append(f"/v1/customers/{random.choice(customers)}")
    else:
        p, _ = random.choice(pairs); paths.append(f"/v1/providers/{p}/resellers?limit=20")
open(f"{work}/paths.txt", "w").write("\n".join(paths) + "\n")
with open(f"{work}/paths.lua", "w") as f:
    f.write("paths = {}\nfor line in io.lines('%s/paths.txt') do paths[#paths + 1] = line end\n" % work)
    f.write("i = 0\nrequest = function()\n  i = i % #paths + 1\n  return wrk.format('GET', paths[i])\nend\n")
print(json.dumps({"partners": len(partners), "relationships": len(pairs), "customers": len(customers)}))
PY

"$bin" --data-dir "$work/data" serve --http 127.0.0.1:0 > "$work/serve.out" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do grep -q listening "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
addr=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['listening'])" "$work/serve.out")
echo "== serving on $addr; memory after start" >&2
grep -E "VmRSS|VmHWM" /proc/$server/status

echo "== loadgen: $rate requests/s for ${seconds}s" >&2
"$tools" loadgen --target "$addr" --paths "$work/paths.txt" --rate "$rate" --seconds "$seconds" --connections 32

echo "== wrk: maximum throughput, 1 thread, 32 connections, ${seconds}s" >&2
wrk -t1 -c32 -d"${seconds}s" --latency -s "$work/paths.lua" "http://$addr" | sed -n '1,20p'

echo "== memory after the load" >&2
grep -E "VmRSS|VmHWM" /proc/$server/status
