"""Latency of the explorer's API, as a client sees it (loopback HTTP, JSON both ways).

    python3 bench/explorer_latency.py target/release/mnist-ae runs/conv64 [--seconds 60] [--data-dir DIR]

Starts `mnist-ae serve RUN --port 0`, then:
1. 1,000 sequential `reconstruct` requests (test images 0..999) and 1,000 `decode` requests
   (their codes): median and p95 wall time per request;
2. 16 concurrent clients sending `reconstruct` for `--seconds`: requests served, errors,
   median and p95, and the server's resident memory (VmRSS) at the start and end of that
   phase and its peak (VmHWM).
Prints one JSON object.
"""
import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
import urllib.request


def call(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def mem(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                k, v = line.split(":")
                out[k] = int(v.split()[0]) / 1024  # MiB
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("binary")
    p.add_argument("run")
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--data-dir")
    a = p.parse_args()
    cmd = [a.binary, "serve", a.run, "--port", "0", "--no-download"]
    if a.data_dir:
        cmd += ["--data-dir", a.data_dir]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        base = next(w for w in line.split() if w.startswith("http://"))
        name = call(base + "api/runs")[0]["name"]
        api = f"{base}api/{name}"
        images = [call(f"{api}/test/{i}") for i in range(1000)]
        rec, dec = [], []
        for t in images:
            t0 = time.perf_counter()
            call(f"{api}/reconstruct", {"pixels": t["pixels"]})
            rec.append(time.perf_counter() - t0)
        for t in images:
            t0 = time.perf_counter()
            call(f"{api}/decode", {"code": t["code"]})
            dec.append(time.perf_counter() - t0)
        start_mem = mem(server.pid)
        lat, errors, stop = [], [0], time.time() + a.seconds
        lock = threading.Lock()

        def client(k):
            i = k
            while time.time() < stop:
                t0 = time.perf_counter()
                try:
                    call(f"{api}/reconstruct", {"pixels": images[i % 1000]["pixels"]})
                    with lock:
                        lat.append(time.perf_counter() - t0)
                except Exception:
                    with lock:
                        errors[0] += 1
                i += a.clients

        threads = [threading.Thread(target=client, args=(k,)) for k in range(a.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        end_mem = mem(server.pid)
        ms = lambda x: round(1000 * x, 2)  # noqa: E731
        print(json.dumps({
            "run": a.run,
            "single_client": {
                "reconstruct_ms": {"median": ms(statistics.median(rec)), "p95": ms(pct(rec, 0.95))},
                "decode_ms": {"median": ms(statistics.median(dec)), "p95": ms(pct(dec, 0.95))},
            },
            "concurrent": {
                "clients": a.clients, "seconds": a.seconds, "requests": len(lat), "errors": errors[0],
                "reconstruct_ms": {"median": ms(statistics.median(lat)), "p95": ms(pct(lat, 0.95))},
                "rss_mib": {"start": round(start_mem["VmRSS"], 1), "end": round(end_mem["VmRSS"], 1),
                            "peak": round(end_mem["VmHWM"], 1)},
            },
        }, indent=2))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
