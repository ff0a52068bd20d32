"""Bad input: each case raises the stated mx8.Error subclass with a message naming sample id,
location and byte range; with on_error="skip" exactly the bad samples are skipped."""
from __future__ import annotations

import io
import os
import re
import struct
import time

import pytest
import torch
from PIL import Image

import mx8
from conftest import jpeg_bytes


def photo_jpeg() -> bytes:
    img = Image.effect_noise((160, 120), 64).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92)
    return buf.getvalue()


def photo_png() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((96, 64), 50).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def huge_header_jpeg(w=30000, h=30000) -> bytes:
    """A valid small JPEG whose SOF0 claims w x h: a decompression bomb's header."""
    data = bytearray(jpeg_bytes())
    i = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, i + 5, h, w)
    return bytes(data)


BAD = {
    "truncated.jpg": lambda: photo_jpeg()[:2500],
    "corrupt.jpg": lambda: photo_jpeg()[:600] + bytes(range(256)) * 4 + photo_jpeg()[1624:],
    "truncated.png": lambda: photo_png()[:300],
    "corrupt.png": lambda: photo_png()[:100] + b"\x00" * 64 + photo_png()[164:],
    "html.jpg": lambda: b"<!doctype html><html>oops</html>",
    "bomb.jpg": huge_header_jpeg,
}
EXPECTED = {
    "truncated.jpg": mx8.DecodeError, "corrupt.jpg": mx8.DecodeError, "truncated.png": mx8.DecodeError,
    "corrupt.png": mx8.DecodeError, "html.jpg": mx8.DecodeError, "bomb.jpg": mx8.ImageTooLargeError,
}


def make_dataset(tmp_path, bad_name):
    """A packed dataset of good images with one bad sample; returns (root, bad sample id)."""
    src = tmp_path / "src"
    for i in range(10):
        (src / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        (src / f"c{i % 2}" / f"{i:02d}.jpg").write_bytes(photo_jpeg() if i % 3 else photo_png())
    out = tmp_path / "ds"
    mx8.pack(str(src), str(out), progress=False, shuffle=False)
    # Append the bad sample after packing (pack itself refuses non-images).
    shard = out / "shards" / "shard-00000.tar"
    payload = BAD[bad_name]()
    with open(shard, "ab") as f:
        off = f.tell()
        f.write(payload)
    m = out / "_mx8" / "manifest.tsv"
    text = m.read_text()
    sid = text.count("\n") - 1
    m.write_text(text + f"{sid}\tshards/shard-00000.tar\t{off}\t{len(payload)}\tmx8:vision:imagefolder;label_id=0\n")
    return out, sid, off, len(payload)


@pytest.mark.parametrize("bad_name", sorted(BAD))
def test_bad_image_raises_naming_sample_location_and_range(tmp_path, bad_name):
    root, sid, off, length = make_dataset(tmp_path, bad_name)
    ds = mx8.Dataset(str(root), batch_size=4, size=32, max_pixels=100_000_000)
    t0 = time.monotonic()
    with pytest.raises(EXPECTED[bad_name]) as ei:
        for _ in ds:
            pass
    assert time.monotonic() - t0 < 30
    e = ei.value
    assert isinstance(e, mx8.Error)
    assert f"sample {sid} (shards/shard-00000.tar @ {off}+{length})" in str(e), str(e)
    assert (e.sample_id, e.location, e.offset, e.length) == (sid, "shards/shard-00000.tar", off, length)
    if bad_name == "bomb.jpg":
        assert "30000x30000" in str(e) and "100000000" in str(e)


@pytest.mark.parametrize("bad_name", sorted(BAD))
def test_skip_mode_skips_exactly_the_bad_sample(tmp_path, bad_name):
    root, sid, _, _ = make_dataset(tmp_path, bad_name)
    ds = mx8.Dataset(str(root), batch_size=4, size=32, on_error="skip")
    batches = list(ds)
    ids = [i for b in batches for i in b.sample_ids.tolist()]
    assert sorted(ids) == [i for i in range(sid + 1) if i != sid]
    for b in batches:  # shapes stay valid: images, labels and ids agree
        assert b.images.shape[0] == b.labels.shape[0] == b.sample_ids.shape[0]
        assert b.images.shape[1:] == (3, 32, 32)
    st = ds.stats()
    assert st["skipped"] == 1 and st["errors"] == 1 and st["images"] == sid
    # the surviving images are the same pixels as without the bad sample
    good = {int(i): img for b in mx8.Dataset(str(root), batch_size=4, size=32, on_error="skip")
            for i, img in zip(b.sample_ids, b.images)}
    for b in batches:
        for i, img in zip(b.sample_ids.tolist(), b.images):
            assert torch.equal(good[i], img)


def test_pixel_limit_is_configurable(tmp_path):
    root, _, _, _ = make_dataset(tmp_path, "truncated.jpg")
    with pytest.raises(mx8.ImageTooLargeError, match="above the limit of 1000"):
        for _ in mx8.Dataset(str(root), batch_size=4, size=32, max_pixels=1000):
            pass


def _manifest_with(tmp_path, line_for_sample_1):
    root = tmp_path / "ds"
    (root / "_mx8").mkdir(parents=True)
    data = jpeg_bytes()
    (root / "blob.bin").write_bytes(data)
    (root / "_mx8" / "manifest.tsv").write_text(
        f"schema_version=0\n0\tblob.bin\t0\t{len(data)}\t\n{line_for_sample_1}\n")
    return root, len(data)


def test_range_past_end_of_shard(tmp_path):
    root, n = _manifest_with(tmp_path, "1\tblob.bin\t100\t5000\t")
    with pytest.raises(mx8.RangeError) as ei:
        list(mx8.Dataset(str(root), batch_size=2, size=16))
    msg = str(ei.value)
    assert "sample 1 (blob.bin @ 100+5000)" in msg and f"({n} bytes)" in msg and "runs past the end" in msg
    assert isinstance(ei.value, mx8.ReadError) and isinstance(ei.value, OSError)
    ds = mx8.Dataset(str(root), batch_size=2, size=16, on_error="skip")
    assert [b.sample_ids.tolist() for b in ds] == [[0]] and ds.stats()["skipped"] == 1


def test_missing_shard(tmp_path):
    root, _ = _manifest_with(tmp_path, "1\tshards/gone.tar\t0\t10\t")
    with pytest.raises(mx8.ReadError) as ei:
        list(mx8.Dataset(str(root), batch_size=2, size=16))
    assert "sample 1 (shards/gone.tar @ 0+10)" in str(ei.value)
    assert "No such file or directory" in str(ei.value) and "gone.tar" in str(ei.value)


def test_missing_shard_in_raw_mode(tmp_path):
    root, _ = _manifest_with(tmp_path, "1\tshards/gone.tar\t0\t10\t")
    with pytest.raises(mx8.ReadError, match=re.escape("sample 1 (shards/gone.tar @ 0+10)")):
        list(mx8.Dataset(str(root), batch_size=2, decode=False))


def test_malformed_manifest_line_in_dataset(tmp_path):
    root, _ = _manifest_with(tmp_path, "1\tblob.bin\t0")
    with pytest.raises(mx8.ManifestError, match="line 3: expected 5 tab-separated fields"):
        mx8.Dataset(str(root), batch_size=2, size=16)


def test_error_in_later_batch_does_not_lose_earlier_batches(tmp_path):
    root, sid, _, _ = make_dataset(tmp_path, "html.jpg")
    got = []
    with pytest.raises(mx8.DecodeError):
        for b in mx8.Dataset(str(root), batch_size=4, size=32):
            got += b.sample_ids.tolist()
    assert got == list(range(sid - sid % 4))  # every batch before the bad one was delivered


def test_after_a_failed_batch_the_engine_reads_the_next_epochs_whole(tmp_path):
    """on_error="raise": the batch's error ends its epoch; the Dataset's engine (kept across
    epochs) then reads every later epoch whole, the failure again at its place, and a new
    iter() after a caught error starts cleanly."""
    root, sid, _, _ = make_dataset(tmp_path, "corrupt.jpg")
    ds = mx8.Dataset(str(root), batch_size=3, size=16, threads=2)
    for _ in range(3):
        seen = []
        with pytest.raises(mx8.DecodeError) as ei:
            for b in ds:
                seen += b.sample_ids.tolist()
        assert ei.value.sample_id == sid and seen == list(range(9))  # batch 3 holds the bad sample
    ds.close()


def test_lease_mode_gives_a_failed_range_back(tmp_path):
    """on_error="raise" in lease mode: the error reaches the caller, the range is given back at
    once (another worker, or this one, meets the same error: loud, never a hang), and the
    worker's engine keeps serving the other ranges."""
    root, sid, _, _ = make_dataset(tmp_path, "corrupt.jpg")
    ds = mx8.LeaseDataset(str(root), job="fail", batch_size=2, range_size=4, size=16, threads=2)
    got, errors = [], 0
    it = iter(ds)
    while errors < 3:
        try:
            b = next(it)
        except mx8.DecodeError as e:
            assert e.sample_id == sid
            errors += 1
            continue
        got += b.sample_ids.tolist()
        ds.ack(b)
    # ranges of 4: [0, 4) and [4, 8) complete; [8, 11) delivers 8 and 9, then fails at sid 10
    assert sid == 10 and sorted(set(got)) == list(range(10))
    st = ds.stats()
    assert st["leases_released"] >= 3 and st["leases_completed"] == 2
    ds.close()
