"""The ``mx8`` command line: ``mx8 pack``, ``mx8 demo-data``, ``mx8 inspect``, ``mx8 bench``; and ``mx8-pack-s3``
(the MX8 seed's packer, configured by MX8_PACK_IN / MX8_PACK_OUT)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import List, Optional

from .errors import Error


def _cmd_pack(a: argparse.Namespace) -> int:
    from .pack import pack
    t0 = time.monotonic()
    r = pack(a.src, a.out, shard_mb=a.shard_mb, label_mode=a.label_mode, shuffle=not a.no_shuffle,
             seed=a.seed, on_error="skip" if a.skip_bad else "raise", progress=not a.quiet,
             follow_symlinks=a.follow_symlinks, max_file_mb=a.max_file_mb)
    dt = time.monotonic() - t0
    print(f"packed {r.samples} samples ({r.bytes / 1e6:.1f} MB) into {r.shards} shard(s) in {dt:.1f}s")
    print(f"labels: {len(r.labels) if r.labels is not None else 'none'}")
    print(f"manifest_hash: {r.manifest_hash}")
    where = r.out if r.out.startswith("s3://") else os.path.abspath(r.out)
    print(f"pin with: {where}@sha256:{r.manifest_hash}")
    if r.s3_stats is not None:
        print(f"s3: {r.s3_stats['requests']} requests, {r.s3_stats['retries']} retries, "
              f"{r.s3_stats['bytes_in'] / 1e6:.1f} MB in, {r.s3_stats['bytes_out'] / 1e6:.1f} MB out")
    for rel, why in r.skipped:
        print(f"skipped {rel}: {why}", file=sys.stderr)
    reasons: dict = {}
    for rel, why in r.ignored:
        reasons.setdefault(why, []).append(rel)
    for why, rels in reasons.items():
        print(f"ignored {len(rels)} ({why}), first: {rels[0]}", file=sys.stderr)
    return 0


def _cmd_inspect(a: argparse.Namespace) -> int:
    from .resolve import resolve
    s = resolve(a.uri)
    info = {
        "uri": s.uri,
        "manifest_hash": s.manifest_hash,
        "pinned_uri": s.pinned_uri,
        "samples": s.samples,
        "labels": len(s.labels) if s.labels is not None else None,
        "locations": len(s.manifest.locations),
        "source": s.source + (" (manifest store)" if s.from_store else ""),
        "index_bytes": s.manifest.index_bytes,
        "index": "mapped (binary index, shared by the node's processes)" if s.manifest.mapped else "in memory",
    }
    if a.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:14} {v}")
    return 0


def _cmd_bench(a: argparse.Namespace) -> int:
    from .bench_harness import cores, load_note, loadavg, timed_epochs
    from .dataset import Dataset
    ds = Dataset(a.uri, batch_size=a.batch_size, size=a.size, crop=a.crop, flip=a.flip, threads=a.threads,
                 shuffle=True, crop_aware=not a.no_crop_aware, decode=not a.raw)
    load0 = loadavg()

    def make_iter(epoch: int):
        ds.set_epoch(epoch)
        return iter(ds)

    r = timed_epochs(make_iter, a.epochs, lambda batch: len(batch.sample_ids), warmup_iter=lambda: make_iter(0),
                     warmup_batches=a.warmup, end_warmup=ds.close)
    first = "-" if r["first_batch_s"] is None else f"{r['first_batch_s']:.2f}"
    print(f"best: {r['rate']:.0f} img/s ({ds.spec.threads} threads), first batch {first} s")
    print(load_note(load0, loadavg(), cores()))
    return 0


def _cmd_demo_data(a: argparse.Namespace) -> int:
    from .demo_data import make_demo_data
    t0 = time.monotonic()
    r = make_demo_data(a.out, count=a.count, classes=a.classes, seed=a.seed, photos=a.photos, jobs=a.jobs,
                       progress=False if a.quiet else None)
    n = len(r.samples)
    print(f"{n} images in {a.classes} classes, {r.bytes / 1e6:.1f} MB (mean {r.bytes / n / 1e3:.1f} KB) "
          f"-> {r.out} in {time.monotonic() - t0:.1f}s")
    for kind, k in r.mix().items():
        print(f"  {k:6d}  {kind}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mx8", description="mx8: fast image data loading for PyTorch.")
    sub = p.add_subparsers(dest="cmd", required=True)

    pk = sub.add_parser("pack", help="pack an ImageFolder into tar shards + manifest",
                        description="Pack the images under SRC into OUT/shards/*.tar and OUT/_mx8/manifest.tsv.")
    pk.add_argument("src", help="source ImageFolder: a directory or s3://bucket/prefix/")
    pk.add_argument("out", help="output dataset: a directory or s3://bucket/prefix/")
    pk.add_argument("--shard-mb", type=float, default=512, help="target shard size in MiB (default 512)")
    pk.add_argument("--label-mode", choices=("auto", "imagefolder", "none"), default="auto",
                    help="auto: labels from <label>/ folders when every image has one (default)")
    pk.add_argument("--no-shuffle", action="store_true", help="keep sorted order instead of shuffling records")
    pk.add_argument("--seed", type=int, default=0, help="seed of the record shuffle (default 0)")
    pk.add_argument("--skip-bad", action="store_true",
                    help="skip bad files (zero-length, unreadable, not an image, FIFOs and devices, links out "
                         "of SRC, too large; each listed with its reason) instead of failing")
    pk.add_argument("--follow-symlinks", action="store_true",
                    help="follow symbolic links that leave SRC (by default they are refused and listed)")
    pk.add_argument("--max-file-mb", type=float, default=1024, help="refuse files above this size (default 1024)")
    pk.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    pk.set_defaults(func=_cmd_pack)

    dd = sub.add_parser("demo-data", help="make an ImageNet-like ImageFolder from real photographs",
                        description="Write COUNT images (random crops of real photographs, ImageNet-like sizes, "
                                    "the JPEG/PNG encoding mix of real datasets) into OUT/class_NNN/. "
                                    "Deterministic in --seed. Photographs: scikit-image's (pip install "
                                    "scikit-image) or --photos DIR.")
    dd.add_argument("out", help="output directory (must not exist)")
    dd.add_argument("--count", type=int, default=1000, help="images to make (default 1000)")
    dd.add_argument("--classes", type=int, default=10, help="class folders (default 10)")
    dd.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    dd.add_argument("--photos", default=None, help="cut from the JPEG/PNG photographs under this directory")
    dd.add_argument("--jobs", type=int, default=None, help="worker processes (default: CPU count)")
    dd.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    dd.set_defaults(func=_cmd_demo_data)

    ins = sub.add_parser("inspect", help="resolve a dataset and print its snapshot")
    ins.add_argument("uri", help="dataset directory, manifest or s3://bucket/prefix/, optionally @sha256:<hash>")
    ins.add_argument("--json", action="store_true", help="print JSON")
    ins.set_defaults(func=_cmd_inspect)

    b = sub.add_parser("bench", help="measure mx8's own throughput on a dataset",
                       description="Iterate a dataset and print images/s of each epoch and the best, with "
                                   "the timing loop of the repository's benchmarks (mx8/bench_harness.py; "
                                   "scripts/bench.py there compares mx8 with other loaders).")
    b.add_argument("uri")
    b.add_argument("--batch-size", type=int, default=256)
    b.add_argument("--size", type=int, default=224)
    b.add_argument("--crop", choices=("random", "center", "none"), default="random")
    b.add_argument("--no-flip", dest="flip", action="store_false", help="no random horizontal flip")
    b.add_argument("--threads", type=int, default=None)
    b.add_argument("--epochs", type=int, default=2, help="timed epochs, the best counts (default 2)")
    b.add_argument("--warmup", type=int, default=0, metavar="BATCHES",
                   help="untimed batches before the timed epochs (default 0: epoch 0 includes start-up)")
    b.add_argument("--no-crop-aware", action="store_true", help="decode whole JPEGs, then crop")
    b.add_argument("--raw", action="store_true", help="read bytes only, no decode")
    b.set_defaults(func=_cmd_bench)
    return p


def _run(func, args) -> int:
    try:
        return func(args)
    except (Error, OSError, ValueError) as e:
        print(f"mx8: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mx8: interrupted", file=sys.stderr)
        return 130


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return _run(args.func, args)


def pack_s3_main(argv: Optional[List[str]] = None) -> int:
    """``mx8-pack-s3``: the MX8 seed's packer. Reads MX8_PACK_IN and MX8_PACK_OUT (local paths
    or s3:// prefixes), plus optional MX8_SHARD_MB, MX8_LABEL_MODE and MX8_SEED; S3 access
    from the AWS_* variables (see mx8/s3config.py)."""
    p = argparse.ArgumentParser(prog="mx8-pack-s3", description=pack_s3_main.__doc__)
    p.parse_args(argv)
    src, out = os.environ.get("MX8_PACK_IN"), os.environ.get("MX8_PACK_OUT")
    if not src or not out:
        print("mx8-pack-s3: set MX8_PACK_IN and MX8_PACK_OUT", file=sys.stderr)
        return 2
    args = argparse.Namespace(src=src, out=out, shard_mb=float(os.environ.get("MX8_SHARD_MB", "512")),
                              label_mode=os.environ.get("MX8_LABEL_MODE", "auto"), no_shuffle=False,
                              seed=int(os.environ.get("MX8_SEED", "0")), skip_bad=False, quiet=False,
                              follow_symlinks=False, max_file_mb=1024.0)
    return _run(_cmd_pack, args)


if __name__ == "__main__":
    sys.exit(main())
