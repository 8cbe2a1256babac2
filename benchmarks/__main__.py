"""``python -m benchmarks``: run every workload on SQLite and PostgreSQL.

Prints one JSON object per line and workload on stdout; progress goes to
stderr. Exits with status 1 if a target is not met (``--no-fail`` keeps 0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import typing as t

from . import accrual
from . import balance
from . import expiry
from . import redeem
from .harness import Bench
from .harness import log
from .harness import Result

ENGINES = ("sqlite", "postgresql")
#: Environment variables read for the PostgreSQL URL, in order.
POSTGRESQL_URL_VARIABLES = ("LOYALTY_BENCH_POSTGRESQL_URL", "LOYALTY_TEST_POSTGRESQL_URL")


class Workload(t.NamedTuple):
    """A workload: how to run it and its sizes in full and quick mode."""

    run: t.Callable[[Bench, t.Any], Result]
    full: t.Any
    quick: t.Any


WORKLOADS: dict[str, Workload] = {
    "accrual": Workload(
        accrual.run,
        accrual.Sizes(orders=1000, rounds=5, history=20_000),
        accrual.Sizes(orders=200, rounds=3, history=2_000),
    ),
    "balance": Workload(
        balance.run,
        balance.Sizes(small=10**2, large=10**6, reads=5000),
        balance.Sizes(small=10**2, large=10**5, reads=1000),
    ),
    "expiry": Workload(
        expiry.run,
        expiry.Sizes(lots=10**6, members=10**4, rounds=2),
        expiry.Sizes(lots=5 * 10**4, members=500, rounds=1),
    ),
    "redeem": Workload(
        redeem.run,
        redeem.Sizes(threads=16, attempts=150, members=4, rounds=3),
        redeem.Sizes(threads=16, attempts=30, members=4, rounds=2),
    ),
}


def parse_args(argv: t.Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark flask-loyalty against raw DB-API code doing the same writes.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute in all)")
    parser.add_argument(
        "--engine",
        action="append",
        choices=ENGINES,
        help="engine to run on; repeat for several (default: both)",
    )
    parser.add_argument(
        "--workload",
        action="append",
        choices=list(WORKLOADS),
        help="workload to run; repeat for several (default: all)",
    )
    parser.add_argument(
        "--postgresql-url",
        default=None,
        help="SQLAlchemy URL of a PostgreSQL database (default: $LOYALTY_BENCH_POSTGRESQL_URL, "
        "then $LOYALTY_TEST_POSTGRESQL_URL); its bench_* tables are dropped and re-created",
    )
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even if a target is not met")
    return parser.parse_args(argv)


def postgresql_url(given: str | None) -> str | None:
    """The PostgreSQL URL from the option or the environment, or ``None``."""
    if given:
        return given
    for name in POSTGRESQL_URL_VARIABLES:
        if os.environ.get(name):
            return os.environ[name]
    return None


def run_engine(engine: str, url: str, names: t.Sequence[str], quick: bool) -> list[Result]:
    """Run the named workloads on one engine, printing each result as it comes."""
    bench = Bench(engine, url)
    results = []
    try:
        for name in names:
            workload = WORKLOADS[name]
            log(f"{engine}: {name} ...")
            started = time.perf_counter()
            result = workload.run(bench, workload.quick if quick else workload.full)
            log(f"{engine}: {name} done in {time.perf_counter() - started:.1f}s")
            # How busy the machine was, to judge the figures by.
            print(json.dumps({**result.as_dict(), "load_average": round(os.getloadavg()[0], 2)}), flush=True)
            results.append(result)
    finally:
        bench.close()
    return results


def main(argv: t.Sequence[str] | None = None) -> int:
    """Run the benchmarks; return the exit status."""
    args = parse_args(argv)
    engines = args.engine or list(ENGINES)
    names = args.workload or list(WORKLOADS)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="loyalty-bench-") as tmp:
        for engine in engines:
            if engine == "sqlite":
                url: str | None = f"sqlite:///{os.path.join(tmp, 'bench.sqlite')}"
            else:
                url = postgresql_url(args.postgresql_url)
                if url is None:
                    log(
                        "postgresql: skipped, no database given: pass --postgresql-url or set "
                        + " or ".join(POSTGRESQL_URL_VARIABLES)
                    )
                    continue
            results += run_engine(engine, url, names, args.quick)
    missed = [f"{r.engine}/{r.workload}" for r in results if not r.met]
    if missed:
        log("targets not met: " + ", ".join(missed))
    return 1 if missed and not args.no_fail else 0


if __name__ == "__main__":
    sys.exit(main())
