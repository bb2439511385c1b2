#!/usr/bin/env python3
"""Independent auditor check of a csp-ledger hash chain.

Reads event envelopes as JSON lines (the output of `csp-ledger history`) on stdin and
recomputes every hash from the rules in CANONICAL.md. Prints "ok N HEAD_HASH" and exits 0, or
prints the first position where the chain breaks and exits 2.

Every schema_version is hashed the same way: the canonical bytes are the members the line has,
minus hash, prev_hash and personal_data (version 1 has no submitted_by, version 2 has it), so
a log that switches versions part-way verifies without any per-version code.
"""
import hashlib
import json
import sys

NOT_HASHED = ("hash", "prev_hash", "personal_data")


def canonical(envelope):
    body = {k: v for k, v in envelope.items() if k not in NOT_HASHED}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def main():
    prev = "0" * 64
    expected = 1
    for line in sys.stdin:
        if not line.strip():
            continue
        envelope = json.loads(line)
        position = envelope["position"]
        if position != expected:
            print(f"broken at position {expected}: found position {position}")
            return 2
        if envelope["prev_hash"] != prev:
            print(f"broken at position {position}: prev_hash does not link")
            return 2
        digest = hashlib.sha256(prev.encode("ascii") + canonical(envelope)).hexdigest()
        if digest != envelope["hash"]:
            print(f"broken at position {position}: hash mismatch")
            return 2
        prev = digest
        expected += 1
    print(f"ok {expected - 1} {prev}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
