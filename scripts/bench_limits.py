#!/usr/bin/env python3
"""What one sample costs at mx8's default limits: CPU seconds and peak memory above a normal
photo, for the largest valid images the defaults let through.

    .venv/bin/python scripts/bench_limits.py [--out DIR] [--size 224]

Each case is one image in its own ImageFolder, read by a fresh process (so peak RSS is that
sample's): a normal photo from `mx8 demo-data`, baseline JPEGs (4:2:0, 4:4:4) at their pixel
limit (10^8), and progressive JPEGs and a PNG at the limit for images decoded whole (3*10^7). The budget
issue 11 sets is about 1 s of CPU and 300 MB above a normal photo (docs/performance.md).
Needs Pillow and numpy (the `demo` extra)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time
import mx8
root, size, crop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ds = mx8.Dataset(root, batch_size=1, size=size, crop=crop, threads=1, shuffle=False, pin_memory=False)
r0 = resource.getrusage(resource.RUSAGE_SELF)
it = iter(ds)
err = None
try:
    for _ in it:
        pass
except mx8.Error as e:
    err = f"{type(e).__name__}: {e}"
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"cpu_s": r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime,
                  "rss_before_mb": r0.ru_maxrss / 1024, "rss_peak_mb": r1.ru_maxrss / 1024, "error": err}))
"""


def _photo_like(w: int, h: int):
    """A smooth, photo-like RGB image (upscaled noise): compresses like a photo, not a flat fill."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (max(h // 16, 1), max(w // 16, 1), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.BILINEAR)


def _cases(out: str):
    """(name, folder) for each case, writing the images once."""
    cases = []

    def write(name: str, save) -> None:
        d = os.path.join(out, name, "c")
        if not os.path.isdir(d):
            os.makedirs(d + ".tmp", exist_ok=True)
            save(os.path.join(d + ".tmp", "x"))
            os.rename(d + ".tmp", d)
        cases.append((name, os.path.dirname(d)))

    def photo(path: str) -> None:
        demo = os.path.join(out, "_demo")
        if not os.path.isdir(demo):
            subprocess.run([sys.executable, "-m", "mx8", "demo-data", demo, "--count", "8", "--seed", "0", "-q"],
                           check=True)
        jpgs = sorted(os.path.join(r, f) for r, _, fs in os.walk(demo) for f in fs if f.endswith(".jpg"))
        with open(jpgs[0], "rb") as src, open(path + ".jpg", "wb") as dst:
            dst.write(src.read())

    write("photo (demo-data JPEG)", photo)
    # 10^8 pixels: the baseline JPEG limit; 3*10^7: that of images decoded whole.
    for label, side, kw in (("JPEG 10^8 px 4:2:0", 10_000, {"subsampling": 2}),
                            ("JPEG 10^8 px 4:4:4", 10_000, {"subsampling": 0}),
                            ("progressive JPEG 3*10^7 px 4:2:0", 5477, {"subsampling": 2, "progressive": True}),
                            ("progressive JPEG 3*10^7 px 4:4:4", 5477, {"subsampling": 0, "progressive": True})):
        write(label, lambda p, side=side, kw=kw: _photo_like(side, side).save(p + ".jpg", "JPEG", quality=90, **kw))
    write("PNG 3*10^7 px RGB", lambda p: _photo_like(5477, 5477).save(p + ".png", "PNG", compress_level=1))
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "mx8-bench-limits"),
                    help="where the images are written (kept between runs)")
    ap.add_argument("--size", type=int, default=224, help="output size")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for name, root in _cases(args.out):
        for crop in ("random", "center"):
            p = subprocess.run([sys.executable, "-c", CHILD, root, str(args.size), crop], capture_output=True,
                               text=True, check=True)
            r = json.loads(p.stdout.strip().splitlines()[-1])
            rows.append((name, crop, r))
    # Each process's growth while it reads its one sample, less the normal photo's growth.
    grow = lambda r: r["rss_peak_mb"] - r["rss_before_mb"]  # noqa: E731
    base = {crop: grow(r) for name, crop, r in rows if name.startswith("photo")}
    print(f"load average {os.getloadavg()[0]:.2f}; output {args.size}x{args.size}, one thread")
    print(f"{'case':34} {'crop':7} {'CPU s':>6} {'peak MB above photo':>20}  file MB")
    for name, crop, r in rows:
        folder = os.path.join(args.out, name, "c")
        mb = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)) / 2**20
        above = grow(r) - base[crop]
        note = f"  {r['error']}" if r["error"] else ""
        print(f"{name:34} {crop:7} {r['cpu_s']:6.2f} {above:20.0f}  {mb:7.1f}{note}")


if __name__ == "__main__":
    main()
