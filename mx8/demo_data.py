"""A deterministic ImageNet-like ImageFolder cut from real photographs: ``mx8 demo-data``.

The quickstart, the tests and the benchmarks run on it, and a user can make one to try mx8
without a dataset of their own. The photographs are the ones scikit-image ships inside its
wheel (``skimage/data/``: astronaut, coffee, chelsea, rocket, motorcycle, retina, hubble and
others), so ``pip install scikit-image`` provides them on any OS; ``photos=`` takes a folder of
your own instead. skimage itself is never imported: only its data files are read.

Each sample is a random crop of a photograph, resized to an ImageNet-like size (mostly 500 px
on the long side, 4:3 or 3:2), given sensor grain (entropy drives decode cost; without it the
upscaled crops would be unrealistically cheap to decode) and encoded with the mix that real
datasets hold: JPEG quality 85-97 with 4:2:0 / 4:4:4 / 4:2:2 chroma, some progressive, some
grayscale, a few CMYK; and ~8% PNG (RGB, RGBA, palette, gray, 16-bit gray).

Every sample is derived from (seed, index) alone, so the output is the same for the same
arguments, however many processes make it (for one Pillow and numpy version: their resampler
and encoder define the bytes). The folder appears whole or not at all (it is written under
another name and renamed), so its existence is its completeness.
"""
from __future__ import annotations

import importlib.util
import io
import os
import random
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .errors import Error
from .progress import Progress

# Photographs among skimage/data/ (the rest are textures, scans, masks and synthetic images).
COLOR_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png",
                "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg")
GRAY_PHOTOS = ("camera.png", "coins.png", "moon.png", "grass.png", "gravel.png", "brick.png")
PHOTO_EXTS = (".jpg", ".jpeg", ".png")
INSTALL_HINT = "pip install scikit-image (or mx8[demo]), or pass photos=DIR with JPEG/PNG photographs of your own"


@dataclass(frozen=True)
class DemoSample:
    relpath: str
    nbytes: int
    width: int
    height: int
    format: str   # "jpeg" | "png"
    mode: str     # how it was encoded: "RGB 4:2:0", "RGB 4:2:0 progressive", "L", "CMYK", "P", "I;16", ...


@dataclass(frozen=True)
class DemoDataResult:
    out: str
    samples: List[DemoSample]

    @property
    def bytes(self) -> int:
        return sum(s.nbytes for s in self.samples)

    def mix(self) -> Dict[str, int]:
        """How many samples each encoding got, e.g. {"jpeg RGB 4:2:0": 880, "png P": 9}."""
        out: Dict[str, int] = {}
        for s in self.samples:
            k = f"{s.format} {s.mode}"
            out[k] = out.get(k, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def skimage_photo_dir() -> Optional[str]:
    """skimage/data/ of an installed scikit-image, found without importing it."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        d = os.path.join(loc, "data")
        if os.path.exists(os.path.join(d, COLOR_PHOTOS[0])):
            return d
    return None


def photo_paths(photos: Optional[str] = None) -> Tuple[List[str], List[str]]:
    """(color, gray) photograph paths: skimage's, or every image under ``photos``."""
    if photos is not None:
        found = sorted(os.path.join(d, f) for d, _, fs in os.walk(photos) for f in fs
                       if f.lower().endswith(PHOTO_EXTS))
        if not found:
            raise Error(f"demo-data: no .jpg/.jpeg/.png photographs under {photos!r}")
        return found, []
    d = skimage_photo_dir()
    if d is None:
        raise Error(f"demo-data needs real photographs: {INSTALL_HINT}")
    color = [os.path.join(d, f) for f in COLOR_PHOTOS if os.path.exists(os.path.join(d, f))]
    gray = [os.path.join(d, f) for f in GRAY_PHOTOS if os.path.exists(os.path.join(d, f))]
    return color, gray


def imagenet_size(rng: random.Random) -> Tuple[int, int]:
    """(width, height): most ImageNet images are 500 px on the long side, 4:3 or 3:2."""
    r = rng.random()
    if r < 0.70:
        long_side = 500
    elif r < 0.90:
        long_side = rng.randint(300, 499)
    else:
        long_side = rng.randint(501, 1024)
    aspect = rng.choice([4 / 3, 4 / 3, 4 / 3, 3 / 2, 3 / 2, 1.0, 16 / 9, 5 / 4])
    short_side = max(64, int(round(long_side / aspect)))
    return (long_side, short_side) if rng.random() < 0.75 else (short_side, long_side)


# -- one sample (runs in a worker process) -------------------------------------------------

_photos: Dict[str, object] = {}


def _load(path: str, mode: str):
    from PIL import Image
    key = f"{path}:{mode}"
    if key not in _photos:
        with Image.open(path) as im:
            _photos[key] = im.convert(mode)
    return _photos[key]


def _cut(src, w: int, h: int, rng: random.Random):
    """A random crop of ``src`` with the aspect of (w, h), resized to (w, h), maybe mirrored."""
    from PIL import Image
    scale = rng.uniform(0.35, 1.0)
    cw = max(1, int(src.width * scale))
    ch = max(1, int(cw * h / w))
    if ch > src.height:
        ch = max(1, int(src.height * scale))
        cw = max(1, min(src.width, int(ch * w / h)))
    x0 = rng.randint(0, src.width - cw)
    y0 = rng.randint(0, src.height - ch)
    img = src.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.BILINEAR)
    return img.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else img


def _grain(img, sigma: float, seed: int):
    import numpy as np
    from PIL import Image
    a = np.asarray(img, np.float32)
    noise = np.random.default_rng(seed).normal(0.0, sigma, a.shape[:2] + (1,) * (a.ndim - 2))
    return Image.fromarray(np.clip(a + noise, 0, 255).astype(np.uint8), img.mode)


def _encode(img, rng: random.Random, gray_src: bool) -> Tuple[bytes, str, str]:
    """(bytes, format, mode) with the encoding mix of real datasets."""
    from PIL import Image
    buf = io.BytesIO()
    r = rng.random()
    if gray_src or r < 0.02:
        img.convert("L").save(buf, "JPEG", quality=rng.randint(85, 97))
        return buf.getvalue(), "jpeg", "L"
    if r < 0.025:
        img.convert("CMYK").save(buf, "JPEG", quality=rng.randint(85, 95))
        return buf.getvalue(), "jpeg", "CMYK"
    if r < 0.105:
        mode = rng.choices(["RGB", "RGBA", "P", "L", "I;16"], weights=[8, 2, 2, 2, 1])[0]
        if mode == "P":
            out = img.convert("P", palette=Image.ADAPTIVE, colors=rng.choice([64, 256]))
        elif mode == "I;16":
            out = img.convert("L").convert("I").point(lambda v: v * 257).convert("I;16")
        else:
            out = img.convert(mode)
        out.save(buf, "PNG", compress_level=rng.randint(1, 9))
        return buf.getvalue(), "png", mode
    sub = rng.choices([2, 0, 1], weights=[88, 8, 4])[0]
    progressive = rng.random() < 0.03
    img.save(buf, "JPEG", quality=rng.randint(85, 97), subsampling=sub, progressive=progressive,
             optimize=rng.random() < 0.3)
    mode = "RGB " + {2: "4:2:0", 0: "4:4:4", 1: "4:2:2"}[sub] + (" progressive" if progressive else "")
    return buf.getvalue(), "jpeg", mode


def _make_one(args: Tuple[str, Sequence[str], Sequence[str], int, int, int]) -> DemoSample:
    out, color, gray, seed, index, classes = args
    rng = random.Random(f"mx8-demo-data:{seed}:{index}")
    gray_src = bool(gray) and rng.random() < 0.03
    src = _load(rng.choice(gray) if gray_src else rng.choice(color), "RGB")
    w, h = imagenet_size(rng)
    img = _grain(_cut(src, w, h, rng), rng.uniform(6.0, 18.0), rng.getrandbits(63))
    data, fmt, mode = _encode(img, rng, gray_src)
    rel = f"class_{index % classes:03d}/{index:06d}.{'jpg' if fmt == 'jpeg' else 'png'}"
    path = os.path.join(out, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return DemoSample(rel, len(data), w, h, fmt, mode)


# -- the whole folder ----------------------------------------------------------------------

def make_demo_data(out: str, *, count: int = 1000, classes: int = 10, seed: int = 0,
                   photos: Optional[str] = None, jobs: Optional[int] = None,
                   progress: Optional[bool] = None) -> DemoDataResult:
    """Write ``count`` images into ``out/class_NNN/NNNNNN.{jpg,png}`` (``classes`` folders).

    ``out`` is written through ``out + ".tmp"`` and renamed at the end, so an interrupted run
    leaves no half folder under ``out``; an existing ``out`` is an error. ``jobs`` worker
    processes (default: the CPU count) share the work; the bytes do not depend on it.
    """
    if count < 1 or classes < 1:
        raise Error(f"demo-data: count and classes must be >= 1 (got count={count}, classes={classes})")
    if os.path.exists(out):
        raise Error(f"demo-data: {out!r} already exists")
    try:
        import numpy  # noqa: F401
        import PIL  # noqa: F401
    except ImportError as e:
        raise Error(f"demo-data needs Pillow and numpy ({e}): pip install pillow numpy") from None
    color, gray = photo_paths(photos)
    tmp = out.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    work = [(tmp, color, gray, seed, i, classes) for i in range(count)]
    jobs = max(1, min(jobs or os.cpu_count() or 1, count))
    samples: List[DemoSample] = []
    with Progress(count, "demo-data", unit="images", enabled=progress) as bar:
        def collect(results: Iterable[DemoSample]) -> None:
            for s in results:
                samples.append(s)
                bar.update(1, s.nbytes)
        if jobs == 1:
            collect(map(_make_one, work))
        else:
            with ProcessPoolExecutor(jobs) as pool:
                collect(pool.map(_make_one, work, chunksize=16))
    os.replace(tmp, out)
    return DemoDataResult(out, samples)
