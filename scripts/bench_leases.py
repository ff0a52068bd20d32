#!/usr/bin/env python3
"""Lease mode's overhead against a plain mx8.Dataset:
`python -m benchmarks.leases` (benchmarks/leases.py) with these arguments.
Run it from the repository root; --help lists the options."""
from _benchmark_entry import run

run("benchmarks.leases")
