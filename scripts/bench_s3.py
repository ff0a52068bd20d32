#!/usr/bin/env python3
"""mx8's S3 read path against boto3 and awscrt, and mx8 over S3 against local disk: same
packed corpus, same cores, one run.

The S3 side is Debian's nginx on 127.0.0.1 serving the packed dataset under a bucket path
(path-style URLs, HTTP range requests): a fast loopback "S3" that, unlike moto, keeps
connections open and serves ranges without reading whole objects. nginx checks no
signatures; every client still signs every request as it would for S3.

    .venv/bin/python scripts/bench_s3.py [--packed DIR] [--rounds 3] [--epochs 2]

1. Raw reads (every byte of every shard, nothing decoded), the contenders alternating,
   best of --rounds each:
     boto3   ranged GETs of 8 MiB on 16 threads (one client, 16 pooled connections)
     awscrt  its S3 client (PyPI awscrt): one GET per shard, split into 8 MiB parts
     mx8     mx8.Dataset(decode=False): the engine's S3 reader, raw sample bytes in batches
   Prints MB/s and the ratios mx8/boto3 and mx8/awscrt (the target is >= 0.9 each).
2. The train path (decode + RandomResizedCrop 224 + flip, batches of 256) over S3 and from
   local disk, alternating: img/s and the S3/local ratio, with the requests per sample.

Needs nginx (apt-get install nginx-light); boto3 and awscrt (pip install boto3 awscrt) for
part 1 (a contender whose package is missing is left out and said so).
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


MiB = 1 << 20


def shard_objects(packed: str) -> list:
    """(key under the bucket, size) of every shard, as nginx serves them."""
    d = os.path.join(packed, "shards")
    return [(f"ds/shards/{n}", os.path.getsize(os.path.join(d, n))) for n in sorted(os.listdir(d))]


def read_boto3(endpoint: str, objects: list) -> float:
    """Bytes a second: 8 MiB ranged GETs of every shard on 16 threads."""
    import concurrent.futures
    import boto3
    from botocore.config import Config
    client = boto3.client("s3", endpoint_url=endpoint, config=Config(max_pool_connections=16,
                                                                      s3={"addressing_style": "path"}))
    parts = [(k, o, min(8 * MiB, size - o)) for k, size in objects for o in range(0, size, 8 * MiB)]

    def get(part):
        key, off, n = part
        body = client.get_object(Bucket="bench", Key=key, Range=f"bytes={off}-{off + n - 1}")["Body"]
        return len(body.read())

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        got = sum(ex.map(get, parts))
    dt = time.monotonic() - t0
    assert got == sum(s for _, s in objects), "boto3 read short"
    return got / dt


def read_awscrt(endpoint: str, objects: list) -> float:
    """Bytes a second: awscrt's S3 client GETs every shard (8 MiB parts, its own parallelism)."""
    import threading
    from awscrt import auth, http, io, s3
    loops = io.EventLoopGroup()
    bootstrap = io.ClientBootstrap(loops, io.DefaultHostResolver(loops))
    client = s3.S3Client(bootstrap=bootstrap, region="us-east-1",
                         credential_provider=auth.AwsCredentialsProvider.new_static("bench", "bench"),
                         tls_mode=s3.S3RequestTlsMode.DISABLED, part_size=8 * MiB, throughput_target_gbps=10.0)
    host = endpoint.split("//", 1)[1]  # the Host header carries the port: awscrt connects there
    got, lock = [0], threading.Lock()

    def on_body(chunk, offset, **kw):
        with lock:
            got[0] += len(chunk)

    t0 = time.monotonic()
    reqs = [client.make_request(type=s3.S3RequestType.GET_OBJECT, on_body=on_body,
                                request=http.HttpRequest("GET", "/bench/" + key, http.HttpHeaders([("Host", host)])))
            for key, _ in objects]
    for r in reqs:
        r.finished_future.result(300)
    dt = time.monotonic() - t0
    assert got[0] == sum(s for _, s in objects), "awscrt read short"
    return got[0] / dt


class Mx8Raw:
    """Bytes a second: one epoch of mx8.Dataset(decode=False) over S3, sequential order."""

    def __init__(self, threads: int) -> None:
        import mx8
        self.ds = mx8.Dataset("s3://bench/ds/", batch_size=256, decode=False, shuffle=False, threads=threads)
        self.epoch = 0

    def __call__(self, endpoint: str, objects: list) -> float:
        self.ds.set_epoch(self.epoch)
        self.epoch += 1
        got, t0 = 0, time.monotonic()
        for b in self.ds:
            got += b.data.numel()
        dt = time.monotonic() - t0
        self.stats = self.ds.stats()
        return got / dt


def raw_reads(endpoint: str, packed: str, rounds: int, threads: int) -> None:
    objects = shard_objects(packed)
    contenders = {"mx8": Mx8Raw(threads)}
    for name, fn, module in (("boto3", read_boto3, "boto3"), ("awscrt", read_awscrt, "awscrt")):
        try:
            __import__(module)
            contenders[name] = fn
        except ImportError:
            print(f"[bench_s3] {name}: not installed (pip install {module}); left out", flush=True)
    total = sum(s for _, s in objects)
    print(f"[bench_s3] raw reads: {len(objects)} shards, {total / 1e6:.0f} MB, {rounds} rounds, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    best = {n: 0.0 for n in contenders}
    for r in range(rounds):
        for name, fn in contenders.items():
            rate = fn(endpoint, objects)
            best[name] = max(best[name], rate)
            print(f"[bench_s3] round {r + 1} {name:7s} {rate / 1e6:7.0f} MB/s", flush=True)
    print(f"\n| raw read (best of {rounds}) | MB/s | mx8 / it |")
    print("|---|---:|---:|")
    for name in contenders:
        print(f"| {name} | {best[name] / 1e6:.0f} | {best['mx8'] / best[name]:.2f} |")
    st = contenders["mx8"].stats
    print(f"\nmx8: {st['reads']} GETs ({st['bytes_read'] / max(st['reads'], 1) / 1e6:.2f} MB each), latency ms "
          f"{st['s3_latency_ms']}; load average after {os.getloadavg()[0]:.2f}\n", flush=True)


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
    cands = sorted(glob.glob(os.path.join(REPO, ".cache", "bench-packed", "bench-demo-5000-*")))
    p.add_argument("--packed", default=cands[0] if cands else None,
                   help="packed dataset directory (default: scripts/bench.py's 5000-image corpus)")
    p.add_argument("--epochs", type=int, default=2, help="train-path epochs per contender run")
    p.add_argument("--rounds", type=int, default=3, help="raw-read rounds (each contender once a round)")
    p.add_argument("--skip-raw", action="store_true", help="only the train path")
    p.add_argument("--skip-train", action="store_true", help="only the raw reads")
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
        if not a.skip_raw:
            raw_reads(endpoint, a.packed, a.rounds, threads)
        if a.skip_train:
            return
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
