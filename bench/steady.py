#!/usr/bin/env python3
"""Whether training keeps its speed from epoch to epoch, on a machine shared with others.

    bench/steady.py [--model conv64] [--epochs 5] [--threads 1] [--rounds 2] [--bin PATH]

Runs `mnist-ae train` ROUNDS times and, for each epoch, prints the images/s that
metrics.jsonl reports beside two figures read from /proc while the run goes on (Linux):
the CPU seconds the process used in that epoch (all its threads, user + system) and the
seconds the host took from this virtual machine's cores meanwhile ("steal", all cores).
On a quiet machine images/s alone answer the question; on a shared one they drift with
the neighbours, while the CPU seconds an epoch costs do not (with --threads 1: with more,
idle workers spinning for work count as CPU time too). Epoch 1's CPU seconds include the
process's start (loading the data, building the model), so later epochs' CPU seconds are
compared with epoch 2's. The last lines give each epoch's median over the rounds: images/s
relative to epoch 1, CPU seconds relative to epoch 2. Writes nothing outside a temporary
folder.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid):
    """User + system seconds of all threads of `pid` so far, or None once it has gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command name: state is field 3, utime 14 and stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / TICK


def host_steal():
    """Seconds stolen from this machine's cores by its host so far (all cores)."""
    with open("/proc/stat") as f:
        cpu = f.readline().split()
    return int(cpu[8]) / TICK


def epochs_done(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except OSError:
        return []


def one_run(args, data):
    """Per epoch: (images/s, CPU seconds, steal seconds)."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [args.bin, "--threads", str(args.threads), "train", "--model", args.model,
               "--epochs", str(args.epochs), "--data-dir", data, "--no-download",
               "--out", out, "-q"]
        if args.limit_train:
            cmd += ["--limit-train", str(args.limit_train)]
        metrics = os.path.join(out, "metrics.jsonl")
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        marks = [(0.0, host_steal())]
        seen = 0
        while True:
            done = proc.poll() is not None
            cpu = process_cpu(proc.pid) if not done else None
            rows = epochs_done(metrics)
            if len(rows) > seen and cpu is not None:
                # One mark per finished epoch (an epoch's line appears when it ends).
                marks.extend([(cpu, host_steal())] * (len(rows) - seen))
                seen = len(rows)
            if done:
                break
            time.sleep(0.01)
        if proc.returncode != 0:
            sys.exit(f"steady: {' '.join(cmd)} failed with exit code {proc.returncode}")
        if len(marks) - 1 != args.epochs:
            sys.exit("steady: missed an epoch's end (the run was too fast to follow)")
        return [
            (row["images_per_sec"], c1 - c0, s1 - s0)
            for row, (c0, s0), (c1, s1) in zip(rows, marks, marks[1:])
        ]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="conv64")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--limit-train", type=int, default=0)
    p.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "mnist-ae"))
    args = p.parse_args()
    if args.epochs < 2:
        sys.exit("steady: --epochs must be at least 2")
    data = os.environ.get("MNIST_AE_DATA", os.path.join(ROOT, "..", "shared", "data", "mnist"))
    with open("/proc/cpuinfo") as f:
        model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    print(f"CPU: {model}, {os.cpu_count()} cores; {args.model}, {args.epochs} epochs, "
          f"{args.threads} thread(s)")
    print(f"{'round':>5} {'epoch':>5} {'images/s':>9} {'CPU s':>7} {'steal s':>7}")
    runs = []
    for r in range(1, args.rounds + 1):
        run = one_run(args, data)
        runs.append(run)
        for e, (ips, cpu, steal) in enumerate(run, 1):
            print(f"{r:>5} {e:>5} {ips:>9.0f} {cpu:>7.2f} {steal:>7.2f}")
    print(f"{'epoch':>5} {'images/s vs 1':>13} {'CPU s vs 2':>10}")
    for e in range(args.epochs):
        ips = statistics.median(run[e][0] / run[0][0] for run in runs)
        cpu = (
            f"{statistics.median(run[e][1] / run[1][1] for run in runs):>10.3f}"
            if e > 0
            else f"{'(start-up)':>10}"
        )
        print(f"{e + 1:>5} {ips:>13.3f} {cpu}")


if __name__ == "__main__":
    main()
