#!/usr/bin/env bash
# Side by side: the binary before the L keys (old) and after (new), same store, alternating.
set -euo pipefail
# usage: scripts/bench-proofs-ab.sh DIR   (DIR holds old-csp-ledger, new-csp-ledger, csp-ledger-tools,
# a store in DIR/store with its key in DIR/keys/k.key, and inclusion.txt / consistency.txt path files)
cd "${1:?usage: bench-proofs-ab.sh DIR}"
rate=${RATE:-1000}; seconds=${SECONDS_PER_RUN:-20}
tck=$(getconf CLK_TCK)
for round in 1 2; do
  for which in old new; do
    ./$which-csp-ledger --data-dir store --signing-key keys/k.key serve --http 127.0.0.1:0 > serve.out 2> serve.err &
    server=$!
    for _ in $(seq 1 600); do grep -q listening serve.out 2>/dev/null && break; sleep 0.1; done
    addr=$(sed -n 's/.*"listening":"\([^"]*\)".*/\1/p' serve.out)
    for kind in inclusion consistency; do
      cpu0=$(awk '{print $14 + $15}' /proc/$server/stat)
      out=$(./csp-ledger-tools loadgen --target "$addr" --paths $kind.txt --rate "$rate" --seconds "$seconds" --connections 16 2>&1 | tr '\n' ' ')
      cpu1=$(awk '{print $14 + $15}' /proc/$server/stat)
      echo "round $round $which $kind: $out | server CPU $(( (cpu1 - cpu0) * 1000000 / tck / (rate * seconds) )) us/req | load $(cut -d' ' -f1 /proc/loadavg)"
    done
    kill -TERM $server; wait $server || true
  done
done
