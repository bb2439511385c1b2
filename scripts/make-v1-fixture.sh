#!/usr/bin/env bash
# Makes tests/fixtures/v1-log: a small store written by the release before schema_version 2
# (commit b755f08), with the answers that release gave, for tests/schema_upgrade.rs.
# Usage: scripts/make-v1-fixture.sh PATH-TO-THAT-RELEASE'S-csp-ledger
set -euo pipefail
bin=${1:?path to the csp-ledger binary of commit b755f08}
here="$(cd "$(dirname "$0")/.." && pwd)"
out="$here/tests/fixtures/v1-log"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" --data-dir "$work/data" apply "$here/examples/onboarding.jsonl" > /dev/null
"$bin" --data-dir "$work/data" apply "$here/examples/lifecycle.jsonl" > /dev/null
"$bin" --data-dir "$work/data" verify > "$out/verify.json"
"$bin" --data-dir "$work/data" history > "$out/history.jsonl"
ids() { grep -o "\"$1-[0-9a-f-]*\"" "$out/history.jsonl" | tr -d '"' | sed "s/^$1-//" | sort -u; }
{
  for p in $(ids partner); do
    for path in "/v1/partners/$p" "/v1/partners/$p/eligibility" \
        "/v1/partners/$p/direct-bill-readiness?date=2026-11-30" \
        "/v1/providers/$p/resellers" "/v1/resellers/$p/providers"; do
      printf '%s\t%s\n' "$path" "$("$bin" --data-dir "$work/data" query "$path")"
    done
  done
  for c in $(ids customer); do
    printf '%s\t%s\n' "/v1/customers/$c" "$("$bin" --data-dir "$work/data" query "/v1/customers/$c")"
  done
} > "$out/answers.tsv"
tar czf "$out/data.tar.gz" -C "$work" data
