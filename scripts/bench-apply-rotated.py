#!/usr/bin/env python3
"""Alternating apply of the same workload among binaries, the order rotated every round (so
that a load trend does not favour the first); wall and CPU (user+sys) seconds per run and
their medians. Usage: scripts/bench-apply-rotated.py FILE ROUNDS BIN...
"""
import os, resource, shutil, statistics, subprocess, sys, tempfile, time
file, rounds, bins = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
wall = {b: [] for b in bins}; cpu = {b: [] for b in bins}
for r in range(rounds):
    order = bins[r % len(bins):] + bins[:r % len(bins)]
    for b in order:
        d = tempfile.mkdtemp()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.time()
        subprocess.run([b, "--data-dir", d + "/data", "apply", file], stdout=subprocess.DEVNULL, check=True)
        w = time.time() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        c = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        wall[b].append(w); cpu[b].append(c)
        print(f"round {r+1} {os.path.basename(b)}: {w:.2f} s wall, {c:.2f} s cpu (load {os.getloadavg()[0]:.2f})", flush=True)
        shutil.rmtree(d)
for b in bins:
    print(f"{os.path.basename(b)}: median wall {statistics.median(wall[b]):.2f} s, median cpu {statistics.median(cpu[b]):.2f} s")
