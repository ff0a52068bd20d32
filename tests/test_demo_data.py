"""mx8 demo-data: the project's own real-photo corpus (quickstart, tests, benchmarks)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import mx8
from mx8 import demo_data
from mx8.demo_data import make_demo_data


def _files(root: Path):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_bytes_for_any_number_of_processes(tmp_path):
    a = make_demo_data(str(tmp_path / "a"), count=40, classes=4, seed=11, jobs=1, progress=False)
    b = make_demo_data(str(tmp_path / "b"), count=40, classes=4, seed=11, jobs=2, progress=False)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert a.samples == b.samples and len(a.samples) == 40
    c = make_demo_data(str(tmp_path / "c"), count=40, classes=4, seed=12, jobs=2, progress=False)
    assert _files(tmp_path / "c") != _files(tmp_path / "a")


def test_imagenet_like_mix_that_mx8_decodes(tmp_path):
    out = tmp_path / "demo"
    r = make_demo_data(str(out), count=400, classes=5, seed=0, progress=False)
    kinds = r.mix()
    assert sum(kinds.values()) == 400
    # the bulk is 4:2:0 JPEG, as in ImageNet; the rarer encodings are all drawn at this size
    assert kinds["jpeg RGB 4:2:0"] > 250
    for k in ("jpeg RGB 4:4:4", "jpeg L", "png RGB"):
        assert kinds.get(k, 0) >= 1, kinds
    assert sorted(p.name for p in out.iterdir()) == [f"class_{i:03d}" for i in range(5)]
    sizes = [max(s.width, s.height) for s in r.samples]
    assert sum(x == 500 for x in sizes) / len(sizes) > 0.6  # most are 500 px on the long side
    assert 50_000 < r.bytes / len(r.samples) < 250_000       # ImageNet's mean is ~110 KB
    # every file is one mx8 packs and decodes
    packed = tmp_path / "packed"
    res = mx8.pack(str(out), str(packed), progress=False)
    assert res.samples == 400 and not res.skipped and not res.ignored
    ds = mx8.Dataset(str(packed), batch_size=64, size=32, crop="center")
    assert sum(len(b.sample_ids) for b in ds) == 400
    assert ds.stats()["errors"] == 0


def test_errors_name_what_is_wrong(tmp_path, monkeypatch):
    (tmp_path / "exists").mkdir()
    with pytest.raises(mx8.Error, match="already exists"):
        make_demo_data(str(tmp_path / "exists"), count=1)
    with pytest.raises(mx8.Error, match="count and classes must be >= 1"):
        make_demo_data(str(tmp_path / "x"), count=0)
    (tmp_path / "nophotos").mkdir()
    (tmp_path / "nophotos" / "notes.txt").write_text("no images here")
    with pytest.raises(mx8.Error, match="no .jpg/.jpeg/.png photographs under"):
        make_demo_data(str(tmp_path / "y"), count=1, photos=str(tmp_path / "nophotos"))
    # without scikit-image installed, the message says how to get photographs
    monkeypatch.setattr(demo_data, "skimage_photo_dir", lambda: None)
    with pytest.raises(mx8.Error, match="pip install scikit-image"):
        make_demo_data(str(tmp_path / "z"), count=1)
    assert not (tmp_path / "z").exists() and not (tmp_path / "z.tmp").exists()


def test_own_photos_and_the_command_line(tmp_path):
    src = make_demo_data(str(tmp_path / "src"), count=3, classes=1, seed=1, progress=False)
    out = tmp_path / "cli"
    p = subprocess.run([sys.executable, "-m", "mx8", "demo-data", str(out), "--count", "12", "--classes", "3",
                        "--photos", src.out, "--quiet"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "12 images in 3 classes" in p.stdout
    assert len([f for f in out.rglob("*") if f.is_file()]) == 12
    again = subprocess.run([sys.executable, "-m", "mx8", "demo-data", str(out)], capture_output=True, text=True)
    assert again.returncode == 1 and "already exists" in again.stderr
