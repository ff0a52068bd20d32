"""Input written to hurt: manifests and images crafted against mx8's arithmetic and limits.
Each case once crashed, hung or cost seconds and gigabytes; now it is an mx8.Error naming the
sample and where it is, in milliseconds. Cases that could crash the process run in a child."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import pytest

import mx8
from conftest import jpeg_bytes


def _dataset_with_records(tmp_path: Path, records) -> Path:
    """A packed-format dataset: one shard of real JPEGs, and manifest rows (offset, length)."""
    root = tmp_path / "ds"
    (root / "_mx8").mkdir(parents=True)
    (root / "shards").mkdir()
    good = jpeg_bytes((48, 32))
    (root / "shards" / "shard-00000.tar").write_bytes(good * 4)
    lines = ["schema_version=0"]
    for i, (off, length) in enumerate(records):
        lines.append(f"{i}\tshards/shard-00000.tar\t{off}\t{length}\tmx8:vision:imagefolder;label_id=0")
    (root / "_mx8" / "manifest.tsv").write_text("\n".join(lines) + "\n")
    return root


def _run_child(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)


def test_raw_batch_lengths_that_sum_past_2_64_are_refused_not_written_out_of_bounds(tmp_path):
    """Four lengths of 2^62 - 1 wrap a 64-bit sum: the batch buffer came out tiny and the
    worker wrote before it (glibc abort). Now each is a sample above the 1 GiB limit."""
    n = len(jpeg_bytes((48, 32)))
    huge = (1 << 62) - 1
    root = _dataset_with_records(tmp_path, [(0, n), (0, huge), (n, huge), (0, huge), (0, huge), (n, n)])
    p = _run_child(f"""
        import mx8
        ds = mx8.Dataset({str(root)!r}, batch_size=6, decode=False)
        try:
            list(ds)
        except mx8.ImageTooLargeError as e:
            print("RAISED", e)
        ds = mx8.Dataset({str(root)!r}, batch_size=6, decode=False, on_error="skip")
        b = list(ds)
        print("SKIP", [x.sample_ids.tolist() for x in b], [len(x.data) for x in b], ds.stats()["skipped"])
    """)
    assert p.returncode == 0, p.stderr[-3000:]
    raised = next(line for line in p.stdout.splitlines() if line.startswith("RAISED"))
    assert "sample 1 " in raised and "shards/shard-00000.tar" in raised and "1 GiB limit" in raised, raised
    skip = next(line for line in p.stdout.splitlines() if line.startswith("SKIP"))
    assert skip == f"SKIP [[0, 5]] [{2 * n}] 4", skip


def test_raw_batch_lengths_beyond_memory_give_an_error_naming_the_sample(tmp_path):
    """A raw batch is allocated from its samples' declared lengths before any read; 256 of
    1 GiB each (all within the per-sample limit) made torch raise a bare RuntimeError
    ("DefaultCPUAllocator: can't allocate memory"). Now it is an mx8.ReadError naming the
    batch and its largest sample; where the allocation does succeed (overcommit), pages are
    only touched by real bytes and the range check fails the sample, so memory stays flat."""
    import resource
    root = _dataset_with_records(tmp_path, [(0, 1 << 30)] * 256)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(mx8.ReadError, match=r"(raw batch 0 cannot be allocated: .* 274877906944 bytes; the "
                                            r"largest is sample 0 \(shards/shard-00000\.tar @ 0\+1073741824\)"
                                            r"|byte range 0\+1073741824 runs past the end)") as ei:
        list(mx8.Dataset(str(root), batch_size=256, decode=False, pin_memory=False))
    assert ei.value.sample_id >= 0 and ei.value.location == "shards/shard-00000.tar"
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) < 300 * 1024  # KiB


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR declares width x height (its data holds one row)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
            + chunk(b"IEND", b""))


def _progressive_declaring(width: int, height: int) -> bytes:
    """A small real progressive JPEG whose frame header (SOF2) declares width x height."""
    import io
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buf, "JPEG", progressive=True)
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc2")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_images_decoded_whole_have_their_own_pixel_limit(tmp_path):
    """At the one 10^8 limit a valid PNG cost 3.1 s of CPU and +470 MB, a progressive JPEG
    up to 2.2 s and +815 MB (its coefficients are buffered whole), a baseline JPEG 0.6 s and
    +250 MB (scripts/bench_limits.py). PNG and progressive JPEG now default to 3*10^7 (~1 s,
    <300 MB); an explicit max_pixels sets one limit for all."""
    src = tmp_path / "src" / "a"
    src.mkdir(parents=True)
    (src / "big.jpg").write_bytes(_progressive_declaring(6000, 6000))
    with pytest.raises(mx8.ImageTooLargeError, match=r"progressive JPEG is 6000x6000 = 36000000 pixels, above "
                                                     r"the limit of 30000000 for images decoded whole"):
        list(mx8.Dataset(str(src.parent), batch_size=1, size=32))
    with pytest.raises(mx8.DecodeError) as ei:  # past the limit: the decoder finds the data short
        list(mx8.Dataset(str(src.parent), batch_size=1, size=32, max_pixels=40_000_000))
    assert not isinstance(ei.value, mx8.ImageTooLargeError), ei.value
    (src / "big.jpg").unlink()
    (src / "big.png").write_bytes(_png_declaring(6000, 6000))  # 3.6e7 pixels, one row of data
    with pytest.raises(mx8.ImageTooLargeError, match=r"6000x6000 = 36000000 pixels, above the limit of "
                                                     r"30000000 \(max_pixels\)"):
        list(mx8.Dataset(str(src.parent), batch_size=1, size=32))
    # Raised by hand, the limit lets it through to the decoder (which finds the data short).
    with pytest.raises(mx8.DecodeError) as ei:
        list(mx8.Dataset(str(src.parent), batch_size=1, size=32, max_pixels=40_000_000))
    assert not isinstance(ei.value, mx8.ImageTooLargeError), ei.value


@pytest.mark.parametrize("crop", ["center", "none", "random"])
@pytest.mark.parametrize("width,height", [(100_000_000, 1), (2**31 - 1, 2**31 - 1)])
def test_png_header_sizes_are_limited_before_any_work(tmp_path, crop, width, height):
    """A ~60-byte PNG declaring 10^8 x 1 pixels cost 4-13 s and 1.5-5 GB (the resize plan was
    built from the declared size); 2^31-1 square raised a builtins ValueError."""
    src = tmp_path / "src" / "a"
    src.mkdir(parents=True)
    (src / "bomb.png").write_bytes(_png_declaring(width, height))
    (src / "ok.jpg").write_bytes(jpeg_bytes())
    ds = mx8.Dataset(str(src.parent), batch_size=2, size=32, crop=crop)
    t0 = time.monotonic()
    with pytest.raises(mx8.ImageTooLargeError, match=r"error decoding sample \d+ \(.*bomb\.png.*\).*above libpng's limit"):
        list(ds)
    assert time.monotonic() - t0 < 5


# ---- the concurrency contract: close() from anywhere, one thread per iterator, no fork ----

def _concurrency_child(packed: Path, body: str, timeout: float = 60) -> str:
    """Runs body with `ds` (a Dataset over packed) in a child; a hang is a timeout, a crash a
    non-zero exit. Returns what the child printed."""
    head = (f"import os, sys, threading, time\nimport mx8\n"
            f"ds = mx8.Dataset({str(packed)!r}, batch_size=8, size=64, crop='random', threads=2, prefetch_mb=1)\n")
    p = _run_child(head + textwrap.dedent(body), timeout=timeout)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return p.stdout


def test_close_from_another_thread_returns_and_the_iterating_thread_gets_an_error(packed):
    """close() from another thread while one iterates deadlocked in the engine stop (both
    threads joined the workers). Now close() returns at once and the iterating thread's next()
    raises UsageError, every time."""
    out = _concurrency_child(packed, """
        for trial in range(20):
            it = iter(ds)
            next(it)
            seen = []
            def consume():
                try:
                    while True:
                        next(it)
                        time.sleep(0.001)
                except StopIteration:
                    seen.append("stop")
                except mx8.UsageError as e:
                    seen.append("usage")
            t = threading.Thread(target=consume)
            t.start()
            time.sleep(0.002 * (trial % 5))
            t0 = time.monotonic()
            ds.close()
            took = time.monotonic() - t0
            t.join(10)
            assert not t.is_alive(), "consumer hung"
            assert took < 5, took
            print(trial, seen[0], round(took, 3))
        print("OK")
    """)
    assert out.strip().endswith("OK")
    kinds = {line.split()[1] for line in out.splitlines()[:-1]}
    assert kinds <= {"usage", "stop"} and "usage" in kinds, out


def test_two_threads_in_one_iterator_get_an_error_not_a_lost_batch(packed):
    """Two threads calling next() on one iterator lost a batch with a bare KeyError."""
    out = _concurrency_child(packed, """
        it = iter(ds)
        got, errors = [], []
        def consume():
            try:
                for b in it:
                    got.extend(b.sample_ids.tolist())
            except mx8.UsageError as e:
                errors.append(str(e))
        threads = [threading.Thread(target=consume) for _ in range(2)]
        for t in threads: t.start()
        for t in threads: t.join(30)
        assert not any(t.is_alive() for t in threads), "hung"
        n = len(ds.snapshot.manifest)
        # the thread that lost the race was told so; the other saw every sample, once
        assert len(errors) <= 1, errors
        assert sorted(got) == list(range(n)) or errors, (len(got), n)
        assert len(got) == len(set(got)), "a sample twice"
        print("OK", len(errors), errors[0][:60] if errors else "")
    """)
    assert out.startswith("OK")


def test_a_second_iteration_in_another_thread_interrupts_the_first_with_an_error(packed):
    """Two threads iterating one Dataset hung; now the first one's next() says what happened."""
    out = _concurrency_child(packed, """
        it1 = iter(ds)
        next(it1)
        done = []
        t = threading.Thread(target=lambda: done.append(sum(len(b.sample_ids) for b in ds)))
        t.start(); t.join(30)
        assert done == [len(ds.snapshot.manifest)], done
        try:
            next(it1)
            print("NO ERROR")
        except mx8.UsageError as e:
            print("OK", e)
    """)
    assert out.startswith("OK") and "closed before its epoch ended" in out


def test_an_iterator_inherited_through_fork_raises_in_the_child(packed):
    """next() on an iterator inherited through fork() hung with no error."""
    out = _concurrency_child(packed, """
        it = iter(ds)
        next(it)
        pid = os.fork()
        if pid == 0:
            try:
                next(it)
                os._exit(3)
            except mx8.UsageError as e:
                os._exit(0 if "inherited through fork()" in str(e) else 4)
            except BaseException:
                os._exit(5)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
        print("parent", sum(len(b.sample_ids) for b in it) > 0)
    """)
    assert "child 0" in out and "parent True" in out, out


# ---- pack and resolve account for every file ----

def _tree(tmp_path: Path) -> Path:
    """An ImageFolder with every kind of entry that used to vanish or hang."""
    src = tmp_path / "src"
    for cls in ("cat", "dog", "shards", "_mx8"):
        (src / cls).mkdir(parents=True)
        (src / cls / "a.jpg").write_bytes(jpeg_bytes())
    (src / ".hidden").mkdir()
    (src / ".hidden" / "x.jpg").write_bytes(jpeg_bytes())
    (src / "cat" / ".dot.jpg").write_bytes(jpeg_bytes())
    (src / "notes.txt").write_text("hi")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.jpg").write_bytes(jpeg_bytes())
    (src / "linked_out").symlink_to(outside, target_is_directory=True)
    (src / "linked_in").symlink_to(src / "dog", target_is_directory=True)  # a second path to dog/
    (src / "cat" / "zero.jpg").symlink_to("/dev/zero")
    os.mkfifo(src / "cat" / "fifo.jpg")
    return src


def test_pack_lists_every_file_it_does_not_pack_with_its_reason(tmp_path):
    src = _tree(tmp_path)
    with pytest.raises(mx8.PackError, match=r"linked_in/|zero\.jpg|fifo\.jpg|linked_out"):
        mx8.pack(str(src), str(tmp_path / "out"), progress=False)      # refused input raises by default
    t0 = time.monotonic()
    r = mx8.pack(str(src), str(tmp_path / "out"), progress=False, on_error="skip", shuffle=False)
    assert time.monotonic() - t0 < 10                                    # the FIFO did not block
    assert r.samples == 2 and r.labels == ["cat", "dog"]
    skipped = dict(r.skipped)
    assert skipped["cat/fifo.jpg"] == "a FIFO, not a regular file"
    assert skipped["cat/zero.jpg"].startswith("a symbolic link out of the source tree (to /dev/zero)")
    assert skipped["linked_out"].startswith("a symbolic link out of the source tree")
    assert skipped["linked_in/"].startswith("a directory already walked through another path")
    ignored = dict(r.ignored)
    assert ignored == {".hidden/": "hidden (name starts with '.')", "cat/.dot.jpg": "hidden (name starts with '.')",
                       "notes.txt": "no image extension", "_mx8/": mx8.imagefolder.RESERVED,
                       "shards/": mx8.imagefolder.RESERVED}
    # every entry of the tree is in exactly one list
    assert len(r.skipped) + len(r.ignored) + r.samples == 4 + 2 + 2 + 4 - 1


def test_pack_follows_links_out_only_when_asked_and_caps_file_size(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "x.jpg").write_bytes(jpeg_bytes())
    big = tmp_path / "big"
    big.mkdir()
    (big / "y.jpg").write_bytes(jpeg_bytes((800, 600)))
    (src / "b").symlink_to(big, target_is_directory=True)
    r = mx8.pack(str(src), str(tmp_path / "o1"), progress=False, follow_symlinks=True)
    assert r.samples == 2 and not r.skipped
    r = mx8.pack(str(src), str(tmp_path / "o2"), progress=False, follow_symlinks=True, max_file_mb=0.004,
                 on_error="skip")
    assert r.samples == 1 and dict(r.skipped)["b/y.jpg"].endswith("above the per-file limit of 4194 (max_file_mb=)")


def test_resolve_indexes_a_folder_around_names_a_manifest_cannot_hold(tmp_path):
    """A name with a tab or newline failed the whole on-the-fly index (pack handles it)."""
    src = tmp_path / "src" / "c"
    src.mkdir(parents=True)
    (src / "ok.jpg").write_bytes(jpeg_bytes())
    (src / "tab\there.jpg").write_bytes(jpeg_bytes())
    (src / "new\nline.jpg").write_bytes(jpeg_bytes())
    with pytest.warns(RuntimeWarning, match=r"left out 2 file\(s\).*tab, newline or carriage return"):
        snap = mx8.resolve(str(src.parent))
    assert snap.samples == 1
    assert mx8.pack(str(src.parent), str(tmp_path / "out"), progress=False).samples == 3


def test_a_fifo_in_a_dataset_fails_its_sample_instead_of_hanging(tmp_path):
    src = tmp_path / "src" / "c"
    src.mkdir(parents=True)
    (src / "a.jpg").write_bytes(jpeg_bytes())
    (src / "b.jpg").write_bytes(jpeg_bytes())
    snap = mx8.resolve(str(src.parent))                  # indexed while b.jpg was a file
    (src / "b.jpg").unlink()
    os.mkfifo(src / "b.jpg")                              # ... and then it became a FIFO
    ds = mx8.Dataset(snap, batch_size=2, size=32)
    t0 = time.monotonic()
    with pytest.raises(mx8.ReadError, match=r"b\.jpg is not a regular file \(a FIFO\)"):
        list(ds)
    assert time.monotonic() - t0 < 10


# ---- memory is given back ----

def test_one_huge_image_does_not_pin_its_memory_for_the_epoch_or_after_close(tmp_path):
    """Decoder scratch only grew: RSS stayed at the outlier's size for the rest of the epoch
    and after close(). Now a worker trims scratch above 64 MB after each sample, and close()
    frees the workers' decoders."""
    from PIL import Image
    src = tmp_path / "src" / "c"
    src.mkdir(parents=True)
    Image.linear_gradient("L").resize((6000, 6000)).convert("RGB").save(src / "a_big.jpg", quality=80)
    for i in range(24):
        (src / f"s{i:02d}.jpg").write_bytes(jpeg_bytes())
    p = _run_child(f"""
        import mx8
        def kb(field):
            for line in open("/proc/self/status"):
                if line.startswith(field):
                    return int(line.split()[1])
        ds = mx8.Dataset({str(src.parent)!r}, batch_size=5, size=64, crop="none", threads=1,
                         dct_scaling=False, crop_aware=False, prefetch_mb=1)
        n = sum(len(b.sample_ids) for b in ds)
        peak, after_epoch = kb("VmHWM:"), kb("VmRSS:")
        ds.close()
        print(n, peak, after_epoch, kb("VmRSS:"))
    """)
    assert p.returncode == 0, p.stderr[-3000:]
    n, peak, after_epoch, after_close = map(int, p.stdout.split())
    assert n == 25
    # the 6000x6000 decode held ~108 MB of pixels; they are not held any more
    assert peak - after_epoch > 80_000, (peak, after_epoch)
    assert after_close <= after_epoch + 4_000


# ---- one verdict per sample, whatever the epoch ----

def test_a_truncated_jpeg_fails_in_every_epoch_whatever_the_crop(tmp_path):
    """Crop-aware decode stops after the crop's last row, so a JPEG missing its bottom rows was
    delivered in epochs whose random crop avoided them and skipped in the others."""
    from PIL import Image
    src = tmp_path / "src" / "c"
    src.mkdir(parents=True)
    import io
    buf = io.BytesIO()
    Image.linear_gradient("L").resize((640, 480)).convert("RGB").save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    (src / "cut.jpg").write_bytes(data[:len(data) * 97 // 100])  # the last rows are missing
    for i in range(7):
        (src / f"ok{i}.jpg").write_bytes(jpeg_bytes())
    ds = mx8.Dataset(str(src.parent), batch_size=4, size=32, crop="random", scale=(0.05, 0.1), on_error="skip")
    skips = []
    for epoch in range(12):
        ds.set_epoch(epoch)
        assert sum(len(b.sample_ids) for b in ds) == 7
        skips.append(ds.stats()["skipped"])
    assert skips == [1] * 12
    with pytest.raises(mx8.DecodeError, match=r"cut\.jpg.*premature end of JPEG file"):
        list(mx8.Dataset(str(src.parent), batch_size=4, size=32, crop="random", scale=(0.05, 0.1)))


def test_skip_never_yields_an_empty_batch(tmp_path):
    src = tmp_path / "src" / "c"
    src.mkdir(parents=True)
    for i in range(4):
        (src / f"a{i}.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    for i in range(3):
        (src / f"b{i}.jpg").write_bytes(jpeg_bytes())
    ds = mx8.Dataset(str(src.parent), batch_size=4, size=32, on_error="skip")   # batch 0 fails whole
    sizes = [len(b.sample_ids) for b in ds]
    assert sizes == [3] and ds.stats()["skipped"] == 4


def test_a_huge_location_gives_a_bounded_message(tmp_path):
    """A 64 MB location string became a 64 MB exception message (and log line)."""
    loc = "shards/" + "x" * 4_000_000 + ".tar"
    root = tmp_path / "ds"
    (root / "_mx8").mkdir(parents=True)
    (root / "_mx8" / "manifest.tsv").write_text(f"schema_version=0\n0\t{loc}\t0\t100\t\n")
    with pytest.raises(mx8.ReadError) as ei:
        list(mx8.Dataset(str(root), batch_size=1, size=32))
    msg = str(ei.value)
    # Bounded: ~400 characters of the location shown, plus the core's 1 KiB message buffer.
    assert len(msg) < 1500 and "characters]..." in msg and msg.startswith("error reading sample 0 (")
    assert ei.value.location.endswith(loc)  # the attribute keeps it whole


# ---- labels.tsv is parsed strictly ----

@pytest.mark.parametrize("data,msg", [
    (b"schema_version=1\r\n0\tcat\r\n", r"line 1: carriage return"),  # said "expected 'schema_version=1', found 'schema_version=1'"
    (b"schema_version=1\n0\t%+6\n", r"bad percent escape in label '%\+6'"),   # int('+6', 16) accepted it
    (b"schema_version=1\n0\t% 6\n", r"bad percent escape"),
    (b"schema_version=1\n0\tcat dog\n", r"' ', which must be percent-encoded"),
])
def test_labels_files_are_parsed_strictly(data, msg):
    from mx8.formats import parse_labels
    with pytest.raises(mx8.ManifestError, match=msg):
        parse_labels(data, "labels.tsv")


def test_mutated_labels_files_parse_or_raise_manifest_error():
    """20,000 random byte mutations of a valid labels file: each one parses or raises
    mx8.ManifestError naming the file (the C parsers get libFuzzer; this one is Python)."""
    import random
    from mx8.formats import parse_labels, render_labels
    good = render_labels(["cat", "dog", "caf\u00e9 au lait", "a/b", "100%"])
    rng = random.Random(5)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(20_000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            pos = rng.randrange(len(data) + 1)
            if op < 0.4 and data:
                data[min(pos, len(data) - 1)] = rng.randrange(256)
            elif op < 0.7:
                data[pos:pos] = bytes([rng.choice(b"%\t\n\r0123456789+- aZ\xff\x00")])
            elif data:
                del data[min(pos, len(data) - 1)]
        try:
            labels = parse_labels(bytes(data), "labels.tsv")
            assert all(isinstance(x, str) for x in labels)
            outcomes["ok"] += 1
        except mx8.ManifestError as e:
            assert str(e).startswith("labels.tsv")
            outcomes["error"] += 1
    assert outcomes["ok"] > 100 and outcomes["error"] > 10_000, outcomes


def test_a_png_whose_data_stream_hides_a_gigabyte_of_zeros_decodes_in_milliseconds(tmp_path):
    """A 16x16 PNG whose compressed stream continues with 2 GB of zeros (a 2 MB file) decoded
    "OK" in 8-13 s: png_read_image inflates everything after the last row. The progressive
    reader stops at the last row."""
    c = zlib.compressobj(9)
    rows = b"".join(b"\x00" + bytes((x * 7 + y) % 256 for x in range(16)) for y in range(16))
    stream = c.compress(rows) + b"".join(c.compress(b"\x00" * (1 << 20)) for _ in range(512)) + c.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", stream) + chunk(b"IEND", b""))
    from mx8 import _core
    t0 = time.monotonic()
    w, h, rgb = _core.decode_image(png)
    assert time.monotonic() - t0 < 1.0   # it was ~1.3 s for these 512 MB of zeros, 8-13 s for 2 GB
    assert (w, h) == (16, 16) and rgb[3 * 17] == (1 * 7 + 1) % 256  # pixel (1, 1), gray -> RGB


# ---- the trust model for manifest locations ----

def test_a_local_manifest_cannot_climb_out_of_its_folder_unless_trusted(tmp_path, monkeypatch):
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(jpeg_bytes())
    root = tmp_path / "ds"
    (root / "_mx8").mkdir(parents=True)
    n = secret.stat().st_size
    (root / "_mx8" / "manifest.tsv").write_text(f"schema_version=0\n0\t../secret.jpg\t0\t{n}\t\n")
    with pytest.raises(mx8.ReadError, match=r"relative location '\.\./secret\.jpg' leaves the dataset folder"):
        list(mx8.Dataset(str(root), batch_size=1, size=16))
    monkeypatch.setenv("MX8_TRUST_MANIFEST_LOCATIONS", "1")
    assert sum(len(b.sample_ids) for b in mx8.Dataset(str(root), batch_size=1, size=16)) == 1


def test_a_remote_manifest_reads_only_its_own_bucket_unless_trusted(monkeypatch):
    from mx8 import _core
    from mx8.resolve import Snapshot
    from mx8.s3config import s3_config
    from mx8.s3io import S3Root
    m = _core.Manifest(b"schema_version=0\n0\tshards/a.tar\t0\t10\t\n1\ts3://other-bucket/x.tar\t0\t10\t\n")
    root = S3Root("mine", "ds/", s3_config(endpoint="http://127.0.0.1:9", env={}))
    snap = Snapshot("s3://mine/ds/", "s3://mine/ds/", m.hash, len(m), None, "manifest", m, root)
    with pytest.raises(mx8.ReadError, match=r"'s3://other-bucket/x\.tar' is in another bucket"):
        snap.location_objects()
    monkeypatch.setenv("MX8_TRUST_MANIFEST_LOCATIONS", "1")
    assert snap.location_objects() == [("mine", "ds/shards/a.tar"), ("other-bucket", "x.tar")]


def test_the_manifest_store_keeps_a_manifest_without_its_final_newline(tmp_path):
    """The store hashed the raw bytes, so an S3 manifest written without its last newline
    (whose manifest_hash covers the canonical bytes) was refused."""
    import hashlib
    from mx8.manifest_store import ManifestStore
    raw = b"schema_version=0\n0\ta.jpg\t0\t5\t"
    h = _core_hash(raw)
    assert h == hashlib.sha256(raw + b"\n").hexdigest()
    store = ManifestStore(str(tmp_path / "store"))
    store.put(h, raw, None, source="manifest", uri="s3://b/p/")
    assert store.get(h).manifest == raw + b"\n"


def test_a_pin_holds_the_label_names_too(tmp_path):
    """manifest_hash covers the records, not labels.tsv: the names behind each label_id could
    change under a pinned URI. mx8's pins now carry the labels' hash as well."""
    src = tmp_path / "src"
    for cls in ("cat", "dog"):
        (src / cls).mkdir(parents=True)
        (src / cls / "a.jpg").write_bytes(jpeg_bytes())
    out = tmp_path / "packed"
    mx8.pack(str(src), str(out), progress=False)
    snap = mx8.resolve(str(out))
    assert snap.pinned_uri == f"{out}@sha256:{snap.manifest_hash}+labels:{snap.labels_hash}"
    assert mx8.resolve(snap.pinned_uri) == snap
    labels = out / "_mx8" / "labels.tsv"
    labels.write_bytes(labels.read_bytes().replace(b"\tcat\n", b"\ttiger\n"))  # same ids, other name
    with pytest.raises(mx8.SnapshotMismatchError, match=r"label names changed .* labels hash is [0-9a-f]{64}, "
                                                         rf"pinned {snap.labels_hash}"):
        mx8.resolve(snap.pinned_uri)
    # MX8's plain form pins the records only, and still resolves.
    assert mx8.resolve(f"{out}@sha256:{snap.manifest_hash}").labels == ("tiger", "dog")
    labels.unlink()
    with pytest.raises(mx8.SnapshotMismatchError, match=r"none \(no labels\.tsv\)"):
        mx8.resolve(snap.pinned_uri)


def _core_hash(data: bytes) -> str:
    from mx8 import _core
    return _core.Manifest(data).hash
