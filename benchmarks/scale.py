"""One rank's epoch over S3 at world sizes 1, 2, 4, 8, 16: what training at scale costs in
requests, with S3's per-request latency injected.

    .venv/bin/python -m benchmarks.scale [--samples 65536] [--delay-ms 20] [--worlds 1,2,4,8,16]
                                         [--before DIR]     (or scripts/bench_scale.py)

The dataset: --samples small real JPEGs (random 160x160 pictures, ~16 KB: the request count,
not the pixels, is what is measured), packed with mx8.pack and served as s3://bench/ds/ by
nginx on 127.0.0.1 (benchmarks/s3_endpoint.py), behind a proxy that holds every request
--delay-ms before passing it on (benchmarks/delay_proxy.py). For each world size W, rank 0
of W reads its share of a shuffled epoch as raw bytes (decode=False: the reads are what is
measured), in a process of its own; the rank's code path is the one a real rank runs (the
share is a pure function of rank, W and the epoch). Reported per W: GETs a sample, MB a GET,
bytes fetched / bytes delivered, samples/s.

--before DIR: an older checkout of mx8 with its extension built in place (python setup.py
build_ext --inplace); each measurement then runs for it too, alternating with this one.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

from . import BATCH, REPO, logger
from .corpus import CACHE
from .environments import VENV_PY, use_project_venv
from .harness import loadavg
from .s3_endpoint import BUCKET, PREFIX, serve

log = logger("bench_scale")

# One rank's epoch, run with the working directory at the checkout under test, so that its
# mx8 is the one imported.
CHILD = """
import json, sys, time
import mx8
world, connections = int(sys.argv[1]), int(sys.argv[2])
ds = mx8.Dataset(sys.argv[3], batch_size=%d, decode=False, shuffle=True, seed=0, rank=0, world_size=world,
                 s3_connections=connections)
t0, samples, delivered = time.monotonic(), 0, 0
for b in ds:
    samples += len(b.sample_ids)
    delivered += b.data.numel()
dt = time.monotonic() - t0
st = ds.stats()
print(json.dumps({"samples": samples, "seconds": dt, "gets": st["s3_requests"], "bytes_read": st["bytes_read"],
                  "delivered": delivered}))
""" % BATCH


def make_corpus(samples: int) -> str:
    """The packed dataset of `samples` small JPEGs, cached under .cache/bench-scale-<samples>/."""
    out = os.path.join(CACHE, f"bench-scale-{samples}", "packed")
    if os.path.exists(os.path.join(out, "_mx8", "manifest.tsv")):
        return out
    import random
    import shutil

    from PIL import Image

    import mx8
    src = os.path.join(CACHE, f"bench-scale-{samples}", "images")
    shutil.rmtree(src, ignore_errors=True)
    rng = random.Random(0)
    log(f"writing {samples} JPEGs into {src}")
    for i in range(samples):
        d = os.path.join(src, f"class_{i * 16 // samples:02d}")  # 16 classes, sorted
        os.makedirs(d, exist_ok=True)
        img = Image.frombytes("RGB", (160, 160), rng.randbytes(160 * 160 * 3))
        img.save(os.path.join(d, f"{i:07d}.jpg"), quality=75)
    mx8.pack(src, out + ".new", shard_mb=256, progress=True)
    os.replace(out + ".new", out)
    shutil.rmtree(src, ignore_errors=True)
    return out


def one_rank(checkout: str, world: int, connections: int) -> Dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=checkout)
    r = subprocess.run([VENV_PY, "-c", CHILD, str(world), str(connections), f"s3://{BUCKET}/{PREFIX}/"],
                       cwd=checkout, env=env, capture_output=True, text=True, timeout=1800)
    if r.returncode:
        raise SystemExit(f"bench_scale: rank 0 of {world} ({checkout}) failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def row(name: str, world: int, m: Dict[str, Any]) -> str:
    gets = max(m["gets"], 1)
    return (f"| {name} | {world} | {m['samples']} | {m['gets'] / m['samples']:.4f} | "
            f"{m['bytes_read'] / gets / 1e6:.2f} | {m['bytes_read'] / max(m['delivered'], 1):.3f} | "
            f"{m['samples'] / m['seconds']:.0f} |")


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=65536, help="samples in the dataset (default 65536)")
    ap.add_argument("--delay-ms", type=float, default=20.0, help="latency added to every request (default 20)")
    ap.add_argument("--worlds", default="1,2,4,8,16", help="world sizes, comma-separated")
    ap.add_argument("--connections", type=int, default=16, help="s3_connections of the rank (default 16)")
    ap.add_argument("--before", help="an older mx8 checkout, built in place, measured alternately")
    args = ap.parse_args(argv)
    worlds = [int(w) for w in args.worlds.split(",")]
    packed = make_corpus(args.samples)
    checkouts = {"mx8": REPO}
    if args.before:
        checkouts = {"before": os.path.abspath(args.before), "mx8": REPO}
    from .delay_proxy import DelayProxy
    with serve(packed) as endpoint:
        host, port = endpoint.rsplit("//", 1)[1].split(":")
        proxy = DelayProxy((host, int(port)), args.delay_ms / 1000)
        os.environ["AWS_ENDPOINT_URL"] = proxy.endpoint
        log(f"{args.samples} samples behind {args.delay_ms:g} ms a request, {args.connections} connections, "
            f"load average {loadavg()[0]:.2f}")
        results: Dict[str, Dict[int, Dict[str, Any]]] = {name: {} for name in checkouts}
        for world in worlds:
            for name, checkout in checkouts.items():  # alternating, world by world
                t0 = time.monotonic()
                results[name][world] = m = one_rank(checkout, world, args.connections)
                log(f"{name:6s} world {world:2d}: {row(name, world, m)} ({time.monotonic() - t0:.0f} s)")
        proxy.close()
    print(f"\n{args.samples} samples of ~{results['mx8'][worlds[0]]['delivered'] / 1e3 / max(results['mx8'][worlds[0]]['samples'], 1):.0f} KB, "
          f"one rank's shuffled epoch, raw bytes, {args.delay_ms:g} ms a request, {args.connections} connections; "
          f"load average {loadavg()[0]:.2f}\n")
    print("| mx8 | world | samples | GETs a sample | MB a GET | fetched / delivered | samples/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in checkouts:
        for world in worlds:
            print(row(name, world, results[name][world]))
    base = results["mx8"][worlds[0]]
    for world in worlds[1:]:
        m = results["mx8"][world]
        print(f"world {world}: GETs a sample {m['gets'] / m['samples'] / (base['gets'] / base['samples']):.2f}x "
              f"world {worlds[0]}'s")


if __name__ == "__main__":
    use_project_venv("benchmarks.scale")
    main(sys.argv[1:])
