"""What scripts/bench.py, bench_peers.py, bench_s3.py and bench_leases.py share: each runs one
entry point of the benchmarks package, `python -m benchmarks.NAME`, with its own arguments.

Python puts scripts/ (the running script's folder) on sys.path, so they import this module;
`-m` finds the package in the working directory, which must therefore be the repository root.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(module: str) -> None:
    """Replaces this process with `python -m module ARGS` (same Python, same arguments)."""
    if os.path.realpath(os.getcwd()) != os.path.realpath(ROOT):
        sys.exit(f"{sys.argv[0]}: run it from the repository root: cd {ROOT} && python -m {module} ...")
    os.execv(sys.executable, [sys.executable, "-m", module] + sys.argv[1:])
