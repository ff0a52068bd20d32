"""A manifest of N samples: what resolving it costs with the binary index against parsing
it in memory, in time and in memory, for one process and for 8 processes of a node.

    .venv/bin/python -m benchmarks.index [--samples 1000000,10000000] [--processes 8]
                                         (or scripts/bench_index.py)

For each N: a synthetic packed manifest (N records over shards of 100,000, labels mod
1,000; written under .cache/bench-index-<N>/, never committed), then, each in a fresh
process (peak RSS from wait4, PSS and USS from /proc by psutil while it holds the manifest):
  build    the index from the manifest (mx8._core.build_index): seconds, records/s, peak RSS
  mapped   mx8.resolve with the index in place, the page cache warm: seconds, RSS, PSS, USS
  parsed   mx8.resolve with MX8_MANIFEST_INDEX=0 (the manifest read and parsed in memory)
  8 procs  --processes processes resolving (mapped, then parsed) at once and holding the
           manifest: the sum of their PSS and the largest USS (private memory)
The epoch order is not part of this: it still costs 8 bytes a sample a process (issue 15,
item 2).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

from . import logger
from .corpus import CACHE
from .environments import use_project_venv
from .harness import loadavg

log = logger("bench_index")

# One measurement, in a process of its own; prints JSON. argv: mode, manifest dir, hold_s
CHILD = r"""
import json, os, resource, sys, time
mode, root, hold = sys.argv[1], sys.argv[2], float(sys.argv[3])
import psutil
from mx8 import _core
import mx8
t0 = time.monotonic()
if mode == "none":  # the baseline: Python, torch and mx8 imported, nothing resolved
    keep = None
elif mode == "build":
    _core.build_index(os.path.join(root, "_mx8", "manifest.tsv"), os.path.join(root, "_mx8", "manifest.idx"))
    keep = None
else:
    keep = mx8.resolve(root)
dt = time.monotonic() - t0
if hold:
    time.sleep(hold)  # the other processes resolve meanwhile
mi = psutil.Process().memory_full_info()
print(json.dumps({"seconds": dt, "rss": mi.rss, "pss": mi.pss, "uss": mi.uss,
                  "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "mapped": bool(keep is not None and keep.manifest.mapped)}))
"""


def make_manifest(n: int) -> str:
    root = os.path.join(CACHE, f"bench-index-{n}")
    tsv = os.path.join(root, "_mx8", "manifest.tsv")
    if os.path.exists(tsv):
        return root
    os.makedirs(os.path.dirname(tsv), exist_ok=True)
    log(f"writing a manifest of {n:,} records to {tsv}")
    with open(tsv + ".new", "w") as f:
        f.write("schema_version=0\n")
        step = 100_000
        for lo in range(0, n, step):
            f.write("".join(f"{i}\tshards/shard-{i // step:06d}.tar\t{(i % step) * 110_000 + 512}\t109000\t"
                            f"mx8:vision:imagefolder;label_id={i % 1000}\n" for i in range(lo, min(n, lo + step))))
    os.replace(tsv + ".new", tsv)
    return root


def child(mode: str, root: str, hold: float = 0.0, index: bool = True) -> subprocess.Popen:
    env = dict(os.environ, MX8_MANIFEST_INDEX="1" if index else "0", MX8_MANIFEST_STORE=os.path.join(root, "store"))
    return subprocess.Popen([sys.executable, "-c", CHILD, mode, root, str(hold)], env=env, stdout=subprocess.PIPE,
                            text=True)


def result(p: subprocess.Popen) -> Dict[str, Any]:
    out, _ = p.communicate(timeout=3600)
    if p.returncode:
        raise SystemExit(f"bench_index: a child failed (exit {p.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def mb(x: float) -> str:
    return f"{x / 1e6:,.0f}"


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.index", description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", default="1000000,10000000", help="manifest sizes, comma-separated")
    ap.add_argument("--processes", type=int, default=8, help="processes resolving the same manifest at once")
    args = ap.parse_args(argv)
    rows = []
    for n in [int(x) for x in args.samples.split(",")]:
        root = make_manifest(n)
        # An index built within 2 s of its manifest's last change is checked again by building
        # at the next resolve (mx8/manifest_index.py, RACY_NS): let a fresh manifest age first.
        age = time.time() - os.stat(os.path.join(root, "_mx8", "manifest.tsv")).st_ctime
        if age < 3:
            time.sleep(3 - age)
        tsv_bytes = os.path.getsize(os.path.join(root, "_mx8", "manifest.tsv"))
        base = result(child("none", root))
        build = result(child("build", root))
        mapped = result(child("resolve", root))
        parsed = result(child("resolve", root, index=False))
        many: Dict[str, List[Dict[str, Any]]] = {}
        for name, mode, index in (("none", "none", True), ("mapped", "resolve", True), ("parsed", "resolve", False)):
            # the baseline too: torch's shared libraries count less in each PSS when 8 map them
            procs = [child(mode, root, hold=3.0 + 0.05 * args.processes, index=index) for _ in range(args.processes)]
            many[name] = [result(p) for p in procs]
        assert mapped["mapped"] and not parsed["mapped"]
        row = {"n": n, "tsv_mb": tsv_bytes / 1e6, "base": base, "build": build, "mapped": mapped, "parsed": parsed,
               "many": many}
        rows.append(row)
        log(f"{n:,}: build {build['seconds']:.2f} s, resolve mapped {mapped['seconds']:.2f} s / parsed "
            f"{parsed['seconds']:.2f} s")
    print(f"\nResolving a packed manifest: the binary index (mapped) against parsing it in memory; "
          f"{args.processes} processes at once; load average {loadavg()[0]:.2f}\n")
    print("Memory is what resolving adds to a process that imported torch and mx8 and resolved nothing "
          "(that baseline: " + ", ".join(f"{mb(r['base']['uss'])} MB USS" for r in rows[:1]) + ").\n")
    print("| samples | manifest MB | build s | build Mrec/s | build peak RSS + MB | resolve s mapped / parsed | "
          "peak RSS + MB mapped / parsed | USS + MB mapped / parsed | "
          f"{args.processes} procs: PSS + MB (sum) mapped / parsed | private + MB (largest) mapped / parsed |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        base, b, m, p, many = r["base"], r["build"], r["mapped"], r["parsed"], r["many"]
        base_pss = sum(x["pss"] for x in many["none"]) / len(many["none"])
        base_uss = sum(x["uss"] for x in many["none"]) / len(many["none"])
        pss = {k: sum(x["pss"] - base_pss for x in v) for k, v in many.items()}
        uss = {k: max(x["uss"] - base_uss for x in v) for k, v in many.items()}
        print(f"| {r['n']:,} | {r['tsv_mb']:,.0f} | {b['seconds']:.2f} | {r['n'] / b['seconds'] / 1e6:.1f} | "
              f"{mb(b['maxrss'] - base['maxrss'])} | {m['seconds']:.2f} / {p['seconds']:.2f} | "
              f"{mb(m['maxrss'] - base['maxrss'])} / {mb(p['maxrss'] - base['maxrss'])} | "
              f"{mb(m['uss'] - base['uss'])} / {mb(p['uss'] - base['uss'])} | {mb(pss['mapped'])} / {mb(pss['parsed'])} | "
              f"{mb(uss['mapped'])} / {mb(uss['parsed'])} |")
    print()


if __name__ == "__main__":
    use_project_venv("benchmarks.index")
    main(sys.argv[1:])
