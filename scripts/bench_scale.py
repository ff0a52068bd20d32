#!/usr/bin/env python3
"""One rank's epoch over S3 at world sizes 1..16 behind a per-request delay: GETs a sample,
MB a GET, bytes fetched / delivered, samples/s: `python -m benchmarks.scale` (benchmarks/
scale.py) with these arguments. Run it from the repository root; --help lists the options."""
from _benchmark_entry import run

run("benchmarks.scale")
