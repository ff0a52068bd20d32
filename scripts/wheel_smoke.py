#!/usr/bin/env python3
"""Smoke test of an *installed* mx8 wheel: import, pack, resolve, one decoded epoch.

Why: a wheel can build and still fail where it is installed (a vendored library missing from
mx8.libs, a console script not generated, a subpackage left out). This exercises every native
path a user touches first, with images of each kind the decoders handle.

What it does, in a temporary directory:
  1. makes ~40 small real-looking images with Pillow in an ImageFolder of 2 classes:
     JPEG 4:2:0, 4:4:4, progressive and grayscale; PNG RGB, RGBA and palette;
  2. mx8.pack(src, out), mx8.resolve(out);
  3. one epoch of mx8.Dataset(snap.pinned_uri, batch_size=8, size=64, crop="center") through
     torch.utils.data.DataLoader(ds, batch_size=None): every sample id exactly once, images
     uint8 (N, 3, 64, 64), labels matching the class folders;
  4. import mx8.leases and run `mx8 --help` (the console script).
It prints where mx8 and its native libraries were loaded from, and ends with "wheel smoke: OK".

Usage (from a directory outside the source tree, so the installed mx8 is imported):
    python scripts/wheel_smoke.py
Used by scripts/check_wheel_bare.sh (bare Debian chroot) and cibuildwheel's test-command.

Environment: none of its own (mx8 reads its usual MX8_* variables; keep them unset).
Needs: mx8 (installed), torch, pillow.
"""
import collections
import os
import random
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from PIL import Image, ImageDraw, ImageFilter

# (file name suffix, Pillow mode, save kwargs): every kind repeated until N_IMAGES.
KINDS = [
    (".jpg", "RGB", dict(format="JPEG", quality=90, subsampling=2)),                    # 4:2:0
    (".jpg", "RGB", dict(format="JPEG", quality=90, subsampling=0)),                    # 4:4:4
    (".jpg", "RGB", dict(format="JPEG", quality=85, progressive=True, optimize=True)),  # progressive
    (".jpg", "L", dict(format="JPEG", quality=90)),                                     # grayscale
    (".png", "RGB", dict(format="PNG")),
    (".png", "RGBA", dict(format="PNG")),
    (".png", "P", dict(format="PNG")),                                                   # palette
]
N_IMAGES = 42
CLASSES = ("cat", "dog")
BATCH, SIZE = 8, 64


def photo(rng: random.Random, w: int, h: int) -> Image.Image:
    """A photo-like RGB image: gradients, soft noise and a few blurred shapes."""
    r = Image.linear_gradient("L").rotate(rng.uniform(0, 360)).resize((w, h))
    g = Image.radial_gradient("L").resize((w, h))
    b = Image.effect_noise((w, h), rng.uniform(20, 60)).filter(ImageFilter.GaussianBlur(1.5))
    img = Image.merge("RGB", (r, g, b))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(2, 5)):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randint(8, w // 2 + 8), y0 + rng.randint(8, h // 2 + 8)
        draw.ellipse((x0, y0, x1, y1), fill=tuple(rng.randrange(256) for _ in range(3)))
    return img.filter(ImageFilter.GaussianBlur(0.8))


def make_imagefolder(root: str) -> collections.Counter:
    rng = random.Random(8)
    per_class = collections.Counter()
    for i in range(N_IMAGES):
        suffix, mode, kwargs = KINDS[i % len(KINDS)]
        cls = CLASSES[(i // len(KINDS)) % len(CLASSES)]
        img = photo(rng, rng.randint(48, 160), rng.randint(48, 160))
        if mode == "RGBA":
            img.putalpha(Image.radial_gradient("L").resize(img.size))
        elif mode == "P":
            img = img.quantize(colors=64)
        else:
            img = img.convert(mode)
        os.makedirs(os.path.join(root, cls), exist_ok=True)
        img.save(os.path.join(root, cls, f"img{i:03d}{suffix}"), **kwargs)
        per_class[CLASSES.index(cls)] += 1
    return per_class


def native_libs() -> list:
    """mx8's shared objects mapped into this process (Linux: /proc/self/maps), and any
    system libjpeg/libpng/libcurl (a wheel that vendors them should not need those)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "/" in line}
    except OSError:
        return []
    system = ("libjpeg", "libpng", "libcurl")
    return sorted(p for p in paths if "/mx8.libs/" in p or "/mx8/_core" in p or
                  (os.path.basename(p).startswith(system) and ".libs/" not in p))


def main() -> int:
    import torch

    import mx8
    import mx8._core
    import mx8.leases  # noqa: F401  (a subpackage: proves package discovery put it in the wheel)

    here = os.path.dirname(os.path.abspath(__file__))
    src_tree = os.path.dirname(here)
    core = os.path.abspath(mx8._core.__file__)
    print(f"mx8 {mx8.__version__} from {os.path.dirname(os.path.abspath(mx8.__file__))}")
    print(f"torch {torch.__version__}, python {sys.version.split()[0]}")
    if core.startswith(src_tree + os.sep) and os.path.isdir(os.path.join(src_tree, "csrc")):
        raise SystemExit(f"FAIL: mx8._core imported from the source tree ({core}), not the installed wheel")
    for p in native_libs():
        print(f"  loaded {p}")

    with tempfile.TemporaryDirectory(prefix="mx8-wheel-smoke-") as tmp:
        src, out = os.path.join(tmp, "src"), os.path.join(tmp, "out")
        per_class = make_imagefolder(src)
        res = mx8.pack(src, out, shard_mb=1, progress=False)
        assert res.samples == N_IMAGES and not res.skipped, res
        assert res.labels == list(CLASSES), res.labels
        snap = mx8.resolve(out)
        assert snap.manifest_hash == res.manifest_hash and snap.samples == N_IMAGES, snap
        print(f"packed {res.samples} images into {res.shards} shard(s); pinned {snap.pinned_uri}")

        ds = mx8.Dataset(snap.pinned_uri, batch_size=BATCH, size=SIZE, crop="center")
        loader = torch.utils.data.DataLoader(ds, batch_size=None)
        seen, labels, batches = [], collections.Counter(), 0
        for images, lab, ids in loader:
            n = len(ids)
            assert images.dtype == torch.uint8, images.dtype
            assert tuple(images.shape) == (n, 3, SIZE, SIZE), tuple(images.shape)
            assert lab.dtype == torch.int64 and ids.dtype == torch.int64 and len(lab) == n
            assert images.float().std() > 1, "decoded images are flat"
            seen += ids.tolist()
            labels.update(lab.tolist())
            batches += 1
        assert sorted(seen) == list(range(N_IMAGES)), f"sample ids delivered: {sorted(seen)}"
        assert labels == per_class, f"labels {dict(labels)} != class folders {dict(per_class)}"
        assert batches == len(ds) == -(-N_IMAGES // BATCH), (batches, len(ds))
        print(f"epoch: {len(seen)} samples in {batches} batches of uint8 (N, 3, {SIZE}, {SIZE}); "
              f"stats {ds.stats()}")

    cli = os.path.join(sysconfig.get_path("scripts"), "mx8")
    cli = cli if os.path.exists(cli) else shutil.which("mx8")
    assert cli, "console script `mx8` not installed"
    help_text = subprocess.run([cli, "--help"], check=True, capture_output=True, text=True).stdout
    assert "pack" in help_text and "inspect" in help_text, help_text
    print(f"{cli} --help: ok")
    print("wheel smoke: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
