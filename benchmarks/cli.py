"""What the side-by-side entry points (benchmarks.bench, benchmarks.peers) share on the
command line: the corpus and size options, --quick's sizes, the report's common metadata, main()."""
from __future__ import annotations

import argparse
import os
import time
from typing import Any, Callable, Dict, List, Optional

from . import BATCH, REPO
from .corpus import build_corpus, describe
from .environments import use_project_venv
from .harness import cores, loadavg


def parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """A parser whose description is the first paragraph of `doc` and whose epilog is the rest,
    with the options every side-by-side run has."""
    p = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0], epilog=doc.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", metavar="DIR",
                   help="ImageFolder to run on (default: a real-photo corpus made by `mx8 demo-data` "
                        "under .cache/bench-demo-N, --count images)")
    p.add_argument("--count", type=int, help="images in the generated corpus (default 5000; 512 with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="smoke-test size: 512 images, one timed epoch, 1 warm-up batch")
    p.add_argument("--repeats", type=int, help="timed epochs per contender, best counts (default 2; 1 with --quick)")
    p.add_argument("--out", default=os.path.join(REPO, "bench-out"), help="output directory (default bench-out/)")
    return p


def setup(a: argparse.Namespace, command: str) -> Dict[str, Any]:
    """The corpus (made if needed), repeats and warm-up batches of this run, as the report's
    metadata: date, corpus description, cores, load average at the start, an empty note list."""
    repeats = a.repeats or (1 if a.quick else 2)
    corpus = os.path.abspath(a.corpus) if a.corpus else build_corpus(a.count or (512 if a.quick else 5000))
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S"), **describe(corpus), "cores": cores(), "repeats": repeats,
            "warmup_batches": 1 if a.quick else 3, "batch_size": BATCH, "command": command, "notes": [],
            "loadavg_start": list(loadavg())}


def entry(module: str, p: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int],
          argv: Optional[List[str]]) -> int:
    """Parses the arguments (so --help needs no venv), re-runs in .venv's Python, runs."""
    a = p.parse_args(argv)
    use_project_venv(module)
    return run(a)
