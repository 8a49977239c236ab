#!/usr/bin/env python3
"""What one durable 1,200-byte log line costs on this disk, written four ways: write + fdatasync
into zeroed space; an O_DSYNC write; an O_DIRECT|O_DSYNC write of the 4 KiB blocks it covers, into
zeroed space and into fallocated space. Prints wall time, this process's CPU and the machine's busy
CPU per line. Run it once on a quiet machine and once while a benchmark loads the cores.

Usage: bench/probes/fsync_modes.py [FOLDER] [LINES]   (defaults: the current folder, 2000)
"""
import mmap
import os
import sys
import time

L = 1200


def machine_busy():
    with open("/proc/stat") as f:
        ticks = list(map(int, f.readline().split()[1:]))
    return sum(ticks) - ticks[3] - ticks[4]


def run(folder, n, mode):
    path = os.path.join(folder, "fsync-modes-probe")
    size = n * L + 8192
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o600)
    if mode.endswith("fallocate"):
        os.posix_fallocate(fd, 0, size)
    else:
        os.pwrite(fd, b"\0" * size, 0)
    os.fsync(fd)
    os.close(fd)
    direct, dsync = "direct" in mode, "dsync" in mode
    flags = os.O_RDWR | (os.O_DIRECT if direct else 0) | (os.O_DSYNC if dsync else 0)
    fd = os.open(path, flags)
    block = mmap.mmap(-1, 8192)  # page-aligned, as O_DIRECT needs
    t0, c0, b0 = time.perf_counter(), os.times(), machine_busy()
    off = 0
    for _ in range(n):
        end = off + L
        if direct:
            start = off & ~4095
            os.pwrite(fd, memoryview(block)[:((end + 4095) & ~4095) - start], start)
        else:
            os.pwrite(fd, b"x" * (L - 1) + b"\n", off)
            if not dsync:
                os.fdatasync(fd)
        off = end
    t1, c1, b1 = time.perf_counter(), os.times(), machine_busy()
    cpu = (c1.user + c1.system) - (c0.user + c0.system)
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    print(f"{mode:26s} {1e6 * (t1 - t0) / n:7.1f} µs per line, {1e6 * cpu / n:5.1f} µs CPU, "
          f"machine busy {(b1 - b0) * tick_us / n:6.1f} µs")
    os.close(fd)
    os.unlink(path)


if __name__ == "__main__":
    folder = sys.argv[1] if len(sys.argv) > 1 else "."
    lines = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    for _ in range(2):
        for mode in ("fdatasync, zeroed", "dsync, zeroed", "direct+dsync, zeroed",
                     "direct+dsync, fallocate"):
            run(folder, lines, mode)
