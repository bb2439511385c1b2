#!/usr/bin/env bash
# Cheap reads alone and while 8 clients loop on the expensive endpoints (issue 11 item 4, SPEC.md
# section 11): a store of COMMANDS generated commands (default 200,000) served on loopback;
# csp-ledger-tools loadgen sends cheap reads (profile, eligibility, relationship, customer at the
# head) at RATE requests/s (default 2,000) for SECONDS (default 10), alternating: alone, under
# load, alone, under load. The load is 8 Python keep-alive clients looping on
# /v1/audit/verify?full=true, /v1/audit/verify, an as_of overdue list and as_of profiles, counting
# 200 and 429 answers. Prints the loadgen reports, the expensive clients' counts and the server's
# peak RSS.
#
# usage: scripts/bench-expensive-reads.sh [WORK_DIR]   (default /tmp/csp-ledger-bench-expensive)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/csp-ledger-bench-expensive}
commands=${COMMANDS:-200000}
rate=${RATE:-2000}
seconds=${SECONDS_PER_RUN:-10}
mkdir -p "$work"
cargo build --release -q -p csp-ledger -p csp-ledger-tools
bin=$PWD/target/release/csp-ledger
tools=$PWD/target/release/csp-ledger-tools

if [ ! -d "$work/data" ]; then
  echo "== generating $commands commands and applying them" >&2
  "$tools" generate --commands "$commands" > "$work/commands.jsonl"
  "$bin" --data-dir "$work/data" --fsync false apply "$work/commands.jsonl" > /dev/null
fi

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
cheap = []
for _ in range(20000):
    r = random.random()
    if r < 0.35: cheap.append(f"/v1/partners/{random.choice(partners)}/eligibility")
    elif r < 0.60: cheap.append(f"/v1/partners/{random.choice(partners)}")
    elif r < 0.85:
        p, s = random.choice(pairs); cheap.append(f"/v1/relationships/{p}/{s}")
    else: cheap.append(f"/v1/customers/{random.choice(customers)}")
open(f"{work}/cheap.txt", "w").write("\n".join(cheap) + "\n")
json.dump({"partners": partners[:2000]}, open(f"{work}/ids.json", "w"))
print(json.dumps({"commands_lines": sum(1 for _ in open(f"{work}/commands.jsonl")), "partners": len(partners), "relationships": len(pairs), "customers": len(customers)}))
PY

"$bin" --data-dir "$work/data" --fsync false serve --http 127.0.0.1:0 --insecure-no-auth > "$work/serve.out" 2> "$work/serve.err" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do grep -q listening "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
addr=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['listening'])" "$work/serve.out")
head=$(curl -s "http://$addr/v1/events?limit=1" | python3 -c "import json,sys; print(json.load(sys.stdin)['position'])")
echo "== serving $head events on $addr; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
rss() { grep -E "VmRSS|VmHWM" "/proc/$server/status" | tr -s ' \t' ' ' | tr '\n' ' '; echo; }
echo "== memory after start: $(rss)" >&2

expensive() {
  python3 - "$addr" "$head" "$work/ids.json" "$1" <<'PY'
import http.client, json, random, sys, threading, time
addr, head, ids, seconds = sys.argv[1], int(sys.argv[2]), json.load(open(sys.argv[3]))["partners"], float(sys.argv[4])
host, port = addr.rsplit(":", 1)
paths = ["/v1/audit/verify?full=true", "/v1/audit/verify",
         f"/v1/verifications/overdue?date=2026-06-30&as_of={head - 1}"]
counts, lock = {}, threading.Lock()
def client(n):
    rng = random.Random(n)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r = rng.random()
        if r < 0.5: path = paths[n % len(paths)]
        else: path = f"/v1/partners/{rng.choice(ids)}?as_of={rng.randrange(1, head)}"
        kind = path.split("?")[0] if "as_of" not in path or "overdue" in path else "/v1/partners/{id}?as_of"
        try:
            conn.request("GET", path); resp = conn.getresponse(); resp.read()
            key = (kind, resp.status)
        except Exception as e:
            conn.close(); conn = http.client.HTTPConnection(host, int(port), timeout=30); key = (kind, type(e).__name__)
        with lock: counts[key] = counts.get(key, 0) + 1
        if key[1] == 429: time.sleep(0.05)
threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({f"{k[0]} {k[1]}": v for k, v in sorted(counts.items(), key=str)}))
PY
}

for round in 1 2; do
  echo "== round $round: cheap reads alone, $rate/s for ${seconds}s" >&2
  "$tools" loadgen --target "$addr" --paths "$work/cheap.txt" --rate "$rate" --seconds "$seconds" --connections 16
  echo "== memory: $(rss)" >&2
  echo "== round $round: the same while 8 clients loop on expensive reads" >&2
  expensive $((seconds + 3)) > "$work/expensive-$round.json" &
  loader=$!
  sleep 1
  "$tools" loadgen --target "$addr" --paths "$work/cheap.txt" --rate "$rate" --seconds "$seconds" --connections 16
  wait "$loader"
  echo "== expensive clients: $(cat "$work/expensive-$round.json")" >&2
  echo "== memory: $(rss)" >&2
done
