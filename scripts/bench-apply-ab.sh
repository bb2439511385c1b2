#!/usr/bin/env bash
# Alternates apply of the same workload between two binaries; prints seconds per run, the
# process's CPU seconds (user + system, all threads) and the 1-minute load average when the run
# ended.
set -euo pipefail
old=$1 new=$2 file=$3 rounds=${4:-3}
for r in $(seq 1 "$rounds"); do
  for which in old new; do
    bin=${!which}
    dir=$(mktemp -d)
    start=$(date +%s.%N)
    /usr/bin/time -o "$dir/cpu" -f '%U %S' "$bin" --data-dir "$dir/data" apply "$file" > /dev/null
    end=$(date +%s.%N)
    printf '%s round %d: %.2f s  (cpu %.2f s, load %s)\n' "$which" "$r" "$(echo "$end - $start" | bc)" \
      "$(awk '{print $1 + $2}' "$dir/cpu")" "$(cut -d' ' -f1 /proc/loadavg)"
    rm -rf "$dir"
  done
done
