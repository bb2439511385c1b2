#!/usr/bin/env python3
"""Independent auditor check of a csp-ledger's signed checkpoints and Merkle proofs.

    python3 audit_log.py --verifier-key KEY --state FILE CHECKPOINT [--ledger URL] [--event FILE]
                         [--origin ORIGIN]

CHECKPOINT is a file, or an http(s) URL of /v1/audit/checkpoint. The tool
1. verifies the checkpoint's Ed25519 signed-note signature with KEY (the output of
   `csp-ledger audit key`, or a file holding it) and parses its body (origin, size, root);
2. if FILE holds the checkpoint verified last time, checks that the new one extends it:
   smaller size = rollback, same size with another root = fork, larger size = the ledger's
   consistency proof must verify (else fork), another origin = another log;
3. with --event (one line of `csp-ledger history`, or - for stdin), recomputes that event's
   hash from its canonical bytes and verifies the ledger's inclusion proof for it against the
   checkpoint's root;
4. only when all of that held, replaces FILE (atomically) with the new signed checkpoint.

Exit 0 when everything holds (one JSON line on stdout says what was verified); 2 when the
ledger is caught (bad signature, rollback, fork, failed proof), the reason on stderr; 1 on
usage, file or network errors. Formats: CANONICAL.md, "Signed checkpoints and proofs".
Needs the `cryptography` package for Ed25519; everything else is the standard library.
"""
import argparse
import base64
import binascii
import contextlib
import hashlib
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class Caught(Exception):
    """The ledger failed a check: exit 2."""


class Conflict(Caught):
    """A signed checkpoint that contradicts the state file's (rollback, fork): exit 2."""

    def __init__(self, message, note):
        super().__init__(message)
        self.note = note


class Trouble(Exception):
    """A usage, file or network error: exit 1."""


def sha256(data):
    return hashlib.sha256(data).digest()


# --- RFC 6962 Merkle tree (leaves are event hashes), verified as RFC 9162 section 2.1 ---

EMPTY_ROOT = sha256(b"")


def leaf_hash(event_hash):
    return sha256(b"\x00" + event_hash)


def node_hash(left, right):
    return sha256(b"\x01" + left + right)


def verify_inclusion(leaf, index, size, proof, root):
    """RFC 9162 2.1.3.2: is `leaf` the (0-based) `index`-th leaf of the tree of `size` with `root`?"""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(old_size, new_size, proof, old_root, new_root):
    """RFC 9162 2.1.4.2: is the tree (old_size, old_root) a prefix of (new_size, new_root)?"""
    if old_size < 1 or old_size > new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    if old_size & (old_size - 1) == 0:  # a power of 2: the old root is a node of the new tree
        proof = [old_root] + list(proof)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old_root and sr == new_root


# --- C2SP signed notes (golang.org/x/mod/sumdb/note) and tlog checkpoints ---

def valid_name(name):
    return name != "" and "+" not in name and not any(c.isspace() for c in name)


def key_id(name, typed_key):
    return sha256(name.encode("utf-8") + b"\n" + typed_key)[:4]


def b64decode(text):
    return base64.b64decode(text.encode("ascii"), validate=True)


def parse_verifier_key(vkey):
    """`<name>+<8 hex key id>+<base64(0x01 || Ed25519 public key)>` -> (name, id, public key)."""
    name, _, rest = vkey.partition("+")
    hex_id, _, b64 = rest.partition("+")
    try:
        typed = b64decode(b64)
        kid = bytes.fromhex(hex_id)
    except (ValueError, UnicodeEncodeError, binascii.Error):
        raise Trouble(f"malformed verifier key {vkey!r}") from None
    if not valid_name(name) or len(hex_id) != 8 or len(typed) != 33 or typed[0] != 0x01:
        raise Trouble(f"malformed verifier key {vkey!r} (want name+hex id+base64 Ed25519 key)")
    if kid != key_id(name, typed):
        raise Trouble(f"verifier key {vkey!r}: the key id does not match the name and key")
    return name, kid, Ed25519PublicKey.from_public_bytes(typed[1:])


def open_note(msg, key):
    """Verify a signed note with `key` (from parse_verifier_key); return its text (the body)."""
    name, kid, public = key
    try:
        text = msg.decode("utf-8")
    except UnicodeDecodeError:
        raise Caught("malformed note: not UTF-8") from None
    if any(c < " " and c != "\n" for c in text):
        raise Caught("malformed note: control characters")
    split = text.rfind("\n\n")
    body, sigs = text[: split + 1], text[split + 2 :]
    if split < 0 or not sigs.endswith("\n"):
        raise Caught("malformed note: no signature lines")
    lines = sigs[:-1].split("\n")
    if len(lines) > 100:
        raise Caught("malformed note: more than 100 signatures")
    verified = False
    for line in lines:
        signer, _, b64 = line.removeprefix("\u2014 ").partition(" ")
        try:
            sig = b64decode(b64)
        except (ValueError, binascii.Error):
            sig = b""
        if not line.startswith("\u2014 ") or not valid_name(signer) or len(sig) < 5:
            raise Caught(f"malformed note: signature line {line!r}")
        if (signer, sig[:4]) != (name, kid):
            continue  # another key's signature (a witness, an older key): ignored
        try:
            public.verify(sig[4:], body.encode("utf-8"))
        except InvalidSignature:
            raise Caught(f"bad signature: the signature by {name}+{kid.hex()} does not verify") from None
        verified = True
    if not verified:
        raise Caught(f"bad signature: no signature by key {name}+{kid.hex()}")
    return body


def parse_checkpoint(body):
    """tlog-checkpoint text -> (origin, tree size, root hash bytes). Extension lines are ignored."""
    lines = body.split("\n")[:-1]
    if len(lines) < 3 or "" in lines:
        raise Caught("malformed checkpoint: want origin, tree size and root hash lines")
    origin, size, root = lines[0], lines[1], lines[2]
    if not size.isdigit() or not size.isascii() or (size.startswith("0") and size != "0"):
        raise Caught(f"malformed checkpoint: tree size {size!r}")
    try:
        root = b64decode(root)
    except (ValueError, binascii.Error):
        root = b""
    if len(root) != 32:
        raise Caught(f"malformed checkpoint: root hash {lines[2]!r} is not 32 bytes of base64")
    if int(size) == 0 and root != EMPTY_ROOT:
        raise Caught("malformed checkpoint: an empty tree whose root is not SHA-256 of nothing")
    return origin, int(size), root


# --- Reading files and the ledger ---

ANSWER_BYTES_MAX = 1 << 20  # a checkpoint or a proof is a few kilobytes


def read_source(source):
    """Bytes of a file, of stdin ('-'), or of an http(s) URL (its 200 answer)."""
    if source == "-":
        return sys.stdin.buffer.read()
    if not source.startswith(("http://", "https://")):
        try:
            with open(source, "rb") as f:
                return f.read()
        except OSError as e:
            raise Trouble(f"cannot read {source}: {e.strerror}") from None
    try:
        with urllib.request.urlopen(source, timeout=30) as answer:
            body = answer.read(ANSWER_BYTES_MAX + 1)
    except urllib.error.HTTPError as e:
        said = e.read(300).decode("utf-8", "replace").strip().replace("\n", " ")
        raise Trouble(f"GET {source}: HTTP {e.code} {said}") from None
    except (urllib.error.URLError, OSError) as e:
        raise Trouble(f"GET {source}: {getattr(e, 'reason', e)}") from None
    if len(body) > ANSWER_BYTES_MAX:
        raise Trouble(f"GET {source}: an answer over {ANSWER_BYTES_MAX} bytes")
    return body


def fetch_proof(ledger, path, asked):
    """GET a proof; check it answers what was asked; return its hashes as bytes."""
    if ledger is None:
        raise Trouble("a proof is needed: give --ledger URL (or an http:// CHECKPOINT)")
    url = f"{ledger}{path}?{urllib.parse.urlencode(asked)}"
    try:
        answer = json.loads(read_source(url))
        if any(answer[k] != v for k, v in asked.items()):
            raise Caught(f"the ledger answered another proof than asked: {url}")
        hashes = [bytes.fromhex(h) for h in answer["hashes"]]
        if any(len(h) != 32 for h in hashes):
            raise ValueError("not a SHA-256 hash")
        return answer, hashes
    except (ValueError, KeyError, TypeError, AttributeError):
        raise Caught(f"malformed proof from {url}") from None


def event_leaf(line):
    """Recompute an event's hash from its canonical bytes (as verify_chain.py): (position, hash)."""
    try:
        envelope = json.loads(line)  # exactly one JSON object (surrounding blanks allowed)
        position, stored = envelope["position"], envelope["hash"]
        body = {k: v for k, v in envelope.items() if k not in ("hash", "prev_hash", "personal_data")}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest = hashlib.sha256(envelope["prev_hash"].encode("ascii") + canonical.encode("utf-8"))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise Trouble("--event: want one event line of `csp-ledger history`") from None
    if digest.hexdigest() != stored:
        raise Caught(f"changed event: the hash of position {position} does not match its canonical bytes")
    return position, digest.digest()


def store(path, note):
    """Replace the state file with the verified note, atomically (temp file + os.replace)."""
    temp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temp, "wb") as f:
            f.write(note)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise Trouble(f"cannot write the state file {path}: {e.strerror}") from None


# --- The audit ---

def audit(args):
    try:
        return check(args)
    except Conflict as e:  # keep the signed evidence: with the state file, it proves the conflict
        store(args.state + ".rejected", e.note)
        raise Caught(f"{e} (that checkpoint is kept in {args.state}.rejected)") from None


def check(args):
    vkey = args.verifier_key
    if os.path.isfile(vkey):
        vkey = read_source(vkey).decode("utf-8", "replace").strip()
    key = parse_verifier_key(vkey)
    note = read_source(args.checkpoint)
    origin, size, root = parse_checkpoint(open_note(note, key))
    report = {"ok": True, "origin": origin, "tree_size": size,
              "root_hash": base64.b64encode(root).decode(), "key": f"{key[0]}+{key[1].hex()}"}
    if args.origin is not None and origin != args.origin:
        raise Caught(f"another log: the checkpoint's origin is {origin!r}, expected {args.origin!r}")

    ledger = args.ledger
    if ledger is None and args.checkpoint.startswith(("http://", "https://")):
        url = urllib.parse.urlsplit(args.checkpoint)  # the ledger is what comes before /v1/...
        ledger = f"{url.scheme}://{url.netloc}{url.path.rsplit('/v1/audit/checkpoint', 1)[0]}"
    ledger = ledger.rstrip("/") if ledger else None

    old_size = None
    if os.path.exists(args.state):
        # The state file holds the signed note this tool verified last (verbatim).
        old = read_source(args.state).decode("utf-8", "replace")
        try:
            old_origin, old_size, old_root = parse_checkpoint(old[: old.rfind("\n\n") + 1])
        except Caught as e:
            raise Trouble(f"state file {args.state}: {e}") from None
        if old_origin != origin:
            raise Caught(f"another log: the checkpoint's origin is {origin!r}, the state file's {old_origin!r}")
        if size < old_size:
            raise Conflict(f"rollback: checkpoint has {size} events, the state file {old_size}", note)
        if size == old_size and root != old_root:
            raise Conflict(f"fork: checkpoint and state file both have {size} events but different roots", note)
        if old_size < size and old_size > 0:
            _, proof = fetch_proof(ledger, "/v1/audit/proof/consistency", {"from": old_size, "to": size})
            if not verify_consistency(old_size, size, proof, old_root, root):
                raise Conflict(f"fork: the checkpoint of {size} events does not extend the state file's "
                             f"{old_size} (the consistency proof fails)", note)
    report["consistent_from"] = old_size  # None: first use of this state file

    if args.event is not None:
        position, event_hash = event_leaf(read_source(args.event))
        if not isinstance(position, int) or not 1 <= position <= size:
            raise Trouble(f"--event: position {position} is not in the checkpoint's 1..{size}")
        leaf = leaf_hash(event_hash)
        answer, proof = fetch_proof(ledger, "/v1/audit/proof/inclusion", {"position": position, "tree_size": size})
        if not verify_inclusion(leaf, position - 1, size, proof, root):
            other = "; the ledger's leaf there differs" if answer.get("leaf_hash") != leaf.hex() else ""
            raise Caught(f"failed proof: event {position} is not in the checkpoint of {size} events{other}")
        report["event_position"] = position

    store(args.state, note)
    return report


class Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors exit 1 (2 means the ledger was caught)
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def main(argv=None):
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a signed checkpoint file, or http(s) URL")
    parser.add_argument("--verifier-key", required=True, help="`csp-ledger audit key` output, or a file of it")
    parser.add_argument("--state", required=True, help="file keeping the last verified checkpoint")
    parser.add_argument("--ledger", help="base URL for proofs (default: an http CHECKPOINT's, before /v1/)")
    parser.add_argument("--event", help="file holding one event line of `csp-ledger history` (- for stdin)")
    parser.add_argument("--origin", help="the origin the checkpoint must have")
    args = parser.parse_args(argv)
    try:
        report = audit(args)
    except Caught as e:
        print(f"audit_log: {e}", file=sys.stderr)
        return 2
    except Trouble as e:
        print(f"audit_log: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
