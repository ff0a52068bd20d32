"""Tests of the benchmarks package and of `mx8 bench`, which share mx8/bench_harness.py.

    .venv/bin/python -m pytest -q benchmarks/        (from the repository root; about 40 s)

The end-to-end runs use a 17-image corpus made here and MX8_BENCH_CACHE in a temporary
directory, so nothing lands in .cache/. They need .venv (mx8 editable) and the C probes' -dev
packages (scripts/setup_env.sh).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from benchmarks import REPO, bench, child, peers, report
from benchmarks.harness import alternate, load_note, ratio, reused, timed_epochs

VENV_PY = os.path.join(REPO, ".venv", "bin", "python")


def test_timed_epochs_warmup_then_best_epoch():
    calls = []

    def make_iter(epoch):
        calls.append(epoch)
        for _ in range(3):
            time.sleep(0.001 * (3 - epoch))  # later epochs are faster
            yield [0] * 4

    r = timed_epochs(make_iter, 3, len, warmup_iter=lambda: iter([[0], [0], [0]]), warmup_batches=2,
                     end_warmup=lambda: calls.append("end"), log=None)
    assert calls == ["end", 0, 1, 2]
    assert [e["images"] for e in r["epochs"]] == [12, 12, 12]
    assert r["rate"] == max(e["rate"] for e in r["epochs"]) == r["epochs"][2]["rate"]
    assert r["images"] == 12 and r["first_batch_s"] is not None


def test_timed_epochs_without_warmup_times_first_batch_of_epoch_0():
    lines = []
    r = timed_epochs(lambda e: iter([[1, 2]]), 1, len, log=lines.append)
    assert r["first_batch_s"] is not None and r["images"] == 2
    assert lines[0].startswith("epoch 0: 2 images in ") and lines[0].endswith(" img/s")
    with pytest.raises(ValueError):
        timed_epochs(lambda e: iter([]), 1, len, warmup_batches=1)


def test_alternate_rounds_and_ratio_and_load_note():
    order = []
    runs = alternate({"a": lambda: order.append("a") or 1.0, "b": lambda: order.append("b") or 2.0}, 3)
    assert order == ["a", "b"] * 3 and runs == {"a": [1.0] * 3, "b": [2.0] * 3}
    assert ratio(3, 2) == 1.5 and ratio(None, 2) is None and ratio(3, 0) is None
    assert load_note((1, 2, 3), (4, 5, 6), 2).startswith("load average (1/5/15 min) at start 1.0/2.0/3.0, at end "
                                                         "4.0/5.0/6.0 on 2 cores")
    made = []
    make_iter = reused(lambda: made.append(1) or [7])
    assert list(make_iter(0)) == [7] and list(make_iter(1)) == [7] and made == [1]


def test_parent_modules_import_neither_mx8_nor_torch():
    code = ("import sys, benchmarks.bench, benchmarks.peers, benchmarks.s3, benchmarks.leases; "
            "bad = [m for m in ('mx8', 'torch', 'psutil') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_select():
    assert bench.select("mx8,turbojpeg", [2]) == bench.MX8_CONTENDERS + ["turbojpeg-raw"]
    assert bench.select("torchvision,mx8-train", [0, 3]) == ["torchvision-w0", "torchvision-w3", "mx8-train"]
    assert "libpng-raw" in bench.select(None, [0])
    with pytest.raises(SystemExit):
        bench.select("nope", [0])
    assert peers.select("dali, mx8-train") == ["dali", "mx8-train"]
    with pytest.raises(SystemExit):
        peers.select("torchvision-w0")


def test_report_ratios_and_tables():
    results = [{"name": "mx8-train", "rate": 1000.0}, {"name": "mx8-train-t1", "rate": 550.0},
               {"name": "torchvision-w2", "rate": 400.0}, {"name": "torchvision-w3", "rate": 500.0},
               {"name": "turbojpeg-raw", "rate": 400.0},
               {"name": "libpng-raw", "rate": 200.0, "mx8_decode_rate": 202.0, "mx8_rrc_rate": 190.0,
                "mx8_vs_libpng": 1.01, "images": 10},
               {"name": "mx8-eval", "error": "exit 1", "rate": None}]
    rows = report.summarise(results, 2)
    by = {r["name"]: r for r in rows}
    assert by["mx8-train"]["vs_torchvision_best"] == 2.0
    assert by["mx8-train"]["vs_turbojpeg_1core"] == 2.5 and by["mx8-train"]["vs_turbojpeg_ideal"] == 1.25
    assert by["turbojpeg-raw, 2 cores ideal"]["rate"] == 800.0
    assert by["mx8-png-decode-t1"]["vs_libpng_1core"] == 1.01 and by["mx8-png-decode-t1"]["group"] == "png"
    t = report.targets(results, 2)
    assert t["thread_scaling"]["ratio"] == 1000.0 / 1100.0 and t["png"]["ratio"] == 1.01
    meta = {"date": "d", "corpus": "c", "images": 10, "jpegs": 9, "corpus_mb": 1.0, "cores": 2, "cpu": "x",
            "repeats": 1, "notes": ["n"], "targets": t, "png_corpus": {"images": 10, "mb": 1.0}}
    md = report.render_bench(rows, meta)
    assert "| mx8-train | 1000 | 2.00 | 2.50 | 1.25 | - | - | - | - |" in md
    assert "| mx8-eval | failed: exit 1 | | | | | | | |" in md
    assert "| 2 | 1000 | 1100 | 0.91 |" in md and "| mx8-png-decode-t1 | 202 | 1.010 | 0.51 | - | - |" in md
    pm = report.render_peers([{"name": "mx8-train", "rate": 800.0, "versions": {"mx8": "0"}},
                              {"name": "dali", "rate": 200.0}, {"name": "ffcv", "error": "a|b", "rate": None}], meta)
    assert "| dali | 200 | 0.25 |" in pm and "| ffcv | failed: a/b | | | | | | |" in pm


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """17 images in 2 classes (one PNG), and a cache directory for the runs."""
    from PIL import Image
    root = tmp_path_factory.mktemp("bench")
    corpus = root / "corpus"
    for i in range(17):
        d = corpus / f"class_{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        img = Image.effect_noise((96 + i, 80), 40).convert("RGB")
        img.save(d / (f"{i}.png" if i == 16 else f"{i}.jpg"), quality=90)
    return root


def _env(tiny):
    return dict(os.environ, MX8_BENCH_CACHE=str(tiny / "cache"))


def test_mx8_bench_cli(tiny):
    out = subprocess.run([VENV_PY, "-m", "mx8", "bench", str(tiny / "corpus"), "--batch-size", "4", "--epochs", "2",
                          "--warmup", "1", "--threads", "1"], check=True, capture_output=True, text=True).stdout
    lines = out.splitlines()
    assert lines[0].startswith("epoch 0: 17 images in ") and lines[1].startswith("epoch 1: 17 images in ")
    assert lines[2].startswith("best: ") and "(1 threads), first batch " in lines[2]
    assert lines[3].startswith("load average (1/5/15 min)")


def test_child_reports_an_unknown_contender(tiny):
    r = child.run_contender({"name": "nope", "repeats": 1, "warmup": 1}, VENV_PY, 120, lambda msg: None)
    assert r["rate"] is None and r["error"] == "run failed: SystemExit: unknown contender nope"


def test_bench_end_to_end(tiny):
    out = tiny / "out"
    subprocess.run([VENV_PY, "scripts/bench.py", "--quick", "--corpus", str(tiny / "corpus"), "--only",
                    "mx8-train,turbojpeg-raw", "--out", str(out)], check=True, cwd=REPO, env=_env(tiny))
    data = json.loads((out / "bench.json").read_text())
    by = {r["name"]: r for r in data["results"]}
    mx, tj = by["mx8-train"], by["turbojpeg-raw"]
    assert mx["images"] == 17 and tj["images"] == 16 and mx["peak_rss_mb"] > 0 and mx["peak_pss_mb"] > 0
    assert mx["vs_turbojpeg_1core"] == mx["rate"] / tj["rate"]
    assert data["meta"]["images"] == 17 and data["meta"]["jpegs"] == 16
    assert "| mx8-train |" in (out / "bench.md").read_text()


def test_peers_end_to_end_reports_what_cannot_run(tiny):
    out = tiny / "out-peers"
    r = subprocess.run([VENV_PY, "scripts/bench_peers.py", "--quick", "--corpus", str(tiny / "corpus"), "--only",
                        "mx8-train,dali", "--no-install", "--out", str(out)], cwd=REPO, env=_env(tiny),
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stdout + r.stderr  # dali did not run
    data = json.loads((out / "peers-quick.json").read_text())
    mx, dali = data["results"]
    assert mx["name"] == "mx8-train" and mx["images"] == 17 and dali["rate"] is None and dali["error"]


@pytest.mark.parametrize("script", ["bench", "bench_peers", "bench_s3", "bench_leases", "bench_scale", "bench_index"])
def test_scripts_help_and_working_directory(script, tmp_path):
    r = subprocess.run([sys.executable, f"scripts/{script}.py", "--help"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0 and "usage: python -m benchmarks." in r.stdout, r.stderr
    r = subprocess.run([sys.executable, os.path.join(REPO, "scripts", f"{script}.py"), "--help"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 1 and "run it from the repository root" in r.stderr


def test_delay_proxy_holds_each_request_and_passes_answers_whole():
    """The scale benchmark's latency: each keep-alive request is held the delay, answers of
    several MB come back byte for byte (spliced)."""
    import http.client
    import http.server
    import threading
    import time

    from benchmarks.delay_proxy import DelayProxy
    body = os.urandom(3 << 20)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    proxy = DelayProxy(httpd.server_address, 0.05)
    try:
        conn = http.client.HTTPConnection(proxy.endpoint[len("http://"):])
        t0 = time.monotonic()
        for _ in range(3):  # one connection, three requests
            conn.request("GET", "/x")
            assert conn.getresponse().read() == body
        assert time.monotonic() - t0 >= 0.15 and proxy.requests == 3
        conn.close()
    finally:
        proxy.close()
        httpd.shutdown()
