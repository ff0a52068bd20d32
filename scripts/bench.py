#!/usr/bin/env python3
"""mx8 side-by-side benchmark: one run, one corpus, the same cores for every contender.

Contenders (each in its own subprocess, so peak RSS and start-up are its own):
  mx8-train          mx8.Dataset(size=224, crop="random", flip=True): decode + RandomResizedCrop
                     + flip into uint8 NCHW batches of 256, threads = all cores
  mx8-train-t1       the same with threads=1: the summary gives the thread-scaling ratio
                     rate(mx8-train) / (N x rate(mx8-train-t1)), N = all cores
  mx8-eval           crop="center", resize 256 -> center 224
  mx8-no-crop-aware  mx8-train with crop_aware=False (decode whole JPEGs, then crop)
  torchvision-wN     ImageFolder + Pillow, RandomResizedCrop(224) + RandomHorizontalFlip +
                     PILToTensor, DataLoader(batch_size=256, num_workers=N) for N in --workers
  turbojpeg-raw      the physical-limit probe tests/c/tjrate.c: single-thread TurboJPEG
                     full decode of every JPEG (no crop, no resize, no PNG) from memory
  libpng-raw         tests/c/pngrate.c on a PNG corpus (--png-count images of the corpus, converted
                     to PNG with Pillow under .cache/): a bare single-thread libpng decode loop into
                     RGB, and mx8's own PNG decode (mx8_decode_rgb) of the same files in the same
                     process, interleaved; the summary gives the ratio mx8 / libpng
  mx8-png            mx8.Dataset over that PNG folder, crop="random" 224 + flip, threads = all cores

Every contender gets a warm-up pass over a few batches, then is timed over the whole corpus
(--repeats epochs, the best one counts). The table gives images/s, the ratio to the best
torchvision setting and to raw TurboJPEG (one core, and N cores ideal = N x that rate), peak
RSS of the contender's largest process (getrusage via wait4), peak PSS summed over its
processes (DataLoader workers included; sampled) and the time to the first batch. Below it,
the thread-scaling ratio (when mx8-train and mx8-train-t1 ran) and the PNG table (another
corpus, so its own ratios: to the bare libpng loop). Results go to --out as bench.md,
bench.json (with "targets": thread_scaling, png) and, when matplotlib imports, bench.png.

torchvision: the torchvision wheel that matches this project's torch==2.13.0 does not import
beside it ("operator torchvision::nms does not exist"), so unless .venv has a working one, the
torchvision contenders run in a separate virtualenv .venv-baseline with torch==2.14.1 and
torchvision==0.29.1 (made on first use, ~5.5 GB; never in CI). The table names the versions.

Quote ratios, not absolute rates: the machines are shared and noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_PY = os.path.join(REPO, ".venv", "bin", "python")
BASELINE_VENV = os.path.join(REPO, ".venv-baseline")
BASELINE_PINS = ["torch==2.14.1", "torchvision==0.29.1", "pillow", "numpy"]
CACHE = os.path.join(REPO, ".cache")
BATCH = 256
TV_WORKERS = [0, 1, 2, 3, 4]
MX8_CONTENDERS = ["mx8-train", "mx8-train-t1", "mx8-eval", "mx8-no-crop-aware"]
PNG_CONTENDERS = ["libpng-raw", "mx8-png"]


def log(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------
# Corpus and packed dataset

def build_corpus(count: int, python: str = VENV_PY) -> str:
    """A cached real-photo ImageFolder of `count` images in 100 classes under .cache/
    (`mx8 demo-data`, seed 0: scikit-image's photographs)."""
    out = os.path.join(CACHE, f"bench-demo-{count}")
    if os.path.isdir(out):  # demo-data renames a finished folder into place
        return out
    log(f"making a {count}-image real-photo corpus -> {out} (about {count // 150 + 5}s)")
    subprocess.run([python, "-m", "mx8", "demo-data", out, "--count", str(count), "--classes", "100", "--seed", "0",
                    "--quiet"], check=True)
    return out


def corpus_images(corpus: str) -> List[str]:
    """Relative paths of the images of an ImageFolder, sorted."""
    out = []
    for d, _, files in os.walk(corpus):
        for f in files:
            if f.lower().endswith((".jpg", ".jpeg", ".png")):
                out.append(os.path.relpath(os.path.join(d, f), corpus))
    return sorted(out)


def ensure_packed(corpus: str, python: str = VENV_PY) -> str:
    """mx8.pack the corpus once into .cache/bench-packed/<name>-<hash> (reused while it
    matches). Runs in a child: the parent never imports torch, or every child it forks
    would start with (and getrusage would report) the parent's RSS."""
    import hashlib
    real = os.path.realpath(corpus)
    out = os.path.join(CACHE, "bench-packed", f"{os.path.basename(real)}-{hashlib.sha1(real.encode()).hexdigest()[:10]}")
    spec = {"name": "pack", "corpus": corpus, "packed": out, "images": len(corpus_images(corpus))}
    subprocess.run([python, os.path.abspath(__file__), "--child-spec", json.dumps(spec)], check=True)
    return out


def pack_if_needed(corpus: str, out: str, images: int) -> None:
    import mx8
    if os.path.exists(os.path.join(out, "_mx8", "manifest.tsv")):
        try:
            if mx8.resolve(out).samples == images:
                return
        except mx8.Error:
            pass
    log(f"packing {corpus} -> {out}")
    r = mx8.pack(corpus, out, progress=False)
    log(f"packed {r.samples} samples, {r.bytes / 1e6:.0f} MB, {r.shards} shard(s)")


def ensure_png_corpus(corpus: str, count: int, python: str = VENV_PY) -> str:
    """A PNG ImageFolder of `count` images of the corpus (every k-th, so all kinds and classes
    are in it), converted with Pillow (default PNG settings; JPEG grayscale stays 8-bit gray,
    PNGs of the corpus are copied), cached under .cache/bench-png/<name>-<hash>-<count>.
    Made in a child, like the packed dataset."""
    import hashlib
    real = os.path.realpath(corpus)
    out = os.path.join(CACHE, "bench-png",
                       f"{os.path.basename(real)}-{hashlib.sha1(real.encode()).hexdigest()[:10]}-{count}")
    if not os.path.exists(os.path.join(out, "_png_corpus.tsv")):
        spec = {"name": "png-corpus", "corpus": corpus, "png_dir": out, "count": count}
        subprocess.run([python, os.path.abspath(__file__), "--child-spec", json.dumps(spec)], check=True)
    return out


def make_png_corpus(corpus: str, out: str, count: int) -> None:
    from PIL import Image
    images = corpus_images(corpus)
    step = max(1, len(images) // count)
    chosen = images[::step][:count]
    log(f"converting {len(chosen)} images of {corpus} to PNG -> {out}")
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    lines = []
    for rel in chosen:
        src = os.path.join(corpus, rel)
        dst = os.path.join(tmp, os.path.splitext(rel)[0] + ".png")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if rel.lower().endswith(".png"):
            shutil.copyfile(src, dst)
        else:
            with Image.open(src) as im:
                im = im if im.mode in ("L", "RGB") else im.convert("RGB")
                im.save(dst, format="PNG")
        with Image.open(dst) as im:
            lines.append(f"{os.path.relpath(dst, tmp)}\t{im.mode}\t{im.width}x{im.height}\t{os.path.getsize(dst)}")
    with open(os.path.join(tmp, "_png_corpus.tsv"), "w") as f:
        f.write("path\tmode\tsize\tbytes\n" + "\n".join(lines) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


# ---------------------------------------------------------------------------------------------
# Contenders (child side). Each returns a dict with rate, epochs, first_batch_s, images.

def _self_rss_mb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed_epochs(warmup_iter, end_warmup, make_iter, repeats: int, warmup_batches: int,
                  count_of) -> Dict[str, Any]:
    """Warm-up: `warmup_iter()` for `warmup_batches` batches (it also gives the time to the
    first batch, set-up included), then `end_warmup()` stops its work, so that nothing left
    over runs inside the timed window. Then `repeats` full epochs of `make_iter(epoch)`."""
    t0 = time.perf_counter()
    it = warmup_iter()
    first = None
    for i, batch in enumerate(it):
        if first is None:
            first = time.perf_counter() - t0
        if i + 1 >= warmup_batches:
            break
    del it, batch
    end_warmup()
    epochs = []
    for e in range(repeats):
        n = 0
        t = time.perf_counter()
        for batch in make_iter(e):
            n += count_of(batch)
        dt = time.perf_counter() - t
        epochs.append({"images": n, "seconds": dt, "rate": n / dt})
        print(f"    epoch {e}: {n} images in {dt:.2f}s = {n / dt:.0f} img/s", flush=True)
    best = max(epochs, key=lambda r: r["rate"])
    return {"rate": best["rate"], "images": best["images"], "epochs": epochs, "first_batch_s": first}


def run_mx8(name: str, packed: str, repeats: int, warmup: int) -> Dict[str, Any]:
    import torch

    import mx8
    rss0 = _self_rss_mb()
    threads = 1 if name == "mx8-train-t1" else cores()
    kw: Dict[str, Any] = dict(batch_size=BATCH, size=224, threads=threads)
    if name in ("mx8-train", "mx8-train-t1", "mx8-png"):
        kw.update(crop="random", flip=True, shuffle=True)
    elif name == "mx8-eval":
        kw.update(crop="center", resize=256, shuffle=False)
    elif name == "mx8-no-crop-aware":
        kw.update(crop="random", flip=True, shuffle=True, crop_aware=False)
    else:
        raise ValueError(name)
    holder: Dict[str, Any] = {}

    def warmup_iter():
        holder["ds"] = mx8.Dataset(packed, **kw)  # resolve + manifest parse: part of the first batch
        return iter(torch.utils.data.DataLoader(holder["ds"], batch_size=None))

    def make_iter(epoch: int):
        holder["ds"].set_epoch(epoch)
        return iter(torch.utils.data.DataLoader(holder["ds"], batch_size=None))

    res = _timed_epochs(warmup_iter, lambda: holder["ds"].close(), make_iter, repeats, warmup,
                        lambda b: int(b.images.shape[0]))
    res["config"] = {k: v for k, v in kw.items()}
    res["import_rss_mb"] = rss0
    res["versions"] = {"torch": torch.__version__, "mx8": mx8.__version__}
    return res


def run_torchvision(workers: int, corpus: str, repeats: int, warmup: int) -> Dict[str, Any]:
    import PIL
    import torch
    import torchvision
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder
    rss0 = _self_rss_mb()

    import warnings
    warnings.filterwarnings("ignore", message="This DataLoader will create")  # more workers than cores: on purpose
    tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.PILToTensor()])
    holder: Dict[str, Any] = {}

    def warmup_iter():
        # Its own short-lived loader: stopping a persistent loader mid-epoch would leave its
        # prefetched batches to be finished inside the first timed epoch.
        holder["ds"] = ds = ImageFolder(corpus, transform=tf)
        sub = torch.utils.data.Subset(ds, range(min(len(ds), warmup * BATCH)))
        return iter(torch.utils.data.DataLoader(sub, batch_size=BATCH, shuffle=True, num_workers=workers))

    def make_iter(epoch: int):
        if "dl" not in holder:
            holder["dl"] = torch.utils.data.DataLoader(holder["ds"], batch_size=BATCH, shuffle=True,
                                                       num_workers=workers, persistent_workers=workers > 0)
        return iter(holder["dl"])

    res = _timed_epochs(warmup_iter, lambda: None, make_iter, repeats, warmup, lambda b: int(b[0].shape[0]))
    res["import_rss_mb"] = rss0
    res["config"] = {"num_workers": workers, "batch_size": BATCH, "persistent_workers": workers > 0}
    res["versions"] = {"torch": torch.__version__, "torchvision": torchvision.__version__,
                       "pillow": PIL.__version__, "python": sys.executable}
    return res


def build_tjrate(workdir: str) -> str:
    """tests/c/tjrate.c through tests/c/Makefile, built into workdir (as build_pngrate)."""
    return make_bench_tool(workdir, "tjrate", "libturbojpeg0-dev")


def run_turbojpeg(exe: str, corpus: str, repeats: int, workdir: str) -> Dict[str, Any]:
    jpegs = [os.path.join(corpus, p) for p in corpus_images(corpus) if not p.lower().endswith(".png")]
    lst, warm = os.path.join(workdir, "jpegs.txt"), os.path.join(workdir, "warm.txt")
    with open(lst, "w") as f:
        f.write("\n".join(jpegs) + "\n")
    with open(warm, "w") as f:
        f.write("\n".join(jpegs[:64]) + "\n")
    subprocess.run([exe, warm, "1", "1"], check=True, capture_output=True)
    epochs = []
    for e in range(repeats):
        out = subprocess.run([exe, lst, "1", "1"], check=True, capture_output=True, text=True).stdout
        m = re.search(r"images=(\d+).*?: (\d+) img/s.*errors=(\d+)", out)
        if not m:
            raise RuntimeError(f"tjrate: unexpected output {out!r}")
        n, rate, errs = int(m.group(1)), float(m.group(2)), int(m.group(3))
        print(f"    run {e}: {out.strip()}", flush=True)
        epochs.append({"images": n, "rate": rate, "errors": errs, "seconds": n / rate})
    best = max(epochs, key=lambda r: r["rate"])
    return {"rate": best["rate"], "images": best["images"], "epochs": epochs, "first_batch_s": None,
            "config": {"jpegs": len(jpegs), "threads": 1, "note": "JPEG only, full decode, no crop/resize"}}


def build_pngrate(workdir: str) -> str:
    """tests/c/pngrate.c through tests/c/Makefile (the rule `make -C tests/c bench` uses), built
    into workdir, so that a run never touches tests/c/build."""
    return make_bench_tool(workdir, "pngrate", "libpng-dev")


def make_bench_tool(workdir: str, name: str, needs: str) -> str:
    exe = os.path.join(workdir, name)
    r = subprocess.run(["make", "-s", "-C", os.path.join(REPO, "tests", "c"), f"BUILD={workdir}", exe],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"make {name} failed ({needs} installed?):\n{r.stdout}{r.stderr}")
    return exe


def run_pngrate(exe: str, png_dir: str, repeats: int, workdir: str) -> Dict[str, Any]:
    pngs = [os.path.join(png_dir, p) for p in corpus_images(png_dir)]
    lst = os.path.join(workdir, "pngs.txt")
    with open(lst, "w") as f:
        f.write("\n".join(pngs) + "\n")
    # One run: its own warm-up pass (which also compares mx8's pixels with the bare loop's),
    # then `repeats` interleaved passes over every file.
    out = subprocess.run([exe, lst, str(max(1, repeats))], check=True, capture_output=True, text=True).stdout
    for line in out.strip().splitlines():
        print(f"    {line}", flush=True)
    m = re.search(r"pngrate: images=(\d+) reps=(\d+) libpng=([\d.]+) mx8_decode=([\d.]+) mx8_rrc=([\d.]+) "
                  r"ratio=([\d.]+) failed=(\d+) mismatched=(\d+)", out)
    if not m:
        raise RuntimeError(f"pngrate: unexpected output {out!r}")
    n, reps = int(m.group(1)), int(m.group(2))
    libpng, mx8_decode, mx8_rrc = float(m.group(3)), float(m.group(4)), float(m.group(5))
    failed, mismatched = int(m.group(7)), int(m.group(8))
    if failed:
        raise RuntimeError(f"pngrate: {failed} decodes failed")
    return {"rate": libpng, "images": n, "epochs": [{"images": n * reps, "rate": libpng}], "first_batch_s": None,
            "mx8_decode_rate": mx8_decode, "mx8_rrc_rate": mx8_rrc, "mx8_vs_libpng": mx8_decode / libpng,
            "pixel_mismatches": mismatched,
            "config": {"pngs": len(pngs), "threads": 1, "reps": reps, "interleaved": True,
                       "note": "full decode to RGB from memory, no crop/resize (mx8_rrc: RandomResizedCrop 224 + flip)"}}


def child_main(a: argparse.Namespace) -> int:
    spec = json.loads(a.child_spec)
    name = spec["name"]
    if name == "pack":
        pack_if_needed(spec["corpus"], spec["packed"], spec["images"])
        return 0
    if name == "png-corpus":
        make_png_corpus(spec["corpus"], spec["png_dir"], spec["count"])
        return 0
    if name.startswith("mx8"):
        res = run_mx8(name, spec["packed"], spec["repeats"], spec["warmup"])
    elif name.startswith("torchvision"):
        res = run_torchvision(spec["workers"], spec["corpus"], spec["repeats"], spec["warmup"])
    elif name == "turbojpeg-raw":
        with tempfile.TemporaryDirectory() as d:
            res = run_turbojpeg(spec["tjrate"], spec["corpus"], spec["repeats"], d)
    elif name == "libpng-raw":
        with tempfile.TemporaryDirectory() as d:
            res = run_pngrate(spec["pngrate"], spec["png_dir"], spec["repeats"], d)
    else:
        raise SystemExit(f"unknown contender {name}")
    with open(spec["result_file"], "w") as f:
        json.dump(res, f)
    return 0


# ---------------------------------------------------------------------------------------------
# Parent side: one subprocess per contender, its rusage and sampled PSS

def _tree(pid: int) -> List[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_contender(spec: Dict[str, Any], python: str, timeout: float, script: Optional[str] = None,
                   env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Runs one contender as `python script --child-spec SPEC` (script: this file by default;
    scripts/bench_peers.py passes its own) in its own session, so a timeout kills its loader
    workers too. Adds peak_rss_mb (largest process, from wait4) and peak_pss_mb (all its
    processes, sampled every 0.2 s)."""
    fd, result_file = tempfile.mkstemp(prefix="mx8-bench-", suffix=".json")
    os.close(fd)
    spec = dict(spec, result_file=result_file)
    cmd = [python, os.path.abspath(script or __file__), "--child-spec", json.dumps(spec)]
    p = subprocess.Popen(cmd, env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})), stdin=subprocess.DEVNULL,
                         start_new_session=True)
    peak_pss = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak_pss[0] = max(peak_pss[0], sum(_pss_kb(q) for q in _tree(p.pid)))

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.monotonic()
    timed_out = False
    while True:  # wait4 with a deadline
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            break
        if time.monotonic() - t0 > timeout:
            timed_out = True
            try:
                os.killpg(p.pid, 9)
            except OSError:
                p.kill()
            _, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(0.05)
    done.set()
    th.join()
    rc = os.waitstatus_to_exitcode(status)
    try:
        with open(result_file) as f:
            text = f.read()
        res = json.loads(text) if text else None
    finally:
        os.unlink(result_file)
    if res and res.get("child_error"):
        return {"name": spec["name"], "error": f"run failed: {res['child_error']}", "rate": None}
    if rc != 0 or res is None:
        why = f"timed out after {timeout:.0f}s" if timed_out else f"exit {rc}"
        return {"name": spec["name"], "error": why, "rate": None}
    res.update(name=spec["name"], peak_rss_mb=ru.ru_maxrss / 1024, peak_pss_mb=peak_pss[0] / 1024,
               wall_s=time.monotonic() - t0)
    return res


def _venv_has_torchvision(python: str) -> bool:
    if not os.path.exists(python):
        return False
    r = subprocess.run([python, "-c", "import torchvision.transforms, torchvision.datasets"],
                       capture_output=True)
    return r.returncode == 0


def baseline_python(allow_create: bool) -> Optional[str]:
    """A Python that imports torchvision: .venv's, else .venv-baseline's (made if allowed)."""
    if _venv_has_torchvision(VENV_PY):
        return VENV_PY
    bpy = os.path.join(BASELINE_VENV, "bin", "python")
    if _venv_has_torchvision(bpy):
        return bpy
    if not allow_create:
        return None
    log(f"creating {BASELINE_VENV} with {' '.join(BASELINE_PINS)} for the torchvision baseline "
        "(torchvision 0.28.0 does not import beside torch 2.13.0; ~5.5 GB, a few minutes)")
    py = shutil.which("python3") or sys.executable
    subprocess.run([py, "-m", "venv", "--clear", BASELINE_VENV], check=True)
    subprocess.run([bpy, "-m", "pip", "install", "-q", "--disable-pip-version-check"] + BASELINE_PINS, check=True)
    return bpy if _venv_has_torchvision(bpy) else None


# ---------------------------------------------------------------------------------------------
# Report

def _fmt(v: Optional[float], spec: str) -> str:
    return "-" if v is None else format(v, spec)


def summarise(results: List[Dict[str, Any]], ncores: int) -> List[Dict[str, Any]]:
    """Adds the ratio columns, the 'N cores ideal' TurboJPEG row and, from libpng-raw, the
    rows of mx8's PNG decode in the same process. Rows of the PNG corpus get group "png"
    (their own table: another corpus), with ratios to the bare libpng loop instead."""
    tv = [r["rate"] for r in results if r["name"].startswith("torchvision") and r.get("rate")]
    tv_best = max(tv) if tv else None
    tj = next((r["rate"] for r in results if r["name"] == "turbojpeg-raw" and r.get("rate")), None)
    lp = next((r for r in results if r["name"] == "libpng-raw" and r.get("rate")), None)
    rows = []
    for r in results:
        rows.append(r)
        if r["name"] in PNG_CONTENDERS:
            r["group"] = "png"
        if r is lp:
            rows.append({"name": "mx8-png-decode-t1", "rate": r["mx8_decode_rate"], "derived": True, "group": "png",
                         "note": "mx8_decode_rgb, one thread, same process as libpng-raw, interleaved"})
            rows.append({"name": "mx8-png-rrc-t1", "rate": r["mx8_rrc_rate"], "derived": True, "group": "png",
                         "note": "mx8_decode_transform RandomResizedCrop(224)+flip, one thread, same process"})
    if tj:
        rows.append({"name": f"turbojpeg-raw, {ncores} cores ideal", "rate": tj * ncores, "derived": True,
                     "note": f"{ncores} x the single-thread rate"})
    if lp:
        rows.append({"name": f"libpng-raw, {ncores} cores ideal", "rate": lp["rate"] * ncores, "derived": True,
                     "group": "png", "note": f"{ncores} x the single-thread rate"})
    for r in rows:
        rate = r.get("rate")
        if r.get("group") == "png":
            base = lp["rate"] if lp else None
            r["vs_libpng_1core"] = rate / base if rate and base else None
            r["vs_libpng_ideal"] = rate / (base * ncores) if rate and base else None
            continue
        r["vs_torchvision_best"] = rate / tv_best if rate and tv_best else None
        r["vs_turbojpeg_1core"] = rate / tj if rate and tj else None
        r["vs_turbojpeg_ideal"] = rate / (tj * ncores) if rate and tj else None
    return rows


def targets(results: List[Dict[str, Any]], ncores: int) -> Dict[str, Any]:
    """The issue's thread-scaling and PNG targets, from the contenders that ran."""
    by = {r["name"]: r for r in results if r.get("rate")}
    out: Dict[str, Any] = {}
    t1, tn = by.get("mx8-train-t1"), by.get("mx8-train")
    if t1 and tn:
        out["thread_scaling"] = {
            "threads": ncores, "rate_1_thread": t1["rate"], "rate_n_threads": tn["rate"],
            "ideal": ncores * t1["rate"], "ratio": tn["rate"] / (ncores * t1["rate"]), "target": 0.9,
            "note": "rate(mx8-train, N threads) / (N x rate(mx8-train-t1)), N = all cores"}
    lp = by.get("libpng-raw")
    if lp:
        png = {"libpng_rate": lp["rate"], "mx8_decode_rate": lp["mx8_decode_rate"],
               "ratio": lp["mx8_vs_libpng"], "target": 0.95, "mx8_rrc_rate": lp["mx8_rrc_rate"],
               "pixel_mismatches": lp.get("pixel_mismatches"), "images": lp["images"],
               "note": "one thread each, same files, same process, interleaved (tests/c/pngrate.c)"}
        mp = by.get("mx8-png")
        if mp:
            png.update(dataset_rate=mp["rate"], dataset_threads=ncores,
                       dataset_vs_libpng_ideal=mp["rate"] / (ncores * lp["rate"]))
        out["png"] = png
    return out


def render_markdown(rows: List[Dict[str, Any]], meta: Dict[str, Any]) -> str:
    n = meta["cores"]
    out = [f"# mx8 benchmark ({meta['date']})", "",
           f"Corpus: `{meta['corpus']}`: {meta['images']} images ({meta['jpegs']} JPEG), "
           f"{meta['corpus_mb']:.0f} MB. Batch {BATCH}, output 224x224, {n} cores "
           f"({meta['cpu']}). Best of {meta['repeats']} epoch(s) after a warm-up.", "",
           f"| contender | img/s | vs torchvision best | vs raw TurboJPEG (1 core) | "
           f"vs raw TurboJPEG ({n} cores ideal) | peak RSS MB | RSS after imports MB | "
           f"peak PSS MB (all procs) | first batch s |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.get("group") == "png":
            continue
        if r.get("error"):
            out.append(f"| {r['name']} | failed: {r['error']} | | | | | | | |")
            continue
        out.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            r["name"], _fmt(r["rate"], ".0f"), _fmt(r["vs_torchvision_best"], ".2f"),
            _fmt(r["vs_turbojpeg_1core"], ".2f"), _fmt(r["vs_turbojpeg_ideal"], ".2f"),
            _fmt(r.get("peak_rss_mb"), ".0f"), _fmt(r.get("import_rss_mb"), ".0f"),
            _fmt(r.get("peak_pss_mb"), ".0f"),
            _fmt(r.get("first_batch_s"), ".2f")))
    tg = meta.get("targets", {})
    ts = tg.get("thread_scaling")
    if ts:
        out += ["", "Thread scaling (mx8 train path, same corpus; target: at least 0.9):", "",
                f"| threads | img/s | {ts['threads']} x one-thread rate | scaling ratio |", "|---:|---:|---:|---:|",
                f"| 1 | {ts['rate_1_thread']:.0f} | | |",
                f"| {ts['threads']} | {ts['rate_n_threads']:.0f} | {ts['ideal']:.0f} | {ts['ratio']:.2f} |"]
    png_rows = [r for r in rows if r.get("group") == "png"]
    if png_rows:
        pm = meta.get("png_corpus") or {}
        out += ["", f"PNG ({pm.get('images', '?')} images of the corpus converted to PNG, "
                    f"{pm.get('mb', 0):.0f} MB; target: mx8 decode at least 0.95x the bare libpng loop):", "",
                f"| contender | img/s | vs bare libpng (1 thread) | vs bare libpng ({n} cores ideal) | "
                f"peak RSS MB | first batch s |", "|---|---:|---:|---:|---:|---:|"]
        for r in png_rows:
            if r.get("error"):
                out.append(f"| {r['name']} | failed: {r['error']} | | | | |")
                continue
            out.append("| {} | {} | {} | {} | {} | {} |".format(
                r["name"], _fmt(r["rate"], ".0f"), _fmt(r.get("vs_libpng_1core"), ".3f"),
                _fmt(r.get("vs_libpng_ideal"), ".2f"), _fmt(r.get("peak_rss_mb"), ".0f"),
                _fmt(r.get("first_batch_s"), ".2f")))
    out += ["", "Notes:"]
    for line in meta["notes"]:
        out.append(f"- {line}")
    return "\n".join(out) + "\n"


def write_chart(rows: List[Dict[str, Any]], path: str) -> Optional[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart (pip install matplotlib to get bench.png)"
    ok = [r for r in rows if r.get("rate") and r.get("group") != "png"]  # one corpus per chart
    if not ok:
        return "no JPEG-corpus contender ran: no chart"
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(ok) + 1.2))
    names = [r["name"] for r in ok][::-1]
    rates = [r["rate"] for r in ok][::-1]
    colors = ["#1f77b4" if n.startswith("mx8") else "#ff7f0e" if n.startswith("torchvision") else "#7f7f7f"
              for n in names]
    ax.barh(names, rates, color=colors)
    for y, v in enumerate(rates):
        ax.text(v, y, f" {v:.0f}", va="center", fontsize=8)
    ax.set_xlabel("images/s (higher is better)")
    ax.set_title("mx8 vs torchvision vs raw TurboJPEG, same corpus and cores")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return None


# ---------------------------------------------------------------------------------------------

def select(only: Optional[str], workers: List[int]) -> List[str]:
    tv = [f"torchvision-w{w}" for w in workers]
    everything = MX8_CONTENDERS + tv + ["turbojpeg-raw"] + PNG_CONTENDERS
    if not only:
        return everything
    chosen: List[str] = []
    for item in only.split(","):
        item = item.strip()
        group = {"mx8": MX8_CONTENDERS, "torchvision": tv, "turbojpeg": ["turbojpeg-raw"],
                 "png": PNG_CONTENDERS}.get(item)
        names = group or ([item] if item in everything else None)
        if names is None:
            raise SystemExit(f"bench: --only {item!r}: not one of {', '.join(everything)} "
                             "(or the groups mx8, torchvision, turbojpeg, png)")
        chosen += [n for n in names if n not in chosen]
    return chosen


def run_all(names: List[str], corpus: str, packed: Optional[str], tv_python: Optional[str], repeats: int,
            warmup: int, timeout: float, tmpdir: str, png_dir: Optional[str] = None) -> List[Dict[str, Any]]:
    """Runs the contenders one after another, each in its own process."""
    results = []
    tjrate = build_tjrate(tmpdir) if "turbojpeg-raw" in names else None  # not in the probe's RSS
    pngrate = build_pngrate(tmpdir) if "libpng-raw" in names else None
    for name in names:
        spec: Dict[str, Any] = {"name": name, "repeats": repeats, "warmup": warmup, "corpus": corpus,
                                "packed": png_dir if name == "mx8-png" else packed, "tjrate": tjrate,
                                "pngrate": pngrate, "png_dir": png_dir}
        python = VENV_PY if os.path.exists(VENV_PY) else sys.executable
        if name.startswith("torchvision"):
            spec["workers"] = int(name.rsplit("w", 1)[1])
            python = tv_python
        log(f"{name} ...")
        r = run_contender(spec, python, timeout)
        if r.get("error"):
            log(f"{name}: FAILED ({r['error']})")
        else:
            log(f"{name}: {r['rate']:.0f} img/s, peak RSS {r['peak_rss_mb']:.0f} MB, "
                f"first batch {_fmt(r.get('first_batch_s'), '.2f')} s")
        results.append(r)
    return results


def run(a: argparse.Namespace) -> int:
    ncores = cores()
    count = a.count or (512 if a.quick else 5000)
    repeats = a.repeats or (1 if a.quick else 2)
    warmup = 1 if a.quick else 3
    timeout = a.timeout or (600 if a.quick else 3600)
    names = select(a.only, a.workers)
    corpus = os.path.abspath(a.corpus) if a.corpus else build_corpus(count)
    images = corpus_images(corpus)
    if not images:
        raise SystemExit(f"bench: no images under {corpus}")
    jpegs = [p for p in images if not p.lower().endswith(".png")]
    meta: Dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "corpus": corpus, "images": len(images), "jpegs": len(jpegs),
        "corpus_mb": sum(os.path.getsize(os.path.join(corpus, p)) for p in images) / 1e6,
        "cores": ncores, "cpu": platform.processor() or platform.machine(), "repeats": repeats,
        "warmup_batches": warmup, "batch_size": BATCH, "python": sys.version.split()[0], "notes": [],
        "loadavg_start": list(os.getloadavg()),
    }
    packed = ensure_packed(corpus) if any(n in MX8_CONTENDERS for n in names) else None
    png_dir = None
    if any(n in PNG_CONTENDERS for n in names):
        png_dir = ensure_png_corpus(corpus, a.png_count or (64 if a.quick else 1000))
        pngs = corpus_images(png_dir)
        meta["png_corpus"] = {"dir": png_dir, "images": len(pngs),
                              "mb": sum(os.path.getsize(os.path.join(png_dir, p)) for p in pngs) / 1e6}
    tv_python = None
    if any(n.startswith("torchvision") for n in names):
        ci = os.environ.get("CI", "").lower() in ("1", "true")
        tv_python = baseline_python(allow_create=not a.no_baseline_venv and not ci)
        if tv_python is None:
            why = "CI" if ci else "--no-baseline-venv"
            log(f"torchvision baseline skipped: no importable torchvision in .venv and no {BASELINE_VENV} ({why})")
            meta["notes"].append("torchvision baseline skipped: no working torchvision available")
            names = [n for n in names if not n.startswith("torchvision")]

    tmpdir = tempfile.mkdtemp(prefix="mx8-bench-")
    try:
        results = run_all(names, corpus, packed, tv_python, repeats, warmup, timeout, tmpdir, png_dir)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)

    meta["loadavg_end"] = list(os.getloadavg())
    meta["notes"].append("load average (1/5/15 min) at start {:.1f}/{:.1f}/{:.1f}, at end {:.1f}/{:.1f}/{:.1f} "
                         "on {} cores (the bench itself adds up to about that many; more means other work competed "
                         "for the cores)".format(
                             *meta["loadavg_start"], *meta["loadavg_end"], ncores))
    rows = summarise(results, ncores)
    meta["targets"] = targets(results, ncores)
    tv_rows = [r for r in results if r["name"].startswith("torchvision") and not r.get("error")]
    if tv_rows:
        v = tv_rows[0]["versions"]
        meta["notes"].append(f"torchvision baseline: torch {v['torch']}, torchvision {v['torchvision']}, "
                             f"Pillow {v['pillow']} ({v['python']})")
    mx = next((r for r in results if r["name"].startswith("mx8") and not r.get("error")), None)
    if mx:
        meta["notes"].append(f"mx8 {mx['versions']['mx8']} on torch {mx['versions']['torch']}, "
                             f"{ncores} decode threads" + (" (mx8-train-t1: 1)" if any(r["name"] == "mx8-train-t1" for r in results)
                                                    else "") + ", DataLoader(batch_size=None, num_workers=0)")
    if any(r["name"] == "mx8-train-t1" for r in results):
        meta["notes"].append("mx8-train-t1: mx8-train with threads=1; thread scaling = rate(mx8-train) / "
                             f"({ncores} x rate(mx8-train-t1)); both from this run, one after the other")
    if any(r["name"] in PNG_CONTENDERS for r in results):
        meta["notes"].append("PNG: libpng-raw = tests/c/pngrate.c, a bare one-thread libpng loop (png_read_image "
                             "into RGB, from memory); mx8-png-decode-t1 / mx8-png-rrc-t1 = mx8's decode (and "
                             "decode + RandomResizedCrop 224) of the same files in the same process, interleaved; "
                             f"mx8-png = mx8.Dataset over the PNG folder, {ncores} threads")
    if any(r["name"] == "turbojpeg-raw" for r in results):
        meta["notes"].append("raw TurboJPEG = tests/c/tjrate.c: one thread, full decode of the JPEGs only "
                             "(no crop, resize or PNG), from memory: the per-core physical limit")
    meta["notes"].append("peak RSS: the contender's largest process (getrusage/wait4); RSS after imports: "
                         "the same process before any work (torch and its libraries); peak PSS: all its "
                         "processes, DataLoader workers included (sampled every 0.2 s)")
    if tv_rows and "+cu" in tv_rows[0]["versions"]["torch"]:
        meta["notes"].append("the torchvision baseline's torch is a CUDA build (CPU used): its libraries "
                             "inflate RSS; compare peak RSS minus RSS after imports")
    meta["notes"].append("first batch: from creating the Dataset/DataLoader (workers included) to the first batch")

    os.makedirs(a.out, exist_ok=True)
    md = render_markdown(rows, meta)
    with open(os.path.join(a.out, "bench.md"), "w") as f:
        f.write(md)
    with open(os.path.join(a.out, "bench.json"), "w") as f:
        json.dump({"meta": meta, "results": rows, "targets": meta["targets"]}, f, indent=2)
    why = write_chart(rows, os.path.join(a.out, "bench.png"))
    print()
    print(md)
    log(f"wrote {a.out}/bench.md, bench.json" + ("" if why else ", bench.png"))
    if why:
        log(why)
    return 1 if any(r.get("error") for r in results) else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", metavar="DIR",
                   help="ImageFolder to run on (default: a real-photo corpus made by `mx8 demo-data` "
                        "under .cache/, --count images)")
    p.add_argument("--count", type=int, help="images in the generated corpus (default 5000; 512 with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="smoke-test size: 512 images, one timed epoch, 1 warm-up batch")
    p.add_argument("--only", metavar="NAME[,NAME]",
                   help="run only these contenders: mx8-train, mx8-train-t1, mx8-eval, mx8-no-crop-aware, "
                        "torchvision-wN, turbojpeg-raw, libpng-raw, mx8-png, or the groups mx8, torchvision, "
                        "turbojpeg, png")
    p.add_argument("--png-count", type=int,
                   help="images of the corpus converted to PNG for the png contenders (default 1000; 64 with --quick)")
    p.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=TV_WORKERS,
                   help="torchvision DataLoader num_workers settings to try (default 0,1,2,3,4)")
    p.add_argument("--repeats", type=int, help="timed epochs per contender, best counts (default 2; 1 with --quick)")
    p.add_argument("--out", default=os.path.join(REPO, "bench-out"), help="output directory (default bench-out/)")
    p.add_argument("--timeout", type=float, help="seconds per contender (default 3600; 600 with --quick)")
    p.add_argument("--no-baseline-venv", action="store_true",
                   help=f"do not create {os.path.basename(BASELINE_VENV)} for torchvision; skip it instead")
    p.add_argument("--child-spec", help=argparse.SUPPRESS)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    if a.child_spec:
        return child_main(a)
    # Run the parent in the project's venv (it packs with mx8), whatever `python3` is.
    if os.path.exists(VENV_PY) and os.path.realpath(sys.prefix) != os.path.realpath(os.path.join(REPO, ".venv")):
        os.execv(VENV_PY, [VENV_PY, os.path.abspath(__file__)] + (sys.argv[1:] if argv is None else argv))
    if not os.path.exists(VENV_PY):
        raise SystemExit("bench: no .venv; run ./scripts/setup_env.sh first")
    return run(a)


if __name__ == "__main__":
    sys.exit(main())
