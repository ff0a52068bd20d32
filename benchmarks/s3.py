"""mx8's S3 read path against boto3 and awscrt, and mx8 over S3 against local disk: same
packed corpus, same cores, one run.

The S3 side is nginx on 127.0.0.1 serving the packed dataset under a bucket path
(benchmarks/s3_endpoint.py): a fast loopback "S3" that keeps connections open and serves
ranges without reading whole objects.

    .venv/bin/python -m benchmarks.s3 [--packed DIR] [--rounds 3] [--epochs 2]   (or scripts/bench_s3.py)

1. Raw reads (every byte of every shard, nothing decoded), the contenders alternating,
   best of --rounds each (benchmarks/contenders/s3_raw.py):
     boto3   ranged GETs of 8 MiB on 16 threads (one client, 16 pooled connections)
     awscrt  its S3 client (PyPI awscrt): one GET per shard, split into 8 MiB parts
     mx8     mx8.Dataset(decode=False): the engine's S3 reader, raw sample bytes in batches
   Prints MB/s and the ratios mx8/boto3 and mx8/awscrt (the target is >= 0.9 each).
2. The train path (decode + RandomResizedCrop 224 + flip, batches of 256) over S3 and from
   local disk, alternating: img/s and the S3/local ratio, with the requests per sample.

Needs nginx (apt-get install nginx-light); boto3 and awscrt (pip install boto3 awscrt) for
part 1 (a contender whose package is missing is left out and said so).
"""
from __future__ import annotations

import argparse
import functools
import sys
from typing import Any, Dict, List, Optional, Tuple

from . import BATCH, logger
from .contenders.s3_raw import READERS, Mx8Raw
from .corpus import find_packed
from .environments import use_project_venv
from .harness import alternate, cores, loadavg, ratio, timed_epochs
from .report import fmt
from .s3_endpoint import BUCKET, PREFIX, serve, shard_objects

log = logger("bench_s3")


def raw_reads(endpoint: str, packed: str, rounds: int, threads: int) -> None:
    objects = shard_objects(packed)
    mx8_raw = Mx8Raw(threads)
    readers = {"mx8": mx8_raw}
    for name, fn in READERS.items():
        try:
            __import__(name)
            readers[name] = fn
        except ImportError:
            log(f"{name}: not installed (pip install {name}); left out")
    total = sum(s for _, s in objects)
    log(f"raw reads: {len(objects)} shards, {total / 1e6:.0f} MB, {rounds} rounds, load average {loadavg()[0]:.2f}")
    runs = alternate({n: functools.partial(fn, endpoint, objects) for n, fn in readers.items()}, rounds,
                     log=lambda name, r, rate: log(f"round {r + 1} {name:7s} {rate / 1e6:7.0f} MB/s"))
    best = {n: max(v) for n, v in runs.items()}
    print(f"\n| raw read (best of {rounds}) | MB/s | mx8 / it |")
    print("|---|---:|---:|")
    for name in readers:
        print(f"| {name} | {best[name] / 1e6:.0f} | {fmt(ratio(best['mx8'], best[name]), '.2f')} |")
    st = mx8_raw.stats
    print(f"\nmx8: {st['reads']} GETs ({st['bytes_read'] / max(st['reads'], 1) / 1e6:.2f} MB each), latency ms "
          f"{st['s3_latency_ms']}; load average after {loadavg()[0]:.2f}\n", flush=True)


def train_pass(uri: str, epochs: int, threads: int, shuffle: bool) -> Tuple[float, Dict[str, Any]]:
    """The best of `epochs` epochs of the train path over `uri`, and that epoch's stats()."""
    import mx8
    ds = mx8.Dataset(uri, batch_size=BATCH, size=224, crop="random", flip=True, shuffle=shuffle, threads=threads)
    stats: List[Dict[str, Any]] = []

    def make_iter(epoch: int):
        ds.set_epoch(epoch)
        yield from ds
        stats.append(ds.stats())

    r = timed_epochs(make_iter, epochs, lambda b: len(b.sample_ids), log=None)
    best = max(range(len(r["epochs"])), key=lambda i: r["epochs"][i]["rate"])
    return r["rate"], stats[best]


def train_path(packed: str, epochs: int, threads: int, shuffle: bool) -> None:
    uris = {"local": packed, "s3 (nginx)": f"s3://{BUCKET}/{PREFIX}/"}
    passes: Dict[str, List[Tuple[float, Dict[str, Any]]]] = {n: [] for n in uris}

    def contender(name: str):
        def one() -> float:
            passes[name].append(train_pass(uris[name], epochs, threads, shuffle))
            return passes[name][-1][0]
        return one

    alternate({n: contender(n) for n in uris}, 2, log=lambda name, r, rate: log(f"{name:11s} {rate:7.0f} img/s"))
    best = {n: max(passes[n], key=lambda p: p[0])[0] for n in uris}
    st = max(passes["s3 (nginx)"], key=lambda p: p[0])[1]
    samples = st.get("images", 0) or 1
    print()
    print("| path | img/s | vs local |")
    print("|---|---:|---:|")
    for n in uris:
        print(f"| {n} | {best[n]:.0f} | {fmt(ratio(best[n], best['local']), '.2f')} |")
    print(f"\nS3: {st['reads']} ranged GETs for {samples} samples ({st['reads'] / samples:.3f} requests a sample, "
          f"{st['bytes_read'] / max(st['reads'], 1) / 1e6:.2f} MB a GET), {st['s3_requests']} HTTP requests, "
          f"{st['s3_retries']} retries; GET latency ms {st['s3_latency_ms']}; decode threads waited "
          f"{st['read_s']:.2f} s for bytes in all")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.s3", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--packed", default=find_packed(5000),
                   help="packed dataset directory (default: benchmarks.bench's packed 5000-image corpus, else the "
                        "quickstart's)")
    p.add_argument("--epochs", type=int, default=2, help="train-path epochs per contender run")
    p.add_argument("--rounds", type=int, default=3, help="raw-read rounds (each contender once a round)")
    p.add_argument("--skip-raw", action="store_true", help="only the train path")
    p.add_argument("--skip-train", action="store_true", help="only the raw reads")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--shuffle", action="store_true",
                   help="block-shuffled order (default: sequential, MX8_SHUFFLE's default, where "
                        "neighbouring samples coalesce into multi-MB GETs)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    use_project_venv("benchmarks.s3")
    if not a.packed:
        raise SystemExit("bench_s3: no packed corpus; run scripts/bench.py once or pass --packed")
    threads = a.threads or cores()
    with serve(a.packed) as endpoint:
        if not a.skip_raw:
            raw_reads(endpoint, a.packed, a.rounds, threads)
        if not a.skip_train:
            train_path(a.packed, a.epochs, threads, a.shuffle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
