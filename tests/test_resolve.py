"""mx8.resolve: pinning, on-the-fly ImageFolder index, MX8-written manifests, and
malformed manifests reported with their line."""
from __future__ import annotations

import hashlib
import shutil

import pytest

import mx8
from conftest import image_files


def test_pin_matches_and_mismatch_names_both_hashes(packed):
    snap = mx8.resolve(str(packed))
    assert snap.source == "manifest" and snap.samples == len(snap.manifest)
    assert mx8.resolve(snap.pinned_uri).manifest_hash == snap.manifest_hash
    wrong = "0" * 64
    with pytest.raises(mx8.SnapshotMismatchError) as ei:
        mx8.resolve(f"{packed}@sha256:{wrong}")
    assert snap.manifest_hash in str(ei.value) and wrong in str(ei.value)


def test_changed_data_fails_the_pin(packed, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(packed, copy)
    pinned = mx8.resolve(str(copy)).pinned_uri
    m = copy / "_mx8" / "manifest.tsv"
    lines = m.read_text().split("\n")
    label = int(lines[1].rsplit("=", 1)[1])
    lines[1] = lines[1].rsplit("=", 1)[0] + f"={(label + 1) % 8}"  # relabel one sample
    m.write_text("\n".join(lines))
    with pytest.raises(mx8.SnapshotMismatchError):
        mx8.resolve(pinned)


def test_imagefolder_is_indexed_on_the_fly(corpus):
    snap = mx8.resolve(str(corpus))
    files = image_files(corpus)
    assert snap.source == "index" and snap.samples == len(files)
    assert list(snap.labels) == sorted({p.parent.name for p in files})
    # sorted order, whole files, labels from folders
    loc, off, length, label = snap.manifest.record(0)
    assert snap.manifest.locations[loc] == str(files[0].relative_to(corpus)) and off == 0
    assert length == files[0].stat().st_size and snap.labels[label] == files[0].parent.name
    assert mx8.resolve(str(corpus)).manifest_hash == snap.manifest_hash  # stable


def test_mx8_style_absolute_locations(packed, tmp_path):
    """MX8 itself writes absolute shard paths; they are read as they are."""
    copy = tmp_path / "abs"
    shutil.copytree(packed, copy)
    m = copy / "_mx8" / "manifest.tsv"
    m.write_text(m.read_text().replace("\tshards/", f"\t{copy}/shards/"))
    snap = mx8.resolve(str(copy))
    assert snap.manifest_hash == hashlib.sha256(m.read_bytes()).hexdigest()
    assert all(loc.startswith(str(copy)) for loc in snap.manifest.locations)
    a = [b.data for b in mx8.Dataset(str(packed), batch_size=16, decode=False)]
    b = [b.data for b in mx8.Dataset(str(copy), batch_size=16, decode=False)]
    assert all(x.equal(y) for x, y in zip(a, b)) and len(a) == len(b)


def test_manifest_without_byte_ranges_means_whole_objects(corpus, tmp_path):
    files = image_files(corpus)[:5]
    lines = ["schema_version=0"] + [f"{i}\t{p}\t\t\t" for i, p in enumerate(files)]
    (tmp_path / "_mx8").mkdir()
    (tmp_path / "_mx8" / "manifest.tsv").write_text("\n".join(lines) + "\n")
    ds = mx8.Dataset(str(tmp_path), batch_size=5, size=32)
    batch = next(iter(ds))
    assert batch.sample_ids.tolist() == [0, 1, 2, 3, 4] and batch.labels.tolist() == [-1] * 5


BAD_MANIFESTS = [
    ("schema_version=1\n", 1, "expected 'schema_version=0'"),
    ("schema_version=0\n0\ta.tar\t0\t10\n", 2, "expected 5 tab-separated fields"),
    ("schema_version=0\n0\ta.tar\t0\t10\t\n2\ta.tar\t0\t10\t\n", 3, "sample_id '2' is not 1"),
    ("schema_version=0\n0\ta.tar\tx1\t10\t\n", 2, "byte_offset 'x1' is not a number"),
    ("schema_version=0\n0\ta.tar\t0\t-5\t\n", 2, "byte_length '-5' is not a number"),
    ("schema_version=0\n0\t\t0\t5\t\n", 2, "empty location"),
    ("schema_version=0\n0\ta.tar\t0\t5\tmx8:vision:imagefolder;label_id=zz\n", 2, "bad label_id"),
    ("schema_version=0\r\n", 1, "carriage return"),
    ("", 0, "manifest is empty"),
]


@pytest.mark.parametrize("text,line,msg", BAD_MANIFESTS)
def test_malformed_manifest_names_the_line(tmp_path, text, line, msg):
    (tmp_path / "_mx8").mkdir()
    path = tmp_path / "_mx8" / "manifest.tsv"
    path.write_text(text, newline="")
    with pytest.raises(mx8.ManifestError) as ei:
        mx8.resolve(str(tmp_path))
    assert msg in str(ei.value) and str(path) in str(ei.value)
    if line:
        assert f"line {line}:" in str(ei.value)
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, mx8.Error)


def test_labels_file_errors(packed, tmp_path):
    copy = tmp_path / "c"
    shutil.copytree(packed, copy)
    (copy / "_mx8" / "labels.tsv").write_text("schema_version=1\n0\tonly_one\n")
    with pytest.raises(mx8.ManifestError, match="has no entry in"):
        mx8.resolve(str(copy))
    (copy / "_mx8" / "labels.tsv").write_text("schema_version=1\n1\tskipped_zero\n")
    with pytest.raises(mx8.ManifestError, match="line 2"):
        mx8.resolve(str(copy))


def test_missing_dataset(tmp_path):
    with pytest.raises(mx8.ReadError, match="no such dataset"):
        mx8.resolve(str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(mx8.ReadError, match="no images found"):
        mx8.resolve(str(tmp_path / "empty"))
