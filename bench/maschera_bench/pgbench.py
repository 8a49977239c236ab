"""Runs pgbench against one target and reads its figures: TPS, average latency, transactions, the
CPU the target's proxy process spent meanwhile (from /proc), and on request the latency percentiles
from pgbench's per-transaction log. Not for: choosing what to run."""

import glob
import os
import re
import shutil
import subprocess
import tempfile

from .procs import BenchError, cpu_seconds


def _number(pattern, text):
    match = re.search(pattern, text)
    return float(match.group(1)) if match else None


def percentile(ordered, fraction):
    """The nearest-rank percentile of a sorted list."""
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


def _logged_latencies_ms(folder):
    """The latency of every transaction in pgbench's `--log` files in `folder` (third field, µs),
    sorted, in ms."""
    values = []
    for path in glob.glob(os.path.join(folder, "tx.*")):
        with open(path) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 3:
                    values.append(int(fields[2]) / 1000)
    values.sort()
    return values


def pgbench(target, args, extra_env=None, timeout=None, percentiles=False):
    """Runs `pgbench -n ARGS` as target.login; returns a dict with tps, latency_ms, transactions,
    and cpu_us_per_tx when the target has a proxy process. `percentiles`: also p50_ms, p95_ms and
    p99_ms of the transactions' latencies, from pgbench's per-transaction log (`--log`)."""
    pid = target.pid
    log_dir = tempfile.mkdtemp(prefix="maschera-bench-pgbench-log-") if percentiles else None
    if log_dir:
        args = [*args, "--log", f"--log-prefix={os.path.join(log_dir, 'tx')}"]
    before = cpu_seconds(pid) if pid else None
    try:
        proc = subprocess.run(
            ["pgbench", "-n", *args],
            env=target.login.env(extra_env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        after = cpu_seconds(pid) if pid else None
        latencies = _logged_latencies_ms(log_dir) if log_dir else []
    finally:
        if log_dir:
            shutil.rmtree(log_dir, ignore_errors=True)
    out = proc.stdout + proc.stderr
    transactions = _number(r"number of transactions actually processed: (\d+)", out)
    failed = _number(r"number of failed transactions: (\d+)", out)
    if proc.returncode != 0 or not transactions or failed:
        raise BenchError(
            f"pgbench {' '.join(args)} against {target.name} failed (status {proc.returncode}):\n"
            f"{out.strip()[-3000:]}"
        )
    result = {
        # With -C (a connection per transaction) pgbench counts the connections in.
        "tps": _number(r"tps = ([\d.]+) \((?:without initial connection time|including "
                       r"reconnection times)\)", out),
        "latency_ms": _number(r"latency average = ([\d.]+) ms", out),
        "transactions": transactions,
    }
    if pid:
        result["cpu_us_per_tx"] = (after - before) * 1e6 / transactions
    if latencies:
        for name, fraction in (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99)):
            result[name] = percentile(latencies, fraction)
    return result
