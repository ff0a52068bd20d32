#!/usr/bin/env python3
"""Valgrind memcheck of mx8's C extension on a small, real workload.

The parent writes ~50 small images (JPEG in several modes, PNG, one truncated JPEG) to a
temporary ImageFolder, then runs this same script under valgrind (``--child``): pack it,
and iterate Datasets over it (random crop + flip, center crop without crop-aware decode in
NHWC, raw bytes, a run that stops after one batch, on_error="raise" and "skip", and the S3
reader: its I/O thread and request planner, against a small range-serving HTTP server in the
same process).

CPython and torch produce their own valgrind reports (uninitialised reads in the allocator,
one-off allocations never freed), so the check does not use valgrind's exit status. It
reads the XML report and keeps only the errors whose stack has a frame in mx8/_core*.so or
in csrc/: definitely lost leaks, invalid reads/writes/frees and uses of uninitialised
values. Any such error fails the check (exit 1) and is printed with its stack.

Usage: scripts/valgrind_check.py [--keep DIR] [--timeout S]
Slow by nature: importing torch under valgrind takes about two minutes.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

MAX_FRAMES = 16  # printed per error: enough to see the way in from the binding
CORE_OBJ = re.compile(r"/mx8/_core\.[^/]*\.so$")
# Error kinds that fail the check when mx8._core is on the stack.
FAIL_KINDS = {
    "Leak_DefinitelyLost", "InvalidRead", "InvalidWrite", "InvalidFree", "MismatchedFree",
    "InvalidJump", "Overlap", "SyscallParam", "UninitCondition", "UninitValue", "ClientCheck",
    "InvalidMemPool", "FishyValue",
}


# -- the workload (runs under valgrind) -----------------------------------------------------

def child(src: str, work: str) -> None:
    import gc

    import torch

    import mx8

    packed = os.path.join(work, "packed")
    r = mx8.pack(src, packed, shard_mb=0.05, on_error="skip", progress=False)  # several shards
    print(f"[valgrind] packed {r.samples} samples in {r.shards} shards, skipped {len(r.skipped)}")
    n = 0
    ds = mx8.Dataset(packed, batch_size=8, size=48, crop="random", flip=True, shuffle=True,
                     threads=2, on_error="skip")
    for b in torch.utils.data.DataLoader(ds, batch_size=None):
        n += int(b.images.shape[0])
    print(f"[valgrind] random crop: {n} images, stats {ds.stats()}")
    ds = mx8.Dataset(packed, batch_size=8, size=(40, 56), crop="center", crop_aware=False,
                     layout="NHWC", threads=2, on_error="skip", drop_last=True)
    n = sum(int(b.images.shape[0]) for b in ds)
    print(f"[valgrind] center crop NHWC: {n} images")
    ds = mx8.Dataset(packed, batch_size=8, threads=2)  # raw bytes
    n = sum(int(b.sample_ids.shape[0]) for b in ds)
    print(f"[valgrind] raw: {n} samples")
    ds = mx8.Dataset(packed, batch_size=4, size=32, crop="none", threads=2, on_error="skip")
    it = iter(ds)
    next(it)
    ds.close()  # stop with batches still in flight
    print("[valgrind] early close: ok")
    ds = mx8.Dataset(packed, batch_size=8, size=32, threads=2, on_error="raise")
    try:
        for _ in ds:
            pass
        print("[valgrind] on_error=raise: no error (was the truncated JPEG skipped at pack time?)")
    except mx8.Error as e:
        print(f"[valgrind] on_error=raise: {type(e).__name__} (expected)")
    ds.close()
    s3_workload(work)
    del ds, it
    gc.collect()


def s3_workload(work: str) -> None:
    """The S3 path (fetcher thread, planner, budget) against an HTTP server that serves the
    files under `work` as bucket "vg" with byte ranges; it does not check signatures."""
    import http.server
    import threading

    import mx8

    class RangeFiles(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            path = os.path.join(work, self.path.split("?")[0][len("/vg/"):])
            if not self.path.startswith("/vg/") or not os.path.isfile(path):
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = open(path, "rb").read()
            m = re.match(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
            lo, hi = (int(m.group(1)), int(m.group(2)) + 1) if m else (0, len(data))
            self.send_response(206 if m else 200)
            if m:
                self.send_header("Content-Range", f"bytes {lo}-{hi - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data[lo:hi])))
            self.end_headers()
            self.wfile.write(data[lo:hi])

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass  # the early close drops connections mid-body: expected, not worth a traceback

    httpd = Server(("127.0.0.1", 0), RangeFiles)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{httpd.server_address[1]}", AWS_ACCESS_KEY_ID="vg",
                      AWS_SECRET_ACCESS_KEY="vg", AWS_REGION="us-east-1",
                      MX8_MANIFEST_STORE=os.path.join(work, "store"))
    try:
        for kw in (dict(size=32, crop="random", shuffle=True, prefetch_mb=1, s3_connections=3),
                   dict(decode=False, prefetch_mb=2, s3_connections=1)):
            ds = mx8.Dataset("s3://vg/packed/", batch_size=8, threads=2, on_error="skip", **kw)
            n = sum(int(b.sample_ids.shape[0]) for b in ds)
            st = ds.stats()
            print(f"[valgrind] s3 {sorted(kw)}: {n} samples, {st['reads']} GETs")
        ds = mx8.Dataset("s3://vg/packed/", batch_size=4, size=32, prefetch_mb=1, threads=2)
        next(iter(ds))
        ds.close()  # stop with fetches in flight
        print("[valgrind] s3 early close: ok")
    finally:
        httpd.shutdown()


def make_images(root: str, count: int) -> None:
    """Small images in the modes the decoders branch on; deterministic."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        w, h = int(rng.integers(40, 160)), int(rng.integers(40, 160))
        # smooth gradient plus noise: compresses like a photo, not like flat colour
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (w + h)], axis=-1)
        arr = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
        d = os.path.join(root, f"class_{i % 3}")
        os.makedirs(d, exist_ok=True)
        kind = i % 8
        if kind == 6:
            mode = ["RGB", "RGBA", "P", "L"][(i // 8) % 4]
            img = img.convert(mode) if mode != "P" else img.convert("P", palette=Image.ADAPTIVE)
            img.save(os.path.join(d, f"{i:03d}.png"), "PNG")
            continue
        if kind == 7:
            img = img.convert("L")
        img.save(os.path.join(d, f"{i:03d}.jpg"), "JPEG", quality=90, subsampling=[2, 0, 1][i % 3],
                 progressive=(kind == 5))
    # A JPEG cut short: the header parses, the scan data ends early.
    good = os.path.join(root, "class_0", "000.jpg")
    data = open(good, "rb").read()
    with open(os.path.join(root, "class_0", "truncated.jpg"), "wb") as f:
        f.write(data[: len(data) * 2 // 3])


# -- the report ---------------------------------------------------------------------------------

def frames(err: ET.Element):
    stack = err.find("stack")
    out = []
    if stack is None:
        return out
    for fr in stack.findall("frame"):
        out.append({k: (fr.findtext(k) or "") for k in ("obj", "fn", "dir", "file", "line")})
    return out


def involves_core(frs) -> bool:
    return any(CORE_OBJ.search(f["obj"]) or "/csrc/" in f["dir"] + "/" for f in frs)


def describe(err: ET.Element) -> str:
    what = err.findtext("xwhat/text") or err.findtext("what") or err.findtext("kind")
    lines = [f"{err.findtext('kind')}: {what}"]
    for f in frames(err)[:MAX_FRAMES]:
        where = f"{f['file']}:{f['line']}" if f["file"] else os.path.basename(f["obj"])
        lines.append(f"    {f['fn'] or '???'} ({where})")
    return "\n".join(lines)


def analyse(xml_path: str) -> int:
    try:
        root = ET.parse(xml_path).getroot()
    except (OSError, ET.ParseError) as e:
        # e.g. valgrind ran a wrapper script (a pyenv shim) instead of the interpreter itself
        print(f"[valgrind] no complete report in {xml_path}: {e}", file=sys.stderr)
        return 1
    errors = root.findall("error")
    ours = [e for e in errors if e.findtext("kind") in FAIL_KINDS and involves_core(frames(e))]
    print(f"[valgrind] {len(errors)} error record(s) in total (CPython, torch, mx8); "
          f"{len(ours)} involve mx8._core")
    for e in ours:
        print(describe(e))
    return 1 if ours else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=2, metavar=("SRC", "WORK"), help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=48, help="images to generate (default 48)")
    ap.add_argument("--keep", metavar="DIR", help="keep the images, packed data and valgrind logs in DIR")
    ap.add_argument("--timeout", type=int, default=1500, help="seconds before valgrind is stopped (default 1500)")
    a = ap.parse_args()
    if a.child:
        child(*a.child)
        return 0

    if shutil.which("valgrind") is None:
        print("[valgrind] valgrind not found: apt-get install valgrind (scripts/setup_env.sh does)",
              file=sys.stderr)
        return 1
    work = a.keep or tempfile.mkdtemp(prefix="mx8-valgrind-")
    os.makedirs(work, exist_ok=True)
    try:
        src = os.path.join(work, "images")
        shutil.rmtree(src, ignore_errors=True)
        make_images(src, a.count)
        xml_path = os.path.join(work, "memcheck.xml")
        log_path = os.path.join(work, "memcheck.log")
        cmd = ["valgrind", "--tool=memcheck", "--leak-check=full", "--show-leak-kinds=definite",
               "--errors-for-leak-kinds=definite", "--error-limit=no", "--num-callers=40",
               "--xml=yes", f"--xml-file={xml_path}", f"--log-file={log_path}",
               sys.executable, os.path.abspath(__file__), "--child", src, work]
        env = dict(os.environ, PYTHONMALLOC="malloc", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        print(f"[valgrind] {a.count} images; running the workload under memcheck (slow: torch import ~2 min)",
              flush=True)
        t0 = time.monotonic()
        try:
            rc = subprocess.run(cmd, env=env, timeout=a.timeout).returncode
        except subprocess.TimeoutExpired:
            print(f"[valgrind] timed out after {a.timeout}s", file=sys.stderr)
            return 1
        print(f"[valgrind] workload finished in {time.monotonic() - t0:.0f}s, exit {rc}")
        if rc != 0:
            print(f"[valgrind] the workload failed under valgrind (exit {rc}); log: "
                  f"{log_path if a.keep else '(use --keep DIR to keep it)'}", file=sys.stderr)
            if not a.keep:
                with open(log_path, errors="replace") as f:
                    sys.stderr.write("".join(f.readlines()[-40:]))
            analyse(xml_path)
            return 1
        return analyse(xml_path)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
