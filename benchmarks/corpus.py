"""The benchmarks' data, all cached under .cache/ and made once:

- the real-photo corpus: `mx8 demo-data --count N --classes 100 --seed 0` (scikit-image's
  photographs) in .cache/bench-demo-N;
- its packed copy (mx8.pack) in .cache/bench-packed/<name>-<hash>;
- a PNG corpus (images of it converted with Pillow) in .cache/bench-png/<name>-<hash>-<count>;
- each peer loader's on-disk format (write_once) under .cache/peers/.

Packing and the PNG conversion run in a child (benchmarks.child.run_task) with .venv's
Python: the parent never imports mx8, torch or Pillow.
"""
from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import CACHE, logger
from .child import run_task
from .environments import VENV_PY

log = logger("bench")


def build_corpus(count: int, python: str = VENV_PY) -> str:
    """The cached real-photo ImageFolder of `count` images in 100 classes (demo-data, seed 0)."""
    out = os.path.join(CACHE, f"bench-demo-{count}")
    if os.path.isdir(out):  # demo-data renames a finished folder into place
        return out
    log(f"making a {count}-image real-photo corpus -> {out} (about {count // 150 + 5}s)")
    subprocess.run([python, "-m", "mx8", "demo-data", out, "--count", str(count), "--classes", "100", "--seed", "0",
                    "--quiet"], check=True)
    return out


def corpus_images(corpus: str) -> List[str]:
    """Relative paths of the images of an ImageFolder, sorted."""
    out = []
    for d, _, files in os.walk(corpus):
        for f in files:
            if f.lower().endswith((".jpg", ".jpeg", ".png")):
                out.append(os.path.relpath(os.path.join(d, f), corpus))
    return sorted(out)


def describe(corpus: str) -> Dict[str, Any]:
    """The corpus line of a report: path, images, JPEGs, MB. Exits when there are no images."""
    images = corpus_images(corpus)
    if not images:
        raise SystemExit(f"no images under {corpus}")
    return {"corpus": corpus, "images": len(images),
            "jpegs": sum(1 for p in images if not p.lower().endswith(".png")),
            "corpus_mb": sum(os.path.getsize(os.path.join(corpus, p)) for p in images) / 1e6}


def samples(corpus: str) -> List[Tuple[str, int]]:
    """(relative path, label) of the ImageFolder, labels by sorted class folder."""
    paths = corpus_images(corpus)
    classes = sorted({os.path.dirname(p) for p in paths})
    idx = {c: i for i, c in enumerate(classes)}
    return [(p, idx[os.path.dirname(p)]) for p in paths]


def cache_dir(kind: str, corpus: str, suffix: str = "") -> str:
    """.cache/<kind>/<corpus name>-<hash of its real path><suffix>: one per corpus."""
    real = os.path.realpath(corpus)
    return os.path.join(CACHE, kind, f"{os.path.basename(real)}-{hashlib.sha1(real.encode()).hexdigest()[:10]}{suffix}")


def find_packed(count: int = 5000) -> Optional[str]:
    """The packed copy of bench-demo-<count> if a benchmark made one, else the quickstart's
    packed corpus; None if neither exists."""
    for pattern in (f"bench-packed/bench-demo-{count}-*", "quickstart-demo-packed-*"):
        for d in sorted(glob.glob(os.path.join(CACHE, pattern))):
            if os.path.exists(os.path.join(d, "_mx8", "manifest.tsv")):
                return d
    return None


def ensure_packed(corpus: str, python: str = VENV_PY) -> str:
    """mx8.pack the corpus once into .cache/bench-packed/ (reused while its sample count matches)."""
    out = cache_dir("bench-packed", corpus)
    run_task({"name": "pack", "corpus": corpus, "packed": out, "images": len(corpus_images(corpus))}, python)
    return out


def pack_task(spec: Dict[str, Any]) -> None:
    import mx8
    out = spec["packed"]
    if os.path.exists(os.path.join(out, "_mx8", "manifest.tsv")):
        try:
            if mx8.resolve(out).samples == spec["images"]:
                return
        except mx8.Error:
            pass
    log(f"packing {spec['corpus']} -> {out}")
    r = mx8.pack(spec["corpus"], out, progress=False)
    log(f"packed {r.samples} samples, {r.bytes / 1e6:.0f} MB, {r.shards} shard(s)")


def ensure_png_corpus(corpus: str, count: int, python: str = VENV_PY) -> str:
    """A PNG ImageFolder of `count` images of the corpus (every k-th, so every kind and class
    is in it), converted with Pillow's default PNG settings (grayscale JPEGs stay 8-bit gray,
    the corpus's PNGs are copied)."""
    out = cache_dir("bench-png", corpus, f"-{count}")
    if not os.path.exists(os.path.join(out, "_png_corpus.tsv")):
        run_task({"name": "png-corpus", "corpus": corpus, "png_dir": out, "count": count}, python)
    return out


def png_corpus_task(spec: Dict[str, Any]) -> None:
    from PIL import Image
    corpus, out, count = spec["corpus"], spec["png_dir"], spec["count"]
    images = corpus_images(corpus)
    chosen = images[::max(1, len(images) // count)][:count]
    log(f"converting {len(chosen)} images of {corpus} to PNG -> {out}")
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    lines = []
    for rel in chosen:
        src = os.path.join(corpus, rel)
        dst = os.path.join(tmp, os.path.splitext(rel)[0] + ".png")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if rel.lower().endswith(".png"):
            shutil.copyfile(src, dst)
        else:
            with Image.open(src) as im:
                im = im if im.mode in ("L", "RGB") else im.convert("RGB")
                im.save(dst, format="PNG")
        with Image.open(dst) as im:
            lines.append(f"{os.path.relpath(dst, tmp)}\t{im.mode}\t{im.width}x{im.height}\t{os.path.getsize(dst)}")
    with open(os.path.join(tmp, "_png_corpus.tsv"), "w") as f:
        f.write("path\tmode\tsize\tbytes\n" + "\n".join(lines) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def write_once(out: str, write: Callable[[str], None]) -> str:
    """Runs write(tmp) and renames tmp to `out` unless `out` is complete (out/.done); untimed."""
    if os.path.exists(os.path.join(out, ".done")):
        return out
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    t = time.perf_counter()
    write(tmp)
    os.replace(tmp, out)
    open(os.path.join(out, ".done"), "w").close()
    print(f"    wrote {out} in {time.perf_counter() - t:.1f}s (not timed)", flush=True)
    return out
