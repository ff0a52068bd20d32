#!/usr/bin/env python3
"""S3 raw reads against boto3 and awscrt, and the train path over S3 against local disk:
`python -m benchmarks.s3` (benchmarks/s3.py) with these arguments.
Run it from the repository root; --help lists the options."""
from _benchmark_entry import run

run("benchmarks.s3")
