#!/usr/bin/env python3
"""The side-by-side benchmark (mx8, torchvision + Pillow, the raw decode probes):
`python -m benchmarks.bench` (benchmarks/bench.py) with these arguments.
Run it from the repository root; --help lists the options."""
from _benchmark_entry import run

run("benchmarks.bench")
