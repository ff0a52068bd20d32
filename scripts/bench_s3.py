#!/usr/bin/env python3
"""mx8 over S3 against mx8 on local disk, same packed corpus, same cores, one run.

The S3 side is Debian's nginx on 127.0.0.1 serving the packed dataset under a bucket path
(path-style URLs, HTTP range requests): a fast loopback "S3" that, unlike moto, keeps
connections open and serves ranges without reading whole objects. nginx checks no
signatures; mx8 still signs every request as it would for S3.

    .venv/bin/python scripts/bench_s3.py [--packed DIR] [--epochs 2]

Prints img/s for both paths (decode + RandomResizedCrop 224 + flip, batches of 256) and the
S3 requests per sample. Needs nginx (apt-get install nginx-light).
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

NGINX_CONF = """
{user}
daemon off;
worker_processes 2;
error_log {tmp}/error.log;
pid {tmp}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 100000;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ root {root}; }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(packed: str, tmp: str) -> tuple:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        sys.exit("bench_s3: nginx not found (apt-get install nginx-light)")
    root = os.path.join(tmp, "root")
    os.makedirs(os.path.join(root, "bench"))
    os.symlink(os.path.abspath(packed), os.path.join(root, "bench", "ds"))
    port = free_port()
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        # Started as root, nginx's workers would drop to 'nobody' and could not read the corpus.
        user = "user root;" if os.geteuid() == 0 else ""
        f.write(NGINX_CONF.format(tmp=tmp, port=port, root=root, user=user))
    proc = subprocess.Popen([nginx, "-c", conf, "-p", tmp], stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("bench_s3: nginx did not start")


def run(uri: str, epochs: int, threads: int, shuffle: bool) -> tuple:
    import mx8
    ds = mx8.Dataset(uri, batch_size=256, size=224, crop="random", flip=True, shuffle=shuffle, threads=threads)
    best, stats = 0.0, {}
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        n, t0 = 0, time.monotonic()
        for b in ds:
            n += len(b.sample_ids)
        rate = n / (time.monotonic() - t0)
        if rate > best:
            best, stats = rate, ds.stats()
    return best, stats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cands = sorted(glob.glob(os.path.join(REPO, ".cache", "bench-packed", "bench-corpus-5000-*")))
    p.add_argument("--packed", default=cands[0] if cands else None,
                   help="packed dataset directory (default: scripts/bench.py's 5000-image corpus)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--shuffle", action="store_true",
                   help="block-shuffled order (default: sequential, MX8_SHUFFLE's default, where "
                        "neighbouring samples coalesce into multi-MB GETs)")
    a = p.parse_args()
    if not a.packed:
        sys.exit("bench_s3: no packed corpus; run scripts/bench.py once or pass --packed")
    tmp = tempfile.mkdtemp(prefix="mx8-bench-s3-")
    proc, endpoint = start_nginx(a.packed, tmp)
    try:
        os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                           "AWS_REGION": "us-east-1", "MX8_MANIFEST_STORE": os.path.join(tmp, "store")})
        threads = a.threads or len(os.sched_getaffinity(0))
        rows = []
        for name, uri in (("local", a.packed), ("s3 (nginx)", "s3://bench/ds/"), ("local", a.packed),
                          ("s3 (nginx)", "s3://bench/ds/")):
            rate, st = run(uri, a.epochs, threads, a.shuffle)
            rows.append((name, rate, st))
            print(f"[bench_s3] {name:11s} {rate:7.0f} img/s", flush=True)
        best = {n: max(r for m, r, _ in rows if m == n) for n in ("local", "s3 (nginx)")}
        st = next(s for m, r, s in rows if m == "s3 (nginx)" and r == best["s3 (nginx)"])
        samples = st.get("images", 0) or 1
        print()
        print("| path | img/s | vs local |")
        print("|---|---:|---:|")
        for n in ("local", "s3 (nginx)"):
            print(f"| {n} | {best[n]:.0f} | {best[n] / best['local']:.2f} |")
        print(f"\nS3: {st['reads']} ranged GETs for {samples} samples ({st['reads'] / samples:.3f} requests a sample, "
              f"{st['bytes_read'] / max(st['reads'], 1) / 1e6:.2f} MB a GET), {st['s3_requests']} HTTP requests, "
              f"{st['s3_retries']} retries; GET latency ms {st['s3_latency_ms']}; decode threads waited "
              f"{st['read_s']:.2f} s for bytes in all")
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
