#!/usr/bin/env bash
# Kafka benchmark (issue 4): the broker's own produce and consume rate (the limit), the ledger's
# end-to-end throughput from publish to result, and the publish-to-result latency at a fixed
# rate, all on loopback in one run of `csp-ledger-tools bench-kafka`. Prints its JSON report.
#
# usage: scripts/bench-kafka.sh [bench-kafka flags]     e.g. --commands 100000 --rate 10000 --seconds 10
#
# KAFKA_BROKERS=host:port measures against that broker (every topic of a run is new). Without
# it, a private dev broker is started on a free port and stopped at the end: tansu, as in
# scripts/kafka-dev.sh (SQLite storage), in a temporary directory; KAFKA_STORAGE overrides its
# storage engine (e.g. memory://tansu/).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d "${TMPDIR:-/tmp}/csp-ledger-bench-kafka.XXXXXX")
broker_pid=
cleanup() {
  if [ -n "$broker_pid" ]; then
    kill "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release -q -p csp-ledger-tools
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/csp-ledger-tools

if [ -z "${KAFKA_BROKERS:-}" ]; then
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
    kill -0 "$broker_pid" 2>/dev/null || { cat "$work/broker.log" >&2; exit 1; }
    sleep 0.1
  done
  KAFKA_BROKERS=127.0.0.1:$port
  echo "== $(tansu --version) on $KAFKA_BROKERS, storage $storage (pid $broker_pid)" >&2
fi

echo "== $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$bin" --data-dir "$work/data" bench-kafka --kafka "$KAFKA_BROKERS" "$@"
if [ -n "$broker_pid" ]; then
  # utime + stime of every thread (fields 14 and 15 after the command name), in clock ticks.
  ticks=$(sed 's/.*) //' "/proc/$broker_pid/stat" | awk '{print $12 + $13}')
  echo "== broker CPU time over the run: $(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f s", t / hz}')" >&2
fi
