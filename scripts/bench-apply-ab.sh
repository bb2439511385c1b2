#!/usr/bin/env bash
# Alternates apply of the same workload between two binaries; prints seconds per run.
set -euo pipefail
old=$1 new=$2 file=$3 rounds=${4:-3}
for r in $(seq 1 "$rounds"); do
  for which in old new; do
    bin=${!which}
    dir=$(mktemp -d)
    start=$(date +%s.%N)
    "$bin" --data-dir "$dir/data" apply "$file" > /dev/null
    end=$(date +%s.%N)
    printf '%s round %d: %.2f s\n' "$which" "$r" "$(echo "$end - $start" | bc)"
    rm -rf "$dir"
  done
done
