"""mx8 against the peer data loaders: the same train path through each, one run, same cores.

The train path, for every contender: decode + RandomResizedCrop(224) (scale 0.08-1, ratio 3/4-4/3)
+ random horizontal flip into uint8 NCHW batches of 256, on benchmarks.bench's corpus
(.cache/bench-demo-5000, or 512 images with --quick, or --corpus DIR), with as many
threads/workers as this process may use cores. Each contender runs in its own subprocess, so its
peak RSS and start-up are its own, measured as benchmarks.bench measures them (benchmarks.child:
wait4 rusage of the contender's largest process, PSS of all its processes sampled every 0.2 s,
time to first batch).

Contenders (benchmarks/contenders/, one module each):
  mx8-train     the reference row: mx8.Dataset(crop="random", flip=True), run with .venv's python
                exactly as benchmarks.bench runs it
  dali          NVIDIA DALI CPU pipeline: fn.readers.file + fn.decoders.image(device="cpu") +
                fn.random_resized_crop + fn.flip + fn.transpose(CHW), DALIGenericIterator
  ffcv          FFCV .beton (DatasetWriter, RGBImageField) + RandomResizedCropRGBImageDecoder
  spdl          SPDL: spdl.io demux/decode with an FFmpeg crop,scale,hflip filter, spdl.pipeline
  litdata       LitData: optimize() chunks of the raw image bytes, StreamingDataset +
                StreamingDataLoader, PIL decode + the torchvision transforms
  streaming     MosaicML Streaming: MDSWriter of the raw bytes, StreamingDataset + DataLoader,
                PIL decode + the torchvision transforms
  webdataset    tar shards written with webdataset.TarWriter, WebDataset + WebLoader, PIL decode
                + the torchvision transforms

The peers are installed into a separate virtualenv .venv-peers (made on first use) with
torch==2.13.0 (the CPU wheel this project uses) pinned first and kept by a constraints file: a
peer that wants another torch is reported, not given a multi-GB CUDA torch. torchvision does not
import beside torch 2.13.0, so "the torchvision transforms" are torchvision's
RandomResizedCrop.get_params + PIL crop/resize(BILINEAR) + flip + PILToTensor, copied into
benchmarks/contenders/pil_path.py: the same work as torchvision's PIL path.

A peer that cannot be installed or run is a row of the table with the reason (the pip error
line, the import error, the exception), never dropped. Each peer's datasets (.beton, MDS,
LitData chunks, tar shards) are written once under .cache/peers/ and reused; writing them is not
timed. Results go to --out (default bench-out/) as peers.md and peers.json (peers-quick.* with
--quick). Run from the repository root: python -m benchmarks.peers (or scripts/bench_peers.py).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Optional

from . import logger
from .child import run_contender
from .cli import entry, parser, setup
from .corpus import ensure_packed
from .environments import (IN_BASELINE, PEERS, PEERS_PY, VENV_PY, ensure_peer, ensure_peers_venv, peer_python,
                           pip_versions)
from .harness import loadavg
from .report import render_peers, write

CONTENDERS = ["mx8-train"] + list(PEERS)
log = logger("peers")


def select(only: Optional[str]) -> List[str]:
    if not only:
        return list(CONTENDERS)
    names = [s.strip() for s in only.split(",") if s.strip()]
    bad = [n for n in names if n not in CONTENDERS]
    if bad:
        raise SystemExit(f"bench_peers: --only {','.join(bad)}: not one of {', '.join(CONTENDERS)}")
    return names


def notes(meta: Dict[str, Any], names: List[str], results: List[Dict[str, Any]]) -> None:
    if os.path.exists(PEERS_PY):
        v = pip_versions(PEERS_PY)
        meta["peer_venv_packages"] = v
        meta["notes"].append(f"peers run in .venv-peers: torch {v.get('torch', '?')}, Pillow {v.get('pillow', '?')}, "
                             f"numpy {v.get('numpy', '?')}; mx8-train runs in .venv as in benchmarks.bench")
    if "streaming" in names:
        meta["notes"].append("streaming runs in .venv-baseline (torch 2.14.1 + torchvision 0.29.1, benchmarks.bench's "
                             "torchvision baseline): `import streaming` imports torchvision, which does not import "
                             "beside torch 2.13.0; it uses the real torchvision transforms")
    meta["notes"] += [
        "litdata and webdataset store the corpus files' bytes unchanged and decode with PIL, then apply "
        "torchvision's RandomResizedCrop get_params + PIL crop/resize(BILINEAR) + flip + PILToTensor, "
        "re-implemented on PIL in benchmarks/contenders/pil_path.py (same work as torchvision's PIL path); "
        "loader workers = cores",
        "dali and ffcv warm up over one whole untimed epoch (neither can stop mid-epoch; FFCV's numba "
        "compile happens there); the others over the warm-up batches of a short-lived loader",
        "ffcv re-encodes the images into its .beton (RGBImageField write_mode='jpg', quality 90): its JPEGs "
        "are not the corpus's bytes",
        "writing each peer's dataset format (.beton, MDS, LitData chunks, tar shards) is done once, untimed, "
        "under .cache/peers/",
        "peak RSS: the contender's largest process (getrusage/wait4); peak PSS: all its processes, workers "
        "included (sampled every 0.2 s); first batch: from creating the loader to its first batch",
        "quote ratios from one run: the machine is shared and noisy. 1-minute load average after each "
        "contender (this run's own load is about the core count): "
        + ", ".join(f"{r['name']} {r['loadavg_1m_after']:.1f}" for r in results if "loadavg_1m_after" in r),
    ]


def run(a: argparse.Namespace) -> int:
    names = select(a.only)
    meta = setup(a, " ".join(["python -m benchmarks.peers"] + sys.argv[1:]))
    spec: Dict[str, Any] = {"repeats": meta["repeats"], "warmup": meta["warmup_batches"], "corpus": meta["corpus"],
                            "packed": ensure_packed(meta["corpus"]) if "mx8-train" in names else None}
    needs_venv = any(n in PEERS and n not in IN_BASELINE for n in names)
    venv_why = ensure_peers_venv(allow_create=not a.no_install) if needs_venv else None
    results = []
    for name in names:
        python = VENV_PY
        if name in PEERS:
            why = (None if name in IN_BASELINE else venv_why) or ensure_peer(name, allow_install=not a.no_install)
            if why:
                log(f"{name}: not run: {why}")
                results.append({"name": name, "error": why, "rate": None})
                continue
            python = peer_python(name)
        r = run_contender(dict(spec, name=name), python, a.timeout, log)
        r["loadavg_1m_after"] = loadavg()[0]  # others' work on the same cores shows here
        results.append(r)
    notes(meta, names, results)
    stem = "peers-quick" if a.quick else "peers"
    write(a.out, stem, render_peers(results, meta), {"meta": meta, "results": results}, log)
    return 1 if any(r.get("error") for r in results) else 0


def build_parser() -> argparse.ArgumentParser:
    p = parser("python -m benchmarks.peers", __doc__)
    p.add_argument("--only", metavar="NAME[,NAME]", help=f"run only these: {', '.join(CONTENDERS)}")
    p.add_argument("--timeout", type=float, default=900, help="seconds per contender run (default 900)")
    p.add_argument("--no-install", action="store_true",
                   help="do not make .venv-peers or pip install missing peers; report them")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    return entry("benchmarks.peers", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
