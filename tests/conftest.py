"""Shared fixtures: a corpus of real photographs (``mx8.demo_data``, from scikit-image's
photographs) plus rarer image modes cut from it, packed once per session."""
from __future__ import annotations

import gc
import io
import os
import shutil
import struct
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache"


@pytest.fixture(autouse=True)
def _collect_earlier_tests_garbage():
    """Collects what earlier tests left in reference cycles before this one starts. A forked
    child (a DataLoader worker) may otherwise collect the parent's garbage itself: a master
    TCPStore from a lease test, freed there, joins its daemon thread, which a child does not
    have, and hangs the worker forever (seen once: test_loader_workers right after
    test_leases_faults)."""
    gc.collect()
    yield


def pytest_report_header(config):
    import mx8
    return f"mx8 {mx8.__version__} imported from {Path(mx8.__file__).parent}"


def pytest_configure(config):
    """Under scripts/test.sh the suite tests the installed wheel (MX8_TEST_INSTALLED names it):
    refuse to run if the source tree's mx8/ was imported instead."""
    if os.environ.get("MX8_TEST_INSTALLED"):
        import mx8
        where = Path(mx8.__file__).resolve()
        if REPO / "mx8" in where.parents:
            raise pytest.UsageError(f"MX8_TEST_INSTALLED is set but mx8 was imported from the source tree "
                                    f"({where}): run pytest from outside the repository")


def _png_rgb16(width: int, height: int, seed: int) -> bytes:
    """A 48-bit RGB PNG (Pillow cannot write one): rows of big-endian 16-bit samples."""
    raw = bytearray()
    for y in range(height):
        raw.append(0)  # filter type None
        for x in range(width):
            for c in range(3):
                v = (x * 997 + y * 131 + c * 4093 + seed * 7919) % 65536
                raw += struct.pack(">H", v)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b"")


def _extra_modes(root: Path) -> None:
    """One file of each mode, whatever the corpus's draw gave: CMYK, progressive, gray,
    4:4:4 and 4:2:2 JPEG; LA, 16-bit gray and RGB, palette-with-transparency and tiny PNGs.
    Cut from the corpus's own photos."""
    from PIL import Image
    photos = sorted(root.glob("class_000/*.jpg"))[:3]
    out = root / "class_extra"
    out.mkdir(exist_ok=True)
    base = Image.open(photos[0]).convert("RGB")
    base.convert("CMYK").save(out / "cmyk.jpg", "JPEG", quality=90)
    base.save(out / "progressive.jpg", "JPEG", quality=88, progressive=True)
    base.convert("L").save(out / "gray.jpg", "JPEG", quality=90)
    base.save(out / "q444.jpg", "JPEG", quality=95, subsampling=0)
    base.save(out / "q422.jpg", "JPEG", quality=95, subsampling=1)
    base.convert("LA").save(out / "la.png", "PNG")
    base.convert("I;16").save(out / "gray16.png", "PNG")
    pal = base.convert("P", palette=Image.ADAPTIVE, colors=64)
    pal.info["transparency"] = 3
    pal.save(out / "palette_trns.png", "PNG", transparency=3)
    (out / "rgb16.png").write_bytes(_png_rgb16(96, 64, 1))
    small = base.resize((120, 90))
    small.save(out / "tiny.png", "PNG")
    # A file without an image extension, as real folders have: pack lists it as ignored.
    (root / "README.txt").write_text("demo corpus for the mx8 tests\n")


@pytest.fixture(scope="session")
def corpus() -> Path:
    """An ImageFolder of ~200 real photographs (JPEG, some PNG) plus extra modes."""
    from mx8.demo_data import make_demo_data
    root = CACHE / "test-corpus-v2"
    if not (root / "class_extra").exists():
        tmp = CACHE / "test-corpus-v2.new"
        shutil.rmtree(tmp, ignore_errors=True)
        make_demo_data(str(tmp), count=200, classes=8, seed=7, progress=False)
        _extra_modes(tmp)
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
    return root


def image_files(root: Path):
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


@pytest.fixture(scope="session")
def packed(corpus: Path, tmp_path_factory) -> Path:
    """The corpus packed with small shards (several shards, shuffled records)."""
    import mx8
    out = tmp_path_factory.mktemp("packed")
    mx8.pack(str(corpus), str(out), shard_mb=4, progress=False)
    return out


def jpeg_bytes(size=(64, 48), color=(200, 30, 30)) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="session")
def radosgw():
    """Ceph's radosgw on loopback (tests/radosgw_server.py), started once per session for
    every S3 module's "radosgw" parameter (tests/s3_server.py: server_of_kind) and killed at
    the end. Skips where Ceph is not installed, unless MX8_REQUIRE_RADOSGW=1."""
    from s3_server import start_radosgw
    srv = start_radosgw()
    try:
        yield srv
    finally:
        srv.stop()
