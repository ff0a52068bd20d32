"""S3 configuration: keyword arguments first, then the standard AWS environment variables.

    cfg = s3_config()                                   # from AWS_* variables
    cfg = s3_config(endpoint="http://127.0.0.1:9000")   # a custom endpoint -> path-style
    bucket, key = parse_s3_uri("s3://bucket/raw/train/")

Variables read: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION /
AWS_DEFAULT_REGION (default us-east-1), AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL. With a custom
endpoint requests are path-style (``endpoint/bucket/key``: MinIO, moto and most S3-compatible
stores want that); without one they go to ``https://s3.<region>.amazonaws.com`` virtual-hosted
(``bucket.s3.<region>.amazonaws.com/key``), as AWS recommends. The secret key and session
token never appear in a repr or an error message.

HTTPS is verified against ``ca_bundle``: AWS_CA_BUNDLE, else SSL_CERT_FILE, else the first
system bundle that exists (Debian/Ubuntu, RHEL/Fedora/Amazon Linux, SUSE, Alpine paths). The
wheel's vendored libcurl only knows its build machine's path, which other distributions lack.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping, Optional, Tuple
from urllib.parse import urlsplit

DEFAULT_REGION = "us-east-1"

# Where distributions keep the system CA bundle (the list Go's crypto/x509 searches).
SYSTEM_CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",                 # Debian, Ubuntu, Gentoo, Arch, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",                   # Fedora, RHEL 6, Amazon Linux
    "/etc/ssl/ca-bundle.pem",                             # openSUSE
    "/etc/pki/tls/cacert.pem",                            # OpenELEC
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",  # CentOS, RHEL 7+
    "/etc/ssl/cert.pem",                                  # Alpine, macOS
)

# Bucket names as the signer accepts them: AWS's rules plus the legacy upper-case/underscore.
_BUCKET_RE = re.compile(r"^[A-Za-z0-9._-]{1,255}$")


@dataclass(frozen=True, repr=False)
class S3Config:
    """Where and as whom to talk S3. Build it with :func:`s3_config`."""

    endpoint: str  # scheme://host[:port], no trailing slash
    region: str
    virtual_host: bool
    access_key: Optional[str] = None
    secret_key: Optional[str] = None
    session_token: Optional[str] = None
    ca_bundle: Optional[str] = None  # PEM file for https; None: libcurl's compiled-in default

    @property
    def has_credentials(self) -> bool:
        return bool(self.access_key and self.secret_key)

    def require_credentials(self) -> "S3Config":
        """Returns self, or raises ValueError saying which variables to set."""
        if not self.has_credentials:
            raise ValueError("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                             "(or pass access_key= and secret_key=)")
        return self

    def client(self, **options):
        """A native ``mx8._core.S3Client`` for this configuration (credentials required).
        ``options``: connect_timeout_ms, low_speed_time_s, max_attempts, backoff_base_ms,
        backoff_cap_ms. One client runs one request at a time: use one per thread."""
        from . import _core
        self.require_credentials()
        return _core.S3Client(self.endpoint, self.region, self.access_key, self.secret_key,
                              self.session_token, self.virtual_host, ca_file=self.ca_bundle, **options)

    def __repr__(self) -> str:
        def mask(v: Optional[str]) -> str:
            return "None" if v is None else "'***'"
        return (f"S3Config(endpoint={self.endpoint!r}, region={self.region!r}, "
                f"virtual_host={self.virtual_host!r}, access_key={self.access_key!r}, "
                f"secret_key={mask(self.secret_key)}, session_token={mask(self.session_token)})")

    __str__ = __repr__


def _first(env: Mapping[str, str], *names: str) -> Optional[str]:
    for n in names:
        v = env.get(n)
        if v:  # an empty variable counts as unset, as in the AWS CLI
            return v
    return None


def _check_endpoint(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    try:
        parts.port  # raises ValueError on a malformed port
    except ValueError:
        raise ValueError(f"S3 endpoint {endpoint!r} has an invalid port") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"S3 endpoint {endpoint!r} must look like http(s)://host[:port]")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"S3 endpoint {endpoint!r} must be only scheme://host[:port] (no path, query or user)")
    return f"{parts.scheme.lower()}://{parts.netloc}"


def s3_config(*, endpoint: Optional[str] = None, region: Optional[str] = None,
              access_key: Optional[str] = None, secret_key: Optional[str] = None,
              session_token: Optional[str] = None, virtual_host: Optional[bool] = None,
              ca_bundle: Optional[str] = None, env: Optional[Mapping[str, str]] = None) -> S3Config:
    """Resolves the S3 settings; a keyword argument wins over its environment variable.

    ``virtual_host`` defaults to False with a custom endpoint and True for AWS. ``env`` is
    ``os.environ`` unless given (tests)."""
    env = os.environ if env is None else env
    region = region or _first(env, "AWS_REGION", "AWS_DEFAULT_REGION") or DEFAULT_REGION
    if not re.fullmatch(r"[A-Za-z0-9-]+", region):
        raise ValueError(f"invalid S3 region {region!r}")
    endpoint = endpoint or _first(env, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    if endpoint:
        endpoint = _check_endpoint(endpoint)
        vhost = False if virtual_host is None else bool(virtual_host)
    else:
        endpoint = f"https://s3.{region}.amazonaws.com"
        vhost = True if virtual_host is None else bool(virtual_host)
    access_key = access_key or _first(env, "AWS_ACCESS_KEY_ID")
    secret_key = secret_key or _first(env, "AWS_SECRET_ACCESS_KEY")
    session_token = session_token or _first(env, "AWS_SESSION_TOKEN")
    if bool(access_key) != bool(secret_key):
        missing = "AWS_SECRET_ACCESS_KEY (secret_key=)" if access_key else "AWS_ACCESS_KEY_ID (access_key=)"
        raise ValueError(f"incomplete S3 credentials: {missing} is not set")
    ca_bundle = ca_bundle or _first(env, "AWS_CA_BUNDLE", "SSL_CERT_FILE")
    if ca_bundle and not os.path.isfile(ca_bundle):
        raise ValueError(f"CA bundle {ca_bundle!r} (ca_bundle=, AWS_CA_BUNDLE or SSL_CERT_FILE) is not a file")
    if not ca_bundle:
        ca_bundle = next((p for p in SYSTEM_CA_BUNDLES if os.path.isfile(p)), None)
    return S3Config(endpoint=endpoint, region=region, virtual_host=vhost, access_key=access_key,
                    secret_key=secret_key, session_token=session_token, ca_bundle=ca_bundle)


def parse_s3_uri(uri: str) -> Tuple[str, str]:
    """``"s3://bucket/prefix/key"`` -> ``("bucket", "prefix/key")``; the key may be empty or end in '/'."""
    if not isinstance(uri, str):
        raise TypeError(f"S3 URI must be a str, got {type(uri).__name__}")
    if not uri.startswith("s3://"):
        raise ValueError(f"not an S3 URI (expected s3://bucket/key): {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise ValueError(f"S3 URI has no bucket name: {uri!r}")
    if not _BUCKET_RE.match(bucket):
        raise ValueError(f"S3 URI has an invalid bucket name {bucket!r} (letters, digits, '.', '-', '_'): {uri!r}")
    return bucket, key
