#!/usr/bin/env bash
# Kafka end-to-end throughput with the term rule (issue 10) side by side with the publisher
# before it, on one broker, alternating: `bench-kafka` of an old csp-ledger-tools binary, then
# of this tree's, ROUNDS times. Prints one line per run and the medians.
#
# usage: OLD_TOOLS=/path/to/old/csp-ledger-tools scripts/bench-fencing-ab.sh [ROUNDS] [COMMANDS]
#
# Build the old binary from the commit before the change, e.g.
#   git worktree add /tmp/old e51a94a && (cd /tmp/old && cargo build --release -p csp-ledger-tools)
# KAFKA_STORAGE picks the dev broker's storage engine (default sqlite://tansu.db).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
commands=${2:-50000}
old=${OLD_TOOLS:?set OLD_TOOLS to the csp-ledger-tools binary to compare against}
cargo build --release -q -p csp-ledger-tools
new=${CARGO_TARGET_DIR:-$PWD/target}/release/csp-ledger-tools
work=$(mktemp -d "${TMPDIR:-/tmp}/csp-ledger-bench-fencing.XXXXXX")
broker_pid=
cleanup() {
  if [ -n "$broker_pid" ]; then
    kill "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

bash scripts/kafka-dev.sh install
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
storage=${KAFKA_STORAGE:-sqlite://tansu.db}
(cd "$work" && exec tansu broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "$storage" > broker.log 2>&1) &
broker_pid=$!
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
echo "== $(tansu --version), storage $storage; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2

for round in $(seq 1 "$rounds"); do
  for side in old new; do
    bin=$old
    [ "$side" = new ] && bin=$new
    "$bin" --data-dir "$work/data-$side-$round" bench-kafka --kafka "127.0.0.1:$port" \
        --commands "$commands" --rate 2000 --seconds 3 > "$work/$side-$round.json" 2> "$work/$side-$round.err"
    python3 - "$side" "$round" "$work/$side-$round.json" <<'EOF'
import json, sys
side, round_, path = sys.argv[1:]
t = json.load(open(path))["throughput"]
print(f"{side} round {round_}: {t['commands_per_second']:.0f} commands/s ({t['results']} results, {t['results_missing']} missing, {t['seconds']:.2f} s)")
EOF
  done
done | tee "$work/lines.txt"
python3 - "$work" "$rounds" <<'EOF'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
for side in ("old", "new"):
    rates = [json.load(open(f"{work}/{side}-{r}.json"))["throughput"]["commands_per_second"] for r in range(1, rounds + 1)]
    print(f"{side}: median {statistics.median(rates):.0f} commands/s over {rounds} runs {[round(x) for x in rates]}")
EOF
