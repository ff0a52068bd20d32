"""The binary index of a manifest (csrc/core/manifest_index.c, mx8/manifest_index.py):
resolve maps it instead of parsing; it is rebuilt when the manifest changes, when it is
damaged, and placed in the manifest store when the dataset folder cannot hold it; it is
never trusted: a crafted index is refused, naming what is wrong."""
from __future__ import annotations

import os
import shutil
import struct

import pytest

import mx8
from mx8 import _core

HEADER = 256


@pytest.fixture
def dataset(packed, tmp_path):
    """A private copy of the session's packed corpus (the tests rewrite its files)."""
    out = tmp_path / "ds"
    shutil.copytree(packed, out)
    for p in (out / "_mx8").glob("manifest.idx"):
        p.unlink()
    return out


def records(manifest):
    return [manifest.record(i) for i in range(len(manifest))]


def test_resolve_maps_an_index_equal_to_the_parsed_manifest(dataset, monkeypatch):
    monkeypatch.setattr("mx8.manifest_index.RACY_NS", 0)  # the copy's manifest was written just now
    parsed = _core.Manifest((dataset / "_mx8" / "manifest.tsv").read_bytes())
    snap = mx8.resolve(str(dataset))
    idx = dataset / "_mx8" / "manifest.idx"
    assert idx.exists() and snap.manifest.mapped
    assert snap.manifest_hash == parsed.hash and records(snap.manifest) == records(parsed)
    assert snap.manifest.locations == parsed.locations and snap.manifest.labels() == parsed.labels()
    assert snap.manifest.index_bytes < parsed.index_bytes  # the records are the page cache's
    assert os.path.getsize(idx) == HEADER + 24 * len(parsed) + sum(len(x) + 1 for x in parsed.locations)
    built = os.stat(idx).st_mtime_ns
    assert mx8.resolve(str(dataset)).manifest.mapped and os.stat(idx).st_mtime_ns == built  # reused, not rebuilt
    ds = mx8.Dataset(str(dataset), batch_size=32, decode=False)
    assert sorted(i for b in ds for i in b.sample_ids.tolist()) == list(range(len(parsed)))


def test_a_same_size_rewrite_with_its_old_mtime_is_caught(dataset, monkeypatch):
    """cp -p, rsync -t --inplace, touch -r: the same size, the same mtime, the same inode. The
    ctime still moved, so the index is not trusted (before, resolve returned its old records)."""
    monkeypatch.setattr("mx8.manifest_index.RACY_NS", 0)
    before = mx8.resolve(str(dataset))
    tsv = dataset / "_mx8" / "manifest.tsv"
    st = os.stat(tsv)
    data = tsv.read_bytes()
    assert b"label_id=0\n" in data
    with open(tsv, "r+b") as f:  # in place, the same length: the same inode and size
        f.write(data.replace(b"label_id=0\n", b"label_id=1\n", 1))
    os.utime(tsv, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(tsv).st_size == st.st_size and os.stat(tsv).st_mtime_ns == st.st_mtime_ns
    after = mx8.resolve(str(dataset))
    assert after.manifest_hash == _core.Manifest(tsv.read_bytes()).hash != before.manifest_hash


def test_an_index_built_right_after_its_manifest_changed_is_checked_again(dataset):
    """Within 2 s of the manifest's last change a coarse clock may hide a later write: the
    next resolve builds again (still the right records), until the index is clearly newer."""
    tsv = dataset / "_mx8" / "manifest.tsv"
    first = mx8.resolve(str(dataset))
    built = os.stat(dataset / "_mx8" / "manifest.idx").st_mtime_ns
    again = mx8.resolve(str(dataset))
    assert again.manifest.mapped and again.manifest_hash == first.manifest_hash == _core.Manifest(tsv.read_bytes()).hash
    assert os.stat(dataset / "_mx8" / "manifest.idx").st_mtime_ns != built  # built again: the source was racy


def test_a_changed_manifest_gets_a_new_index(dataset):
    before = mx8.resolve(str(dataset))
    tsv = dataset / "_mx8" / "manifest.tsv"
    lines = tsv.read_bytes().splitlines(keepends=True)
    tsv.write_bytes(b"".join(lines[:-1]))  # one record fewer
    after = mx8.resolve(str(dataset))
    assert after.manifest.mapped and after.samples == before.samples - 1
    assert after.manifest_hash == _core.Manifest(tsv.read_bytes()).hash != before.manifest_hash


@pytest.mark.parametrize("damage", ["truncate", "flip a record", "flip the header", "garbage", "another version"])
def test_a_damaged_index_is_rebuilt_never_trusted(dataset, damage):
    want = mx8.resolve(str(dataset))
    want_records = records(want.manifest)
    idx = dataset / "_mx8" / "manifest.idx"
    data = bytearray(idx.read_bytes())
    if damage == "truncate":
        data = data[:-7]
    elif damage == "flip a record":
        data[HEADER + 24 * 3 + 16] ^= 0x40  # record 3's location: out of range, or another shard
    elif damage == "flip the header":
        data[24] ^= 1
    elif damage == "garbage":
        data = bytearray(os.urandom(len(data)))
    else:
        data[8:12] = struct.pack("<I", 99)
    idx.write_bytes(bytes(data))
    st = os.stat(dataset / "_mx8" / "manifest.tsv")
    os.utime(idx)  # a damaged file must not pass for the manifest's index by its stat alone
    with pytest.raises(mx8.ManifestError, match="index .*manifest.idx"):
        _core.open_index(str(idx))
    with pytest.warns(RuntimeWarning, match="rebuilding the index"):
        again = mx8.resolve(str(dataset))
    assert again.manifest.mapped and records(again.manifest) == want_records and again.manifest_hash == want.manifest_hash
    assert os.stat(dataset / "_mx8" / "manifest.tsv").st_mtime_ns == st.st_mtime_ns  # the manifest untouched


def test_an_index_that_cannot_sit_beside_the_manifest_goes_to_the_store(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("MX8_MANIFEST_STORE", str(tmp_path / "store"))
    (dataset / "_mx8" / "manifest.idx").mkdir()  # the name is taken (as by a read-only folder, even for root)
    snap = mx8.resolve(str(dataset))
    assert snap.manifest.mapped and list((tmp_path / "store" / "index").glob("*.idx"))
    assert mx8.resolve(str(dataset)).manifest.mapped


def test_indexes_can_be_turned_off(dataset, monkeypatch):
    monkeypatch.setenv("MX8_MANIFEST_INDEX", "0")
    snap = mx8.resolve(str(dataset))
    assert not snap.manifest.mapped and not (dataset / "_mx8" / "manifest.idx").exists()


def test_a_malformed_manifest_names_its_file_and_line(dataset):
    tsv = dataset / "_mx8" / "manifest.tsv"
    lines = tsv.read_bytes().splitlines(keepends=True)
    lines[5] = b"9\tshards/x.tar\t0\t10\t\n"  # line 6 holds sample 4
    tsv.write_bytes(b"".join(lines))
    with pytest.raises(mx8.ManifestError, match=r"manifest.tsv: manifest line 6: sample_id '9' is not 4"):
        mx8.resolve(str(dataset))
    assert not list((dataset / "_mx8").glob("manifest.idx*"))  # no index, and no temporary left behind


def test_builders_racing_on_one_index_never_share_a_temporary(dataset):
    """Threads of one process (or processes of machines that share a folder and a pid) build
    the same index at once: each writes its own temporary, every build succeeds, the index
    that stays is whole, and no temporary is left (before, they shared '<idx>.tmp.<pid>')."""
    import threading
    tsv, idx = dataset / "_mx8" / "manifest.tsv", dataset / "_mx8" / "manifest.idx"
    errors = []

    def build():
        try:
            _core.build_index(str(tsv), str(idx))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    manifest, _ = _core.open_index(str(idx))
    assert manifest.hash == _core.Manifest(tsv.read_bytes()).hash
    assert not list((dataset / "_mx8").glob("manifest.idx.tmp*"))
