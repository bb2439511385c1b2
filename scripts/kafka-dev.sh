#!/usr/bin/env bash
# A Kafka-protocol broker on 127.0.0.1 for development and tests, without Docker: tansu (an
# Apache-2.0 Kafka-compatible broker from crates.io) with its durable SQLite storage engine.
#
#   scripts/kafka-dev.sh install          # cargo install tansu when missing (about 20 minutes)
#   scripts/kafka-dev.sh start [PORT]     # start on 127.0.0.1:PORT (default 9092), wait until it answers
#   scripts/kafka-dev.sh stop             # stop it
#   scripts/kafka-dev.sh restart          # stop and start on the same port and storage
#
# State lives in $KAFKA_DEV_DIR (default ./target/kafka-dev): the SQLite file, the pid, the log.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${KAFKA_DEV_DIR:-$PWD/target/kafka-dev}
version=0.6.0
mkdir -p "$dir"

install() {
  if command -v tansu >/dev/null 2>&1 && tansu --version 2>/dev/null | grep -q "$version"; then
    return
  fi
  echo "installing tansu $version (features dynostore, libsql)" >&2
  cargo install tansu --version "$version" --features dynostore,libsql
}

port() {
  cat "$dir/port" 2>/dev/null || echo 9092
}

start() {
  install
  local port=${1:-$(port)}
  echo "$port" > "$dir/port"
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    echo "already running (pid $(cat "$dir/pid"))" >&2
    return
  fi
  (cd "$dir" && { nohup tansu broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "sqlite://tansu.db" > broker.log 2>&1 < /dev/null & echo $! > pid; })
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "tansu listening on 127.0.0.1:$port (pid $(cat "$dir/pid"))" >&2
      return
    fi
    sleep 0.1
  done
  echo "tansu did not start; see $dir/broker.log" >&2
  cat "$dir/broker.log" >&2 || true
  exit 1
}

stop() {
  if [ -f "$dir/pid" ]; then
    kill "$(cat "$dir/pid")" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$(cat "$dir/pid")" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$(cat "$dir/pid")" 2>/dev/null || true
    rm -f "$dir/pid"
  fi
}

case "${1:-}" in
  install) install ;;
  start) start "${2:-}" ;;
  stop) stop ;;
  restart) stop; start ;;
  *) echo "usage: $0 install|start [PORT]|stop|restart" >&2; exit 2 ;;
esac
