"""mx8 side-by-side benchmark: one run, one corpus, the same cores for every contender.

Contenders (each in its own subprocess, so peak RSS and start-up are its own):
  mx8-train          mx8.Dataset(size=224, crop="random", flip=True): decode + RandomResizedCrop
                     + flip into uint8 NCHW batches of 256, threads = all cores
  mx8-train-t1       the same with threads=1: the summary gives the thread-scaling ratio
                     rate(mx8-train) / (N x rate(mx8-train-t1)), N = all cores
  mx8-eval           crop="center", resize 256 -> center 224
  mx8-no-crop-aware  mx8-train with crop_aware=False (decode whole JPEGs, then crop)
  torchvision-wN     ImageFolder + Pillow, RandomResizedCrop(224) + RandomHorizontalFlip +
                     PILToTensor, DataLoader(batch_size=256, num_workers=N) for N in --workers
  turbojpeg-raw      the physical-limit probe tests/c/tjrate.c: single-thread TurboJPEG
                     full decode of every JPEG (no crop, no resize, no PNG) from memory
  libpng-raw         tests/c/pngrate.c on a PNG corpus (--png-count images of the corpus, converted
                     to PNG with Pillow under .cache/): a bare single-thread libpng decode loop into
                     RGB, and mx8's own PNG decode (mx8_decode_rgb) of the same files in the same
                     process, interleaved; the summary gives the ratio mx8 / libpng
  mx8-png            mx8.Dataset over that PNG folder, crop="random" 224 + flip, threads = all cores

Every contender gets a warm-up pass over a few batches, then is timed over the whole corpus
(--repeats epochs, the best one counts). The table gives images/s, the ratio to the best
torchvision setting and to raw TurboJPEG (one core, and N cores ideal = N x that rate), peak
RSS of the contender's largest process (getrusage via wait4), peak PSS summed over its
processes (DataLoader workers included; sampled) and the time to the first batch. Below it,
the thread-scaling ratio (when mx8-train and mx8-train-t1 ran) and the PNG table (another
corpus, so its own ratios: to the bare libpng loop). Results go to --out as bench.md,
bench.json (with "targets": thread_scaling, png) and, when matplotlib imports, bench.png.

torchvision: the torchvision wheel that matches this project's torch==2.13.0 does not import
beside it ("operator torchvision::nms does not exist"), so unless .venv has a working one, the
torchvision contenders run in a separate virtualenv .venv-baseline with torch==2.14.1 and
torchvision==0.29.1 (made on first use, ~5.5 GB; never in CI). The table names the versions.

Run from the repository root: python -m benchmarks.bench (or scripts/bench.py). The parts are
modules of the benchmarks package (see benchmarks/__init__.py). Quote ratios, not absolute
rates: the machines are shared and noisy.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
from typing import Any, Dict, List, Optional

from . import logger
from .child import run_contender
from .cli import entry, parser, setup
from .contenders import TORCHVISION
from .corpus import corpus_images, ensure_packed, ensure_png_corpus
from .environments import BASELINE_VENV, VENV_PY, baseline_python, build_probe
from .harness import load_note, loadavg
from .report import PNG_CONTENDERS, render_bench, summarise, targets, write, write_chart

TV_WORKERS = [0, 1, 2, 3, 4]
MX8_CONTENDERS = ["mx8-train", "mx8-train-t1", "mx8-eval", "mx8-no-crop-aware"]
log = logger("bench")


def select(only: Optional[str], workers: List[int]) -> List[str]:
    tv = [f"{TORCHVISION}{w}" for w in workers]
    everything = MX8_CONTENDERS + tv + ["turbojpeg-raw"] + PNG_CONTENDERS
    if not only:
        return everything
    chosen: List[str] = []
    for item in only.split(","):
        item = item.strip()
        group = {"mx8": MX8_CONTENDERS, "torchvision": tv, "turbojpeg": ["turbojpeg-raw"],
                 "png": PNG_CONTENDERS}.get(item)
        names = group or ([item] if item in everything else None)
        if names is None:
            raise SystemExit(f"bench: --only {item!r}: not one of {', '.join(everything)} "
                             "(or the groups mx8, torchvision, turbojpeg, png)")
        chosen += [n for n in names if n not in chosen]
    return chosen


def run_all(names: List[str], spec: Dict[str, Any], tv_python: Optional[str], timeout: float,
            tmpdir: str) -> List[Dict[str, Any]]:
    """Runs the contenders one after another, each in its own process."""
    # The probes are built before they run: the build is not in their RSS.
    spec = dict(spec, tjrate=build_probe("tjrate", tmpdir) if "turbojpeg-raw" in names else None,
                pngrate=build_probe("pngrate", tmpdir) if "libpng-raw" in names else None)
    results = []
    for name in names:
        s = dict(spec, name=name, packed=spec["png_dir"] if name == "mx8-png" else spec["packed"])
        results.append(run_contender(s, tv_python if name.startswith(TORCHVISION) else VENV_PY, timeout, log))
    return results


def notes(meta: Dict[str, Any], results: List[Dict[str, Any]]) -> None:
    n, ran = meta["cores"], {r["name"] for r in results}
    meta["notes"].append(load_note(meta["loadavg_start"], meta["loadavg_end"], n))
    tv = [r for r in results if r["name"].startswith(TORCHVISION) and not r.get("error")]
    if tv:
        v = tv[0]["versions"]
        meta["notes"].append(f"torchvision baseline: torch {v['torch']}, torchvision {v['torchvision']}, "
                             f"Pillow {v['pillow']} ({v['python']})")
    mx = next((r for r in results if r["name"].startswith("mx8") and not r.get("error")), None)
    if mx:
        meta["notes"].append(f"mx8 {mx['versions']['mx8']} on torch {mx['versions']['torch']}, {n} decode threads"
                             + (" (mx8-train-t1: 1)" if "mx8-train-t1" in ran else "")
                             + ", DataLoader(batch_size=None, num_workers=0)")
    if "mx8-train-t1" in ran:
        meta["notes"].append("mx8-train-t1: mx8-train with threads=1; thread scaling = rate(mx8-train) / "
                             f"({n} x rate(mx8-train-t1)); both from this run, one after the other")
    if ran & set(PNG_CONTENDERS):
        meta["notes"].append("PNG: libpng-raw = tests/c/pngrate.c, a bare one-thread libpng loop (png_read_image "
                             "into RGB, from memory); mx8-png-decode-t1 / mx8-png-rrc-t1 = mx8's decode (and "
                             "decode + RandomResizedCrop 224) of the same files in the same process, interleaved; "
                             f"mx8-png = mx8.Dataset over the PNG folder, {n} threads")
    if "turbojpeg-raw" in ran:
        meta["notes"].append("raw TurboJPEG = tests/c/tjrate.c: one thread, full decode of the JPEGs only "
                             "(no crop, resize or PNG), from memory: the per-core physical limit")
    meta["notes"].append("peak RSS: the contender's largest process (getrusage/wait4); RSS after imports: "
                         "the same process before any work (torch and its libraries); peak PSS: all its "
                         "processes, DataLoader workers included (sampled every 0.2 s)")
    if tv and "+cu" in tv[0]["versions"]["torch"]:
        meta["notes"].append("the torchvision baseline's torch is a CUDA build (CPU used): its libraries "
                             "inflate RSS; compare peak RSS minus RSS after imports")
    meta["notes"].append("first batch: from creating the Dataset/DataLoader (workers included) to the first batch")


def run(a: argparse.Namespace) -> int:
    names = select(a.only, a.workers)
    meta = setup(a, " ".join(["python -m benchmarks.bench"] + sys.argv[1:]))
    meta.update(cpu=platform.processor() or platform.machine(), python=sys.version.split()[0])
    corpus = meta["corpus"]
    spec: Dict[str, Any] = {"repeats": meta["repeats"], "warmup": meta["warmup_batches"], "corpus": corpus,
                            "packed": ensure_packed(corpus) if set(names) & set(MX8_CONTENDERS) else None,
                            "png_dir": None}
    if set(names) & set(PNG_CONTENDERS):
        spec["png_dir"] = png_dir = ensure_png_corpus(corpus, a.png_count or (64 if a.quick else 1000))
        pngs = corpus_images(png_dir)
        meta["png_corpus"] = {"dir": png_dir, "images": len(pngs),
                              "mb": sum(os.path.getsize(os.path.join(png_dir, p)) for p in pngs) / 1e6}
    tv_python = None
    if any(n.startswith(TORCHVISION) for n in names):
        ci = os.environ.get("CI", "").lower() in ("1", "true")
        tv_python = baseline_python(allow_create=not a.no_baseline_venv and not ci)
        if tv_python is None:
            why = "CI" if ci else "--no-baseline-venv"
            log(f"torchvision baseline skipped: no importable torchvision in .venv and no {BASELINE_VENV} ({why})")
            meta["notes"].append("torchvision baseline skipped: no working torchvision available")
            names = [n for n in names if not n.startswith(TORCHVISION)]

    tmpdir = tempfile.mkdtemp(prefix="mx8-bench-")
    try:
        results = run_all(names, spec, tv_python, a.timeout or (600 if a.quick else 3600), tmpdir)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    meta["loadavg_end"] = list(loadavg())
    notes(meta, results)
    rows = summarise(results, meta["cores"])
    meta["targets"] = targets(results, meta["cores"])
    write(a.out, "bench", render_bench(rows, meta), {"meta": meta, "results": rows, "targets": meta["targets"]},
          log, chart=lambda path: write_chart(rows, path))
    return 1 if any(r.get("error") for r in results) else 0


def build_parser() -> argparse.ArgumentParser:
    p = parser("python -m benchmarks.bench", __doc__)
    p.add_argument("--only", metavar="NAME[,NAME]",
                   help="run only these contenders: mx8-train, mx8-train-t1, mx8-eval, mx8-no-crop-aware, "
                        "torchvision-wN, turbojpeg-raw, libpng-raw, mx8-png, or the groups mx8, torchvision, "
                        "turbojpeg, png")
    p.add_argument("--png-count", type=int,
                   help="images of the corpus converted to PNG for the png contenders (default 1000; 64 with --quick)")
    p.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=TV_WORKERS,
                   help="torchvision DataLoader num_workers settings to try (default 0,1,2,3,4)")
    p.add_argument("--timeout", type=float, help="seconds per contender (default 3600; 600 with --quick)")
    p.add_argument("--no-baseline-venv", action="store_true",
                   help=f"do not create {os.path.basename(BASELINE_VENV)} for torchvision; skip it instead")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    return entry("benchmarks.bench", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
