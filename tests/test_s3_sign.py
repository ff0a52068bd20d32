"""mx8's SigV4 signer (``_core.s3_sign``) against botocore's S3SigV4Auth on a table of requests.

botocore is given its own view of each request (the key percent-encoded the way its S3
serializer does it, query parameters as pairs, the Host derived from the URL), so the two
signers agree only if mx8's canonical URL, headers and query match AWS's rules."""
from __future__ import annotations

import datetime
import hashlib
import re
import types
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import pytest

from mx8 import _core

botocore = pytest.importorskip("botocore")
import botocore.auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402

AK = "AKIAIOSFODNN7EXAMPLE"
SK = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
WHEN = datetime.datetime(2026, 11, 28, 12, 34, 56)
AMZ_DATE = "20261128T123456Z"
TOKEN_CHARS = "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=+/="


def _case(name, method="GET", endpoint="http://127.0.0.1:9000", region="us-east-1", bucket="bkt", key="",
          query=(), headers=None, body=None, token=None, virtual=False, unsigned=False):
    return pytest.param(dict(method=method, endpoint=endpoint, region=region, bucket=bucket, key=key,
                             query=list(query), headers=dict(headers or {}), body=body, token=token,
                             virtual=virtual, unsigned=unsigned), id=name)


CASES = [
    _case("get-range", key="mx8/train/shards/shard-00000.tar", headers={"Range": "bytes=512-1023"}),
    _case("head", method="HEAD", key="raw/train/class_000/img 0001.jpg"),
    _case("put-body-hash", method="PUT", key="mx8/_mx8/manifest.tsv", body=b"schema_version=0\n",
          headers={"Content-Type": "text/tab-separated-values"}),
    _case("list-v2-first-page", query=[("list-type", "2"), ("prefix", "raw/train/"), ("max-keys", "1000")]),
    _case("list-v2-continuation", query=[("list-type", "2"), ("prefix", "raw/train/"),
                                         ("continuation-token", TOKEN_CHARS), ("delimiter", "/")]),
    _case("list-v2-empty-and-repeated", query=[("list-type", "2"), ("fetch-owner", ""), ("a", "2"), ("a", "1")]),
    _case("key-spaces", key="my photos/cat  1.jpg"),
    _case("key-unicode", key="日本語/ü€ – naïve.png"),
    _case("key-plus-equals", key="a+b=c/d+e==.jpg", headers={"Range": "bytes=0-0"}),
    _case("key-percent-tilde-dots", key="100%/~user/./../x?y#z&w.jpg"),
    _case("custom-port-https", endpoint="https://minio.internal:9443", key="k.jpg"),
    _case("default-port-dropped", endpoint="http://localhost:80", key="k.jpg"),
    _case("default-https-port-dropped", endpoint="https://LOCALHOST:443/", key="k.jpg"),
    _case("session-token", key="k.jpg", token="FwoGZXIvYXdzEJr//////////wEaDKj+/token=="),
    _case("virtual-hosted-get", endpoint="https://s3.eu-west-1.amazonaws.com", region="eu-west-1",
          bucket="my-bucket", key="raw/img 1+2.jpg", virtual=True, headers={"Range": "bytes=0-99"}),
    _case("virtual-hosted-list", endpoint="https://s3.us-west-2.amazonaws.com", region="us-west-2",
          bucket="my.dotted.bucket", virtual=True, query=[("list-type", "2"), ("prefix", "a b/")]),
    _case("unsigned-payload-https", endpoint="https://s3.us-east-1.amazonaws.com", bucket="bkt", key="big.tar",
          virtual=True, unsigned=True),
    _case("multipart-initiate", method="POST", key="mx8/shards/shard-00001.tar", query=[("uploads", "")]),
    _case("multipart-part", method="PUT", key="mx8/shards/shard-00001.tar", body=b"x" * 1000,
          query=[("partNumber", "3"), ("uploadId", "VXBsb2FkIElE+/=")]),
    _case("header-value-blanks", method="PUT", key="k", body=b"",
          headers={"Content-Type": "  text/plain;   charset=utf-8  ", "x-amz-meta-Label": "a  b"}),
]


def _botocore_sign(c, monkeypatch):
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: WHEN)
    path_key = quote(c["key"], safe="/~")  # botocore's S3 serializer: percent_encode(key, safe='/~')
    ep = urlsplit(c["endpoint"])
    if c["virtual"]:
        url = f"{ep.scheme}://{c['bucket']}.{ep.netloc}/{path_key}"
    else:
        url = f"{ep.scheme}://{ep.netloc}/{c['bucket']}" + (f"/{path_key}" if c["key"] else "")
    req = AWSRequest(method=c["method"], url=url, data=c["body"], params=c["query"], headers=dict(c["headers"]))
    if c["unsigned"]:
        req.context["client_config"] = types.SimpleNamespace(s3={"payload_signing_enabled": False})
    botocore.auth.S3SigV4Auth(Credentials(AK, SK, c["token"]), "s3", c["region"]).add_auth(req)
    return req


def _mx8_sign(c, payload):
    return _core.s3_sign(c["method"], c["endpoint"], c["region"], c["bucket"], c["key"], query=c["query"],
                         headers=c["headers"], payload_sha256=payload, access_key=AK, secret_key=SK,
                         session_token=c["token"], amz_date=AMZ_DATE, virtual_host=c["virtual"])


@pytest.mark.parametrize("c", CASES)
def test_signature_matches_botocore(c, monkeypatch):
    ref = _botocore_sign(c, monkeypatch)
    payload = ref.headers["X-Amz-Content-SHA256"]
    if c["body"] is not None:
        assert payload == hashlib.sha256(c["body"]).hexdigest()
    assert (payload == "UNSIGNED-PAYLOAD") == c["unsigned"]
    url, lines = _mx8_sign(c, payload)
    sent = dict(line.split(": ", 1) for line in lines)
    assert sent["Authorization"] == ref.headers["Authorization"]
    assert sent["x-amz-date"] == ref.headers["X-Amz-Date"] == AMZ_DATE
    if c["token"]:
        assert sent["x-amz-security-token"] == c["token"]
    else:
        assert "x-amz-security-token" not in sent

    # The URL sent decodes back to exactly the bucket, key and parameters asked for.
    parts = urlsplit(url)
    assert parts.netloc == sent["Host"]
    path = unquote(parts.path)
    assert path == ("/" + c["key"] if c["virtual"] else f"/{c['bucket']}" + (f"/{c['key']}" if c["key"] else ""))
    assert sorted(parse_qsl(parts.query, keep_blank_values=True)) == sorted(c["query"])
    # Upper-case hex escapes only, and nothing a client or server could read differently.
    assert all(e == e.upper() for e in re.findall(r"%[0-9A-Fa-f]{2}", url))
    assert not any(ch in url for ch in " #") and not any(ch in parts.path for ch in "+=?")


def test_aws_documentation_example():
    url, lines = _core.s3_sign("GET", "https://s3.amazonaws.com", "us-east-1", "examplebucket", "test.txt",
                               headers={"Range": "bytes=0-9"},
                               payload_sha256=hashlib.sha256(b"").hexdigest(), access_key=AK, secret_key=SK,
                               amz_date="20130524T000000Z", virtual_host=True)
    assert url == "https://examplebucket.s3.amazonaws.com/test.txt"
    assert lines[-1].endswith("Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")


def test_errors_are_clear_and_never_show_the_secret():
    kw = dict(access_key=AK, secret_key=SK, amz_date=AMZ_DATE)
    with pytest.raises(ValueError, match="http:// or https://") as ei:
        _core.s3_sign("GET", "s3.amazonaws.com", "us-east-1", "b", "k", **kw)
    assert SK not in str(ei.value)
    with pytest.raises(ValueError, match="set by the signer"):
        _core.s3_sign("GET", "http://h", "us-east-1", "b", "k", headers={"Authorization": SK}, **kw)
    with pytest.raises(ValueError, match="amz_date"):
        _core.s3_sign("GET", "http://h", "us-east-1", "b", "k", access_key=AK, secret_key=SK, amz_date="now")
    with pytest.raises(TypeError, match=r"query must hold \(str, str\) pairs"):
        _core.s3_sign("GET", "http://h", "us-east-1", "b", "k", query=[("max-keys", 5)], **kw)
    with pytest.raises(TypeError, match="required"):
        _core.s3_sign("GET", "http://h", "us-east-1", "b", "k", access_key=AK, amz_date=AMZ_DATE)


# ---- mx8.s3config: keyword arguments over AWS_* variables, secrets masked ----

from mx8.s3config import parse_s3_uri, s3_config  # noqa: E402


def test_config_defaults_to_aws_virtual_hosted():
    cfg = s3_config(env={"AWS_ACCESS_KEY_ID": AK, "AWS_SECRET_ACCESS_KEY": SK, "AWS_DEFAULT_REGION": "eu-west-1"})
    assert (cfg.endpoint, cfg.region, cfg.virtual_host) == ("https://s3.eu-west-1.amazonaws.com", "eu-west-1", True)
    assert s3_config(env={}).region == "us-east-1" and not s3_config(env={}).has_credentials
    assert s3_config(env={"AWS_REGION": "ap-south-1", "AWS_DEFAULT_REGION": "eu-west-1"}).region == "ap-south-1"


def test_config_custom_endpoint_is_path_style_and_kwargs_win():
    env = {"AWS_ENDPOINT_URL": "http://generic:1", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000/",
           "AWS_ACCESS_KEY_ID": "envkey", "AWS_SECRET_ACCESS_KEY": "envsecret", "AWS_SESSION_TOKEN": "tok"}
    cfg = s3_config(env=env)
    assert (cfg.endpoint, cfg.virtual_host, cfg.access_key, cfg.session_token) == (
        "http://127.0.0.1:9000", False, "envkey", "tok")
    assert s3_config(env={"AWS_ENDPOINT_URL": "http://generic:1"}).endpoint == "http://generic:1"
    cfg = s3_config(endpoint="https://minio:9443", region="r1", access_key="k", secret_key="s", env=env)
    assert (cfg.endpoint, cfg.region, cfg.access_key, cfg.secret_key) == ("https://minio:9443", "r1", "k", "s")


def test_config_repr_masks_secret_and_token():
    cfg = s3_config(access_key=AK, secret_key=SK, session_token="SESSIONTOKEN", env={})
    for text in (repr(cfg), str(cfg)):
        assert SK not in text and "SESSIONTOKEN" not in text and AK in text and "'***'" in text
    with pytest.raises(Exception):
        cfg.secret_key = "x"  # frozen


def test_config_errors():
    with pytest.raises(ValueError, match="AWS_SECRET_ACCESS_KEY"):
        s3_config(env={"AWS_ACCESS_KEY_ID": AK})
    with pytest.raises(ValueError, match="no S3 credentials"):
        s3_config(env={}).require_credentials()
    for bad in ("ftp://h", "http://h/path", "http://h:notaport", "127.0.0.1:9000"):
        with pytest.raises(ValueError, match="S3 endpoint"):
            s3_config(endpoint=bad, env={})


def test_parse_s3_uri():
    assert parse_s3_uri("s3://bucket/raw/train/") == ("bucket", "raw/train/")
    assert parse_s3_uri("s3://bucket") == ("bucket", "")
    assert parse_s3_uri("s3://b/a b/ü+=.jpg") == ("b", "a b/ü+=.jpg")
    for bad, msg in (("/local/path", "not an S3 URI"), ("s3:///key", "no bucket"), ("s3://bad bucket/k", "invalid bucket")):
        with pytest.raises(ValueError, match=msg):
            parse_s3_uri(bad)
