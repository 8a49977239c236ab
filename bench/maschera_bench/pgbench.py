"""Runs pgbench against one target and reads its figures: TPS, average latency, transactions, and
the CPU the target's proxy process spent meanwhile (from /proc). Not for: choosing what to run."""

import re
import subprocess

from .procs import BenchError, cpu_seconds


def _number(pattern, text):
    match = re.search(pattern, text)
    return float(match.group(1)) if match else None


def pgbench(target, args, extra_env=None, timeout=None):
    """Runs `pgbench -n ARGS` as target.login; returns a dict with tps, latency_ms, transactions,
    and cpu_us_per_tx when the target has a proxy process."""
    pid = target.pid
    before = cpu_seconds(pid) if pid else None
    proc = subprocess.run(
        ["pgbench", "-n", *args],
        env=target.login.env(extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    after = cpu_seconds(pid) if pid else None
    out = proc.stdout + proc.stderr
    transactions = _number(r"number of transactions actually processed: (\d+)", out)
    failed = _number(r"number of failed transactions: (\d+)", out)
    if proc.returncode != 0 or not transactions or failed:
        raise BenchError(
            f"pgbench {' '.join(args)} against {target.name} failed (status {proc.returncode}):\n"
            f"{out.strip()[-3000:]}"
        )
    result = {
        "tps": _number(r"tps = ([\d.]+) \(without initial connection time\)", out),
        "latency_ms": _number(r"latency average = ([\d.]+) ms", out),
        "transactions": transactions,
    }
    if pid:
        result["cpu_us_per_tx"] = (after - before) * 1e6 / transactions
    return result
