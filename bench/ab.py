"""Paired A/B timing of two mnist-ae binaries on the same command, as whole processes.

    python3 bench/ab.py OLD_BIN NEW_BIN [--pairs 5] -- train --model mlp --latent-dim 8 --epochs 1

Runs one warm-up of each, then OLD NEW OLD NEW ... (`--pairs` times), each in a fresh output
folder (`--out` is added). This machine's speed drifts between minutes, so the figure to quote
is the median of the pairs' ratios NEW/OLD of wall time, not a ratio of two medians. Also prints
each side's median wall time and median peak resident memory (the process's own accounting,
from wait4).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def run(binary, args, out):
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    proc = subprocess.Popen([binary, *args, "--out", out, "-q"], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{binary} exited with {os.waitstatus_to_exitcode(status)}")
    return wall, usage.ru_maxrss / 1024  # MiB (ru_maxrss is in KiB on Linux)


def main():
    argv = sys.argv[1:]
    if "--" not in argv:
        sys.exit(__doc__)
    split = argv.index("--")
    p = argparse.ArgumentParser()
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--pairs", type=int, default=5)
    a = p.parse_args(argv[:split])
    args = argv[split + 1:]
    tmp = tempfile.mkdtemp()
    try:
        old_out, new_out = os.path.join(tmp, "old"), os.path.join(tmp, "new")
        run(a.old, args, old_out)
        run(a.new, args, new_out)
        rows = []
        for _ in range(a.pairs):
            rows.append((run(a.old, args, old_out), run(a.new, args, new_out)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ratios = [n[0] / o[0] for o, n in rows]
    med = statistics.median
    print(f"pairs {a.pairs}: NEW/OLD wall median x{med(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
    print(f"OLD wall {med(o[0] for o, _ in rows):.2f} s, peak {med(o[1] for o, _ in rows):.1f} MiB")
    print(f"NEW wall {med(n[0] for _, n in rows):.2f} s, peak {med(n[1] for _, n in rows):.1f} MiB")


if __name__ == "__main__":
    main()
