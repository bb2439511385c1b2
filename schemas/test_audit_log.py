#!/usr/bin/env python3
"""Tests of audit_log.py that need no ledger: `python3 -m unittest` in schemas/, or run this file.

- the RFC 9162 verifiers against the transparency-dev/merkle vectors (the same as
  schemas/tests/merkle_vectors.rs) and against proofs built by a direct transcription of
  RFC 6962 section 2.1 for every size up to 64, each corrupted proof rejected;
- signed-note verification against golang.org/x/mod/sumdb/note's and C2SP's published notes;
- the whole tool against a small fake ledger served on 127.0.0.1 (checkpoints signed with keys
  made here), and each tampered variant rejected with exit 2: a changed leaf, a changed proof
  hash, another key, another origin, a rollback, a fork.
"""
import base64
import contextlib
import hashlib
import http.server
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import audit_log  # noqa: E402
from audit_log import EMPTY_ROOT, leaf_hash, node_hash, verify_consistency, verify_inclusion  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # noqa: E402

h = bytes.fromhex


# --- RFC 6962 section 2.1, transcribed ---

def split(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d):
    if not d:
        return EMPTY_ROOT
    if len(d) == 1:
        return d[0]
    k = split(len(d))
    return node_hash(mth(d[:k]), mth(d[k:]))


def path(m, d):
    if len(d) == 1:
        return []
    k = split(len(d))
    return path(m, d[:k]) + [mth(d[k:])] if m < k else path(m - k, d[k:]) + [mth(d[:k])]


def subproof(m, d, b=True):
    if m == len(d):
        return [] if b else [mth(d)]
    k = split(len(d))
    if m <= k:
        return subproof(m, d[:k], b) + [mth(d[k:])]
    return subproof(m - k, d[k:], False) + [mth(d[:k])]


# --- transparency-dev/merkle testonly/constants.go and proof/verify_test.go ---

INPUTS = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
          bytes(range(0x50, 0x58)), bytes(range(0x60, 0x70))]
ROOTS = [h(x) for x in [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]]
N = {name: h(x) for name, x in {
    "l1": "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "l4": "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "l6": "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "n1": "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "n2": "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    "n3": "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    "m1": "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
}.items()}
INCLUSION = [  # (1-based leaf, tree size, proof)
    (1, 1, []),
    (1, 8, [N["l1"], N["n1"], N["m1"]]),
    (6, 8, [N["l4"], N["n3"], ROOTS[3]]),
    (3, 3, [ROOTS[1]]),
    (2, 5, [ROOTS[0], N["n1"], N["l4"]]),
]
CONSISTENCY = [  # (old size, new size, proof)
    (1, 1, []),
    (1, 8, [N["l1"], N["n1"], N["m1"]]),
    (6, 8, [N["n2"], N["n3"], ROOTS[3]]),
    (2, 5, [N["n1"], N["l4"]]),
    (6, 7, [N["n2"], N["l6"], ROOTS[3]]),
]


def flip(proof, i, bit=8):
    wrong = list(proof)
    wrong[i] = bytes([wrong[i][0] ^ bit]) + wrong[i][1:]
    return wrong


class Tree(unittest.TestCase):
    leaves = [leaf_hash(x) for x in INPUTS]

    def test_empty_root_and_published_roots(self):
        self.assertEqual(EMPTY_ROOT.hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        for size in range(1, 9):
            self.assertEqual(mth(self.leaves[:size]), ROOTS[size - 1])

    def test_inclusion_vectors_and_corrupted_probes(self):
        for leaf, size, proof in INCLUSION:
            i, root, lh = leaf - 1, ROOTS[size - 1], self.leaves[leaf - 1]
            self.assertEqual(path(i, self.leaves[:size]), proof)
            self.assertTrue(verify_inclusion(lh, i, size, proof, root))
            probes = [(i - 1 if i else 2**64 - 1, size, lh, proof, root), (i + 1, size, lh, proof, root),
                      (i ^ 2, size, lh, proof, root), (i, size * 2, lh, proof, root),
                      (i, size // 2, lh, proof, root), (i, size, bytes([7] * 32), proof, root),
                      (i, size, lh, proof, EMPTY_ROOT), (i, size, lh, proof + [root], root),
                      (i, size, lh, [root] + proof, root)]
            probes += [(i, size, lh, flip(proof, k), root) for k in range(len(proof))]
            if proof:
                probes.append((i, size, lh, proof[:-1], root))
            for n, (pi, ps, pl, pp, pr) in enumerate(probes):
                self.assertFalse(verify_inclusion(pl, pi, ps, pp, pr), f"probe {n} of {leaf}/{size}")

    def test_consistency_vectors_and_corrupted_probes(self):
        for old, new, proof in CONSISTENCY:
            r1, r2 = ROOTS[old - 1], ROOTS[new - 1]
            self.assertEqual(subproof(old, self.leaves[:new]), proof)
            self.assertTrue(verify_consistency(old, new, proof, r1, r2))
            if not proof:
                continue
            seven = bytes([7] * 32)
            probes = [(old - 1, new, r1, r2, proof), (old + 1, new, r1, r2, proof),
                      (old ^ 2, new, r1, r2, proof), (old, new * 2, r1, r2, proof),
                      (old, new // 2, r1, r2, proof), (old, new, seven, r2, proof),
                      (old, new, r1, seven, proof), (old, new, r2, r1, proof), (old, new, r1, r2, []),
                      (old, new, r1, r2, proof + [r1]), (old, new, r1, r2, proof + [r2]),
                      (old, new, r1, r2, [r1] + proof), (old, new, r1, r2, [r2] + proof),
                      (old, new, r1, r2, [proof[0]] + proof), (old, new, r1, r2, proof[:-1])]
            probes += [(old, new, r1, r2, flip(proof, k, 16)) for k in range(len(proof))]
            for n, (o, w, a, b, p) in enumerate(probes):
                self.assertFalse(verify_consistency(o, w, p, a, b), f"probe {n} of {old}->{new}")

    def test_every_proof_up_to_64_leaves(self):
        leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(64)]
        for n in range(1, 65):
            d, r = leaves[:n], mth(leaves[:n])
            for m in range(n):
                self.assertTrue(verify_inclusion(d[m], m, n, path(m, d), r))
                self.assertFalse(verify_inclusion(d[(m + 1) % n], m, n, path(m, d), r) and n > 1)
            for m in range(1, n + 1):
                proof = subproof(m, d)
                self.assertTrue(verify_consistency(m, n, proof, mth(d[:m]), r), f"{m}->{n}")
                for k in range(len(proof)):
                    self.assertFalse(verify_consistency(m, n, flip(proof, k, 1), mth(d[:m]), r))


# --- golang.org/x/mod/sumdb/note note_test.go, and the C2SP signed-note example ---

PETER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PETER_SIG = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
ENOCH_SIG = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
C2SP_KEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
C2SP_NOTE = ("This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2"
             "ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n")


class Notes(unittest.TestCase):
    def open(self, msg, vkey=PETER):
        return audit_log.open_note(msg.encode("utf-8"), audit_log.parse_verifier_key(vkey))

    def test_published_notes_verify(self):
        self.assertEqual(self.open(TEXT + "\n" + PETER_SIG), TEXT)
        self.assertEqual(self.open(TEXT + "\n" + PETER_SIG + ENOCH_SIG), TEXT)  # Enoch's is ignored
        self.assertEqual(self.open(TEXT + "\n" + PETER_SIG + ENOCH_SIG, ENOCH), TEXT)
        self.assertEqual(self.open(C2SP_NOTE, C2SP_KEY), "This is an example message.\n")

    def test_the_example_of_canonical_md(self):
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "CANONICAL.md"), encoding="utf-8") as f:
            doc = f.read()
        vkey = "csp-ledger/example+0b7f07f3+ASvhCbTSRRSWaaVLgRguTzn9Fxz1oVC+VkbKyekVN9mU"
        start = doc.index("```\ncsp-ledger/example\n1\n") + 4
        note = doc[start:doc.index("```", start)]
        self.assertIn(f"verifier key: {vkey}", doc)
        origin, size, root = audit_log.parse_checkpoint(self.open(note, vkey))
        leaf = leaf_hash(h("2a06434e529b89cac0dc17b9c28ca6f61baa51c32247f6e44236759faa3595aa"))
        self.assertEqual((origin, size, root), ("csp-ledger/example", 1, leaf))
        self.assertIn(f"`{leaf.hex()}`", doc)
        # The private key shown there is the one that made the signature (Ed25519 is deterministic).
        private = doc.split("private key:  ")[1].split("\n")[0]
        seed = base64.b64decode(private.split("+", 4)[4])[1:]
        body = note[: note.rindex("\n\n") + 1]
        sig = Ed25519PrivateKey.from_private_bytes(seed).sign(body.encode())
        self.assertIn(base64.b64encode(h("0b7f07f3") + sig).decode(), note)

    def test_bad_notes_are_rejected(self):
        bad = [
            TEXT + "\n" + ENOCH_SIG,  # no signature by the key
            TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:],  # invalid signature
            TEXT.replace("cryptography", "cryptographie") + "\n" + PETER_SIG,  # changed text
            TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "CarmenSandiego"),  # misnamed
            TEXT + "\n" + PETER_SIG.replace("x08g", "xxxx"),  # another key id
            TEXT, TEXT + "\n", TEXT + "\n" + PETER_SIG[:-1], "\x01" + TEXT + "\n" + PETER_SIG,
            TEXT + "\n— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",
            TEXT + "\n" + PETER_SIG + "Unexpected line.\n", TEXT + "\n" + PETER_SIG * 101,
        ]
        for msg in bad:
            with self.assertRaises(audit_log.Caught, msg=repr(msg)):
                self.open(msg)
        with self.assertRaises(audit_log.Caught):
            audit_log.open_note(b"\xff" + (TEXT + "\n" + PETER_SIG).encode(), audit_log.parse_verifier_key(PETER))

    def test_mangled_verifier_keys_are_refused(self):
        audit_log.parse_verifier_key(PETER)
        manglings = [PETER[i:j] for i in range(len(PETER) + 1) for j in range(i + 1, len(PETER) + 1)
                     if (i, j) != (0, len(PETER))]
        manglings += [PETER[:i] + chr(ord(PETER[i]) + 1) + PETER[i + 1:] for i in range(len(PETER))]
        manglings += ["PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
                      "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"]
        for key in manglings:
            with self.assertRaises(audit_log.Trouble, msg=key):
                audit_log.parse_verifier_key(key)

    def test_checkpoint_bodies(self):
        root = base64.b64encode(bytes(32)).decode()
        self.assertEqual(audit_log.parse_checkpoint(f"a/b\n10\n{root}\n"), ("a/b", 10, bytes(32)))
        self.assertEqual(audit_log.parse_checkpoint(f"a/b\n10\n{root}\next\n")[1], 10)
        empty = base64.b64encode(EMPTY_ROOT).decode()
        self.assertEqual(audit_log.parse_checkpoint(f"a/b\n0\n{empty}\n")[1], 0)
        for body in [f"a/b\n10\n{root}", f"a/b\n010\n{root}\n", f"a/b\n-1\n{root}\n", f"a/b\n1 0\n{root}\n",
                     f"\n10\n{root}\n", "a/b\n10\nAAAA\n", f"a/b\n10\n{root}\n\n", f"a/b\n0\n{root}\n",
                     f"a/b\n{root}\n", "a/b\n\u0661\n" + root + "\n"]:
            with self.assertRaises(audit_log.Caught, msg=repr(body)):
                audit_log.parse_checkpoint(body)


# --- the tool against a fake ledger ---

class Key:
    """An Ed25519 note key made for the test: signs checkpoints, gives its verifier key."""

    def __init__(self, name):
        self.name, self.private = name, Ed25519PrivateKey.generate()
        typed = b"\x01" + self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.id = audit_log.key_id(name, typed)
        self.vkey = f"{name}+{self.id.hex()}+{base64.b64encode(typed).decode()}"

    def sign(self, body):
        sig = base64.b64encode(self.id + self.private.sign(body.encode())).decode()
        return f"{body}\n\u2014 {self.name} {sig}\n"


def make_events(n, seed=0, start=None):
    """A hash chain of n small events in the shape of `csp-ledger history` lines."""
    events, prev = [], "0" * 64
    for position in range(1, n + 1):
        e = {"position": position, "type": "Noted", "stream": f"s-{seed}", "data": {"n": position, "é": "ü"},
             "schema_version": 2, "submitted_by": "local", "prev_hash": prev}
        body = {k: v for k, v in e.items() if k != "prev_hash"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        e["hash"] = prev = hashlib.sha256(e["prev_hash"].encode() + canonical).hexdigest()
        e["personal_data"] = {"x": "not hashed"}
        events.append(e)
    return events


class FakeLedger:
    """Serves /v1/audit/checkpoint and the proofs of a list of events, like the ledger does."""

    def __init__(self, events, key, origin="test.example/ledger"):
        self.events, self.key, self.origin = events, key, origin
        self.tamper = None  # a function (path, answer) -> answer, to serve lies
        ledger = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                q = {k: int(v[0]) for k, v in urllib.parse.parse_qs(url.query).items()}
                status, kind, body = ledger.answer(url.path.removeprefix("/behind/a/proxy"), q)
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def leaves(self, size):
        return [leaf_hash(bytes.fromhex(e["hash"])) for e in self.events[:size]]

    def checkpoint(self, size=None):
        size = len(self.events) if size is None else size
        root = base64.b64encode(mth(self.leaves(size))).decode()
        return self.key.sign(f"{self.origin}\n{size}\n{root}\n")

    def answer(self, route, q):
        head = len(self.events)
        if route == "/v1/audit/checkpoint":
            if q.get("tree_size", head) > head:
                return 404, "application/json", '{"code":"checkpoint_not_found","message":"no"}'
            return 200, "text/plain", self.checkpoint(q.get("tree_size"))
        if route == "/v1/audit/proof/inclusion" and 1 <= q["position"] <= q["tree_size"] <= head:
            d = self.leaves(q["tree_size"])
            answer = dict(q, leaf_hash=d[q["position"] - 1].hex(), hashes=path(q["position"] - 1, d))
        elif route == "/v1/audit/proof/consistency" and 1 <= q["from"] <= q["to"] <= head:
            answer = dict(q, hashes=subproof(q["from"], self.leaves(q["to"])))
        else:
            return 400, "application/json", '{"code":"invalid_range","message":"bad range"}'
        answer["hashes"] = [x.hex() for x in answer["hashes"]]
        if self.tamper:
            answer = self.tamper(route, answer)
        return 200, "application/json", json.dumps(answer)


class Tool(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.key = Key("test.example/ledger")
        self.ledger = FakeLedger(make_events(40), self.key)
        self.state = os.path.join(self.dir.name, "state")
        self.addCleanup(self.dir.cleanup)
        self.addCleanup(self.ledger.server.server_close)
        self.addCleanup(self.ledger.server.shutdown)

    def run_tool(self, checkpoint, *extra, vkey=None, event=None):
        """Run the tool in-process: (exit code, stdout JSON or None, stderr)."""
        args = ["--verifier-key", vkey or self.key.vkey, "--state", self.state, *extra]
        if event is not None:
            args += ["--event", self.write("event.json", json.dumps(event, ensure_ascii=False))]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = audit_log.main(args + [checkpoint])
        return code, json.loads(out.getvalue()) if code == 0 else None, err.getvalue()

    def write(self, name, text):
        path = os.path.join(self.dir.name, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def at(self, size):
        return f"{self.ledger.url}/v1/audit/checkpoint?tree_size={size}"

    def state_size(self):
        with open(self.state, encoding="utf-8") as f:
            return int(f.read().split("\n")[1])

    def test_first_use_then_growth_and_inclusion(self):
        code, report, err = self.run_tool(self.at(10))
        self.assertEqual((code, err), (0, ""))
        self.assertEqual((report["tree_size"], report["consistent_from"], report["origin"]),
                         (10, None, "test.example/ledger"))
        self.assertEqual(report["key"], f"test.example/ledger+{self.key.id.hex()}")
        self.assertEqual(self.state_size(), 10)
        rng = random.Random(12)
        size = 10
        for _ in range(12):  # random growth steps, each with an inclusion of a random event
            size = rng.randint(size, 40)
            event = self.ledger.events[rng.randint(1, size) - 1]
            code, report, err = self.run_tool(self.at(size), event=event)
            self.assertEqual(code, 0, err)
            self.assertEqual((report["tree_size"], report["event_position"]), (size, event["position"]))
            self.assertEqual(self.state_size(), size)
        code, report, _ = self.run_tool(self.ledger.url + "/v1/audit/checkpoint")  # the latest
        self.assertEqual((code, report["tree_size"]), (0, 40))

    def test_a_ledger_behind_a_path_prefix(self):
        url = self.ledger.url + "/behind/a/proxy/v1/audit/checkpoint"
        self.assertEqual(self.run_tool(url + "?tree_size=5")[0], 0)
        code, report, err = self.run_tool(url, event=self.ledger.events[30])
        self.assertEqual((code, report["consistent_from"], report["event_position"]), (0, 5, 31), err)

    def test_checkpoint_file_and_verifier_key_file(self):
        path = self.write("cp", self.ledger.checkpoint(7))
        keyfile = self.write("key", self.key.vkey + "\n")
        self.assertEqual(self.run_tool(path, vkey=keyfile)[0], 0)
        # Growth from a file needs --ledger for the consistency proof.
        path = self.write("cp", self.ledger.checkpoint(9))
        code, _, err = self.run_tool(path)
        self.assertEqual(code, 1)
        self.assertIn("--ledger", err)
        self.assertEqual(self.run_tool(path, "--ledger", self.ledger.url + "/")[0], 0)
        self.assertEqual(self.state_size(), 9)

    def assertCaught(self, result, words):
        code, _, err = result
        self.assertEqual(code, 2, err)
        self.assertIn(words, err)
        self.assertEqual(err.count("\n"), 1, "one line on stderr")

    def test_tampered_variants_exit_2_and_keep_the_state(self):
        self.assertEqual(self.run_tool(self.at(20))[0], 0)
        with open(self.state, "rb") as f:
            kept = f.read()
        event = dict(self.ledger.events[4])
        # A changed event line: its hash no longer matches its canonical bytes.
        changed = dict(event, data={"n": 6, "é": "ü"})
        self.assertCaught(self.run_tool(self.at(20), event=changed), "changed event")
        # A changed leaf with a consistent hash (an event the log does not hold).
        other = make_events(5, seed=1)[4]
        self.assertCaught(self.run_tool(self.at(20), event=other), "failed proof: event 5")
        # A changed proof hash.
        self.ledger.tamper = lambda route, a: dict(a, hashes=[a["hashes"][0][:-1] + "0"] + a["hashes"][1:])
        self.assertCaught(self.run_tool(self.at(20), event=event), "failed proof")
        self.assertCaught(self.run_tool(self.at(30)), "fork: the checkpoint of 30 events does not extend")
        self.ledger.tamper = lambda route, a: dict(a, hashes=a["hashes"][:-1])  # a short proof
        self.assertCaught(self.run_tool(self.at(30)), "fork")
        self.ledger.tamper = lambda route, a: dict(a, tree_size=a.get("tree_size", 0) + 1, to=a.get("to", 0) + 1)
        self.assertCaught(self.run_tool(self.at(30), event=event), "another proof than asked")
        self.ledger.tamper = None
        # Another key: a checkpoint signed by someone else, or checked with another verifier key.
        self.assertCaught(self.run_tool(self.write("cp", Key(self.key.name).sign("x\n1\n" + "A" * 43 + "=\n"))),
                          "bad signature: no signature by key test.example/ledger+")
        self.assertCaught(self.run_tool(self.at(20), vkey=Key("test.example/ledger").vkey), "bad signature")
        forged = self.ledger.checkpoint(20).replace("\n20\n", "\n21\n")
        self.assertCaught(self.run_tool(self.write("cp", forged)), "bad signature: the signature by")
        # Another origin, signed by the same key.
        self.ledger.origin = "other"
        self.assertCaught(self.run_tool(self.at(25)), "another log: the checkpoint's origin is 'other'")
        self.ledger.origin = "test.example/ledger"
        # A rollback: an older, validly signed checkpoint.
        self.assertCaught(self.run_tool(self.at(12)), "rollback: checkpoint has 12 events, the state file 20")
        # A fork: a log of the same size with other events.
        forked = FakeLedger(make_events(40, seed=2), self.key)
        self.addCleanup(forked.server.server_close)
        self.addCleanup(forked.server.shutdown)
        self.assertCaught(self.run_tool(f"{forked.url}/v1/audit/checkpoint?tree_size=20"),
                          "fork: checkpoint and state file both have 20 events but different roots")
        self.assertCaught(self.run_tool(f"{forked.url}/v1/audit/checkpoint?tree_size=33"), "fork")
        with open(self.state + ".rejected", encoding="utf-8") as f:
            self.assertEqual(f.read(), forked.checkpoint(33), "the conflicting checkpoint is kept")
        with open(self.state, "rb") as f:
            self.assertEqual(f.read(), kept, "a failed audit leaves the state file as it was")
        self.assertEqual(self.run_tool(self.at(20), event=event)[0], 0)

    def test_expected_origin_and_errors_exit_1(self):
        self.assertCaught(self.run_tool(self.at(3), "--origin", "elsewhere"), "another log")
        self.assertEqual(self.run_tool(self.at(3), "--origin", "test.example/ledger")[0], 0)
        code, _, err = self.run_tool(self.at(99))
        self.assertEqual((code, err.count("\n")), (1, 1))
        self.assertIn("HTTP 404 {\"code\":\"checkpoint_not_found\"", err)
        self.ledger.tamper = lambda route, a: dict(a, padding="x" * (1 << 20))
        code, _, err = self.run_tool(self.at(5), event=self.ledger.events[0])
        self.assertEqual(code, 1)
        self.assertIn("an answer over 1048576 bytes", err)
        self.ledger.tamper = None
        self.assertEqual(self.run_tool(self.at(3), event={"position": 1})[0], 1)
        self.assertEqual(self.run_tool(self.at(3), event=self.ledger.events[3])[0], 1)  # beyond size 3
        self.assertEqual(self.run_tool(os.path.join(self.dir.name, "missing"))[0], 1)
        self.assertEqual(self.run_tool(self.at(3), vkey="not-a-key")[0], 1)
        self.assertEqual(self.run_tool("http://127.0.0.1:9/v1/audit/checkpoint")[0], 1)
        self.write("state", "garbage\n")
        self.assertEqual(self.run_tool(self.at(3))[0], 1)

    def test_command_line(self):
        tool = os.path.join(os.path.dirname(os.path.abspath(__file__)), "audit_log.py")
        run = lambda *a, **k: subprocess.run([sys.executable, tool, *a], capture_output=True, text=True, **k)
        self.assertEqual(run().returncode, 1)  # usage
        done = run("--verifier-key", self.key.vkey, "--state", self.state, "--event", "-", self.at(8),
                   input=json.dumps(self.ledger.events[7]) + "\n")
        self.assertEqual((done.returncode, done.stderr), (0, ""))
        self.assertEqual(json.loads(done.stdout)["event_position"], 8)
        done = run("--verifier-key", self.key.vkey, "--state", self.state, self.at(5))
        self.assertEqual((done.returncode, done.stdout), (2, ""))
        self.assertEqual(done.stderr, "audit_log: rollback: checkpoint has 5 events, the state file 8 "
                                      f"(that checkpoint is kept in {self.state}.rejected)\n")
        with open(self.state + ".rejected", encoding="utf-8") as f:
            self.assertEqual(f.read(), self.ledger.checkpoint(5))


if __name__ == "__main__":
    unittest.main()
