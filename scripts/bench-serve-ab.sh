#!/usr/bin/env bash
# Alternates GET throughput (wrk -t2 -c32 -d5s) between two serve binaries on one store.
set -euo pipefail
old=$1 new=$2 data=$3 path=$4 rounds=${5:-3}
for r in $(seq 1 "$rounds"); do
  for which in old new; do
    bin=${!which}
    copy=$(mktemp -d); cp -r "$data" "$copy/data"
    "$bin" --data-dir "$copy/data" --fsync false serve --http 127.0.0.1:18555 --insecure-no-auth > /dev/null 2>&1 &
    pid=$!
    for i in $(seq 1 50); do curl -s -o /dev/null localhost:18555/healthz && break; sleep 0.1; done
    rps=$(wrk -t2 -c32 -d5s "http://localhost:18555$path" | awk '/Requests\/sec/ {print $2}')
    echo "$which round $r: $rps requests/s"
    kill $pid; wait $pid 2>/dev/null || true
    rm -rf "$copy"
  done
done
