"""Batches read from S3 (moto on 127.0.0.1) are bit-identical to the same snapshot read
from local disk; neighbouring samples are coalesced into large ranged GETs; injected faults
(503 SlowDown, a connection reset mid-body) still give a complete epoch with every sample
exactly once and the retries counted; a missing object fails within seconds."""
from __future__ import annotations

import http.client
import http.server
import threading
import time
from pathlib import Path

import boto3  # noqa: F401  (installed by scripts/setup_env.sh)
import pytest
import torch

import mx8
from s3_server import MotoServer

BUCKET = "mx8-data"


class FaultProxy:
    """Forwards to moto, but answers every `every`-th GET with 503 SlowDown and cuts the body
    of the `reset_at`-th GET in the middle: faults in front of a real server."""

    def __init__(self, upstream_port: int, every: int = 4, reset_at: int = 2):
        self.gets = 0
        self.injected = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                proxy.gets += 1
                n = proxy.gets
                if n % every == 0:
                    proxy.injected += 1
                    body = (b"<?xml version='1.0'?><Error><Code>SlowDown</Code><Message>Reduce your request rate."
                            b"</Message><RequestId>FAULT</RequestId></Error>")
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(body)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                conn.request("GET", self.path, headers=dict(self.headers.items()))
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if n == reset_at and len(data) > 1000:
                    proxy.injected += 1
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()


@pytest.fixture(scope="module")
def moto():
    srv = MotoServer()
    srv.boto3_client().create_bucket(Bucket=BUCKET)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def uploaded(moto, packed):
    """The session's packed corpus, uploaded unchanged under s3://BUCKET/ds/."""
    client = moto.boto3_client()
    for p in sorted(Path(packed).rglob("*")):
        if p.is_file():
            client.upload_file(str(p), BUCKET, "ds/" + str(p.relative_to(packed)))
    return f"s3://{BUCKET}/ds/"


@pytest.fixture
def aws(monkeypatch, moto, tmp_path):
    for k, v in {"AWS_ENDPOINT_URL": moto.endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_REGION": "us-east-1", "MX8_MANIFEST_STORE": str(tmp_path / "store")}.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


def batches(uri, **kw):
    ds = mx8.Dataset(uri, **kw)
    return [tuple(t.clone() for t in b) for b in ds], ds.stats()


@pytest.mark.parametrize("shuffle", [False, True])
def test_s3_batches_are_bit_identical_to_local(aws, packed, uploaded, shuffle):
    snap = mx8.resolve(uploaded)
    assert snap.manifest_hash == mx8.resolve(str(packed)).manifest_hash
    kw = dict(batch_size=32, size=48, crop="random", flip=True, shuffle=shuffle, seed=3)
    local, _ = batches(str(packed), **kw)
    remote, st = batches(uploaded, **kw)
    assert len(local) == len(remote)
    for a, b in zip(local, remote):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert st["s3_requests"] >= st["reads"] > 0 and st["errors"] == 0


def test_default_settings_coalesce_into_large_gets(aws, packed, uploaded):
    raw_local, _ = batches(str(packed), batch_size=50, decode=False)
    raw, st = batches(uploaded, batch_size=50, decode=False)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(raw_local, raw))
    n = mx8.resolve(uploaded).samples
    per_get = st["bytes_read"] / st["reads"]
    assert per_get >= 1_000_000, f"{per_get:.0f} bytes per GET ({st['reads']} GETs for {n} samples)"
    assert st["reads"] < n / 10
    print(f"\n[s3] {n} samples, {st['reads']} GETs, {per_get / 1e6:.2f} MB per GET, "
          f"{st['reads'] / n:.3f} requests per sample")


def test_faults_still_give_every_sample_once_with_retries_counted(aws, moto, packed, uploaded):
    proxy = FaultProxy(moto.port)
    try:
        aws.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        snap = mx8.resolve(uploaded)
        remote, st = batches(snap.pinned_uri, batch_size=32, size=32, shuffle=True)
        local, _ = batches(str(packed), batch_size=32, size=32, shuffle=True)
    finally:
        proxy.stop()
    ids = [i for b in remote for i in b[2].tolist()]
    assert sorted(ids) == list(range(snap.samples))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(local, remote))
    assert proxy.injected >= 2 and st["s3_retries"] >= proxy.injected - 1, (proxy.injected, st)
    print(f"\n[s3] faults injected {proxy.injected}, retries {st['s3_retries']}, requests {st['s3_requests']}")


def test_missing_object_fails_fast_naming_key_and_status(aws, moto, packed, uploaded):
    client = moto.boto3_client()
    key = "ds2/shards/shard-00001.tar"
    for p in sorted(Path(packed).rglob("*")):
        if p.is_file():
            client.upload_file(str(p), BUCKET, "ds2/" + str(p.relative_to(packed)))
    client.delete_object(Bucket=BUCKET, Key=key)
    t0 = time.monotonic()
    with pytest.raises(mx8.ReadError) as ei:
        for _ in mx8.Dataset(f"s3://{BUCKET}/ds2/", batch_size=16, size=16):
            pass
    assert time.monotonic() - t0 < 20
    assert key in str(ei.value) and "404" in str(ei.value)
