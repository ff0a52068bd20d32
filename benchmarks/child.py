"""One contender per process, so that its peak RSS and start-up are its own.

Parent side: `run_contender(spec, python, timeout)` starts `python -m benchmarks.child SPEC`
(from the repository root, so the package imports with any venv's Python) in its own session,
so that a timeout kills its loader workers too; it takes the peak RSS from wait4 (that of the
largest process: the child, or a worker it reaped) and samples the PSS of the whole process
tree every 0.2 s with psutil. `run_task` runs a set-up step (packing, the PNG corpus)
the same way, untimed.

Child side (`main`): runs contenders.runner(spec["name"])(spec) or a task, and writes its
result, or the exception that ended it, as JSON to spec["result_file"].
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from typing import Any, Callable, Dict

from . import REPO

# Set-up steps run in a child (the parent never imports mx8 or torch): name -> module:function(spec)
TASKS = {"pack": "benchmarks.corpus:pack_task", "png-corpus": "benchmarks.corpus:png_corpus_task"}


def _command(python: str, spec: Dict[str, Any]) -> list:
    return [python, "-m", "benchmarks.child", json.dumps(spec)]


def run_task(spec: Dict[str, Any], python: str) -> None:
    subprocess.run(_command(python, spec), check=True, cwd=REPO)


def _tree_pss_bytes(proc) -> int:
    import psutil
    total = 0
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:  # gone, or a zombie, between listing and reading
            pass
    return total


def run_contender(spec: Dict[str, Any], python: str, timeout: float, log: Callable[[str], None]) -> Dict[str, Any]:
    """Runs one contender in its own process, logging its start and its outcome; returns its
    result plus peak_rss_mb (largest process, from wait4), peak_pss_mb (all its processes,
    sampled every 0.2 s) and wall_s, or {"name", "error", "rate": None} when it failed."""
    log(f"{spec['name']} ...")
    r = _run(spec, python, timeout)
    if r.get("error"):
        log(f"{r['name']}: FAILED ({r['error']})")
    else:
        first = "-" if r.get("first_batch_s") is None else f"{r['first_batch_s']:.2f}"
        log(f"{r['name']}: {r['rate']:.0f} img/s, peak RSS {r['peak_rss_mb']:.0f} MB, first batch {first} s")
    return r


def _run(spec: Dict[str, Any], python: str, timeout: float) -> Dict[str, Any]:
    import psutil
    fd, result_file = tempfile.mkstemp(prefix="mx8-bench-", suffix=".json")
    os.close(fd)
    spec = dict(spec, result_file=result_file)
    p = subprocess.Popen(_command(python, spec), cwd=REPO, stdin=subprocess.DEVNULL, start_new_session=True,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    peak_pss = [0]
    done = threading.Event()

    def sample() -> None:
        try:
            proc = psutil.Process(p.pid)
        except psutil.Error:
            return
        while not done.wait(0.2):
            peak_pss[0] = max(peak_pss[0], _tree_pss_bytes(proc))

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
    p.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    done.set()
    th.join()
    try:
        with open(result_file) as f:
            text = f.read()
        res = json.loads(text) if text else None
    finally:
        os.unlink(result_file)
    if res and res.get("child_error"):
        return {"name": spec["name"], "error": f"run failed: {res['child_error']}", "rate": None}
    if p.returncode != 0 or res is None:
        why = f"timed out after {timeout:.0f}s" if timed_out else f"exit {p.returncode}"
        return {"name": spec["name"], "error": why, "rate": None}
    res.update(name=spec["name"], peak_rss_mb=ru.ru_maxrss / 1024, peak_pss_mb=peak_pss[0] / 2**20,
               wall_s=time.monotonic() - t0)
    return res


def _call(target: str, spec: Dict[str, Any]) -> Any:
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)(spec)


def main(argv: list) -> int:
    spec = json.loads(argv[0])
    if spec["name"] in TASKS:
        _call(TASKS[spec["name"]], spec)
        return 0
    from .contenders import runner
    try:
        res = runner(spec["name"])(spec)
    except BaseException as e:  # the reason goes into the table
        traceback.print_exc()
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        res = {"child_error": f"{type(e).__name__}: {first}"[:300]}
    with open(spec["result_file"], "w") as f:
        json.dump(res, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
