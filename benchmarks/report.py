"""The reports: ratio columns, the markdown tables, the JSON next to them and the chart.

bench (benchmarks.bench): images/s against the best torchvision setting and raw TurboJPEG
(one core, and N cores ideal = N x that rate), the thread-scaling and PNG targets, and the
PNG table (another corpus, so its own ratios: to the bare libpng loop). peers
(benchmarks.peers): images/s against mx8-train.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, List, Optional, Sequence

from . import BATCH
from .harness import ratio

PNG_CONTENDERS = ["libpng-raw", "mx8-png"]


def fmt(v: Optional[float], spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(header: Sequence[str], align: str, rows: List[Sequence[str]]) -> List[str]:
    """Markdown table lines; align: one of "l" or "r" a column."""
    def line(cells: Sequence[str]) -> str:
        return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"
    return ([line(header), "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
            + [line(r) for r in rows])


def failed(r: Dict[str, Any], columns: int) -> List[str]:
    """A failed contender's row: the reason in the rate column, the others empty."""
    return [r["name"], f"failed: {r['error'].replace('|', '/')}"] + [""] * (columns - 2)


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
            r["vs_libpng_1core"] = ratio(rate, base)
            r["vs_libpng_ideal"] = ratio(rate, base * ncores if base else None)
            continue
        r["vs_torchvision_best"] = ratio(rate, tv_best)
        r["vs_turbojpeg_1core"] = ratio(rate, tj)
        r["vs_turbojpeg_ideal"] = ratio(rate, tj * ncores if tj else None)
    return rows


def targets(results: List[Dict[str, Any]], ncores: int) -> Dict[str, Any]:
    """The thread-scaling and PNG targets, from the contenders that ran."""
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


def _corpus_line(meta: Dict[str, Any]) -> str:
    return f"Corpus: `{meta['corpus']}`: {meta['images']} images ({meta['jpegs']} JPEG), {meta['corpus_mb']:.0f} MB."


def _notes(meta: Dict[str, Any]) -> List[str]:
    return ["", "Notes:"] + [f"- {line}" for line in meta["notes"]]


def render_bench(rows: List[Dict[str, Any]], meta: Dict[str, Any]) -> str:
    n = meta["cores"]
    out = [f"# mx8 benchmark ({meta['date']})", "",
           f"{_corpus_line(meta)} Batch {BATCH}, output 224x224, {n} cores "
           f"({meta['cpu']}). Best of {meta['repeats']} epoch(s) after a warm-up.", ""]
    body = []
    for r in rows:
        if r.get("group") == "png":
            continue
        body.append(failed(r, 9) if r.get("error") else [
            r["name"], fmt(r["rate"], ".0f"), fmt(r["vs_torchvision_best"], ".2f"),
            fmt(r["vs_turbojpeg_1core"], ".2f"), fmt(r["vs_turbojpeg_ideal"], ".2f"),
            fmt(r.get("peak_rss_mb"), ".0f"), fmt(r.get("import_rss_mb"), ".0f"),
            fmt(r.get("peak_pss_mb"), ".0f"), fmt(r.get("first_batch_s"), ".2f")])
    out += table(["contender", "img/s", "vs torchvision best", "vs raw TurboJPEG (1 core)",
                  f"vs raw TurboJPEG ({n} cores ideal)", "peak RSS MB", "RSS after imports MB",
                  "peak PSS MB (all procs)", "first batch s"], "lrrrrrrrr", body)
    ts = meta.get("targets", {}).get("thread_scaling")
    if ts:
        out += ["", "Thread scaling (mx8 train path, same corpus; target: at least 0.9):", ""]
        out += table(["threads", "img/s", f"{ts['threads']} x one-thread rate", "scaling ratio"], "rrrr",
                     [["1", f"{ts['rate_1_thread']:.0f}", "", ""],
                      [str(ts["threads"]), f"{ts['rate_n_threads']:.0f}", f"{ts['ideal']:.0f}", f"{ts['ratio']:.2f}"]])
    png_rows = [r for r in rows if r.get("group") == "png"]
    if png_rows:
        pm = meta.get("png_corpus") or {}
        out += ["", f"PNG ({pm.get('images', '?')} images of the corpus converted to PNG, "
                    f"{pm.get('mb', 0):.0f} MB; target: mx8 decode at least 0.95x the bare libpng loop):", ""]
        out += table(["contender", "img/s", "vs bare libpng (1 thread)", f"vs bare libpng ({n} cores ideal)",
                      "peak RSS MB", "first batch s"], "lrrrrr",
                     [failed(r, 6) if r.get("error") else [
                         r["name"], fmt(r["rate"], ".0f"), fmt(r.get("vs_libpng_1core"), ".3f"),
                         fmt(r.get("vs_libpng_ideal"), ".2f"), fmt(r.get("peak_rss_mb"), ".0f"),
                         fmt(r.get("first_batch_s"), ".2f")] for r in png_rows])
    return "\n".join(out + _notes(meta)) + "\n"


def render_peers(rows: List[Dict[str, Any]], meta: Dict[str, Any]) -> str:
    out = [f"# mx8 vs peer loaders ({meta['date']})", "",
           f"{_corpus_line(meta)} Train path (decode + RandomResizedCrop 224 + flip, uint8 "
           f"NCHW), batch {BATCH}, {meta['cores']} cores. Best of {meta['repeats']} epoch(s) after a warm-up.", ""]
    ref = next((r["rate"] for r in rows if r["name"] == "mx8-train" and r.get("rate")), None)
    body = []
    for r in rows:
        body.append(failed(r, 8) if r.get("error") else [
            r["name"], fmt(r["rate"], ".0f"), fmt(ratio(r["rate"], ref), ".2f"),
            fmt(r.get("peak_rss_mb"), ".0f"), fmt(r.get("import_rss_mb"), ".0f"), fmt(r.get("peak_pss_mb"), ".0f"),
            fmt(r.get("first_batch_s"), ".2f"), ", ".join(f"{k} {v}" for k, v in r.get("versions", {}).items())])
    out += table(["contender", "img/s", "vs mx8-train", "peak RSS MB", "RSS after imports MB",
                  "peak PSS MB (all procs)", "first batch s", "versions"], "lrrrrrrl", body)
    return "\n".join(out + _notes(meta)) + "\n"


def write_chart(rows: List[Dict[str, Any]], path: str) -> Optional[str]:
    """bench.png, a bar per JPEG-corpus row; the reason when there is none."""
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


def write(out_dir: str, stem: str, md: str, data: Dict[str, Any], log: Callable[[str], None],
          chart: Optional[Callable[[str], Optional[str]]] = None) -> None:
    """Writes out_dir/stem.md and stem.json (and stem.png through `chart`), prints the table."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, stem + ".md"), "w") as f:
        f.write(md)
    with open(os.path.join(out_dir, stem + ".json"), "w") as f:
        json.dump(data, f, indent=2)
    why = chart(os.path.join(out_dir, stem + ".png")) if chart else "no chart"
    print()
    print(md)
    log(f"wrote {out_dir}/{stem}.md, {stem}.json" + ("" if why else f", {stem}.png"))
    if why and chart:
        log(why)
