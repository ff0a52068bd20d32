"""mx8.pack with S3 on either side and mx8.resolve of S3 prefixes, against moto in server mode
and Ceph's radosgw on 127.0.0.1, each test once per kind (small LIST pages and a small
multipart minimum on both, so little data exercises both), plus the local manifest store
that serves pinned S3 URIs without any request."""
from __future__ import annotations

import hashlib
import io
import math
import os
import random
import re
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List

import boto3  # noqa: F401  (installed by scripts/setup_env.sh: missing is an error, not a skip)
import pytest

import mx8
from mx8.manifest_store import ManifestStore
from mx8.s3config import s3_config
from s3_server import (RADOSGW_PART_MIN, S3_KINDS, MotoServer, free_port, module_bucket, server_of_kind,
                       small_list_pages)

pytestmark = pytest.mark.minio_pack  # scripts/smoke.sh: MX8_SMOKE_MINIO_PACK

BUCKET = "mx8-pack"
PAGE = 7           # a LIST page holds 7 keys (moto: MOTO_S3_DEFAULT_MAX_KEYS; radosgw: max-keys=7,
                   # s3_server.small_list_pages)
PART_MIN = 8192    # moto: S3_UPLOAD_PART_MIN_SIZE; radosgw: rgw_multipart_min_part_size (5 MiB on AWS)
assert PART_MIN == RADOSGW_PART_MIN
PART_MB = 0.0625   # mx8's part size in these tests: 64 KiB, above the server's minimum
REPO = Path(__file__).resolve().parents[1]
ODD = ["cat one/img 1.jpg", "cat one/a+b=c.jpg", "ü€ naïve/ça – va.jpg", "ü€ naïve/x=y+z 2.png",
       "a+b=c/p%2Fq ~.jpg", "a+b=c/plain.jpg"]


class RequestLog:
    """moto's request lines (werkzeug logs one per request to stderr). Draining the pipe also
    keeps moto from blocking on a full stderr. (radosgw's ``log`` reads its access log, with
    the same mark/since: tests/radosgw_server.py AccessLog.)"""

    # (werkzeug colours the request of a non-2xx answer when it thinks stderr is a terminal)
    _LINE = re.compile(r'"(?:\x1b\[[\d;]*m)?(GET|PUT|POST|DELETE|HEAD) (\S+) HTTP/[\d.]+(?:\x1b\[0m)?" (\d+)')

    def __init__(self, stream) -> None:
        self.lines: List[str] = []
        self._t = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._t.start()

    def _drain(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            self.lines.append(raw.decode(errors="replace"))

    def _settle(self) -> None:
        """werkzeug logs a request after answering it: wait until the log stops growing."""
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            n = len(self.lines)
            time.sleep(0.15)
            if len(self.lines) == n:
                return

    def mark(self) -> int:
        self._settle()
        return len(self.lines)

    def since(self, mark: int) -> List[tuple]:
        self._settle()
        out = []
        for line in self.lines[mark:]:
            m = self._LINE.search(line)
            if m:
                out.append((m.group(1), m.group(2), int(m.group(3))))
        return out


def _start_moto():
    srv = MotoServer(env={"MOTO_S3_DEFAULT_MAX_KEYS": str(PAGE), "S3_UPLOAD_PART_MIN_SIZE": str(PART_MIN)})
    srv.log = RequestLog(srv.proc.stderr)
    return srv


@pytest.fixture(scope="module", params=S3_KINDS)
def server(request):
    """moto, or the session's radosgw; mx8's LISTs come back in pages of PAGE keys from both."""
    with server_of_kind(request, moto=_start_moto) as srv, module_bucket(srv, BUCKET), small_list_pages(srv, PAGE):
        yield srv


def _aws_env(monkeypatch, srv, store: Path) -> None:
    for k, v in {"AWS_ENDPOINT_URL": srv.endpoint, "AWS_ACCESS_KEY_ID": srv.access_key,
                 "AWS_SECRET_ACCESS_KEY": srv.secret_key, "AWS_REGION": "us-east-1",
                 "MX8_MANIFEST_STORE": str(store), "MX8_S3_PART_MB": str(PART_MB), "MX8_S3_THREADS": "4"}.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(k, raising=False)


@pytest.fixture
def s3(server, monkeypatch, tmp_path):
    """AWS_* pointing at the server, and a fresh manifest store for each test."""
    _aws_env(monkeypatch, server, tmp_path / "store")
    return server.boto3_client()


def jpeg(i: int, size=(48, 40)) -> bytes:
    """A small, unique, noisy JPEG (~5 KB): noise keeps sizes realistic enough to fill shards."""
    from PIL import Image
    w, h = size[0] + i % 7, size[1] + i % 5
    img = Image.frombytes("RGB", (w, h), random.Random(i).randbytes(w * h * 3))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def png(i: int) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (20 + i, 10), (i, 2 * i, 3 * i)).save(buf, "PNG")
    return buf.getvalue()


def upload_tree(client, prefix: str, files: Dict[str, bytes]) -> None:
    for rel, data in files.items():
        client.put_object(Bucket=BUCKET, Key=prefix + rel, Body=data)


def write_tree(root: Path, files: Dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def get(client, key: str) -> bytes:
    return client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def exists(client, key: str) -> bool:
    return client.list_objects_v2(Bucket=BUCKET, Prefix=key).get("KeyCount", 0) > 0 and any(
        o["Key"] == key for o in client.list_objects_v2(Bucket=BUCKET, Prefix=key)["Contents"])


def open_uploads(client) -> list:
    return client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])


def raw_tree(n: int, classes: int = 3) -> Dict[str, bytes]:
    return {f"class_{i % classes}/img_{i:03d}.jpg": jpeg(i) for i in range(n)}


# ---- pack ----

def test_pack_local_to_s3_matches_local_pack_and_resolves_without_list(corpus, tmp_path, s3, server, monkeypatch):
    monkeypatch.setenv("MX8_S3_PART_MB", "1")  # 4 MiB shards of 1 MiB parts
    local = mx8.pack(str(corpus), str(tmp_path / "local"), shard_mb=4, seed=3, progress=False)
    r = mx8.pack(str(corpus), f"s3://{BUCKET}/mx8/corpus", shard_mb=4, seed=3, progress=False)
    assert r.out == f"s3://{BUCKET}/mx8/corpus/"
    assert (r.manifest_hash, r.samples, r.shards, r.labels) == (local.manifest_hash, local.samples, local.shards,
                                                                  local.labels)
    assert r.shards >= 3 and r.s3_stats["retries"] == 0
    # The same bytes, object for object: a packed dataset copies between disk and S3 unchanged.
    assert get(s3, "mx8/corpus/_mx8/manifest.tsv") == (tmp_path / "local/_mx8/manifest.tsv").read_bytes()
    assert get(s3, "mx8/corpus/_mx8/labels.tsv") == (tmp_path / "local/_mx8/labels.tsv").read_bytes()
    for i in range(r.shards):
        key = f"mx8/corpus/shards/shard-{i:05d}.tar"
        assert get(s3, key) == (tmp_path / f"local/shards/shard-{i:05d}.tar").read_bytes()
        parts = int(s3.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"').partition("-")[2] or 1)
        assert parts == math.ceil(os.path.getsize(tmp_path / f"local/shards/shard-{i:05d}.tar") / (1 << 20))
    assert not open_uploads(s3)

    mark = server.log.mark()
    snap = mx8.resolve(f"s3://{BUCKET}/mx8/corpus/")
    reqs = server.log.since(mark)
    assert [(m, p) for m, p, _ in reqs] == [("GET", f"/{BUCKET}/mx8/corpus/_mx8/manifest.tsv"),
                                           ("GET", f"/{BUCKET}/mx8/corpus/_mx8/labels.tsv")]  # no LIST
    assert (snap.manifest_hash, snap.source, list(snap.labels)) == (local.manifest_hash, "manifest", local.labels)
    assert snap.uri == f"s3://{BUCKET}/mx8/corpus/" and snap.s3.bucket == BUCKET
    assert snap.location_objects()[0] == (BUCKET, "mx8/corpus/shards/shard-00000.tar")
    with pytest.raises(mx8.ReadError, match="objects, not local files"):
        snap.location_paths()
    assert "testing" not in repr(snap).replace("access_key='testing'", "")  # the secret stays masked
    # The manifest given directly names the same dataset.
    assert mx8.resolve(f"s3://{BUCKET}/mx8/corpus/_mx8/manifest.tsv").manifest_hash == local.manifest_hash


def test_pack_s3_to_local_odd_keys_then_dataset_reads_every_sample(tmp_path, s3):
    files = {rel: (png(i) if rel.endswith(".png") else jpeg(i)) for i, rel in enumerate(ODD)}
    extra = {"notes.txt": b"not an image", ".hidden/x.jpg": jpeg(99), "cat one/": b""}  # folder marker
    upload_tree(s3, "raw/odd/", {**files, **extra})
    out = tmp_path / "odd"
    r = mx8.pack(f"s3://{BUCKET}/raw/odd/", str(out), seed=5, progress=False)
    assert r.samples == len(files) and r.ignored == [  # every key is accounted for, with its reason
        (".hidden/x.jpg", "hidden (name starts with '.')"), ("cat one/", "a folder marker (key ends with '/')"),
        ("notes.txt", "no image extension")]
    assert r.labels == sorted({k.split("/")[0] for k in files}, key=str.encode)
    # A local pack of the same tree gives the same snapshot.
    write_tree(tmp_path / "src", files)
    assert mx8.pack(str(tmp_path / "src"), str(tmp_path / "ref"), seed=5, progress=False).manifest_hash == \
        r.manifest_hash
    with tarfile.open(out / "shards" / "shard-00000.tar") as tf:
        assert sorted(tf.getnames()) == sorted(files)
    by_bytes = {data: rel for rel, data in files.items()}
    seen = {}
    for b in mx8.Dataset(str(out), batch_size=4, decode=False):
        for j, sid in enumerate(b.sample_ids.tolist()):
            data = bytes(b.data[b.offsets[j]:b.offsets[j + 1]].numpy())
            rel = by_bytes[data]
            assert r.labels[b.labels[j]] == rel.split("/")[0]
            seen[sid] = rel
    assert sorted(seen.values()) == sorted(files) and sorted(seen) == list(range(len(files)))
    images = [b.images for b in mx8.Dataset(str(out), batch_size=6, size=16)]
    assert images[0].shape == (6, 3, 16, 16)



def test_signed_pack_and_resolve_of_odd_keys_with_auth_on(tmp_path, s3, server, monkeypatch):
    """With signatures checked (moto: auth on; radosgw: always): LIST queries, GETs, multipart
    uploads and PUTs of keys with spaces, unicode, '+' and '=' are all signed right, with a
    second valid key; a wrong secret fails at once."""
    files = {rel: (png(i) if rel.endswith(".png") else jpeg(i, size=(128, 96))) for i, rel in enumerate(ODD)}
    upload_tree(s3, "raw/auth/", files)
    monkeypatch.setenv("MX8_S3_PART_MB", str(16384 / (1 << 20)))
    user = server.create_access_key("mx8-pack-user")
    good = s3_config(access_key=user["access_key"], secret_key=user["secret_key"])
    server.set_auth(True)
    try:
        raw = mx8.resolve(f"s3://{BUCKET}/raw/auth/", s3=good)
        assert sorted(key for _, key in raw.location_objects()) == sorted("raw/auth/" + k for k in files)
        r = mx8.pack(f"s3://{BUCKET}/raw/auth/", f"s3://{BUCKET}/mx8/auth ü+=/", s3=good, shard_mb=0.04,
                     progress=False)
        assert r.shards >= 2 and r.s3_stats["retries"] == 0
        snap = mx8.resolve(f"s3://{BUCKET}/mx8/auth ü+=/", s3=good)
        assert snap.manifest_hash == r.manifest_hash and snap.location_objects()[0][1].startswith("mx8/auth ü+=/")
        server.set_auth(False)
        etag = s3.head_object(Bucket=BUCKET, Key="mx8/auth ü+=/shards/shard-00000.tar")["ETag"]
        assert re.search(r'-[2-9]\d*"$', etag), etag  # uploaded in several signed parts
        server.set_auth(True)
        bad = s3_config(access_key=user["access_key"], secret_key="wrong-secret-XYZ")
        t0 = time.monotonic()
        with pytest.raises(mx8.ReadError, match="HTTP 403 SignatureDoesNotMatch") as ei:
            mx8.pack(f"s3://{BUCKET}/raw/auth/", str(tmp_path / "x"), s3=bad, progress=False)
        assert time.monotonic() - t0 < 3 and "wrong-secret-XYZ" not in str(ei.value)
    finally:
        server.set_auth(False)


def test_raw_prefix_paged_index_and_s3_to_s3_pack(tmp_path, s3, server, monkeypatch):
    files = raw_tree(60)
    upload_tree(s3, "raw/sixty/", files)
    mark = server.log.mark()
    snap = mx8.resolve(f"s3://{BUCKET}/raw/sixty")
    reqs = server.log.since(mark)
    assert reqs[0] == ("GET", f"/{BUCKET}/raw/sixty/_mx8/manifest.tsv", 404)  # not packed: list it
    lists = [p for m, p, _ in reqs[1:] if m == "GET" and "list-type=2" in p]
    assert len(lists) == len(reqs) - 1 == math.ceil(60 / PAGE)  # paged, continuation tokens followed to the end
    assert sum("continuation-token=" in p for p in lists) == len(lists) - 1
    assert (snap.source, snap.samples, list(snap.labels)) == ("index", 60, ["class_0", "class_1", "class_2"])
    rels = sorted(files)
    for i in (0, 17, 59):
        loc, off, length, label = snap.manifest.record(i)
        assert (snap.manifest.locations[loc], off, length) == (rels[i], 0, len(files[rels[i]]))
        assert snap.labels[label] == rels[i].split("/")[0]
    assert snap.location_objects()[5] == (BUCKET, "raw/sixty/" + rels[5])
    write_tree(tmp_path / "sixty", files)
    assert mx8.resolve(str(tmp_path / "sixty")).manifest_hash == snap.manifest_hash  # same index as on disk

    # S3 -> S3, with shards of several parts.
    monkeypatch.setenv("MX8_S3_PART_MB", str(16384 / (1 << 20)))
    r = mx8.pack(f"s3://{BUCKET}/raw/sixty/", f"s3://{BUCKET}/mx8/sixty/", shard_mb=0.06, seed=1, progress=False)
    ref = mx8.pack(str(tmp_path / "sixty"), str(tmp_path / "ref"), shard_mb=0.06, seed=1, progress=False)
    assert (r.manifest_hash, r.shards) == (ref.manifest_hash, ref.shards) and r.shards >= 2
    assert mx8.resolve(f"s3://{BUCKET}/mx8/sixty/").manifest_hash == r.manifest_hash
    etag = s3.head_object(Bucket=BUCKET, Key="mx8/sixty/shards/shard-00000.tar")["ETag"]
    assert re.search(r"-\d+\"$", etag) and int(etag.strip('"').split("-")[1]) >= 3  # multipart, >= 3 parts
    with tarfile.open(fileobj=io.BytesIO(get(s3, "mx8/sixty/shards/shard-00001.tar"))) as tf:
        for m in tf.getmembers():
            assert tf.extractfile(m).read() == files[m.name]
    # requests per object: one GET each, plus a few LIST pages and the uploads
    assert r.s3_stats["requests"] < 60 + 2 * math.ceil(60 / PAGE) + 40, r.s3_stats


def test_bad_objects_name_the_key_or_are_skipped(tmp_path, s3, monkeypatch):
    files = raw_tree(6, classes=2)
    upload_tree(s3, "raw/bad/", {**files, "class_0/empty.jpg": b"", "class_1/page.jpg": b"<html>no</html>"})
    with pytest.raises(mx8.PackError, match=r"s3://mx8-pack/raw/bad/class_0/empty\.jpg: zero-length object"):
        mx8.pack(f"s3://{BUCKET}/raw/bad/", str(tmp_path / "a"), shuffle=False, progress=False)
    upload_tree(s3, "raw/bad2/", {**files, "class_1/page.jpg": b"<html>no</html>"})
    with pytest.raises(mx8.PackError, match=r"s3://mx8-pack/raw/bad2/class_1/page\.jpg: .*not a JPEG or PNG"):
        mx8.pack(f"s3://{BUCKET}/raw/bad2/", f"s3://{BUCKET}/out/bad/", label_mode="none", progress=False)
    r = mx8.pack(f"s3://{BUCKET}/raw/bad/", str(tmp_path / "b"), on_error="skip", progress=False)
    assert r.samples == 6 and sorted(k for k, _ in r.skipped) == ["class_0/empty.jpg", "class_1/page.jpg"]
    with pytest.raises(mx8.PackError, match="no images to pack"):
        mx8.pack(f"s3://{BUCKET}/raw/nothing-here/", str(tmp_path / "c"), progress=False)
    # An object deleted between the LIST and its GET is a bad input like an unreadable file.
    pack_module = sys.modules["mx8.pack"]
    real_list = pack_module.list_objects

    def list_with_ghost(client, bucket, prefix, **kw):
        yield from real_list(client, bucket, prefix, **kw)
        yield prefix + "class_1/ghost.jpg", 1234
    monkeypatch.setattr(pack_module, "list_objects", list_with_ghost)
    with pytest.raises(mx8.PackError, match=r"cannot read s3://mx8-pack/raw/bad2/class_1/ghost\.jpg: .*HTTP 404"):
        mx8.pack(f"s3://{BUCKET}/raw/bad2/", str(tmp_path / "g"), shuffle=False, progress=False)
    r = mx8.pack(f"s3://{BUCKET}/raw/bad2/", str(tmp_path / "g"), on_error="skip", progress=False)
    assert r.samples == 6 and sorted(k for k, _ in r.skipped) == ["class_1/ghost.jpg", "class_1/page.jpg"]
    monkeypatch.setattr(pack_module, "list_objects", real_list)

    write_tree(tmp_path / "src", files)
    with pytest.raises(mx8.ReadError, match="NoSuchBucket"):
        mx8.pack(str(tmp_path / "src"), "s3://no-such-bucket/x/", progress=False)


def test_interrupted_pack_leaves_no_manifest_and_rerun_succeeds(tmp_path, s3, monkeypatch):
    files = raw_tree(30)
    upload_tree(s3, "raw/int/", files)
    out = f"s3://{BUCKET}/mx8/int/"
    first = mx8.pack(f"s3://{BUCKET}/raw/int/", out, shard_mb=0.02, progress=False, seed=0)
    assert first.shards >= 3
    tmp_before = set(Path(tempfile.gettempdir()).glob("mx8-pack-*"))

    # 1. An object fails midway (not an image): the old manifest is gone, no upload left open.
    s3.put_object(Bucket=BUCKET, Key="raw/int/class_1/img_016.jpg", Body=b"GIF89a not what we pack")
    with pytest.raises(mx8.PackError, match="raw/int/class_1/img_016.jpg"):
        mx8.pack(f"s3://{BUCKET}/raw/int/", out, shard_mb=0.02, progress=False, shuffle=False)
    assert not exists(s3, "mx8/int/_mx8/manifest.tsv") and not open_uploads(s3)
    with pytest.raises(mx8.ReadError):  # raw-indexed now: the old manifest_hash pin fails
        mx8.resolve(f"{out}@sha256:{'0' * 64}")

    # 2. An upload fails midway (parts under the server's minimum: CompleteMultipartUpload says
    #    EntityTooSmall): the multipart upload is aborted, and again no manifest.
    s3.put_object(Bucket=BUCKET, Key="raw/int/class_1/img_016.jpg", Body=files["class_1/img_016.jpg"])
    monkeypatch.setenv("MX8_S3_PART_MB", str(4096 / (1 << 20)))
    with pytest.raises(mx8.ReadError, match="EntityTooSmall"):
        mx8.pack(f"s3://{BUCKET}/raw/int/", out, shard_mb=0.02, progress=False)
    assert not exists(s3, "mx8/int/_mx8/manifest.tsv") and not open_uploads(s3)
    assert set(Path(tempfile.gettempdir()).glob("mx8-pack-*")) == tmp_before  # temp shards gone

    # 3. The rerun gives the same result as an uninterrupted pack, fewer shards than before included.
    monkeypatch.setenv("MX8_S3_PART_MB", str(PART_MB))
    r = mx8.pack(f"s3://{BUCKET}/raw/int/", out, shard_mb=0.3, progress=False, seed=0)
    write_tree(tmp_path / "int", files)
    ref = mx8.pack(str(tmp_path / "int"), str(tmp_path / "ref"), shard_mb=0.3, progress=False, seed=0)
    assert r.manifest_hash == ref.manifest_hash and r.shards < first.shards
    assert mx8.resolve(out).manifest_hash == r.manifest_hash
    listed = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="mx8/int/shards/")["Contents"])
    assert listed == [f"mx8/int/shards/shard-{i:05d}.tar" for i in range(r.shards)]  # stale shards removed


def test_mx8_pack_s3_command(tmp_path, s3, server):
    upload_tree(s3, "raw/cli/", raw_tree(12, classes=2))
    env = dict(os.environ, MX8_PACK_IN=f"s3://{BUCKET}/raw/cli/", MX8_PACK_OUT=f"s3://{BUCKET}/mx8/cli/",
               MX8_SHARD_MB="0.05", MX8_SEED="4", PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-c", "import sys; from mx8.cli import pack_s3_main; sys.exit(pack_s3_main())"],
                       env=env, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert p.returncode == 0, p.stderr
    h = mx8.resolve(f"s3://{BUCKET}/mx8/cli/").manifest_hash
    assert f"manifest_hash: {h}" in p.stdout and f"pin with: s3://{BUCKET}/mx8/cli/@sha256:{h}" in p.stdout
    assert re.search(r"s3: \d+ requests, 0 retries", p.stdout)
    p = subprocess.run([sys.executable, "-m", "mx8", "inspect", "--json", f"s3://{BUCKET}/mx8/cli/@sha256:{h}"],
                       env=env, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert p.returncode == 0 and '"source": "manifest (manifest store)"' in p.stdout, p.stdout + p.stderr
    env["MX8_PACK_IN"] = f"s3://{BUCKET}/raw/cli-missing/"
    p = subprocess.run([sys.executable, "-m", "mx8", "pack", env["MX8_PACK_IN"], str(tmp_path / "x")],
                       env=env, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert p.returncode == 1 and "no images to pack" in p.stderr
    assert "testing" not in p.stderr


# ---- resolve: manifest store and pins ----

@pytest.mark.minio_manifest_store
def test_pinned_uri_resolves_from_the_store_with_the_server_stopped(tmp_path, monkeypatch, server):
    """Pinned URIs resolve from the manifest store with no server to ask: the endpoint then
    names a loopback port where nothing listens (the module's server stays up for the other
    tests, and radosgw is the whole session's), so any request would fail."""
    _aws_env(monkeypatch, server, tmp_path / "store")
    upload_tree(server.boto3_client(), "raw/pin/", raw_tree(9))
    packed = mx8.pack(f"s3://{BUCKET}/raw/pin/", f"s3://{BUCKET}/mx8/pin/", progress=False)
    snap = mx8.resolve(f"s3://{BUCKET}/mx8/pin/")
    raw = mx8.resolve(f"s3://{BUCKET}/raw/pin/")
    assert not snap.from_store and snap.manifest_hash == packed.manifest_hash
    gone = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", gone)
    t0 = time.monotonic()
    for s in (snap, raw):
        again = mx8.resolve(s.pinned_uri)  # the server is gone: any request would fail
        assert again.from_store and again == s and again.labels == s.labels and again.source == s.source
        assert again.manifest.mapped  # from the entry's binary index, shared by the node's processes
    # No request: one would fail (nothing listens there). The bound is loose, for a loaded machine; a
    # resolve that retried against the dead endpoint would take its whole backoff and then fail.
    assert time.monotonic() - t0 < 10.0
    store = ManifestStore(str(tmp_path / "store"))
    entry = tmp_path / "store" / snap.manifest_hash
    assert store.get(snap.manifest_hash).manifest == (entry / "manifest.tsv").read_bytes()
    assert hashlib.sha256((entry / "manifest.tsv").read_bytes()).hexdigest() == snap.manifest_hash
    assert not [p for p in (tmp_path / "store").iterdir() if p.name.startswith(".tmp")]
    # The same store serves a keyword-chosen location too, and a damaged entry is not trusted.
    monkeypatch.delenv("MX8_MANIFEST_STORE")
    assert mx8.resolve(snap.pinned_uri, manifest_store=str(tmp_path / "store")).from_store
    (tmp_path / "store" / snap.manifest_hash / "manifest.tsv").write_bytes(b"schema_version=0\n")
    assert store.get(snap.manifest_hash) is None
    with pytest.raises(mx8.ReadError):  # not served from the store: it tries the (absent) server
        mx8.resolve(snap.pinned_uri, manifest_store=str(tmp_path / "store"),
                    s3=s3_config(endpoint=gone, access_key="testing", secret_key="testing"))


@pytest.mark.minio_manifest_store
def test_pin_mismatch_names_both_hashes(tmp_path, s3):
    upload_tree(s3, "raw/mm/", raw_tree(8))
    a = mx8.pack(f"s3://{BUCKET}/raw/mm/", f"s3://{BUCKET}/mx8/mm/", seed=1, progress=False)
    assert mx8.resolve(f"s3://{BUCKET}/mx8/mm/@sha256:{a.manifest_hash}").manifest_hash == a.manifest_hash
    b = mx8.pack(f"s3://{BUCKET}/raw/mm/", f"s3://{BUCKET}/mx8/mm/", seed=2, progress=False)  # the data changed
    assert a.manifest_hash != b.manifest_hash
    # Served from the store, the old pin still gives the old snapshot (it is immutable) ...
    assert mx8.resolve(f"s3://{BUCKET}/mx8/mm/@sha256:{a.manifest_hash}").from_store
    # ... but where the store does not have it, the data is checked and no longer matches.
    with pytest.raises(mx8.SnapshotMismatchError) as ei:
        mx8.resolve(f"s3://{BUCKET}/mx8/mm/@sha256:{a.manifest_hash}", manifest_store=str(tmp_path / "empty"))
    assert a.manifest_hash in str(ei.value) and b.manifest_hash in str(ei.value)
    assert f"s3://{BUCKET}/mx8/mm/" in str(ei.value)
    with pytest.raises(mx8.SnapshotMismatchError, match="0" * 64):
        mx8.resolve(f"s3://{BUCKET}/raw/mm@sha256:{'0' * 64}")
    with pytest.raises(mx8.ReadError, match="no _mx8/manifest.tsv and no images"):
        mx8.resolve(f"s3://{BUCKET}/nothing/here/")
    batch = next(iter(mx8.Dataset(f"s3://{BUCKET}/mx8/mm/", batch_size=2)))  # read straight from S3
    assert len(batch.sample_ids) == 2


@pytest.mark.minio_manifest_store
def test_a_pin_holds_the_label_names_in_the_bucket_and_the_store(tmp_path, s3):
    upload_tree(s3, "raw/lab/", raw_tree(6))
    mx8.pack(f"s3://{BUCKET}/raw/lab/", f"s3://{BUCKET}/mx8/lab/", progress=False)
    snap = mx8.resolve(f"s3://{BUCKET}/mx8/lab/")
    assert snap.pinned_uri.endswith(f"+labels:{snap.labels_hash}")
    assert mx8.resolve(snap.pinned_uri).from_store
    # The label names change under the same records.
    key = "mx8/lab/_mx8/labels.tsv"
    s3.put_object(Bucket=BUCKET, Key=key, Body=get(s3, key).replace(b"\tclass_0\n", b"\tzebra\n"))
    assert mx8.resolve(snap.pinned_uri).from_store  # the store still holds the pinned names: no request
    fresh = mx8.resolve(f"s3://{BUCKET}/mx8/lab/")  # unpinned: the store entry takes the new names
    assert fresh.manifest_hash == snap.manifest_hash and fresh.labels[0] == "zebra"
    with pytest.raises(mx8.SnapshotMismatchError, match=f"label names changed .*pinned {snap.labels_hash}"):
        mx8.resolve(snap.pinned_uri)  # the store's names no longer match the pin, nor the bucket's


def test_ordered_fetch_overlaps_within_its_byte_budget():
    """The pack's source GETs: concurrent, delivered in input order, never more than the
    budget fetched ahead of the writer (an item bigger than the budget goes alone)."""
    from mx8.s3io import map_ordered
    lock, state = threading.Lock(), {"now": 0, "peak": 0}

    def fetch(i):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.02)
        with lock:
            state["now"] -= 1
        return i * i

    sizes = [10] * 12 + [100] + [10] * 7
    out = []
    for i, fut in map_ordered(fetch, range(20), workers=4, cost=lambda i: sizes[i], budget=35):
        out.append(fut.result())
    assert out == [i * i for i in range(20)]
    assert 2 <= state["peak"] <= 3  # 3 x 10 bytes fit in 35, the 4th waits
    with pytest.raises(ZeroDivisionError):
        for _, fut in map_ordered(lambda i: 1 // (i - 5), range(10), workers=2, cost=lambda i: 1, budget=4):
            fut.result()
