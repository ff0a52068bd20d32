#!/usr/bin/env python3
"""mx8 against the peer data loaders (DALI, FFCV, SPDL, LitData, Streaming, WebDataset):
`python -m benchmarks.peers` (benchmarks/peers.py) with these arguments.
Run it from the repository root; --help lists the options."""
from _benchmark_entry import run

run("benchmarks.peers")
