#!/usr/bin/env python3
"""Resolving a manifest of millions of samples through its binary index against parsing it:
time, RSS, PSS/USS of one and of 8 processes: `python -m benchmarks.index` (benchmarks/
index.py) with these arguments. Run it from the repository root; --help lists the options."""
from _benchmark_entry import run

run("benchmarks.index")
