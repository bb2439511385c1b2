#!/usr/bin/env bash
# POST /v1/commands throughput by authentication mode, alternating in one run:
# none (--insecure-no-auth), api-key (SHA-256 lookup), jwt (EdDSA verification per request).
# Usage: scripts/bench-http-auth.sh ROUNDS COMMANDS BATCH
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3} commands=${2:-20000} batch=${3:-1}
cargo build --release -q -p csp-ledger-tools
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for r in $(seq 1 "$rounds"); do
  for auth in none api-key jwt; do
    rate=$(target/release/csp-ledger-tools --data-dir "$dir" bench-http --commands "$commands" \
      --batch "$batch" --clients 8 --auth "$auth" 2>/dev/null |
      python3 -c 'import json,sys; print(round(json.load(sys.stdin)["http_commands_per_second"]))')
    echo "round $r auth $auth batch $batch: $rate commands/s"
  done
done
