"""`bench/relay-ab`: the relay's CPU per transaction under several set-ups side by side. One private
PostgreSQL and pgbench tables as in bench/run; then each variant named on the command line
(pgbouncer or a maschera binary, reaching PostgreSQL over TCP or its Unix-domain socket, with a
given number of worker threads) runs `pgbench -S` at 8 clients in interleaved rounds with direct
PostgreSQL, and the medians are printed. For before/after questions bench/run's fixed targets
cannot ask (e.g. TCP against socket upstream with the same binary). Not for: BENCHMARKS.md."""

import argparse
import os
import statistics
import sys

from .cases import Target
from .main import PROXY_USER
from .pgbench import pgbench
from .procs import BenchError, find_tool, run
from .servers import Login, Maschera, Pgbouncer, PostgreSQL, run_guarded


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/relay-ab", description=__doc__.split("\n\n")[0])
    p.add_argument("variants", nargs="+", metavar="VARIANT",
                   help="NAME=pgbouncer:tcp|unix[:transaction] or "
                   "NAME=BINARY:tcp|unix[:WORKERS][:transaction] (`transaction`: transaction pooling, "
                   "pools of 20), e.g. bouncer=pgbouncer:unix old=/path/maschera-main:tcp "
                   "new=target/release/maschera:unix:1 pooled=target/release/maschera:unix:transaction")
    p.add_argument("--modes", default="simple,extended,prepared", help="pgbench -M modes")
    p.add_argument("--clients", type=int, default=8, help="pgbench clients (default 8)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--seconds", type=int, default=5, help="seconds per pgbench run (default 5)")
    return p.parse_args(argv)


def start(variant, pg, owner, bouncer_bin, started):
    name, _, spec = variant.partition("=")
    what, *rest = spec.split(":")
    transaction = "transaction" in rest
    rest = [r for r in rest if r != "transaction"]
    upstream = rest[0] if rest else "tcp"
    if upstream not in ("tcp", "unix") or not name:
        raise BenchError(f"cannot read the variant `{variant}`")
    host = pg.upstream_host(upstream)
    if what == "pgbouncer":
        server = Pgbouncer(bouncer_bin, pg, [owner], ["bench"], upstream_host=host,
                           pool_mode="transaction" if transaction else "session")
        user = (owner.user, owner.password)
    else:
        workers = int(rest[1]) if len(rest) > 1 else None
        extra = '\n[pool]\nmode = "transaction"\nsize = 20\n' if transaction else ""
        server = Maschera(what, owner, [PROXY_USER], extra=extra, upstream_host=host,
                          worker_threads=workers)
        user = PROXY_USER
    started.append(server)
    return Target(name, Login(server.port, user[0], user[1], "bench"), server.pid)


def main(argv):
    o = parse_args(argv)

    def body(started):
        bouncer_bin = find_tool("pgbouncer", "pgbouncer")
        pg = PostgreSQL()
        started.append(pg)
        owner = pg.create_owner("bench", "bench-" + os.urandom(6).hex(), "bench")
        run(["pgbench", "-i", "-q", "-s", "10"], env=owner.env())
        targets = [Target("direct", owner)]
        targets += [start(v, pg, owner, bouncer_bin, started) for v in o.variants]
        modes = o.modes.split(",")
        results = {}
        for round_no in range(1, o.rounds + 1):
            for mode in modes:
                for t in targets:
                    r = pgbench(t, ["-S", "-M", mode, "-c", str(o.clients), "-j",
                                    str(min(o.clients, 2)), "-T", str(o.seconds)])
                    results.setdefault((mode, t.name), []).append(r)
            print(f"round {round_no} done, load average {os.getloadavg()[0]:.1f}", file=sys.stderr,
                  flush=True)
        print(f"pgbench -S, {o.clients} clients, {o.rounds} rounds x {o.seconds} s: median [min-max]")
        for mode in modes:
            base = results[(mode, "direct")]
            for t in targets:
                runs = results[(mode, t.name)]
                ratio = statistics.median(r["tps"] / b["tps"] for r, b in zip(runs, base))
                line = (f"{mode:9} {t.name:14} TPS {statistics.median(r['tps'] for r in runs):8.0f}"
                        f"  of direct {ratio:.2f}")
                if t.pid:
                    cpu = [r["cpu_us_per_tx"] for r in runs]
                    line += (f"  proxy CPU µs/tx {statistics.median(cpu):.1f} "
                             f"[{min(cpu):.1f}-{max(cpu):.1f}]")
                print(line, flush=True)
        return 0

    return run_guarded("bench/relay-ab", body)
