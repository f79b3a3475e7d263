"""
Run every benchmark with its default settings, one after the other, each in its own process (``make bench``).

    python -m benchmarks.run_all [--only bench_mcts bench_cartpole ...]

Each benchmark rewrites its own section of ``benchmarks/results.md`` and its files under ``benchmarks/out/``. On two
CPU cores the whole set takes a few hours (the MuZero learning runs dominate); ``--only`` picks some.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence

#: In order of running time, shortest first.
BENCHMARKS = (
    "bench_wrappers",
    "bench_mcts",
    "bench_atari",
    "bench_atari_speedup",
    "bench_cartpole",
    "bench_tictactoe",
    "bench_memory",
    "bench_r2d2",
    "bench_popart_impala",
    "bench_ray",
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS), metavar="NAME")
    args = parser.parse_args(argv)
    failed = []
    for name in args.only:
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", f"benchmarks.{name}"])
        print(f"== {name}: exit {code} after {time.perf_counter() - start:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
