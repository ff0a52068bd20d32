"""The C probes of tests/c, the physical limits (built by environments.build_probe):

  turbojpeg-raw  tests/c/tjrate.c: single-thread TurboJPEG full decode of every JPEG of the
                 corpus from memory (no crop, no resize, no PNG); links TurboJPEG alone
  libpng-raw     tests/c/pngrate.c on the PNG corpus: a bare single-thread libpng loop into RGB
                 and mx8's own PNG decode (mx8_decode_rgb, and decode + RandomResizedCrop) of the
                 same files in the same process, interleaved per image
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from typing import Any, Dict, List

from ..corpus import corpus_images


def _list(workdir: str, name: str, paths: List[str]) -> str:
    """A file of paths, one a line, as the probes read them."""
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        f.write("\n".join(paths) + "\n")
    return path


def run(spec: Dict[str, Any]) -> Dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        if spec["name"] == "turbojpeg-raw":
            return turbojpeg(spec["tjrate"], spec["corpus"], spec["repeats"], d)
        return pngrate(spec["pngrate"], spec["png_dir"], spec["repeats"], d)


def turbojpeg(exe: str, corpus: str, repeats: int, workdir: str) -> Dict[str, Any]:
    jpegs = [os.path.join(corpus, p) for p in corpus_images(corpus) if not p.lower().endswith(".png")]
    lst, warm = _list(workdir, "jpegs.txt", jpegs), _list(workdir, "warm.txt", jpegs[:64])
    subprocess.run([exe, warm, "1", "1"], check=True, capture_output=True)
    epochs = []
    for e in range(repeats):
        out = subprocess.run([exe, lst, "1", "1"], check=True, capture_output=True, text=True).stdout
        m = re.search(r"images=(\d+).*?: (\d+) img/s.*errors=(\d+)", out)
        if not m:
            raise RuntimeError(f"tjrate: unexpected output {out!r}")
        n, rate, errs = int(m.group(1)), float(m.group(2)), int(m.group(3))
        print(f"    run {e}: {out.strip()}", flush=True)
        epochs.append({"images": n, "rate": rate, "errors": errs, "seconds": n / rate})
    best = max(epochs, key=lambda r: r["rate"])
    return {"rate": best["rate"], "images": best["images"], "epochs": epochs, "first_batch_s": None,
            "config": {"jpegs": len(jpegs), "threads": 1, "note": "JPEG only, full decode, no crop/resize"}}


def pngrate(exe: str, png_dir: str, repeats: int, workdir: str) -> Dict[str, Any]:
    pngs = [os.path.join(png_dir, p) for p in corpus_images(png_dir)]
    lst = _list(workdir, "pngs.txt", pngs)
    # One run: its own warm-up pass (which also compares mx8's pixels with the bare loop's),
    # then `repeats` interleaved passes over every file.
    out = subprocess.run([exe, lst, str(max(1, repeats))], check=True, capture_output=True, text=True).stdout
    for line in out.strip().splitlines():
        print(f"    {line}", flush=True)
    m = re.search(r"pngrate: images=(\d+) reps=(\d+) libpng=([\d.]+) mx8_decode=([\d.]+) mx8_rrc=([\d.]+) "
                  r"ratio=([\d.]+) failed=(\d+) mismatched=(\d+)", out)
    if not m:
        raise RuntimeError(f"pngrate: unexpected output {out!r}")
    n, reps = int(m.group(1)), int(m.group(2))
    libpng, mx8_decode, mx8_rrc = float(m.group(3)), float(m.group(4)), float(m.group(5))
    failed, mismatched = int(m.group(7)), int(m.group(8))
    if failed:
        raise RuntimeError(f"pngrate: {failed} decodes failed")
    return {"rate": libpng, "images": n, "epochs": [{"images": n * reps, "rate": libpng}], "first_batch_s": None,
            "mx8_decode_rate": mx8_decode, "mx8_rrc_rate": mx8_rrc, "mx8_vs_libpng": mx8_decode / libpng,
            "pixel_mismatches": mismatched,
            "config": {"pngs": len(pngs), "threads": 1, "reps": reps, "interleaved": True,
                       "note": "full decode to RGB from memory, no crop/resize "
                               "(mx8_rrc: RandomResizedCrop 224 + flip)"}}
