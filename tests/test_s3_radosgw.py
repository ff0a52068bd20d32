"""What radosgw enforces and moto does not, through mx8's public API: bucket policies for
anonymous requests (``s3_config(unsigned=True)``), Requester Pays (``requester_pays=True``)
and signatures (a wrong secret or an unknown key, always checked). Against the session's
radosgw (tests/radosgw_server.py, the ``radosgw`` fixture of tests/conftest.py).

Each refusal is checked both where mx8 resolves the dataset (the blocking client: manifest
and labels) and where the engine reads its shards (the I/O thread's transport), the latter
by resolving with keys that work and then reading the pinned URI, which the manifest store
serves without a request, with the keys under test. The configs are built with ``env={}``,
so no key from the environment or botocore can stand in for the ones a test means."""
from __future__ import annotations

import errno
import json
import shutil
import time
import uuid

import pytest

import mx8
from mx8.s3config import s3_config

SECRET = "wrong-secret-XYZ"


@pytest.fixture(scope="module")
def source(corpus, tmp_path_factory):
    """A small ImageFolder (2 classes, 12 JPEGs) and what its local pack reads as, packed so
    that the shards are several (the engine's reads go to more than one object)."""
    src = tmp_path_factory.mktemp("rgw-src")
    for cls in ("class_000", "class_001"):
        (src / cls).mkdir()
        for p in sorted((corpus / cls).glob("*.jpg"))[:6]:
            shutil.copy(p, src / cls / p.name)
    local = tmp_path_factory.mktemp("rgw-local")
    res = mx8.pack(str(src), str(local), shard_mb=0.05, seed=1, progress=False)
    assert res.shards >= 2, res
    return src, res.manifest_hash, read_all(str(local))


@pytest.fixture
def store(monkeypatch, tmp_path):
    """A fresh manifest store: an unpinned resolve asks the server, a pinned one does not."""
    monkeypatch.setenv("MX8_MANIFEST_STORE", str(tmp_path / "store"))
    return tmp_path / "store"


@pytest.fixture
def bucket(radosgw, store, source):
    """A fresh bucket of the main user, with the source packed into it under ds/."""
    name = f"mx8-rgw-{uuid.uuid4().hex[:12]}"
    radosgw.boto3_client().create_bucket(Bucket=name)
    src, manifest_hash, _ = source
    res = mx8.pack(str(src), f"s3://{name}/ds/", shard_mb=0.05, seed=1, progress=False, s3=owner(radosgw))
    assert res.manifest_hash == manifest_hash
    try:
        yield name
    finally:
        radosgw.remove_bucket(name)


def owner(rgw, **kw):
    return s3_config(endpoint=rgw.endpoint, access_key=rgw.access_key, secret_key=rgw.secret_key, env={}, **kw)


def read_all(uri, cfg=None):
    """Every batch's sample ids and raw bytes."""
    ds = mx8.Dataset(uri, s3=cfg, batch_size=5, decode=False)
    return [(b.sample_ids.tolist(), bytes(b.data.numpy())) for b in ds]


def refused(uri, cfg) -> mx8.ReadError:
    """The error of reading uri with cfg (it must fail, with an mx8.ReadError)."""
    t0 = time.monotonic()
    with pytest.raises(mx8.ReadError) as ei:
        read_all(uri, cfg)
    assert time.monotonic() - t0 < 10, "a refusal is not retried for long"
    return ei.value


def set_policy(rgw, bucket, principal, actions=("s3:GetObject",)):
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": principal, "Action": list(actions),
        "Resource": [f"arn:aws:s3:::{bucket}/*"]}]}
    rgw.boto3_client().put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))


def test_public_read_policy_serves_unsigned_reads_and_without_it_they_are_refused(radosgw, bucket, source):
    uri = f"s3://{bucket}/ds/"
    anon = s3_config(endpoint=radosgw.endpoint, unsigned=True, env={})
    _, _, want = source
    # Private (no policy): the manifest GET is refused, naming the object and the status.
    e = refused(uri, anon)
    assert "HTTP 403 AccessDenied" in str(e) and f"s3://{bucket}/ds/_mx8/manifest.tsv" in str(e), e
    assert e.errno == errno.EACCES

    set_policy(radosgw, bucket, "*")
    mark = radosgw.log.mark()
    assert read_all(uri, anon) == want
    seen = [r for r in radosgw.log.requests_since(mark) if r[2].startswith(f"/{bucket}/")]
    assert {r[2].split("/")[3] for r in seen} >= {"_mx8", "shards"}, seen
    assert {(user, status) for user, _, _, status in seen} <= {("anonymous", 200), ("anonymous", 206)}, seen
    snap = mx8.resolve(uri, s3=anon)  # pinned, for the engine-only read below
    # Public read is not public write: an anonymous pack into the bucket is refused.
    with pytest.raises(mx8.ReadError, match="HTTP 403 AccessDenied"):
        mx8.pack(str(source[0]), f"s3://{bucket}/anon/", s3=anon, progress=False)

    # The policy gone, the shards are refused too (the pin is served from the store, so only
    # the engine's GETs reach the server).
    radosgw.boto3_client().delete_bucket_policy(Bucket=bucket)
    e = refused(snap.pinned_uri, anon)
    assert "HTTP 403 AccessDenied" in str(e) and f"s3://{bucket}/ds/shards/shard-" in str(e), e


def test_requester_pays_is_refused_without_the_header_and_served_with_it(radosgw, bucket, source):
    """radosgw's rule (rgw_op.cc, verify_requester_payer_permission): on a Requester Pays
    bucket the owner reads as before; anyone else, even with a policy allowing the read, only
    with ``x-amz-request-payer: requester``; anonymous requests never."""
    uri = f"s3://{bucket}/ds/"
    _, _, want = source
    uid = f"mx8-reader-{uuid.uuid4().hex[:8]}"
    keys = radosgw.create_user(uid)
    reader = s3_config(endpoint=radosgw.endpoint, access_key=keys["access_key"], secret_key=keys["secret_key"],
                       env={})
    payer = s3_config(endpoint=radosgw.endpoint, access_key=keys["access_key"], secret_key=keys["secret_key"],
                      requester_pays=True, env={})
    set_policy(radosgw, bucket, {"AWS": [f"arn:aws:iam:::user/{uid}"]})
    assert read_all(uri, reader) == want  # the policy lets the reader in; nothing to pay yet

    radosgw.boto3_client().put_bucket_request_payment(Bucket=bucket,
                                                      RequestPaymentConfiguration={"Payer": "Requester"})
    e = refused(uri, reader)
    assert "HTTP 403 AccessDenied" in str(e) and f"s3://{bucket}/ds/_mx8/manifest.tsv" in str(e), e
    assert read_all(uri, payer) == want
    assert read_all(uri, owner(radosgw)) == want  # the owner pays anyway: no header needed
    # The engine's shard GETs carry the header too: resolved by the payer, the pinned URI is
    # read without it (refused) and with it (served), the manifest coming from the store.
    snap = mx8.resolve(uri, s3=payer)
    e = refused(snap.pinned_uri, reader)
    assert "HTTP 403 AccessDenied" in str(e) and f"s3://{bucket}/ds/shards/shard-" in str(e), e
    assert read_all(snap.pinned_uri, payer) == want
    # Anonymous requests cannot pay: refused even with a public-read policy.
    set_policy(radosgw, bucket, "*")
    anon_payer = s3_config(endpoint=radosgw.endpoint, unsigned=True, requester_pays=True, env={})
    assert "HTTP 403 AccessDenied" in str(refused(uri, anon_payer))

    radosgw.boto3_client().put_bucket_request_payment(Bucket=bucket,
                                                      RequestPaymentConfiguration={"Payer": "BucketOwner"})
    assert read_all(uri, reader) == want  # the refusals above were Requester Pays, nothing else


def test_signatures_are_checked_wrong_secret_and_unknown_key_refused(radosgw, bucket, source):
    uri = f"s3://{bucket}/ds/"
    _, _, want = source
    good = owner(radosgw)
    assert read_all(uri, good) == want
    wrong_secret = s3_config(endpoint=radosgw.endpoint, access_key=radosgw.access_key, secret_key=SECRET, env={})
    unknown_key = s3_config(endpoint=radosgw.endpoint, access_key="AKIAUNKNOWNKEY000000", secret_key=SECRET, env={})
    for cfg, code in ((wrong_secret, "SignatureDoesNotMatch"), (unknown_key, "InvalidAccessKeyId")):
        e = refused(uri, cfg)
        msg = str(e)
        assert f"HTTP 403 {code}" in msg and f"s3://{bucket}/ds/_mx8/manifest.tsv" in msg, msg
        assert e.errno == errno.EACCES and SECRET not in msg
    # The engine's requests are signed with the same keys: a pin resolved with good keys
    # (from the store) is refused on its shards with the wrong secret.
    snap = mx8.resolve(uri, s3=good)
    e = refused(snap.pinned_uri, wrong_secret)
    assert "HTTP 403 SignatureDoesNotMatch" in str(e) and f"s3://{bucket}/ds/shards/shard-" in str(e), e
    assert SECRET not in str(e)
    # A key of another user is valid but has no rights here: AccessDenied, not a signature error.
    keys = radosgw.create_user(f"mx8-stranger-{uuid.uuid4().hex[:8]}")
    stranger = s3_config(endpoint=radosgw.endpoint, access_key=keys["access_key"], secret_key=keys["secret_key"],
                         env={})
    assert "HTTP 403 AccessDenied" in str(refused(uri, stranger))
