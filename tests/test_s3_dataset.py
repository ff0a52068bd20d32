"""Batches read from S3 (moto and radosgw on 127.0.0.1: every test runs against each kind,
tests/s3_server.py) are bit-identical to the same snapshot read from local disk;
neighbouring samples are coalesced into large ranged GETs; injected faults (503 SlowDown, a
connection reset mid-body, slow responses) still give a complete epoch with every sample
exactly once and the retries counted; the connection cap and the fetch budget hold; a
missing object fails within seconds."""
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
from s3_server import S3_KINDS, module_bucket, server_of_kind

pytestmark = pytest.mark.minio  # scripts/smoke.sh: MX8_SMOKE_MINIO

BUCKET = "mx8-data"


class FaultProxy:
    """Forwards to the server (moto or radosgw), but answers every `every`-th GET with 503
    SlowDown, cuts the body of the `reset_at`-th GET in the middle and trickles every
    `slow_every`-th response out slowly (0 turns a fault off): faults in front of a real
    server. Also counts the GETs in progress at once. Headers pass unchanged, Host included,
    so radosgw checks the signature mx8 made for the proxy's address."""

    def __init__(self, upstream: "tuple[str, int]", every: int = 4, reset_at: int = 2, slow_every: int = 0):
        self.gets = 0
        self.injected = 0
        self.slowed = 0
        self.active = self.max_active = 0
        lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                with lock:
                    proxy.gets += 1
                    n = proxy.gets
                    proxy.active += 1
                    proxy.max_active = max(proxy.max_active, proxy.active)
                try:
                    self.answer(n)
                finally:
                    with lock:
                        proxy.active -= 1

            def answer(self, n):
                if every and n % every == 0:
                    proxy.injected += 1
                    body = (b"<?xml version='1.0'?><Error><Code>SlowDown</Code><Message>Reduce your request rate."
                            b"</Message><RequestId>FAULT</RequestId></Error>")
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(body)
                    return
                conn = http.client.HTTPConnection(*upstream, timeout=30)
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
                if slow_every and n % slow_every == 0:  # headers now, the body in 8 slow pieces
                    proxy.slowed += 1
                    step = len(data) // 8 + 1
                    for i in range(0, len(data), step):
                        time.sleep(0.05)
                        self.wfile.write(data[i:i + step])
                        self.wfile.flush()
                    return
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


def _drain(stream) -> None:
    for _ in iter(stream.readline, b""):
        pass


@pytest.fixture(scope="module", params=S3_KINDS)
def server(request):
    """moto on 127.0.0.1 (or the server scripts/smoke.sh names, tests/s3_server.py), or the
    session's radosgw."""
    with server_of_kind(request) as srv:
        # moto logs a line per request: a full, unread pipe would stall the server
        for stream in (srv.proc.stdout, srv.proc.stderr) if srv.proc else ():
            if stream is not None:
                threading.Thread(target=_drain, args=(stream,), daemon=True).start()
        with module_bucket(srv, BUCKET):
            yield srv


@pytest.fixture(scope="module")
def uploaded(server, packed):
    """The session's packed corpus, uploaded unchanged under s3://BUCKET/ds/."""
    client = server.boto3_client()
    for p in sorted(Path(packed).rglob("*")):
        if p.is_file():
            client.upload_file(str(p), BUCKET, "ds/" + str(p.relative_to(packed)))
    return f"s3://{BUCKET}/ds/"


@pytest.fixture
def aws(monkeypatch, server, tmp_path):
    for k, v in {"AWS_ENDPOINT_URL": server.endpoint, "AWS_ACCESS_KEY_ID": server.access_key,
                 "AWS_SECRET_ACCESS_KEY": server.secret_key, "AWS_REGION": server.region,
                 "MX8_MANIFEST_STORE": str(tmp_path / "store")}.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


def batches(uri, **kw):
    ds = mx8.Dataset(uri, **kw)
    return [tuple(t.clone() for t in b) for b in ds], ds.stats()


def test_fork_dataloader_workers_read_s3_after_the_parent_did(aws, packed, uploaded):
    """The parent reads an epoch (its S3 clients' I/O threads running), then DataLoader
    workers fork from it and read over S3 themselves: every sample once, as from disk."""
    import torch
    ds = mx8.Dataset(uploaded, batch_size=16, decode=False)
    parent = sorted(i for b in ds for i in b.sample_ids.tolist())
    dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="fork")
    workers = sorted(i for b in dl for i in b.sample_ids.tolist())
    assert workers == parent == list(range(mx8.resolve(str(packed)).samples))


def test_epochs_reuse_the_engines_connections(aws, packed, uploaded):
    """A Dataset's engine, and so its S3 transport, lives across epochs: after the first
    epoch no epoch (one of them left early) opens a connection where the server keeps them
    alive (radosgw). moto's server closes every connection after its answer, so there the
    check is that mx8 opens no more than one connection a request."""
    ds = mx8.Dataset(uploaded, batch_size=16, decode=False, shuffle=True, s3_connections=4)
    opened, requests = [], []
    for epoch in range(3):
        ds.set_epoch(epoch)
        for k, _ in enumerate(ds):
            if epoch == 1 and k == 1:
                break
        st = ds.stats()  # this epoch's counters
        opened.append(st["s3_connections_opened"])
        requests.append(st["s3_requests"])
    ds.close()
    assert opened[0] >= 1 and all(o <= r for o, r in zip(opened, requests)), (opened, requests)
    if opened[0] < requests[0]:  # the server keeps connections alive
        assert opened[1:] == [0, 0], (opened, requests)


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
    shuffled, st2 = batches(uploaded, batch_size=50, decode=False, shuffle=True)
    assert sorted(i for b in shuffled for i in b[3].tolist()) == list(range(n))
    assert st2["bytes_read"] / st2["reads"] >= 1_000_000, st2  # one process: whole blocks per GET
    print(f"\n[s3] {n} samples, {st['reads']} GETs, {per_get / 1e6:.2f} MB per GET, "
          f"{st['reads'] / n:.3f} requests per sample")


def test_faults_still_give_every_sample_once_with_retries_counted(aws, server, packed, uploaded):
    proxy = FaultProxy((server.host, server.port), slow_every=3)
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
    assert proxy.slowed >= 1 and st["s3_latency_ms"]["max"] >= 400, (proxy.slowed, st["s3_latency_ms"])
    print(f"\n[s3] faults injected {proxy.injected}, slowed {proxy.slowed}, retries {st['s3_retries']}, "
          f"requests {st['s3_requests']}, latency {st['s3_latency_ms']}")


@pytest.mark.parametrize("connections", [1, 3])
def test_connection_cap_and_fetch_budget_hold(aws, server, packed, uploaded, connections):
    """A small budget cuts the epoch into many requests; no more than `connections` are ever
    in progress at the server, and the fetched-but-undecoded bytes stay within the budget
    plus one request per decode thread (the request a waiting thread needs goes out anyway)."""
    proxy = FaultProxy((server.host, server.port), every=0, reset_at=0)
    try:
        aws.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        snap = mx8.resolve(uploaded)
        remote, st = batches(snap.pinned_uri, batch_size=16, decode=False, shuffle=True, prefetch_mb=1,
                             s3_connections=connections, threads=2)
    finally:
        proxy.stop()
    ids = sorted(i for b in remote for i in b[3].tolist())
    assert ids == list(range(snap.samples))
    assert st["reads"] > 10 * connections, st
    assert proxy.max_active == connections, (proxy.max_active, connections)
    largest = max(snap.manifest.record(i)[2] for i in range(snap.samples))
    assert st["s3_held_max_bytes"] <= (1 << 20) + 2 * max(largest, 1 << 20) + largest, st
    print(f"\n[s3] {connections} connections: {st['reads']} GETs, at most {proxy.max_active} at once, "
          f"held at most {st['s3_held_max_bytes'] / 1e6:.2f} MB")


def test_missing_object_fails_fast_naming_key_and_status(aws, server, packed, uploaded):
    client = server.boto3_client()
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


@pytest.mark.py_vision_pillow
def test_decoded_s3_batches_match_pillow(aws, packed, uploaded):
    """Each decoded S3 image equals Pillow's BILINEAR resize of the same file (tolerance 1
    level, measured 0)."""
    import io

    import numpy as np
    from PIL import Image
    snap = mx8.resolve(str(packed))
    files = snap.location_paths()
    n = 0
    for b in mx8.Dataset(uploaded, batch_size=40, size=(40, 56), crop="none", layout="NHWC"):
        for sid, img in zip(b.sample_ids.tolist(), b.images):
            loc, off, length, _ = snap.manifest.record(sid)
            with open(files[loc], "rb") as f:
                f.seek(off)
                ref = Image.open(io.BytesIO(f.read(length))).convert("RGB").resize((56, 40), Image.BILINEAR)
            assert np.abs(img.numpy().astype(int) - np.asarray(ref).astype(int)).max() <= 1, sid
            n += 1
    assert n == snap.samples


def test_raw_prefix_with_odd_keys_reads_over_s3(aws, server, corpus):
    """An unpacked ImageFolder prefix (keys with spaces, unicode, '+', '=') is indexed by LIST
    and read object by object, with labels from the first folder."""
    client = server.boto3_client()
    srcs = sorted(p for p in corpus.glob("class_00[01]/*.jpg"))[:12]
    names = ["a b/", "caf\u00e9 \u732b/", "x+y=z/"]
    keys = {}
    for i, p in enumerate(srcs):
        key = f"raw/{names[i % 3]}img {i}+{i}=.jpg"
        client.put_object(Bucket=BUCKET, Key=key, Body=p.read_bytes())
        keys[key] = p.read_bytes()
    snap = mx8.resolve(f"s3://{BUCKET}/raw/")
    assert snap.samples == len(srcs) and sorted(snap.labels) == sorted(n[:-1] for n in names)
    got = {}
    for b in mx8.Dataset(snap.pinned_uri, batch_size=5, decode=False):
        for i, sid in enumerate(b.sample_ids.tolist()):
            got[sid] = (b.data[b.offsets[i]:b.offsets[i + 1]].numpy().tobytes(), b.labels[i].item())
    assert sorted(data for data, _ in got.values()) == sorted(keys.values())
    for sid, (data, label) in got.items():
        key = next(k for k, v in keys.items() if v == data)
        assert key.split("/")[1] == snap.labels[label]


@pytest.mark.demo2_minio_scale
@pytest.mark.minio_manifest_store
def test_scale_objects_list_pack_resolve_from_store(aws, server, tmp_path):
    """MX8 demo2 at scale: a prefix of many small objects is LISTed and indexed, packed
    S3->S3, and its pinned URI then resolves from the manifest store with no request.
    2,000 objects in the ordinary suite (about a minute against moto); 100,000 (about half
    an hour against moto) when MX8_SMOKE_DEMO2_MINIO_SCALE=1 (scripts/smoke.sh);
    MX8_SCALE_OBJECTS sets the count."""
    import os
    full = os.environ.get("MX8_SMOKE_DEMO2_MINIO_SCALE") == "1"
    n = int(os.environ.get("MX8_SCALE_OBJECTS", "100000" if full else "2000"))
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 90, 200)).save(buf, "JPEG")
    body = buf.getvalue()
    client = server.boto3_client()  # one at a time: concurrent PUTs stalled moto's server here
    prefix = f"scale-{n}-{os.getpid()}"  # fresh on a long-lived external server too
    keys = [f"{prefix}/c{i % 10}/{i:06d}.jpg" for i in range(n)]
    t0 = time.monotonic()
    if server.kind == "radosgw":
        # radosgw takes PUTs in parallel: 4 at a time through mx8's native client (which drops
        # the GIL), 3 s for 2,000 objects where boto3, one at a time, took 11 s.
        import threading
        from concurrent.futures import ThreadPoolExecutor

        from mx8 import _core
        local = threading.local()

        def put(key):
            if not hasattr(local, "c"):
                local.c = _core.S3Client(server.endpoint, server.region, server.access_key, server.secret_key)
            local.c.put(BUCKET, key, body)
        with ThreadPoolExecutor(4) as ex:
            list(ex.map(put, keys))
    else:
        for key in keys:
            client.put_object(Bucket=BUCKET, Key=key, Body=body)
    t_put = time.monotonic() - t0
    t0 = time.monotonic()
    raw = mx8.resolve(f"s3://{BUCKET}/{prefix}/")
    t_list = time.monotonic() - t0
    assert raw.samples == n
    t0 = time.monotonic()
    res = mx8.pack(f"s3://{BUCKET}/{prefix}/", f"s3://{BUCKET}/{prefix}-packed/", progress=False)
    t_pack = time.monotonic() - t0
    packed_uri = f"s3://{BUCKET}/{prefix}-packed/@sha256:{res.manifest_hash}"
    mx8.resolve(packed_uri)  # puts it in the store
    # No server from here on (the module's server stays up for the other tests): an endpoint
    # where nothing listens, so any request would fail.
    from s3_server import free_port
    aws.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    t0 = time.monotonic()
    snap = mx8.resolve(packed_uri)
    t_store = time.monotonic() - t0
    assert snap.samples == n and snap.from_store
    print(f"\n[scale] {n} objects: PUT {t_put:.0f}s, LIST+index {t_list:.1f}s, pack S3->S3 {t_pack:.0f}s, "
          f"resolve from store {t_store * 1e3:.0f} ms")


def test_truncated_shard_loses_the_same_samples_as_on_disk(aws, server, packed, tmp_path):
    """A shard cut short: over S3 exactly the samples past its end are skipped, as on local
    disk, although they share ranged GETs with samples that are whole."""
    import shutil
    local = tmp_path / "trunc"
    shutil.copytree(packed, local)
    shard = sorted(local.glob("shards/*.tar"))[-1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 40_000])
    client = server.boto3_client()
    for p in sorted(local.rglob("*")):
        if p.is_file():
            client.upload_file(str(p), BUCKET, "trunc/" + str(p.relative_to(local)))
    got = {}
    for name, uri in (("local", str(local)), ("s3", f"s3://{BUCKET}/trunc/")):
        ds = mx8.Dataset(uri, batch_size=16, decode=False, on_error="skip")
        got[name] = ([i for b in ds for i in b.sample_ids.tolist()], ds.stats()["skipped"])
    assert got["s3"] == got["local"]
    assert got["s3"][1] >= 1 and len(got["s3"][0]) == mx8.resolve(str(packed)).samples - got["s3"][1]


@pytest.fixture(scope="module")
def many_small(server, tmp_path_factory):
    """16,384 small JPEGs (the least an epoch needs for every rank of 8 to read whole pieces of
    1,024), packed and uploaded under s3://BUCKET/many/."""
    import random

    from PIL import Image
    src, out = tmp_path_factory.mktemp("many-src"), tmp_path_factory.mktemp("many-packed")
    rng = random.Random(0)
    for i in range(16384):
        d = src / f"c{i // 1024:02d}"  # 16 classes, sorted
        d.mkdir(exist_ok=True)
        Image.frombytes("RGB", (24, 24), rng.randbytes(24 * 24 * 3)).save(d / f"{i:05d}.jpg", quality=90)
    mx8.pack(str(src), str(out), shard_mb=8, progress=False)
    client = server.boto3_client()
    for p in sorted(out.rglob("*")):
        if p.is_file():
            client.upload_file(str(p), BUCKET, "many/" + str(p.relative_to(out)))
    return f"s3://{BUCKET}/many/"


def test_a_ranks_gets_stay_whole_blocks_at_world_8(aws, many_small):
    """Rank 0 of 8 reads its share of a shuffled epoch in as few GETs a sample as a world of
    one, fetching no more bytes per byte delivered (docs/s3.md, "Many ranks"). Before pieces
    were dealt to ranks, rank 0 of 8 took every 8th sample and sent 0.83 GETs a sample."""
    figures = {}
    for world in (1, 8):
        ds = mx8.Dataset(many_small, batch_size=256, decode=False, shuffle=True, seed=5, rank=0, world_size=world)
        delivered = samples = 0
        for b in ds:
            delivered += b.data.numel()
            samples += len(b.sample_ids)
        st = ds.stats()
        figures[world] = (st["s3_requests"] / samples, st["bytes_read"] / delivered)
        assert st["errors"] == 0 and samples == -(-16384 // world)
    (gets1, bytes1), (gets8, bytes8) = figures[1], figures[8]
    print(f"\n[s3 scale] GETs a sample: world 1 {gets1:.4f}, world 8 {gets8:.4f}; fetched / delivered: "
          f"{bytes1:.3f}, {bytes8:.3f}")
    assert gets8 <= 1.5 * gets1 and gets1 < 0.05, figures
    assert bytes8 <= 1.1 * bytes1, figures  # (tar headers weigh on samples this small: the same at both)
