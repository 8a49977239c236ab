#!/usr/bin/env python3
"""Do fdatasync calls on one file overlap on this disk? K threads each write a 1,200-byte line into
zeroed space of the same file and fdatasync it, N times; prints fsyncs per second, each thread's time
per iteration and CPU per fsync, for K = 1, 2, 4, 8. If the total rate does not grow with K, the disk
serves one flush at a time and a log cannot hide its fsync latency by running several at once.

Usage: bench/probes/fsync_parallel.py [FOLDER]   (default: the current folder; a file is created there)
"""
import os
import sys
import threading
import time

N, L = 1500, 1200


def run(folder, k):
    path = os.path.join(folder, "fsync-parallel-probe")
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o600)
    try:
        os.pwrite(fd, b"\0" * (N * L * k + 8192), 0)
        os.fsync(fd)
        lock, state = threading.Lock(), {"off": 0}

        def worker():
            for _ in range(N):
                with lock:
                    off = state["off"]
                    state["off"] += L
                    os.pwrite(fd, b"x" * (L - 1) + b"\n", off)
                os.fdatasync(fd)

        threads = [threading.Thread(target=worker) for _ in range(k)]
        t0, c0 = time.perf_counter(), os.times()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        t1, c1 = time.perf_counter(), os.times()
        n = N * k
        cpu = (c1.user + c1.system) - (c0.user + c0.system)
        print(f"threads {k}: {n / (t1 - t0):7.0f} fsyncs/s, {1e6 * (t1 - t0) / N:7.1f} µs per "
              f"iteration of each thread, {1e6 * cpu / n:5.1f} µs CPU per fsync")
    finally:
        os.close(fd)
        os.unlink(path)


if __name__ == "__main__":
    folder = sys.argv[1] if len(sys.argv) > 1 else "."
    for k in (1, 2, 4, 8):
        run(folder, k)
