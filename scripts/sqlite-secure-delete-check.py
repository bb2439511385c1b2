#!/usr/bin/env python3
"""Does SQLite leave stale copies of rows in its file? (ARCHITECTURE.md, Erasure.)

Inserts 2,000 random rows into a table shaped like the personal-data store (WITHOUT ROWID,
WAL) in 40 transactions, checkpoints, and counts the values that appear more than once in
the database file; then erases 30 of those (or 30 at random) one by one and counts the ones
whose value or salt is still in any of the store's files. Usage:
    python3 scripts/sqlite-secure-delete-check.py ON|OFF
"""
import os
import random
import sqlite3
import sys
import tempfile
import uuid


def run(secure_delete, vacuum, seed):
    random.seed(seed)
    d = tempfile.mkdtemp()
    p = os.path.join(d, "p.sqlite")
    c = sqlite3.connect(p, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA secure_delete=" + secure_delete)
    c.execute("PRAGMA temp_store=MEMORY")
    c.execute("CREATE TABLE personal (subject BLOB NOT NULL, commitment BLOB NOT NULL, "
              "salt BLOB NOT NULL, value TEXT NOT NULL, PRIMARY KEY (subject, commitment)) "
              "WITHOUT ROWID")
    rows = []
    for b in range(40):
        c.execute("BEGIN IMMEDIATE")
        for i in range(50):
            s = uuid.UUID(int=random.getrandbits(128)).bytes
            salt = os.urandom(16)
            v = f"user{b}_{i}_{random.getrandbits(32)}@example-x.org"
            c.execute("INSERT INTO personal VALUES (?,?,?,?)", (s, os.urandom(32), salt, v))
            rows.append((s, salt, v))
        c.execute("COMMIT")
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = open(p, "rb").read()
    doubled = [r for r in rows if data.count(r[2].encode()) > 1]
    victims = doubled[:30] or random.sample(rows, 30)
    leaks = 0
    for s, salt, v in victims:
        c.execute("DELETE FROM personal WHERE subject=?", (s,))
        if vacuum:
            c.execute("VACUUM")
        busy = c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        assert busy == 0
        data = b"".join(open(os.path.join(d, f), "rb").read() for f in os.listdir(d))
        if v.encode() in data or salt in data:
            leaks += 1
    print(f"SQLite {sqlite3.sqlite_version} secure_delete={secure_delete} vacuum={vacuum} "
          f"seed={seed}: {len(doubled)} of {len(rows)} values stored twice; "
          f"{leaks} of {len(victims)} erased values still in the files")


for seed in (1, 2):
    for vacuum in (False, True):
        run(sys.argv[1] if len(sys.argv) > 1 else "ON", vacuum, seed)
