"""Where the contenders run, and the tools they need:

- .venv: the project's (mx8 editable, torch 2.13.0); every entry point re-runs itself there
  (use_project_venv) and the mx8 contenders run there.
- .venv-baseline: torch 2.14.1 + torchvision 0.29.1 for the torchvision contenders, because
  the torchvision wheel built for torch 2.13.0 does not import beside it ("operator
  torchvision::nms does not exist"). Made on first use (~5.5 GB), never in CI.
- .venv-peers: torch 2.13.0 (the CPU wheel) + the peer loaders, each pip-installed with a
  constraints file holding the torch pin, so a peer that wants another torch is reported, not
  given a multi-GB CUDA build. MosaicML Streaming imports torchvision, so it goes into
  .venv-baseline instead, constrained by that venv's own `pip freeze`.
- the C probes of tests/c (tjrate: raw TurboJPEG; pngrate: bare libpng against mx8's decode),
  built through tests/c/Makefile into a temporary directory, never tests/c/build.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from typing import Dict, Optional

from . import CACHE, REPO, logger

VENV = os.path.join(REPO, ".venv")
VENV_PY = os.path.join(VENV, "bin", "python")
BASELINE_VENV = os.path.join(REPO, ".venv-baseline")
BASELINE_PY = os.path.join(BASELINE_VENV, "bin", "python")
BASELINE_PINS = ["torch==2.14.1", "torchvision==0.29.1", "pillow", "numpy"]
PEERS_VENV = os.path.join(REPO, ".venv-peers")
PEERS_PY = os.path.join(PEERS_VENV, "bin", "python")
PEERS_CACHE = os.path.join(CACHE, "peers")
TORCH_PIN = "torch==2.13.0"
PIP_TIMEOUT = 1800
# peer -> (pip requirement, import line that proves it works)
PEERS: Dict[str, tuple] = {
    "dali": ("nvidia-dali-cuda120", "import nvidia.dali, nvidia.dali.fn, nvidia.dali.plugin.pytorch"),
    "ffcv": ("ffcv", "import ffcv, ffcv.writer, ffcv.loader"),
    "spdl": ("spdl", "import spdl.io, spdl.pipeline; from spdl.io.lib import _libspdl; _libspdl.make_demuxer"),
    "litdata": ("litdata", "import litdata"),
    "streaming": ("mosaicml-streaming", "import streaming, streaming.base.util"),
    "webdataset": ("webdataset", "import webdataset"),
}
IN_BASELINE = {"streaming"}  # `import streaming` imports torchvision (streaming/vision/base.py)
# What the failures seen on Debian 12 need (Debian packages, not pip): added to the reason.
HINTS = {
    ("ffcv", "opencv"): "FFCV's setup.py needs OpenCV and libturbojpeg through pkg-config: "
                        "apt-get install libopencv-dev libturbojpeg0-dev pkg-config",
    ("spdl", "libav"): "SPDL loads the system FFmpeg (4-8): apt-get install libavdevice59 libavfilter8 "
                       "libavformat59 libavcodec59 libswscale6 libswresample4 (Debian 12's FFmpeg 5.1)",
}
PROBES = {"tjrate": "libturbojpeg0-dev", "pngrate": "libpng-dev"}  # probe -> the Debian package it needs

log = logger("bench")


def use_project_venv(module: str) -> None:
    """Re-runs `python -m module ARGS` with .venv's Python unless this is it (the parent packs
    with mx8 and samples memory with psutil); exits when there is no .venv."""
    if not os.path.exists(VENV_PY):
        raise SystemExit(f"{module}: no .venv; run ./scripts/setup_env.sh first")
    if os.path.realpath(sys.prefix) != os.path.realpath(VENV):
        os.execv(VENV_PY, [VENV_PY, "-m", module] + sys.argv[1:])


def _imports(python: str, probe: str) -> Optional[str]:
    """None if `python -c probe` works, else the error line it died of."""
    if not os.path.exists(python):
        return f"no {python}"
    r = subprocess.run([python, "-c", probe], capture_output=True, text=True)
    return None if r.returncode == 0 else last_error_line(r.stderr)


def baseline_python(allow_create: bool) -> Optional[str]:
    """A Python that imports torchvision: .venv's, else .venv-baseline's (made if allowed)."""
    probe = "import torchvision.transforms, torchvision.datasets"
    for py in (VENV_PY, BASELINE_PY):
        if _imports(py, probe) is None:
            return py
    if not allow_create:
        return None
    log(f"creating {BASELINE_VENV} with {' '.join(BASELINE_PINS)} for the torchvision baseline "
        "(torchvision 0.28.0 does not import beside torch 2.13.0; ~5.5 GB, a few minutes)")
    py = shutil.which("python3") or sys.executable
    subprocess.run([py, "-m", "venv", "--clear", BASELINE_VENV], check=True)
    subprocess.run([BASELINE_PY, "-m", "pip", "install", "-q", "--disable-pip-version-check"] + BASELINE_PINS,
                   check=True)
    return BASELINE_PY if _imports(BASELINE_PY, probe) is None else None


def last_error_line(text: str) -> str:
    """The line of pip's or Python's output that says what failed."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):  # the exception that a build or an import died of, first
        if re.match(r"^[\w.]*(Error|Exception): ", ln):
            return ln[:300]
    for ln in reversed(lines):
        if ln.startswith(("ERROR:", "error:")) or "Error" in ln.split(":")[0]:
            return ln[:300]
    return (lines[-1] if lines else "no output")[:300]


def ensure_peers_venv(allow_create: bool) -> Optional[str]:
    """.venv-peers with torch==2.13.0, Pillow and numpy: None when it works, else why not."""
    if _imports(PEERS_PY, "import torch, PIL, numpy; assert torch.__version__.startswith('2.13.0')") is None:
        return None
    if not allow_create:
        return f"no working {os.path.relpath(PEERS_VENV, REPO)} (run without --no-install to make it)"
    log(f"creating {PEERS_VENV} with {TORCH_PIN}, pillow, numpy")
    py = shutil.which("python3") or sys.executable
    subprocess.run([py, "-m", "venv", PEERS_VENV], check=True)
    r = subprocess.run([PEERS_PY, "-m", "pip", "install", "-q", TORCH_PIN, "pillow", "numpy"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return "could not make .venv-peers: " + last_error_line(r.stdout + r.stderr)
    return None


def peer_python(name: str) -> str:
    return BASELINE_PY if name in IN_BASELINE else PEERS_PY


def ensure_peer(name: str, allow_install: bool) -> Optional[str]:
    """None when the peer imports (installed into its venv first if allowed), else the reason,
    with the fix for the failures known on Debian 12."""
    why = _ensure_peer(name, allow_install)
    for (peer, needle), hint in HINTS.items():
        if why and peer == name and needle in why:
            return f"{why} [fix: {hint}]"
    return why


def _ensure_peer(name: str, allow_install: bool) -> Optional[str]:
    req, probe = PEERS[name]
    py = peer_python(name)
    venv = os.path.relpath(os.path.dirname(os.path.dirname(py)), REPO)
    if not os.path.exists(py):
        return f"needs {venv} (made by: scripts/bench.py --only torchvision-w0)"
    why = _imports(py, probe)
    if why is None or not allow_install:
        return why
    logdir = os.path.join(PEERS_CACHE, "pip-logs")
    os.makedirs(logdir, exist_ok=True)
    logf = os.path.join(logdir, f"{name}.log")
    cons = os.path.join(PEERS_CACHE, "constraints-baseline.txt" if name in IN_BASELINE else "constraints.txt")
    with open(cons, "w") as f:  # the baseline venv: everything in it stays as it is
        f.write(subprocess.run([py, "-m", "pip", "freeze"], capture_output=True, text=True).stdout
                if name in IN_BASELINE else TORCH_PIN + "\n")
    log(f"pip install {req} into {venv} (-c {os.path.relpath(cons, REPO)}; log {os.path.relpath(logf, REPO)})")
    try:
        r = subprocess.run([py, "-m", "pip", "install", "-c", cons, req],
                           capture_output=True, text=True, timeout=PIP_TIMEOUT)
        out, rc = r.stdout + r.stderr, r.returncode
    except subprocess.TimeoutExpired as e:
        def text(b) -> str:
            return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
        out, rc = f"{text(e.stdout)}{text(e.stderr)}\nERROR: pip timed out after {PIP_TIMEOUT}s", 1
    with open(logf, "w") as f:
        f.write(out)
    if rc != 0:
        return f"pip install {req} failed: " + last_error_line(out)
    why = _imports(py, probe)
    return None if why is None else f"installed, but import fails: {why}"


def pip_versions(python: str) -> Dict[str, str]:
    """{distribution (lower case): version} of a venv."""
    r = subprocess.run([python, "-m", "pip", "list", "--format", "json"], capture_output=True, text=True)
    try:
        return {p["name"].lower(): p["version"] for p in json.loads(r.stdout)}
    except ValueError:
        return {}


def build_probe(name: str, workdir: str) -> str:
    """tests/c/<name>.c through tests/c/Makefile (the rule `make -C tests/c bench` uses), built
    into workdir, so that a run never touches tests/c/build. Returns the executable."""
    exe = os.path.join(workdir, name)
    r = subprocess.run(["make", "-s", "-C", os.path.join(REPO, "tests", "c"), f"BUILD={workdir}", exe],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"make {name} failed ({PROBES[name]} installed?):\n{r.stdout}{r.stderr}")
    return exe

