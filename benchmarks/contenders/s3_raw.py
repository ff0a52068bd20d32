"""Raw S3 reads of every byte of every shard, nothing decoded (benchmarks.s3, part 1). Each
reader returns bytes a second for one pass; they run in the entry point's process, alternating.

  boto3   ranged GETs of 8 MiB on 16 threads (one client, 16 pooled connections)
  awscrt  its S3 client (PyPI awscrt): one GET per shard, split into 8 MiB parts
  mx8     mx8.Dataset(decode=False): the engine's S3 reader, raw sample bytes in batches
"""
from __future__ import annotations

import time
from typing import Any, Dict

from .. import BATCH
from ..s3_endpoint import BUCKET, PREFIX

MiB = 1 << 20


def read_boto3(endpoint: str, objects: list) -> float:
    import concurrent.futures

    import boto3
    from botocore.config import Config
    client = boto3.client("s3", endpoint_url=endpoint, config=Config(max_pool_connections=16,
                                                                      s3={"addressing_style": "path"}))
    parts = [(k, o, min(8 * MiB, size - o)) for k, size in objects for o in range(0, size, 8 * MiB)]

    def get(part):
        key, off, n = part
        body = client.get_object(Bucket=BUCKET, Key=key, Range=f"bytes={off}-{off + n - 1}")["Body"]
        return len(body.read())

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        got = sum(ex.map(get, parts))
    dt = time.monotonic() - t0
    assert got == sum(s for _, s in objects), "boto3 read short"
    return got / dt


def read_awscrt(endpoint: str, objects: list) -> float:
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
                                request=http.HttpRequest("GET", f"/{BUCKET}/{key}", http.HttpHeaders([("Host", host)])))
            for key, _ in objects]
    for r in reqs:
        r.finished_future.result(300)
    dt = time.monotonic() - t0
    assert got[0] == sum(s for _, s in objects), "awscrt read short"
    return got[0] / dt


class Mx8Raw:
    """One epoch of mx8.Dataset(decode=False) over S3 a call, sequential order; keeps the
    last epoch's stats()."""

    def __init__(self, threads: int) -> None:
        import mx8
        self.ds = mx8.Dataset(f"s3://{BUCKET}/{PREFIX}/", batch_size=BATCH, decode=False, shuffle=False,
                              threads=threads)
        self.epoch = 0
        self.stats: Dict[str, Any] = {}

    def __call__(self, endpoint: str, objects: list) -> float:
        self.ds.set_epoch(self.epoch)
        self.epoch += 1
        got, t0 = 0, time.monotonic()
        for b in self.ds:
            got += b.data.numel()
        dt = time.monotonic() - t0
        self.stats = self.ds.stats()
        return got / dt


READERS = {"boto3": read_boto3, "awscrt": read_awscrt}  # name -> reader; the module it needs is its name
