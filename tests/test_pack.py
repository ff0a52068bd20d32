"""mx8.pack: shards readable by tarfile, manifest records pointing at the data, the hash,
labels, determinism, bad files and crash safety."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import mx8
from conftest import image_files, jpeg_bytes


def read_manifest(root: Path):
    lines = (root / "_mx8" / "manifest.tsv").read_text().split("\n")
    assert lines[0] == "schema_version=0" and lines[-1] == ""
    return [line.split("\t") for line in lines[1:-1]]


def test_pack_roundtrip_tarfile_and_manifest(corpus, tmp_path):
    out = tmp_path / "ds"
    r = mx8.pack(str(corpus), str(out), shard_mb=4, progress=False)
    sources = image_files(corpus)
    assert r.samples == len(sources) and r.shards >= 2
    assert r.ignored == [("README.txt", "no image extension")]
    # manifest_hash is the sha256 of the manifest bytes exactly as written
    data = (out / "_mx8" / "manifest.tsv").read_bytes()
    assert r.manifest_hash == hashlib.sha256(data).hexdigest() == mx8.resolve(str(out)).manifest_hash

    rows = read_manifest(out)
    assert [int(row[0]) for row in rows] == list(range(len(sources)))
    labels = (out / "_mx8" / "labels.tsv").read_text().split("\n")
    assert labels[0] == "schema_version=1"
    names = [line.split("\t")[1] for line in labels[1:-1]]
    assert names == sorted({p.parent.name for p in sources}) == r.labels

    # every shard reads back with tarfile; member names are the original relative paths,
    # and each manifest record's (offset, length) is exactly that member's data
    members = {}
    for shard in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(shard) as tf:
            for m in tf.getmembers():
                members[m.name] = (f"shards/{shard.name}", m.offset_data, m.size)
    assert sorted(members) == sorted(str(p.relative_to(corpus)) for p in sources)
    for sid, loc, off, length, hint in rows:
        rel = next(k for k, v in members.items() if v == (loc, int(off), int(length)))
        src = corpus / rel
        with open(out / loc, "rb") as f:
            f.seek(int(off))
            assert f.read(int(length)) == src.read_bytes()
        assert hint == f"mx8:vision:imagefolder;label_id={names.index(src.parent.name)}"
    assert not list((out / "shards").glob(".*tmp*")), "temporary shard files left behind"


def test_pack_is_deterministic_and_shuffles(corpus, tmp_path):
    a = mx8.pack(str(corpus), str(tmp_path / "a"), progress=False, seed=1)
    b = mx8.pack(str(corpus), str(tmp_path / "b"), progress=False, seed=1)
    c = mx8.pack(str(corpus), str(tmp_path / "c"), progress=False, seed=2)
    d = mx8.pack(str(corpus), str(tmp_path / "d"), progress=False, shuffle=False)
    assert a.manifest_hash == b.manifest_hash != c.manifest_hash
    with tarfile.open(tmp_path / "d" / "shards" / "shard-00000.tar") as tf:
        names = tf.getnames()
    assert names == sorted(names, key=lambda s: s.encode())
    with tarfile.open(tmp_path / "a" / "shards" / "shard-00000.tar") as tf:
        assert tf.getnames() != names
    assert d.shards == 1


def test_long_and_unicode_names_use_pax(tmp_path):
    src = tmp_path / "src"
    long_dir = "k" * 60
    names = [f"{long_dir}/{'x' * 80}.jpg", "caf\u00e9 \u732b/pic one.jpg", "b/plain.jpg"]
    for n in names:
        (src / n).parent.mkdir(parents=True, exist_ok=True)
        (src / n).write_bytes(jpeg_bytes())
    r = mx8.pack(str(src), str(tmp_path / "out"), progress=False, shuffle=False)
    with tarfile.open(tmp_path / "out" / "shards" / "shard-00000.tar") as tf:
        assert sorted(tf.getnames()) == sorted(names)
    assert r.labels == sorted([long_dir, "caf\u00e9 \u732b", "b"], key=lambda s: s.encode())
    # labels.tsv percent-encodes, resolve decodes
    assert "caf%C3%A9%20%E7%8C%AB" in (tmp_path / "out" / "_mx8" / "labels.tsv").read_text()
    assert list(mx8.resolve(str(tmp_path / "out")).labels) == r.labels


def test_label_modes(tmp_path):
    src = tmp_path / "src"
    for n in ["a/1.jpg", "b/2.jpg", "top.jpg"]:
        (src / n).parent.mkdir(parents=True, exist_ok=True)
        (src / n).write_bytes(jpeg_bytes())
    r = mx8.pack(str(src), str(tmp_path / "auto"), progress=False)
    assert r.labels is None  # a top-level image: auto disables labels
    assert not (tmp_path / "auto" / "_mx8" / "labels.tsv").exists()
    assert all(row[4] == "" for row in read_manifest(tmp_path / "auto"))
    with pytest.raises(mx8.PackError, match="top.jpg"):
        mx8.pack(str(src), str(tmp_path / "if"), progress=False, label_mode="imagefolder")
    os.remove(src / "top.jpg")
    r = mx8.pack(str(src), str(tmp_path / "none"), progress=False, label_mode="none")
    assert r.labels is None


def _bad_tree(tmp_path):
    src = tmp_path / "src"
    for n in ["a/good1.jpg", "a/good2.jpg", "b/good3.jpg"]:
        (src / n).parent.mkdir(parents=True, exist_ok=True)
        (src / n).write_bytes(jpeg_bytes())
    (src / "a" / "empty.jpg").write_bytes(b"")
    (src / "b" / "page.jpg").write_bytes(b"<html><body>not an image</body></html>")
    os.symlink(src / "does-not-exist.jpg", src / "b" / "dangling.jpg")
    return src


@pytest.mark.parametrize("bad,msg", [("a/empty.jpg", "zero-length"), ("b/page.jpg", "not a JPEG or PNG"),
                                     ("b/dangling.jpg", "symbolic link whose target does not exist")])
def test_bad_files_raise_naming_the_file(tmp_path, bad, msg):
    src = _bad_tree(tmp_path)
    for other in ["a/empty.jpg", "b/page.jpg", "b/dangling.jpg"]:
        if other != bad:
            os.remove(src / other)
    with pytest.raises(mx8.PackError, match=msg) as ei:
        mx8.pack(str(src), str(tmp_path / "out"), progress=False)
    assert bad.split("/")[1] in str(ei.value)
    assert not (tmp_path / "out" / "_mx8" / "manifest.tsv").exists()
    shards = tmp_path / "out" / "shards"  # a file refused by the scan fails before any shard
    assert not shards.exists() or not list(shards.iterdir()), "partial shards left behind"


def test_bad_files_skipped_when_asked(tmp_path):
    src = _bad_tree(tmp_path)
    r = mx8.pack(str(src), str(tmp_path / "out"), progress=False, on_error="skip")
    assert r.samples == 3
    assert sorted(rel for rel, _ in r.skipped) == ["a/empty.jpg", "b/dangling.jpg", "b/page.jpg"]
    ds = mx8.Dataset(str(tmp_path / "out"), batch_size=8, size=32)
    assert sum(len(b.sample_ids) for b in ds) == 3


def test_failed_repack_leaves_no_manifest_pointing_at_new_bytes(tmp_path):
    src = tmp_path / "src"
    for i in range(6):
        (src / f"c{i % 2}" / f"{i}.jpg").parent.mkdir(parents=True, exist_ok=True)
        (src / f"c{i % 2}" / f"{i}.jpg").write_bytes(jpeg_bytes(color=(i * 40, 10, 10)))
    out = tmp_path / "out"
    mx8.pack(str(src), str(out), progress=False)
    (src / "c1" / "zzz.jpg").write_bytes(b"")  # the re-pack fails on this file
    with pytest.raises(mx8.PackError):
        mx8.pack(str(src), str(out), progress=False, shuffle=False)
    # The old manifest is gone (it would point into shards being rewritten); nothing half-written.
    assert not (out / "_mx8" / "manifest.tsv").exists()
    assert not [p.name for p in (out / "_mx8").iterdir() if "tmp" in p.name]
    with pytest.raises(mx8.ReadError):
        mx8.Dataset(str(out / "_mx8" / "manifest.tsv"), batch_size=2)


def test_cli_pack_and_inspect(corpus, tmp_path):
    out = tmp_path / "cli"
    p = subprocess.run([sys.executable, "-m", "mx8", "pack", str(corpus), str(out), "--shard-mb", "8", "-q"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    h = mx8.resolve(str(out)).manifest_hash
    assert f"manifest_hash: {h}" in p.stdout
    p = subprocess.run([sys.executable, "-m", "mx8", "inspect", f"{out}@sha256:{h}"], capture_output=True, text=True)
    assert p.returncode == 0 and h in p.stdout
    p = subprocess.run([sys.executable, "-m", "mx8", "pack", str(tmp_path / "nope"), str(out)],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "mx8: error:" in p.stderr and "nope" in p.stderr
