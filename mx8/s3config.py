"""S3 configuration: keyword arguments first, then what boto3 would use.

    cfg = s3_config()                                   # as boto3 resolves it
    cfg = s3_config(profile="training")                 # a profile of ~/.aws/config
    cfg = s3_config(endpoint="http://127.0.0.1:9000")   # a custom endpoint -> path-style
    bucket, key = parse_s3_uri("s3://bucket/raw/train/")

With botocore installed (the ``s3`` extra) credentials, region, endpoint, addressing style and
CA bundle come from botocore's resolution, exactly as boto3's S3 client gets them
(mx8/s3creds.py lists the sources; temporary credentials are refreshed while epochs run).
Without it only the environment is read: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, AWS_REGION / AWS_DEFAULT_REGION (default us-east-1), AWS_ENDPOINT_URL_S3 /
AWS_ENDPOINT_URL. AWS_REGION wins over the profile's region in both.

With a custom endpoint requests are path-style (``endpoint/bucket/key``: MinIO, moto and
most S3-compatible stores want that; ``s3.addressing_style = virtual`` in the profile or
``virtual_host=True`` overrides); AWS endpoints are virtual-hosted
(``bucket.s3.<region>.amazonaws.com/key``) except for bucket names that a virtual host
cannot serve over TLS (dots, upper case, underscores), which go path-style as boto3 sends
them. The secret key and session token never appear in a repr or an error message.

HTTPS is verified against ``ca_bundle``: AWS_CA_BUNDLE, else SSL_CERT_FILE, else the first
system bundle that exists (Debian/Ubuntu, RHEL/Fedora/Amazon Linux, SUSE, Alpine paths). The
wheel's vendored libcurl only knows its build machine's path, which other distributions lack.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import urlsplit

from .s3creds import aws_settings, botocore_available

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
    # Keys given as arguments (or read from the environment without botocore). These travel
    # with the config, also into DataLoader workers of any start method.
    access_key: Optional[str] = None
    secret_key: Optional[str] = None
    session_token: Optional[str] = None
    ca_bundle: Optional[str] = None  # PEM file for https; None: libcurl's compiled-in default
    # No keys above: each process asks botocore for this profile's credentials (None: its
    # default chain), and refreshes them (mx8/s3creds.py). No secret is stored here.
    use_botocore: bool = False
    profile: Optional[str] = None
    unsigned: bool = False        # anonymous requests, no keys at all (public buckets)
    requester_pays: bool = False  # x-amz-request-payer: requester (the reader pays the transfer)
    max_attempts: Optional[int] = None  # attempts a request gets, the first included (None: 6)

    @property
    def has_credentials(self) -> bool:
        from .errors import CredentialsError
        try:
            self.require_credentials()
        except CredentialsError:
            return False
        return True

    def require_credentials(self) -> "S3Config":
        """Returns self, or raises ValueError saying where credentials were looked for."""
        if not (self.unsigned or (self.access_key and self.secret_key)):
            self.native_credentials()
        return self

    def native_credentials(self):
        """The ``_core.S3Credentials`` requests are signed with: this config's own keys, or
        the process's refreshed feed for its profile; None for anonymous requests."""
        from . import _core
        if self.unsigned:
            return None
        if self.access_key and self.secret_key:
            return _core.S3Credentials(self.access_key, self.secret_key, self.session_token)
        if not self.use_botocore:
            from .errors import CredentialsError
            from .s3creds import INSTALL_HINT
            raise CredentialsError("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                                   f"(or pass access_key= and secret_key=), or {INSTALL_HINT}")
        from .s3creds import feed
        return feed(self.profile).native  # raises CredentialsError naming the sources

    @property
    def credential_source(self) -> str:
        """For messages: where the keys come from (never the keys)."""
        if self.unsigned:
            return "unsigned"
        if self.access_key:
            return "explicit keys"
        if not self.use_botocore:
            return "none"
        from .s3creds import feed
        try:
            return f"botocore: {feed(self.profile).method}"
        except ValueError:
            return "botocore: none found"

    def for_bucket(self, bucket: str) -> "S3Config":
        """This config for requests to ``bucket``: path-style where virtual hosting cannot serve
        the name (dots break the TLS wildcard; upper case and underscores are not DNS names),
        as boto3 falls back."""
        if self.virtual_host and not virtual_hostable(bucket, self.endpoint.startswith("https")):
            return replace(self, virtual_host=False)
        return self

    def client(self, **options):
        """A native ``mx8._core.S3Client`` for this configuration (credentials required).
        ``options``: max_connections (16), io_threads (1), connect_timeout_ms, low_speed_time_s,
        max_attempts, backoff_base_ms, backoff_cap_ms. Threads may share one client: up to
        max_connections of their requests run at once."""
        from . import _core
        creds = self.native_credentials()
        if self.max_attempts is not None:
            options.setdefault("max_attempts", self.max_attempts)
        return _core.S3Client(self.endpoint, self.region, None, None, None, self.virtual_host,
                              ca_file=self.ca_bundle, credentials=creds, unsigned=self.unsigned,
                              requester_pays=self.requester_pays, **options)

    def __repr__(self) -> str:
        def mask(v: Optional[str]) -> str:
            return "None" if v is None else "'***'"
        return (f"S3Config(endpoint={self.endpoint!r}, region={self.region!r}, "
                f"virtual_host={self.virtual_host!r}, access_key={self.access_key!r}, "
                f"secret_key={mask(self.secret_key)}, session_token={mask(self.session_token)}, "
                f"use_botocore={self.use_botocore!r}, profile={self.profile!r}, unsigned={self.unsigned!r}, "
                f"requester_pays={self.requester_pays!r}, max_attempts={self.max_attempts!r})")

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


def virtual_hostable(bucket: str, https: bool) -> bool:
    """Whether ``bucket.host`` can address the bucket: a DNS label (lower case, digits, '-'),
    and over https no dots (the certificate's wildcard covers one label)."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket) or ".." in bucket:
        return False
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", bucket):
        return False
    return not (https and "." in bucket)


def s3_config(*, endpoint: Optional[str] = None, region: Optional[str] = None,
              access_key: Optional[str] = None, secret_key: Optional[str] = None,
              session_token: Optional[str] = None, virtual_host: Optional[bool] = None,
              ca_bundle: Optional[str] = None, profile: Optional[str] = None,
              unsigned: bool = False, requester_pays: bool = False, max_attempts: Optional[int] = None,
              env: Optional[Mapping[str, str]] = None) -> S3Config:
    """Resolves the S3 settings; a keyword argument wins over everything else.

    ``profile``: a profile of the AWS config files (default: AWS_PROFILE, else "default").
    ``unsigned``: anonymous requests for a public bucket (boto3's ``signature_version=UNSIGNED``,
    the CLI's ``--no-sign-request``): no credentials are looked for or sent.
    ``requester_pays``: send ``x-amz-request-payer: requester``, which a Requester Pays
    bucket requires (the CLI's ``--request-payer requester``).
    ``max_attempts``: attempts a request gets, the first included (default: AWS_MAX_ATTEMPTS or
    the profile's ``max_attempts``, as botocore reads them, else 6); mx8's own backoff applies
    between them whatever the profile's ``retry_mode``.
    ``virtual_host`` defaults to False with a custom endpoint and True for AWS. ``env`` is
    ``os.environ`` unless given; a given ``env`` (tests) also turns botocore off."""
    use_botocore = env is None and botocore_available()
    env = os.environ if env is None else env
    region = region or _first(env, "AWS_REGION")
    aws: Dict[str, Any] = {}
    if use_botocore:
        aws = aws_settings(profile, region)
        region = aws["region"]
    region = region or _first(env, "AWS_DEFAULT_REGION") or DEFAULT_REGION
    if not re.fullmatch(r"[A-Za-z0-9-]+", region):
        raise ValueError(f"invalid S3 region {region!r}")
    style = aws.get("addressing_style")
    if virtual_host is None and style in ("virtual", "path"):
        virtual_host = style == "virtual"
    if endpoint is None and use_botocore and aws["custom_endpoint"]:
        endpoint = aws["endpoint_url"]
    elif endpoint is None and not use_botocore:
        endpoint = _first(env, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    if endpoint:
        endpoint = _check_endpoint(endpoint)
        vhost = False if virtual_host is None else bool(virtual_host)
    else:
        endpoint = (_check_endpoint(aws["endpoint_url"]) if use_botocore
                    else f"https://s3.{region}.amazonaws.com")
        vhost = True if virtual_host is None else bool(virtual_host)
    if bool(access_key) != bool(secret_key):
        raise ValueError("incomplete S3 credentials: pass both access_key= and secret_key=")
    if unsigned:
        access_key = secret_key = session_token = None
    elif not access_key and not use_botocore:
        access_key = _first(env, "AWS_ACCESS_KEY_ID")
        secret_key = _first(env, "AWS_SECRET_ACCESS_KEY")
        session_token = session_token or _first(env, "AWS_SESSION_TOKEN")
        if bool(access_key) != bool(secret_key):
            missing = "AWS_SECRET_ACCESS_KEY" if access_key else "AWS_ACCESS_KEY_ID"
            raise ValueError(f"incomplete S3 credentials: {missing} is not set")
    ca_bundle = ca_bundle or aws.get("ca_bundle") or _first(env, "AWS_CA_BUNDLE", "SSL_CERT_FILE")
    if ca_bundle and not os.path.isfile(ca_bundle):
        raise ValueError(f"CA bundle {ca_bundle!r} (ca_bundle=, AWS_CA_BUNDLE or SSL_CERT_FILE) is not a file")
    if not ca_bundle:
        ca_bundle = next((p for p in SYSTEM_CA_BUNDLES if os.path.isfile(p)), None)
    if max_attempts is None:
        configured = aws.get("max_attempts") if use_botocore else _first(env, "AWS_MAX_ATTEMPTS")
        try:
            max_attempts = None if configured in (None, "") else int(configured)
        except ValueError:
            raise ValueError(f"max_attempts {configured!r} (AWS_MAX_ATTEMPTS or the profile) is not a number") from None
    if max_attempts is not None and not 1 <= max_attempts <= 100:
        raise ValueError(f"max_attempts must be within 1..100, got {max_attempts}")
    return S3Config(endpoint=endpoint, region=region, virtual_host=vhost, access_key=access_key,
                    secret_key=secret_key, session_token=session_token, ca_bundle=ca_bundle,
                    use_botocore=use_botocore and not access_key and not unsigned, profile=profile,
                    unsigned=bool(unsigned), requester_pays=bool(requester_pays), max_attempts=max_attempts)


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
