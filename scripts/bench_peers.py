#!/usr/bin/env python3
"""mx8 against the peer data loaders: the same train path through each, one run, same cores.

The train path, for every contender: decode + RandomResizedCrop(224) (scale 0.08-1, ratio 3/4-4/3)
+ random horizontal flip into uint8 NCHW batches of 256, on the corpus of scripts/bench.py
(.cache/bench-corpus-5000, or 512 images with --quick, or --corpus DIR), with as many
threads/workers as this process may use cores. Each contender runs in its own subprocess, so its
peak RSS and start-up are its own (the measurement is scripts/bench.py's: wait4 rusage of the
contender's largest process, PSS of all its processes sampled every 0.2 s, time to first batch).

Contenders:
  mx8-train     the reference row: mx8.Dataset(crop="random", flip=True), run with .venv's python
                exactly as scripts/bench.py runs it
  dali          NVIDIA DALI CPU pipeline: fn.readers.file + fn.decoders.image(device="cpu") +
                fn.random_resized_crop + fn.flip + fn.transpose(CHW), DALIGenericIterator
  ffcv          FFCV .beton (DatasetWriter, RGBImageField) + RandomResizedCropRGBImageDecoder
  spdl          SPDL: spdl.io demux/decode with an FFmpeg crop,scale,hflip filter, spdl.pipeline
  litdata       LitData: optimize() chunks of the raw image bytes, StreamingDataset +
                StreamingDataLoader, PIL decode + the torchvision transforms
  streaming     MosaicML Streaming: MDSWriter of the raw bytes, StreamingDataset + DataLoader,
                PIL decode + the torchvision transforms
  webdataset    tar shards written with webdataset.TarWriter, WebDataset + WebLoader, PIL decode
                + the torchvision transforms

The peers are installed into a separate virtualenv .venv-peers (made on first use) with
torch==2.13.0 (the CPU wheel this project uses) pinned first and kept by a constraints file: a
peer that wants another torch is reported, not given a multi-GB CUDA torch. torchvision does not
import beside torch 2.13.0 (see scripts/bench.py), so "the torchvision transforms" are
torchvision's RandomResizedCrop.get_params + PIL crop/resize(BILINEAR) + flip + PILToTensor,
copied into this file (pil_train_transform): the same work as torchvision's PIL path.

A peer that cannot be installed or run is a row of the table with the reason (the pip error
line, the import error, the exception), never dropped. Each peer's datasets (.beton, MDS,
LitData chunks, tar shards) are written once under .cache/peers/ and reused; writing them is not
timed. Results go to --out (default bench-out/) as peers.md and peers.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (scripts/bench.py: stdlib only at import time)

REPO = bench.REPO
BATCH = bench.BATCH
PEERS_VENV = os.path.join(REPO, ".venv-peers")
PEERS_PY = os.path.join(PEERS_VENV, "bin", "python")
PEERS_CACHE = os.path.join(bench.CACHE, "peers")
TORCH_PIN = "torch==2.13.0"
# contender -> (pip requirement, import line that proves it works)
PEERS: Dict[str, Any] = {
    "dali": ("nvidia-dali-cuda120", "import nvidia.dali, nvidia.dali.fn, nvidia.dali.plugin.pytorch"),
    "ffcv": ("ffcv", "import ffcv, ffcv.writer, ffcv.loader"),
    "spdl": ("spdl", "import spdl.io, spdl.pipeline; from spdl.io.lib import _libspdl; _libspdl.make_demuxer"),
    "litdata": ("litdata", "import litdata"),
    "streaming": ("mosaicml-streaming", "import streaming, streaming.base.util"),
    "webdataset": ("webdataset", "import webdataset"),
}
CONTENDERS = ["mx8-train"] + list(PEERS)
# MosaicML Streaming imports torchvision at `import streaming` (streaming/vision/base.py), and no
# torchvision imports beside torch 2.13.0: it runs in scripts/bench.py's .venv-baseline (torch
# 2.14.1 + torchvision 0.29.1), installed there with everything already in it pinned by a
# constraints file of its `pip freeze` (so the torchvision baseline's packages do not change).
IN_BASELINE = {"streaming"}
PIP_TIMEOUT = 1800
# What the failures seen on Debian 12 need (Debian packages, not pip): added to the reason.
HINTS = {
    ("ffcv", "opencv"): "FFCV's setup.py needs OpenCV and libturbojpeg through pkg-config: "
                        "apt-get install libopencv-dev libturbojpeg0-dev pkg-config",
    ("spdl", "libav"): "SPDL loads the system FFmpeg (4-8): apt-get install libavdevice59 libavfilter8 "
                       "libavformat59 libavcodec59 libswscale6 libswresample4 (Debian 12's FFmpeg 5.1)",
}


def log(msg: str) -> None:
    print(f"[peers] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# Installing the peers

def _last_error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):  # the exception that a build or an import died of, first
        if re.match(r"^[\w.]*(Error|Exception): ", ln):
            return ln[:300]
    for ln in reversed(lines):
        if ln.startswith(("ERROR:", "error:")) or "Error" in ln.split(":")[0]:
            return ln[:300]
    return (lines[-1] if lines else "no output")[:300]


def ensure_peers_venv() -> Optional[str]:
    """.venv-peers with torch==2.13.0, Pillow and numpy; None and the reason logged if not."""
    if os.path.exists(PEERS_PY):
        r = subprocess.run([PEERS_PY, "-c", "import torch, PIL, numpy; print(torch.__version__)"],
                           capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.startswith("2.13.0"):
            return None
    log(f"creating {PEERS_VENV} with {TORCH_PIN}, pillow, numpy")
    py = shutil.which("python3") or sys.executable
    subprocess.run([py, "-m", "venv", PEERS_VENV], check=True)
    r = subprocess.run([PEERS_PY, "-m", "pip", "install", "-q", TORCH_PIN, "pillow", "numpy"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return "could not make .venv-peers: " + _last_error_line(r.stdout + r.stderr)
    return None


def _constraints_file() -> str:
    os.makedirs(PEERS_CACHE, exist_ok=True)
    path = os.path.join(PEERS_CACHE, "constraints.txt")
    with open(path, "w") as f:
        f.write(TORCH_PIN + "\n")
    return path


def _with_hint(name: str, why: Optional[str]) -> Optional[str]:
    if why:
        for (peer, needle), hint in HINTS.items():
            if peer == name and needle in why:
                return f"{why} [fix: {hint}]"
    return why


def ensure_peer(name: str, allow_install: bool) -> Optional[str]:
    return _with_hint(name, _ensure_peer(name, allow_install))


def _ensure_peer(name: str, allow_install: bool) -> Optional[str]:
    """Installs a peer into .venv-peers (constrained to keep torch 2.13.0) unless it already
    imports. Returns None when it imports, else the reason (pip's error line or the ImportError)."""
    req, probe = PEERS[name]
    py = peer_python(name)
    if not os.path.exists(py):
        return (f"needs {os.path.relpath(os.path.dirname(os.path.dirname(py)), REPO)} "
                "(made by: scripts/bench.py --only torchvision-w0)")

    def imports() -> Optional[str]:
        r = subprocess.run([py, "-c", probe], capture_output=True, text=True)
        return None if r.returncode == 0 else _last_error_line(r.stderr)

    why = imports()
    if why is None or not allow_install:
        return why
    logdir = os.path.join(PEERS_CACHE, "pip-logs")
    os.makedirs(logdir, exist_ok=True)
    logf = os.path.join(logdir, f"{name}.log")
    if name in IN_BASELINE:
        cons = os.path.join(PEERS_CACHE, "constraints-baseline.txt")
        with open(cons, "w") as f:
            f.write(subprocess.run([py, "-m", "pip", "freeze"], capture_output=True, text=True).stdout)
    else:
        cons = _constraints_file()
    log(f"pip install {req} into {os.path.relpath(os.path.dirname(os.path.dirname(py)), REPO)} "
        f"(-c {os.path.relpath(cons, REPO)}; log {os.path.relpath(logf, REPO)})")
    try:
        r = subprocess.run([py, "-m", "pip", "install", "-c", cons, req],
                           capture_output=True, text=True, timeout=PIP_TIMEOUT)
        out = r.stdout + r.stderr
        rc = r.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = f"{e.stdout or ''}{e.stderr or ''}\nERROR: pip timed out after {PIP_TIMEOUT}s", 1
    with open(logf, "w") as f:
        f.write(out if isinstance(out, str) else out.decode(errors="replace"))
    if rc != 0:
        return f"pip install {req} failed: " + _last_error_line(out if isinstance(out, str) else "")
    why = imports()
    return None if why is None else f"installed, but import fails: {why}"


def peer_python(name: str) -> str:
    return os.path.join(bench.BASELINE_VENV, "bin", "python") if name in IN_BASELINE else PEERS_PY


def peer_versions(py: str = PEERS_PY) -> Dict[str, str]:
    r = subprocess.run([py, "-m", "pip", "list", "--format", "json"], capture_output=True, text=True)
    try:
        return {p["name"].lower(): p["version"] for p in json.loads(r.stdout)}
    except ValueError:
        return {}


# ---------------------------------------------------------------------------------------------
# Child side: the train transform shared by the PIL-based peers

def pil_train_transform(size: int = 224):
    """torchvision's RandomResizedCrop(size) + RandomHorizontalFlip() + PILToTensor() on a PIL
    image, for the PIL path (get_params copied from torchvision 0.29 transforms.py)."""
    import numpy as np
    import torch
    from PIL import Image
    scale, ratio = (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0)
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def get_params(width: int, height: int):
        area = height * width
        for _ in range(10):
            target_area = area * random.uniform(*scale)
            aspect = math.exp(random.uniform(*log_ratio))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return random.randint(0, height - h), random.randint(0, width - w), h, w
        in_ratio = float(width) / float(height)
        if in_ratio < min(ratio):
            w = width
            h = int(round(w / min(ratio)))
        elif in_ratio > max(ratio):
            h = height
            w = int(round(h * max(ratio)))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    try:  # the real thing where torchvision imports (.venv-baseline)
        from torchvision import transforms as T
        tv = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.PILToTensor()])
        return lambda img: tv(img.convert("RGB"))
    except Exception:  # torch 2.13.0: "operator torchvision::nms does not exist"
        pass

    def tf(img: "Image.Image") -> "torch.Tensor":
        img = img.convert("RGB")  # what ImageFolder's loader does
        i, j, h, w = get_params(*img.size)
        img = img.crop((j, i, j + w, i + h)).resize((size, size), Image.BILINEAR)
        if random.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return torch.as_tensor(np.array(img, copy=True)).permute(2, 0, 1)  # PILToTensor: CHW view

    return tf


def transform_name() -> str:
    try:
        import torchvision
        return f"torchvision {torchvision.__version__} transforms"
    except Exception:
        return "torchvision's transforms re-implemented on PIL (torchvision does not import)"


def _reused(factory: Callable[[], Any]) -> Callable[[int], Any]:
    """make_iter for bench._timed_epochs: one loader, built on first use (its start-up is not
    repeated every epoch), and a fresh iterator over it per epoch."""
    made: List[Any] = []

    def make_iter(epoch: int):
        if not made:
            made.append(factory())
        return iter(made[0])
    return make_iter

def _dist_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def decode_pil(data: bytes):
    import io

    from PIL import Image
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def _samples(corpus: str):
    """(relative path, label) of the ImageFolder, labels by sorted class folder."""
    paths = bench.corpus_images(corpus)
    classes = sorted({os.path.dirname(p) for p in paths})
    idx = {c: i for i, c in enumerate(classes)}
    return [(p, idx[os.path.dirname(p)]) for p in paths]


def _dataset_dir(kind: str, corpus: str) -> str:
    import hashlib
    real = os.path.realpath(corpus)
    return os.path.join(PEERS_CACHE, kind, f"{os.path.basename(real)}-{hashlib.sha1(real.encode()).hexdigest()[:10]}")


def _write_once(out: str, write) -> str:
    """Runs write(tmp) unless `out` is complete (marked by out/.done); untimed."""
    if os.path.exists(os.path.join(out, ".done")):
        return out
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    t = time.perf_counter()
    write(tmp)
    os.replace(tmp, out)
    open(os.path.join(out, ".done"), "w").close()
    print(f"    wrote {out} in {time.perf_counter() - t:.1f}s (not timed)", flush=True)
    return out


def _loader_workers() -> int:
    return bench.cores()


# ---------------------------------------------------------------------------------------------
# Child side: one function per peer. Each returns bench._timed_epochs's dict + config/versions.

def run_dali(corpus: str, repeats: int, warmup: int) -> Dict[str, Any]:
    import nvidia.dali as dali  # noqa: I001
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    import torch
    from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy
    rss0 = bench._self_rss_mb()
    threads = bench.cores()

    @dali.pipeline_def(batch_size=BATCH, num_threads=threads, device_id=None, seed=1234)
    def train_pipe():
        jpegs, labels = fn.readers.file(file_root=corpus, random_shuffle=True, name="Reader")
        images = fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)
        images = fn.random_resized_crop(images, size=(224, 224))
        images = fn.flip(images, horizontal=fn.random.coin_flip())
        images = fn.transpose(images, perm=[2, 0, 1])  # HWC -> CHW, as the others give
        return images, labels

    holder: Dict[str, Any] = {}

    def warmup_iter():
        pipe = train_pipe()
        pipe.build()
        holder["it"] = DALIGenericIterator(pipe, ["images", "labels"], reader_name="Reader",
                                           last_batch_policy=LastBatchPolicy.PARTIAL, auto_reset=True)
        return iter(holder["it"])

    def end_warmup():
        # DALI cannot reset mid-epoch: finish the warm-up epoch (untimed) so the timed ones are whole
        it = holder["it"]
        while True:  # next(), not iter(): iter() mid-epoch warns and ignores a reset
            try:
                next(it)
            except StopIteration:
                break

    def make_iter(epoch: int):
        return iter(holder["it"])

    res = bench._timed_epochs(warmup_iter, end_warmup, make_iter, repeats, warmup,
                              lambda b: int(b[0]["images"].shape[0]))
    res["import_rss_mb"] = rss0
    res["config"] = {"num_threads": threads, "batch_size": BATCH, "device": "cpu",
                     "layout": "CHW uint8 (fn.transpose)"}
    res["versions"] = {"nvidia-dali-cuda120": _dist_version("nvidia-dali-cuda120"), "torch": torch.__version__}
    return res


def run_ffcv(corpus: str, repeats: int, warmup: int) -> Dict[str, Any]:
    import torch
    from ffcv.fields import IntField, RGBImageField
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import RandomResizedCropRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import RandomHorizontalFlip, ToTensor, ToTorchImage
    from ffcv.writer import DatasetWriter
    from PIL import Image
    samples = _samples(corpus)

    class DS:
        def __len__(self):
            return len(samples)

        def __getitem__(self, i):
            p, label = samples[i]
            return Image.open(os.path.join(corpus, p)).convert("RGB"), label

    def write(tmp: str) -> None:
        os.makedirs(tmp)
        w = DatasetWriter(os.path.join(tmp, "train.beton"),
                          {"image": RGBImageField(write_mode="jpg", jpeg_quality=90), "label": IntField()},
                          num_workers=bench.cores())
        w.from_indexed_dataset(DS())

    beton = os.path.join(_write_once(_dataset_dir("ffcv", corpus), write), "train.beton")
    rss0 = bench._self_rss_mb()
    workers = _loader_workers()
    def loader(indices=None):  # fresh pipeline objects per Loader: FFCV binds them to it
        pipelines = {"image": [RandomResizedCropRGBImageDecoder((224, 224)), RandomHorizontalFlip(),
                               ToTensor(), ToTorchImage()],
                     "label": [IntDecoder(), ToTensor()]}
        return Loader(beton, batch_size=BATCH, num_workers=workers, order=OrderOption.RANDOM,
                      pipelines=pipelines, indices=indices, os_cache=True, drop_last=False)

    holder: Dict[str, Any] = {}

    def warmup_iter():
        # One Loader throughout: a new one compiles its pipeline (numba) again on first use.
        holder["dl"] = loader()
        holder["it"] = iter(holder["dl"])
        return holder["it"]

    def end_warmup():  # finish the warm-up epoch, untimed, so that the timed ones are whole
        for _ in holder["it"]:
            pass

    def make_iter(epoch: int):
        return iter(holder["dl"])

    res = bench._timed_epochs(warmup_iter, end_warmup, make_iter, repeats, warmup,
                              lambda b: int(b[0].shape[0]))
    res["import_rss_mb"] = rss0
    res["config"] = {"num_workers": workers, "batch_size": BATCH, "write_mode": "jpg q90 (re-encoded)",
                     "os_cache": True, "drop_last": False}
    res["versions"] = {"ffcv": _dist_version("ffcv"), "torch": torch.__version__}
    return res


def run_spdl(corpus: str, repeats: int, warmup: int) -> Dict[str, Any]:
    import numpy as np
    import spdl.io
    import torch
    from spdl.pipeline import PipelineBuilder
    samples = _samples(corpus)
    paths = [os.path.join(corpus, p) for p, _ in samples]
    rss0 = bench._self_rss_mb()
    threads = bench.cores()
    scale, log_ratio = (0.08, 1.0), (math.log(3 / 4), math.log(4 / 3))

    def crop_params(width: int, height: int):
        area = width * height
        for _ in range(10):
            ta = area * random.uniform(*scale)
            ar = math.exp(random.uniform(*log_ratio))
            w, h = int(round(math.sqrt(ta * ar))), int(round(math.sqrt(ta / ar)))
            if 0 < w <= width and 0 < h <= height:
                return random.randint(0, width - w), random.randint(0, height - h), w, h
        s = min(width, height)
        return (width - s) // 2, (height - s) // 2, s, s

    def decode(path: str):
        packets = spdl.io.demux_image(path)
        w, h = packets.codec.width, packets.codec.height
        x, y, cw, ch = crop_params(w, h)
        flt = f"crop={cw}:{ch}:{x}:{y},scale=224:224:flags=bilinear"
        if random.random() < 0.5:
            flt += ",hflip"
        flt += ",format=rgb24"
        return spdl.io.decode_packets(packets, filter_desc=flt)

    def collate(frames):
        buf = spdl.io.convert_frames(frames)
        return torch.from_numpy(np.asarray(buf)).permute(0, 3, 1, 2)  # NHWC -> NCHW view

    def pipeline(order):
        return (PipelineBuilder().add_source(order)
                .pipe(decode, concurrency=threads)
                .aggregate(BATCH, drop_last=False)
                .pipe(collate)
                .add_sink(2)
                .build(num_threads=threads))

    def run_pipe(order):
        p = pipeline(order)
        with p.auto_stop():
            for b in p:
                yield b

    def warmup_iter():
        return run_pipe(random.sample(paths, min(len(paths), warmup * BATCH)))

    def make_iter(epoch: int):
        return run_pipe(random.sample(paths, len(paths)))

    res = bench._timed_epochs(warmup_iter, lambda: None, make_iter, repeats, warmup, lambda b: int(b.shape[0]))
    res["import_rss_mb"] = rss0
    res["config"] = {"threads": threads, "batch_size": BATCH,
                     "transform": "FFmpeg filter crop,scale(bilinear),hflip,format=rgb24"}
    res["versions"] = {"spdl": _dist_version("spdl"), "spdl-io": _dist_version("spdl-io"),
                       "torch": torch.__version__}
    return res


def run_litdata(corpus: str, repeats: int, warmup: int) -> Dict[str, Any]:
    import litdata
    import torch
    samples = _samples(corpus)

    def write(tmp: str) -> None:
        litdata.optimize(fn=_litdata_item, inputs=[(os.path.join(corpus, p), lab) for p, lab in samples],
                         output_dir=tmp, chunk_bytes="64MB", num_workers=1)

    out = _write_once(_dataset_dir("litdata", corpus), write)
    rss0 = bench._self_rss_mb()
    workers = _loader_workers()

    DS = LitDS  # noqa: F821  (module level: litdata's workers are spawned and unpickle it)

    def loader(n=None):
        ds = DS(out, shuffle=True, max_cache_size="10GB")
        if n is not None:
            ds = torch.utils.data.Subset(ds, range(n))
            return torch.utils.data.DataLoader(ds, batch_size=BATCH, num_workers=workers)
        return litdata.StreamingDataLoader(ds, batch_size=BATCH, num_workers=workers)

    def warmup_iter():
        return iter(loader(min(len(samples), warmup * BATCH)))

    res = bench._timed_epochs(warmup_iter, lambda: None, _reused(loader), repeats, warmup,
                              lambda b: int(b[0].shape[0]))
    res["import_rss_mb"] = rss0
    res["config"] = {"num_workers": workers, "batch_size": BATCH, "decode": "PIL + " + transform_name()}
    res["versions"] = {"litdata": _dist_version("litdata"), "pillow": _dist_version("pillow"),
                       "torch": torch.__version__}
    return res


def _litdata_item(item):
    path, label = item
    with open(path, "rb") as f:
        return {"image": f.read(), "label": label}


def run_streaming(corpus: str, repeats: int, warmup: int) -> Dict[str, Any]:
    import streaming
    import torch
    from streaming import MDSWriter, StreamingDataset
    from streaming.base.util import clean_stale_shared_memory
    samples = _samples(corpus)

    def write(tmp: str) -> None:
        with MDSWriter(out=tmp, columns={"image": "bytes", "label": "int"}, size_limit="64mb") as w:
            for p, lab in samples:
                with open(os.path.join(corpus, p), "rb") as f:
                    w.write({"image": f.read(), "label": lab})

    out = _write_once(_dataset_dir("streaming", corpus), write)
    clean_stale_shared_memory()
    rss0 = bench._self_rss_mb()
    workers = _loader_workers()
    tf = pil_train_transform()

    class DS(StreamingDataset):
        def __getitem__(self, index):
            item = super().__getitem__(index)
            return tf(decode_pil(item["image"])), item["label"]

    holder: Dict[str, Any] = {}

    def warmup_iter():
        ds = DS(local=out, shuffle=False, batch_size=BATCH)
        sub = torch.utils.data.Subset(ds, range(min(len(samples), warmup * BATCH)))
        return iter(torch.utils.data.DataLoader(sub, batch_size=BATCH, num_workers=workers))

    def make_iter(epoch: int):
        if "dl" not in holder:
            holder["ds"] = DS(local=out, shuffle=True, batch_size=BATCH)
            holder["dl"] = torch.utils.data.DataLoader(holder["ds"], batch_size=BATCH, num_workers=workers,
                                                       persistent_workers=False)
        return iter(holder["dl"])

    res = bench._timed_epochs(warmup_iter, lambda: None, make_iter, repeats, warmup,
                              lambda b: int(b[0].shape[0]))
    res["import_rss_mb"] = rss0
    res["config"] = {"num_workers": workers, "batch_size": BATCH, "decode": "PIL + " + transform_name()}
    res["versions"] = {"mosaicml-streaming": _dist_version("mosaicml-streaming"),
                       "pillow": _dist_version("pillow"), "torch": torch.__version__}
    return res


def run_webdataset(corpus: str, repeats: int, warmup: int) -> Dict[str, Any]:
    import torch
    import webdataset as wds
    samples = _samples(corpus)
    nshards = 8

    def write(tmp: str) -> None:
        os.makedirs(tmp)
        per = math.ceil(len(samples) / nshards)
        for s in range(nshards):
            with wds.TarWriter(os.path.join(tmp, f"shard-{s:04d}.tar")) as w:
                for k, (p, lab) in enumerate(samples[s * per:(s + 1) * per]):
                    with open(os.path.join(corpus, p), "rb") as f:
                        data = f.read()
                    ext = "png" if p.lower().endswith(".png") else "jpg"
                    w.write({"__key__": f"{s:04d}_{k:06d}", ext: data, "cls": lab})

    out = _write_once(_dataset_dir("webdataset", corpus), write)
    urls = sorted(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".tar"))
    rss0 = bench._self_rss_mb()
    workers = _loader_workers()
    tf = pil_train_transform()

    def pipeline(n=None):
        ds = (wds.WebDataset(urls, shardshuffle=len(urls), empty_check=False).shuffle(1000)
              .decode("pil").to_tuple("jpg;png", "cls").map_tuple(tf, lambda x: x).batched(BATCH, partial=True))
        if n is not None:
            ds = ds.slice(n)
        return wds.WebLoader(ds, batch_size=None, num_workers=workers)

    def warmup_iter():
        return iter(pipeline(n=warmup))

    res = bench._timed_epochs(warmup_iter, lambda: None, _reused(pipeline), repeats, warmup,
                              lambda b: int(b[0].shape[0]))
    res["import_rss_mb"] = rss0
    res["config"] = {"num_workers": workers, "batch_size": BATCH, "shards": len(urls),
                     "decode": "PIL + " + transform_name() + ", shuffle buffer 1000"}
    res["versions"] = {"webdataset": _dist_version("webdataset"), "pillow": _dist_version("pillow"),
                       "torch": torch.__version__}
    return res


_TF = None


def _tf(img):
    global _TF
    if _TF is None:
        _TF = pil_train_transform()
    return _TF(img)


if os.environ.get("MX8_PEERS_CHILD") == "litdata":  # the class must be importable in spawned workers
    import litdata as _litdata

    class LitDS(_litdata.StreamingDataset):
        def __getitem__(self, index):
            item = super().__getitem__(index)
            return _tf(decode_pil(item["image"])), item["label"]


RUNNERS = {"dali": run_dali, "ffcv": run_ffcv, "spdl": run_spdl, "litdata": run_litdata,
           "streaming": run_streaming, "webdataset": run_webdataset}


def child_main(spec: Dict[str, Any]) -> int:
    name = spec["name"]
    try:
        if name == "mx8-train":
            res = bench.run_mx8(name, spec["packed"], spec["repeats"], spec["warmup"])
        else:
            res = RUNNERS[name](spec["corpus"], spec["repeats"], spec["warmup"])
    except BaseException as e:  # the reason goes into the table
        traceback.print_exc()
        res = {"child_error": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]}
    with open(spec["result_file"], "w") as f:
        json.dump(res, f)
    return 0


# ---------------------------------------------------------------------------------------------
# Parent side (scripts/bench.py's run_contender, running this file as the child)

def run_contender(spec: Dict[str, Any], python: str, timeout: float) -> Dict[str, Any]:
    """scripts/bench.py's child runner, on this script's contenders."""
    return bench.run_contender(spec, python, timeout, script=__file__, env={"MX8_PEERS_CHILD": spec["name"]})


def render_markdown(rows: List[Dict[str, Any]], meta: Dict[str, Any]) -> str:
    f = bench._fmt
    out = [f"# mx8 vs peer loaders ({meta['date']})", "",
           f"Corpus: `{meta['corpus']}`: {meta['images']} images ({meta['jpegs']} JPEG), "
           f"{meta['corpus_mb']:.0f} MB. Train path (decode + RandomResizedCrop 224 + flip, uint8 "
           f"NCHW), batch {BATCH}, {meta['cores']} cores. Best of {meta['repeats']} epoch(s) after a warm-up.", "",
           "| contender | img/s | vs mx8-train | peak RSS MB | RSS after imports MB | "
           "peak PSS MB (all procs) | first batch s | versions |",
           "|---|---:|---:|---:|---:|---:|---:|---|"]
    ref = next((r["rate"] for r in rows if r["name"] == "mx8-train" and r.get("rate")), None)
    for r in rows:
        if r.get("error"):
            out.append(f"| {r['name']} | failed: {r['error'].replace('|', '/')} | | | | | | |")
            continue
        vers = ", ".join(f"{k} {v}" for k, v in r.get("versions", {}).items())
        out.append("| {} | {} | {} | {} | {} | {} | {} | {} |".format(
            r["name"], f(r["rate"], ".0f"), f(r["rate"] / ref if ref else None, ".2f"),
            f(r.get("peak_rss_mb"), ".0f"), f(r.get("import_rss_mb"), ".0f"), f(r.get("peak_pss_mb"), ".0f"),
            f(r.get("first_batch_s"), ".2f"), vers))
    out += ["", "Notes:"] + [f"- {n}" for n in meta["notes"]]
    return "\n".join(out) + "\n"


def select(only: Optional[str]) -> List[str]:
    if not only:
        return list(CONTENDERS)
    names = [s.strip() for s in only.split(",") if s.strip()]
    bad = [n for n in names if n not in CONTENDERS]
    if bad:
        raise SystemExit(f"bench_peers: --only {','.join(bad)}: not one of {', '.join(CONTENDERS)}")
    return names


def run(a: argparse.Namespace) -> int:
    names = select(a.only)
    count = 512 if a.quick else 5000
    repeats = a.repeats or (1 if a.quick else 2)
    warmup = 1 if a.quick else 3
    corpus = os.path.abspath(a.corpus) if a.corpus else bench.build_corpus(count)
    images = bench.corpus_images(corpus)
    if not images:
        raise SystemExit(f"bench_peers: no images under {corpus}")
    meta: Dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "corpus": corpus, "images": len(images),
        "jpegs": sum(1 for p in images if not p.lower().endswith(".png")),
        "corpus_mb": sum(os.path.getsize(os.path.join(corpus, p)) for p in images) / 1e6,
        "cores": bench.cores(), "repeats": repeats, "warmup_batches": warmup, "notes": [],
        "command": " ".join(["scripts/bench_peers.py"] + sys.argv[1:]),
    }
    packed = bench.ensure_packed(corpus) if "mx8-train" in names else None
    venv_why = ensure_peers_venv() if any(n in PEERS for n in names) else None
    results = []
    for name in names:
        if name in PEERS:
            why = venv_why or ensure_peer(name, allow_install=not a.no_install)
            if why:
                log(f"{name}: not run: {why}")
                results.append({"name": name, "error": why, "rate": None})
                continue
            python = peer_python(name)
        else:
            python = bench.VENV_PY
        log(f"{name} ...")
        spec = {"name": name, "repeats": repeats, "warmup": warmup, "corpus": corpus, "packed": packed}
        r = run_contender(spec, python, a.timeout)
        r["loadavg_1m_after"] = os.getloadavg()[0]  # others' work on the same cores shows here
        if r.get("error"):
            log(f"{name}: FAILED ({r['error']})")
        else:
            log(f"{name}: {r['rate']:.0f} img/s, peak RSS {r['peak_rss_mb']:.0f} MB, "
                f"first batch {bench._fmt(r.get('first_batch_s'), '.2f')} s")
        results.append(r)

    if os.path.exists(PEERS_PY):
        v = peer_versions()
        meta["peer_venv_packages"] = v
        meta["notes"].append(f"peers run in .venv-peers: torch {v.get('torch', '?')}, Pillow {v.get('pillow', '?')}, "
                             f"numpy {v.get('numpy', '?')}; mx8-train runs in .venv as in scripts/bench.py")
    if "streaming" in names:
        meta["notes"].append("streaming runs in .venv-baseline (torch 2.14.1 + torchvision 0.29.1, scripts/bench.py's "
                             "torchvision baseline): `import streaming` imports torchvision, which does not import "
                             "beside torch 2.13.0; it uses the real torchvision transforms")
    meta["notes"] += [
        "litdata and webdataset store the corpus files' bytes unchanged and decode with PIL, then apply "
        "torchvision's RandomResizedCrop get_params + PIL crop/resize(BILINEAR) + flip + PILToTensor, "
        "re-implemented on PIL in this script (same work as torchvision's PIL path); loader workers = cores",
        "dali and ffcv warm up over one whole untimed epoch (neither can stop mid-epoch; FFCV's numba "
        "compile happens there); the others over the warm-up batches of a short-lived loader",
        "ffcv re-encodes the images into its .beton (RGBImageField write_mode='jpg', quality 90): its JPEGs "
        "are not the corpus's bytes",
        "writing each peer's dataset format (.beton, MDS, LitData chunks, tar shards) is done once, untimed, "
        "under .cache/peers/",
        "peak RSS: the contender's largest process (getrusage/wait4); peak PSS: all its processes, workers "
        "included (sampled every 0.2 s); first batch: from creating the loader to its first batch",
        "quote ratios from one run: the machine is shared and noisy. 1-minute load average after each "
        "contender (this run's own load is about the core count): "
        + ", ".join(f"{r['name']} {r['loadavg_1m_after']:.1f}" for r in results if "loadavg_1m_after" in r),
    ]
    os.makedirs(a.out, exist_ok=True)
    md = render_markdown(results, meta)
    stem = "peers-quick" if a.quick else "peers"
    with open(os.path.join(a.out, stem + ".md"), "w") as f:
        f.write(md)
    with open(os.path.join(a.out, stem + ".json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=2)
    print()
    print(md)
    log(f"wrote {a.out}/{stem}.md, {stem}.json")
    return 1 if any(r.get("error") for r in results) else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench_peers.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", metavar="DIR", help="ImageFolder to run on (default: scripts/bench.py's "
                   ".cache/bench-corpus-5000, or -512 with --quick)")
    p.add_argument("--quick", action="store_true", help="512 images, one timed epoch, 1 warm-up batch")
    p.add_argument("--only", metavar="NAME[,NAME]", help=f"run only these: {', '.join(CONTENDERS)}")
    p.add_argument("--repeats", type=int, help="timed epochs per contender, best counts (default 2; 1 with --quick)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per contender run (default 900)")
    p.add_argument("--no-install", action="store_true", help="do not pip install missing peers; report them")
    p.add_argument("--out", default=os.path.join(REPO, "bench-out"), help="output directory (default bench-out/)")
    p.add_argument("--child-spec", help=argparse.SUPPRESS)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    if a.child_spec:
        return child_main(json.loads(a.child_spec))
    return run(a)


if __name__ == "__main__":
    sys.exit(main())
