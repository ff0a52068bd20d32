"""mx8.Dataset: every sample exactly once with its label, pixels against Pillow, transforms,
layouts, DataLoader workers, threads and stats."""
from __future__ import annotations

import gc
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import mx8
from mx8 import _core
from conftest import image_files


def native_threads() -> int:
    """mx8's own threads in this process (named mx8-*): other libraries' threads come and go
    on their own schedule (a previous test's DataLoader queue feeders, say)."""
    n = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                n += f.read().startswith("mx8-")
        except FileNotFoundError:  # exited meanwhile
            pass
    return n


def settled_native_threads(want: int, timeout: float = 2.0) -> int:
    """native_threads() once it equals want, or after timeout: a joined thread's /proc entry
    outlives pthread_join by a moment (the kernel wakes the joiner before it reaps the task)."""
    import time
    deadline = time.monotonic() + timeout
    while (n := native_threads()) != want and time.monotonic() < deadline:
        time.sleep(0.01)
    return n


def source_bytes(snap, sid):
    loc, off, length, _ = snap.manifest.record(sid)
    with open(snap.location_paths()[loc], "rb") as f:
        f.seek(off)
        return f.read(length)


def test_every_sample_once_with_its_label(packed, corpus):
    snap = mx8.resolve(str(packed))
    ds = mx8.Dataset(snap.pinned_uri, batch_size=32, size=64, crop="random", flip=True, shuffle=True)
    seen, shapes = {}, []
    for b in ds:
        shapes.append(tuple(b.images.shape))
        for sid, label in zip(b.sample_ids.tolist(), b.labels.tolist()):
            assert sid not in seen
            seen[sid] = label
    assert sorted(seen) == list(range(snap.samples))
    assert all(s[1:] == (3, 64, 64) for s in shapes) and all(s[0] == 32 for s in shapes[:-1])
    # labels agree with the folder each packed file came from
    by_bytes = {p.read_bytes(): p.parent.name for p in image_files(corpus)}
    for sid, label in seen.items():
        assert snap.labels[label] == by_bytes[source_bytes(snap, sid)]


def test_raw_batches_carry_the_exact_bytes(packed):
    snap = mx8.resolve(str(packed))
    n = 0
    for b in mx8.Dataset(str(packed), batch_size=24, decode=False, shuffle=True, seed=3):
        assert b.offsets[0] == 0 and b.offsets[-1] == b.data.numel()
        for i, sid in enumerate(b.sample_ids.tolist()):
            got = b.data[b.offsets[i]:b.offsets[i + 1]].numpy().tobytes()
            assert got == source_bytes(snap, sid)
            n += 1
    assert n == snap.samples


def test_raw_batches_held_by_the_user_are_never_overwritten(packed):
    """Raw batches come from recycled buffers (dataset.py): one kept past the next batches
    keeps its bytes while the dropped ones' buffers are refilled."""
    snap = mx8.resolve(str(packed))
    kept, batches = [], 0
    for b in mx8.Dataset(str(packed), batch_size=16, decode=False, prefetch_mb=1):
        batches += 1
        if batches % 3 == 0:
            kept.append((b, [source_bytes(snap, s) for s in b.sample_ids.tolist()]))
    assert batches > 6
    for b, want in kept:
        got = [b.data[b.offsets[i]:b.offsets[i + 1]].numpy().tobytes() for i in range(len(want))]
        assert got == want


def test_full_decode_matches_pillow_for_every_image(corpus):
    """JPEG (libjpeg-turbo, islow + fancy upsampling) and PNG decode bit-identical to Pillow."""
    files = image_files(corpus)
    assert len(files) > 200
    for p in files:
        data = p.read_bytes()
        w, h, rgb = _core.decode_image(data)
        ref = np.asarray(Image.open(p).convert("RGB"))
        got = np.frombuffer(rgb, np.uint8).reshape(h, w, 3)
        assert got.shape == ref.shape, p
        diff = np.abs(got.astype(int) - ref.astype(int)).max()
        assert diff == 0, f"{p}: max diff {diff}"  # CMYK, gray, progressive, 16-bit PNG included


def pillow_resize(path, out_w, out_h, box=None):
    img = Image.open(path).convert("RGB")
    return np.asarray(img.resize((out_w, out_h), Image.BILINEAR, box=box))


RESIZE_TOLERANCE = 1  # levels, per pixel, against Pillow's BILINEAR (antialiased) resize


@pytest.mark.parametrize("out", [(224, 224), (100, 150), (400, 300)])
def test_resize_matches_pillow(corpus, out):
    h, w = out
    for p in image_files(corpus)[::9]:
        got = np.frombuffer(_core.transform_image(p.read_bytes(), h, w, crop_mode=0, layout=1), np.uint8)
        ref = pillow_resize(p, w, h)
        diff = np.abs(got.reshape(h, w, 3).astype(int) - ref.astype(int))
        assert diff.max() <= RESIZE_TOLERANCE, f"{p}: max diff {diff.max()}"


def center_box(W, H, short=256, out=224):
    """torchvision Resize(short) + CenterCrop(out) as a box of the original image."""
    nw, nh = (short, int(short * H / W)) if W <= H else (int(short * W / H), short)
    left, top = int(round((nw - out) / 2.0)), int(round((nh - out) / 2.0))
    sx, sy = W / nw, H / nh
    return (left * sx, top * sy, (left + out) * sx, (top + out) * sy)


def test_center_crop_matches_pillow_box_resize(corpus):
    """Resize + center crop is one resample of the equivalent box of the original image."""
    for p in image_files(corpus)[::11]:
        W, H = Image.open(p).size
        box = center_box(W, H)
        got = np.frombuffer(_core.transform_image(p.read_bytes(), 224, 224, crop_mode=1, resize_short=256,
                                                  layout=1), np.uint8).reshape(224, 224, 3)
        diff = np.abs(got.astype(int) - pillow_resize(p, 224, 224, box).astype(int))
        assert diff.max() <= RESIZE_TOLERANCE, f"{p}: max diff {diff.max()}"


def test_crop_aware_decode_equals_full_decode_then_crop(corpus):
    for p in image_files(corpus):
        if p.suffix != ".jpg":
            continue
        data = p.read_bytes()
        for seed in range(3):
            a = _core.transform_image(data, 160, 160, crop_mode=2, seed=seed, crop_aware=1)
            b = _core.transform_image(data, 160, 160, crop_mode=2, seed=seed, crop_aware=0)
            assert a == b, f"{p} seed {seed}"


def test_layouts_flip_and_determinism(packed):
    kw = dict(batch_size=16, size=(48, 40), crop="random", shuffle=True, seed=5)
    nchw = next(iter(mx8.Dataset(str(packed), **kw)))
    nhwc = next(iter(mx8.Dataset(str(packed), layout="NHWC", **kw)))
    assert nhwc.images.shape == (16, 48, 40, 3)
    assert torch.equal(nchw.images, nhwc.images.permute(0, 3, 1, 2))
    again = next(iter(mx8.Dataset(str(packed), **kw)))
    assert torch.equal(nchw.images, again.images) and torch.equal(nchw.sample_ids, again.sample_ids)
    ds = mx8.Dataset(str(packed), **kw)
    ds.set_epoch(1)
    other = next(iter(ds))
    assert not torch.equal(other.sample_ids, nchw.sample_ids)

    plain = next(iter(mx8.Dataset(str(packed), batch_size=64, size=32, crop="none")))
    flipped = next(iter(mx8.Dataset(str(packed), batch_size=64, size=32, crop="none", flip=True)))
    same = [torch.equal(a, b) for a, b in zip(plain.images, flipped.images)]
    mirrored = [torch.equal(a.flip(-1), b) for a, b in zip(plain.images, flipped.images)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 16 < sum(mirrored) < 48  # about half


def test_random_crop_is_resized_crop_of_the_image(corpus):
    """A random crop of the 'size' of the whole image with scale=(1,1), ratio=(W/H, W/H) is
    the plain resize: checks the RandomResizedCrop geometry end to end."""
    p = image_files(corpus)[3]
    W, H = Image.open(p).size
    r = W / H
    got = _core.transform_image(p.read_bytes(), 64, 64, crop_mode=2, scale_min=1.0, scale_max=1.0,
                                ratio_min=r, ratio_max=r, layout=1)
    ref = pillow_resize(p, 64, 64)
    assert np.abs(np.frombuffer(got, np.uint8).reshape(64, 64, 3).astype(int) - ref.astype(int)).max() <= 1


def test_dataloader_workers_deliver_each_sample_once(packed):
    ds = mx8.Dataset(str(packed), batch_size=10, size=32, shuffle=True, threads=1)
    pickle.loads(pickle.dumps(ds))  # pickles cleanly (no native state)
    single = [b.sample_ids.tolist() for b in ds]
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    multi = [b.sample_ids.tolist() for b in loader]
    assert multi == single  # same batches, same order
    flat = [i for b in multi for i in b]
    assert sorted(flat) == list(range(mx8.resolve(str(packed)).samples))


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_persistent_workers_follow_set_epoch(packed, context):
    """DataLoader workers that outlive an epoch (persistent_workers=True) read each epoch's
    order as set_epoch() set it in the main process: the batches of every epoch are those of
    a fresh Dataset for that epoch (before, every epoch repeated the first one's order)."""
    kw = dict(batch_size=10, size=32, shuffle=True, threads=1)
    ds = mx8.Dataset(str(packed), **kw)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True,
                                         multiprocessing_context=context)
    epochs = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        epochs.append([b.sample_ids.tolist() for b in loader])
    for epoch, got in enumerate(epochs):
        assert got == [b.sample_ids.tolist() for b in mx8.Dataset(str(packed), epoch=epoch, **kw)], epoch
    assert epochs[0] != epochs[1] != epochs[2]
    assert type(pickle.loads(pickle.dumps(ds))) is mx8.Dataset  # no shared memory outside a worker start


def test_state_dict_refuses_an_epoch_read_by_loader_workers(packed):
    """The main process cannot see a DataLoader worker's position: its state_dict() for an
    epoch the workers read raises UsageError instead of returning position 0 (a resume from
    which would silently repeat the epoch). An epoch read with num_workers=0 checkpoints."""
    ds = mx8.Dataset(str(packed), batch_size=10, size=32, shuffle=True, threads=1)
    for _ in torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2):
        break
    with pytest.raises(mx8.UsageError, match="read by DataLoader worker processes.*num_workers=0"):
        ds.state_dict()
    ds.set_epoch(1)
    assert ds.state_dict()["position"] == 0  # a new epoch nobody read yet
    it = iter(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=0))
    next(it), next(it)
    assert ds.state_dict()["position"] == 20


def test_no_threads_before_iter_and_none_after_close(packed):
    gc.collect()  # an earlier test's engine, kept by a reference cycle, stops now, not mid-test
    base = settled_native_threads(-1, timeout=0.2)  # and its threads' /proc entries go
    ds = mx8.Dataset(str(packed), batch_size=8, size=32, threads=3)
    assert native_threads() == base
    it = iter(ds)
    next(it)
    assert native_threads() >= base + 3
    ds.close()
    assert settled_native_threads(base) == base
    with mx8.Dataset(str(packed), batch_size=8, size=32, threads=2) as ds2:
        for i, _ in enumerate(ds2):
            if i == 2:
                break
    assert settled_native_threads(base) == base
    # an abandoned iterator is cleaned up too
    it = iter(mx8.Dataset(str(packed), batch_size=8, size=32, threads=2))
    next(it)
    del it
    assert settled_native_threads(base) == base


def native_thread_ids(prefix: str = "mx8-worker", besides: frozenset = frozenset()):
    """The ids of the engines' worker threads in this process, less those in `besides` (other
    mx8- threads, such as a credentials poller or a lease heartbeat, live on their own; an
    earlier test's engine lives until its Dataset is collected, which a traceback's reference
    cycle can put off to a later test)."""
    out = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().startswith(prefix):
                    out.add(int(tid))
        except FileNotFoundError:
            pass
    return out - besides


def test_epochs_run_on_one_engine_without_new_threads(packed):
    """An engine lives as long as its Dataset: epoch after epoch (each iterated to the end,
    or left early) runs on the same native threads, and the batches are those of a fresh
    Dataset for that epoch. close() stops them; the next epoch starts new ones."""
    kw = dict(batch_size=16, size=32, crop="random", flip=True, shuffle=True, threads=3)
    gc.collect()
    before = frozenset(native_thread_ids())
    ds = mx8.Dataset(str(packed), **kw)
    seen, epochs = [], []
    for epoch in range(3):
        ds.set_epoch(epoch)
        ids = []
        for k, b in enumerate(ds):
            seen.append(native_thread_ids(besides=before))
            ids.append((b.sample_ids.clone(), b.images.clone()))
            if epoch == 1 and k == 2:
                break  # left early: the run is cancelled, the engine kept
        epochs.append(ids)
        assert ds.stats()["images"] == sum(len(i) for i, _ in ids) or epoch == 1
    assert len(seen[0]) == 3 and all(t == seen[0] for t in seen), "no thread started after the first epoch"
    for epoch in (0, 2):
        fresh = mx8.Dataset(str(packed), epoch=epoch, **kw)
        want = [(b.sample_ids.clone(), b.images.clone()) for b in fresh]
        fresh.close()
        assert len(want) == len(epochs[epoch])
        assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(epochs[epoch], want))
    ds.close()
    import time
    deadline = time.monotonic() + 2.0  # a joined thread's /proc entry outlives the join by a moment
    while native_thread_ids() & seen[0] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not native_thread_ids() & seen[0]


def test_stats(packed):
    ds = mx8.Dataset(str(packed), batch_size=50, size=32)
    n = sum(len(b.sample_ids) for b in ds)
    st = ds.stats()
    assert st["images"] == n and st["batches"] == -(-n // 50) and st["errors"] == 0
    assert st["bytes_read"] > 0 and st["decode_s"] > 0 and st["wait_s"] >= 0


def test_rank_shares_are_disjoint_equal_and_complete(packed):
    n = mx8.resolve(str(packed)).samples
    for world in (2, 3):
        shares = [[i for b in mx8.Dataset(str(packed), batch_size=7, size=16, shuffle=True, rank=r,
                                          world_size=world) for i in b.sample_ids.tolist()]
                  for r in range(world)]
        assert len({len(s) for s in shares}) == 1  # equal step counts
        flat = [i for s in shares for i in s]
        assert set(flat) == set(range(n)) and len(flat) - n == (-n) % world  # padding only


def test_batches_survive_the_iterator(packed):
    """Handed-out tensors are never reused behind the user's back."""
    ds = mx8.Dataset(str(packed), batch_size=16, size=32, prefetch_mb=1)
    kept = list(ds)
    again = list(ds)
    assert all(torch.equal(a.images, b.images) for a, b in zip(kept, again))


def test_batch_memory_is_recycled_only_after_release(packed):
    # 8 x 3 x 128 x 128 = 384 KiB a batch: prefetch_mb=1 gives depth 2
    ds = mx8.Dataset(str(packed), batch_size=8, size=128, pin_memory=False, prefetch_mb=1)
    ptrs = [b.images.data_ptr() for b in ds]  # each batch dropped before the next arrives
    assert len(ptrs) > 20 and len(set(ptrs)) <= 4  # depth (2) + the pool's spare buffers
    held = list(ds)
    assert len({b.images.data_ptr() for b in held}) == len(held)  # nothing held is reused


def test_float32_output_is_torchvision_normalize_of_the_uint8_batch(packed):
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    kw = dict(batch_size=16, size=40, crop="random", flip=True, shuffle=True, seed=2)
    for layout, cdim in (("NCHW", 1), ("NHWC", 3)):
        u8 = next(iter(mx8.Dataset(str(packed), layout=layout, **kw)))
        f32 = next(iter(mx8.Dataset(str(packed), layout=layout, dtype="float32", mean=mean, std=std, **kw)))
        assert f32.images.dtype == torch.float32 and f32.images.shape == u8.images.shape
        shape = [1, 1, 1, 1]
        shape[cdim] = 3
        want = (u8.images.float() / 255 - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)
        assert torch.allclose(f32.images, want, atol=1e-5)
    plain = next(iter(mx8.Dataset(str(packed), dtype="float32", **kw)))
    assert 0.0 <= plain.images.min() and plain.images.max() <= 1.0
    with pytest.raises(ValueError, match="dtype='float32'"):
        mx8.Dataset(str(packed), batch_size=4, size=8, mean=mean)


def test_to_device_keeps_the_batch_type(packed):
    b = next(iter(mx8.Dataset(str(packed), batch_size=4, size=16)))
    moved = mx8.to_device(b, "cpu")
    assert isinstance(moved, mx8.Batch) and torch.equal(moved.images, b.images)


def test_engine_takes_batch_memory_only_as_objects_it_can_hold(packed):
    """provide() takes the memory from the objects themselves (a PooledBuffer, or a tensor's
    DLPack capsule, which keeps the tensor alive while the engine holds it), never from an
    integer; memory that is too small, strided, or not an object it can hold is refused.
    The batch then comes out in the tensors provided, even with Python's own references to
    them dropped."""
    snap = mx8.resolve(str(packed))
    e = _core.Engine(snap.manifest, snap.location_paths(), 2, 4, 2, False, False,
                     {"out_h": 8, "out_w": 8, "crop_mode": 0})
    run, first, n = e.submit(torch.arange(4, dtype=torch.int64).numpy().tobytes(), 7)
    assert (first, n) == (0, 1)
    ids, labels = torch.empty(4, dtype=torch.int64), torch.empty(4, dtype=torch.int64)
    images = torch.empty(4, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(TypeError, match="PooledBuffer or a tensor"):
        e.provide(images.data_ptr(), labels.__dlpack__(), ids.__dlpack__())
    with pytest.raises(ValueError, match="not contiguous"):
        e.provide(torch.empty(8, 3, 8, 8, dtype=torch.uint8)[::2].__dlpack__(), labels.__dlpack__(),
                  ids.__dlpack__())
    with pytest.raises(ValueError, match="needs labels and ids"):
        e.provide(images.__dlpack__(), labels[:2].__dlpack__(), ids.__dlpack__())
    with pytest.raises(ValueError, match="needs 768 bytes"):
        e.provide(images[:2].__dlpack__(), labels.__dlpack__(), ids.__dlpack__())
    keep = ids.untyped_storage().data_ptr()
    e.provide(images.__dlpack__(), labels.__dlpack__(), ids.__dlpack__())
    del images, labels  # only the engine holds them now
    e.start()
    b, count, skipped, got_run, cancelled = e.next()
    assert (b, count, skipped, got_run, cancelled) == (0, 4, 0, run, False)
    assert ids.tolist() == [0, 1, 2, 3] and ids.untyped_storage().data_ptr() == keep
    assert e.next() is None
    e.close()


def test_ctrl_c_while_waiting_ends_the_epoch_and_the_next_reads_whole(packed):
    """A KeyboardInterrupt raised while next() waits for a batch (Ctrl-C) ends the epoch; the
    engine is kept, and the next epoch delivers every sample once (no buffer lost in the
    stream's bookkeeping)."""
    import _thread
    import threading
    ds = mx8.Dataset(str(packed), batch_size=64, size=128, threads=1)
    n = mx8.resolve(str(packed)).samples
    it = iter(ds)
    next(it)
    threading.Timer(0.05, _thread.interrupt_main).start()
    with pytest.raises(KeyboardInterrupt):
        for _ in it:
            pass
    ids = sorted(i for b in ds for i in b.sample_ids.tolist())
    assert ids == list(range(n))
    ds.close()


def test_transform_options_are_named_once_and_a_misspelt_one_is_refused(packed):
    """The engine and transform_image take the same option names (csrc/python/
    transform_options.c) and refuse a name they do not know, rather than using a default;
    the crop and layout codes come from the extension."""
    from mx8.spec import CROP_MODES, LAYOUTS, ReadSpec
    assert CROP_MODES == _core.CROP_MODES == {"none": 0, "center": 1, "random": 2}
    assert LAYOUTS == _core.LAYOUTS == {"NCHW": 0, "NHWC": 1}
    with pytest.raises(TypeError, match="unknown transform option 'crop_mod'"):
        _core.transform_image(b"\xff\xd8", 8, 8, crop_mod=1)
    snap = mx8.resolve(str(packed))
    opts = ReadSpec.of(batch_size=4, size=8).transform()
    _core.Engine(snap.manifest, snap.location_paths(), 1, 4, 2, False, False, opts).close()
    with pytest.raises(TypeError, match="Engine: unknown transform option 'flipp'"):
        _core.Engine(snap.manifest, snap.location_paths(), 1, 4, 2, False, False, {**opts, "flipp": 1})


def test_reading_options_read_as_attributes(packed):
    """ds.threads, ds.size, ... (the quickstart prints ds.threads) read through the spec."""
    ds = mx8.Dataset(str(packed), batch_size=8, size=(24, 32), threads=3, dtype="float32")
    assert (ds.threads, ds.size, ds.decode, ds.dtype, ds.batch_size) == (3, (24, 32), True, "float32", 8)
    assert ds.spec.threads == 3
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ds.nope
