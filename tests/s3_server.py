"""S3 servers for tests: moto in server mode on loopback, Ceph's radosgw (tests/radosgw_server.py),
and a tiny fault-injecting server.

S3 tests run against each kind in ``S3_KINDS``: a module-scoped fixture with
``params=S3_KINDS`` gets its server from ``server_of_kind(request)``, which starts a fresh moto
for "moto" and hands out the session's one radosgw for "radosgw" (the ``radosgw`` fixture of
tests/conftest.py: a Ceph cluster costs a second or two to start, so modules share it, each in
a bucket of its own, ``module_bucket``; ``start_radosgw`` says what happens where Ceph is not
installed).

``MotoServer`` runs ``python -m moto.server -H 127.0.0.1 -p PORT`` in a subprocess (the real
HTTP path: mx8's C client talks to it over TCP) and can switch signature checking on: moto
accepts any credentials until ``POST /moto-api/reset-auth`` with body ``0``; from then on
only access keys created through its IAM API are valid (DESIGN.md section 7).

``FaultServer`` is an in-process HTTP server whose answers a test scripts one by one (503
SlowDown with Retry-After, a connection reset mid-body, a stall, then a good answer), for
the client's retry paths; it records every request it saw. With ``tls=(cert, key)`` it
speaks HTTPS (``self_signed_cert`` makes a pair for 127.0.0.1).
"""
from __future__ import annotations

import http.server
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Tuple

ADMIN_POLICY = json.dumps({"Version": "2012-10-17",
                           "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """A moto server process; ``endpoint`` is ``http://127.0.0.1:PORT``."""
    kind = "moto"
    external = False
    host = "127.0.0.1"
    region = "us-east-1"
    access_key = secret_key = "testing"  # moto takes any key until set_auth(True)

    def __init__(self, env: Optional[Dict[str, str]] = None, timeout: float = 30.0):
        self.env = dict(env or {})
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        penv = dict(os.environ)
        penv.update(env or {})
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     env=penv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"moto server exited with {self.proc.returncode}: {err}")
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/data.json", timeout=1).read()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto server on port {self.port} did not answer in {timeout:.0f}s")
                time.sleep(0.1)

    def boto3_client(self, service: str = "s3", **creds):
        import boto3
        from botocore.config import Config
        kw = dict(aws_access_key_id="testing", aws_secret_access_key="testing")
        kw.update(creds)
        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1",
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}), **kw)

    def create_access_key(self, user: str) -> Dict[str, str]:
        """An IAM user allowed everything and its access key (call while auth is off)."""
        iam = self.boto3_client("iam")
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="all", PolicyDocument=ADMIN_POLICY)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        return {"access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"]}

    def assume_role(self, role: str) -> Dict[str, str]:
        """Temporary credentials (with a session token) of a role allowed everything, from STS
        AssumeRole: moto checks session tokens only for assumed-role keys (call while auth is off)."""
        iam = self.boto3_client("iam")
        trust = json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]})
        arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust)["Role"]["Arn"]
        iam.put_role_policy(RoleName=role, PolicyName="all", PolicyDocument=ADMIN_POLICY)
        cr = self.boto3_client("sts").assume_role(RoleArn=arn, RoleSessionName="mx8-test")["Credentials"]
        return {"access_key": cr["AccessKeyId"], "secret_key": cr["SecretAccessKey"],
                "session_token": cr["SessionToken"]}

    def set_auth(self, on: bool) -> None:
        """Signature checking on (every later request must be signed by an IAM key) or off."""
        req = urllib.request.Request(self.endpoint + "/moto-api/reset-auth", data=b"0" if on else b"inf",
                                     method="POST", headers={"Content-Type": "text/plain"})
        # (urllib's default form content type would make werkzeug hide the body from moto)
        urllib.request.urlopen(req, timeout=5).read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()


# ---- fault injection ----

# An action gets the handler and does one whole response (or refuses to).
Action = Callable[[http.server.BaseHTTPRequestHandler], None]


def respond(status: int, body: bytes = b"", headers: Optional[Dict[str, str]] = None) -> Action:
    def act(h):
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)
    return act


def partial(offset: int, body: bytes, total: int = 1 << 30) -> Action:
    """A 206 answer carrying body as bytes offset.. of an object of total bytes."""
    return respond(206, body, {"Content-Range": f"bytes {offset}-{offset + len(body) - 1}/{total}"})


def s3_error(status: int, code: str, message: str = "", request_id: str = "REQ123",
             headers: Optional[Dict[str, str]] = None) -> Action:
    body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message>"
            f"<RequestId>{request_id}</RequestId></Error>").encode()
    return respond(status, body, dict(headers or {}, **{"Content-Type": "application/xml"}))


def reset_mid_body(total: int, sent: int) -> Action:
    """Promises total bytes, sends sent of them, then resets the connection (RST)."""
    def act(h):
        h.send_response(206)
        h.send_header("Content-Length", str(total))
        h.end_headers()
        h.wfile.write(b"x" * sent)
        h.wfile.flush()
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        h.connection.close()
        h.close_connection = True
    return act


def stall(seconds: float) -> Action:
    """Sends headers, then nothing for a while (a stuck server)."""
    def act(h):
        h.send_response(200)
        h.send_header("Content-Length", "10")
        h.end_headers()
        h.wfile.flush()
        time.sleep(seconds)
        h.close_connection = True
    return act


def silent(seconds: float) -> Action:
    """Reads the request and answers nothing for a while (a hung endpoint behind a load
    balancer that accepted the connection)."""
    def act(h):
        time.sleep(seconds)
        h.close_connection = True
    return act


def delayed(seconds: float, action: Action) -> Action:
    """Waits, then answers (a slow server: shows whether clients wait in parallel)."""
    def act(h):
        time.sleep(seconds)
        action(h)
    return act


class ExternalS3:
    """An S3-compatible server the tests did not start, e.g. a real MinIO: scripts/smoke.sh
    sets MX8_TEST_S3_ENDPOINT (and _ACCESS_KEY, _SECRET_KEY, _REGION) from AWS_ENDPOINT_URL and
    the AWS_* credentials. Tests that need moto's own controls (auth switch, IAM, request
    log) skip themselves on it."""
    kind = "external"
    external = True
    proc = None

    def __init__(self) -> None:
        self.endpoint = os.environ["MX8_TEST_S3_ENDPOINT"].rstrip("/")
        u = urllib.parse.urlsplit(self.endpoint)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.access_key = os.environ.get("MX8_TEST_S3_ACCESS_KEY", "minioadmin")
        self.secret_key = os.environ.get("MX8_TEST_S3_SECRET_KEY", "minioadmin")
        self.region = os.environ.get("MX8_TEST_S3_REGION", "us-east-1")

    def boto3_client(self, service: str = "s3"):
        import boto3
        from botocore.config import Config
        return boto3.client(service, endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                            config=Config(s3={"addressing_style": "path"}))

    def stop(self) -> None:
        pass  # not ours to stop


def s3_server(env: Optional[Dict[str, str]] = None):
    """The server S3 tests talk to: MX8_TEST_S3_ENDPOINT when set, else a fresh moto."""
    return ExternalS3() if os.environ.get("MX8_TEST_S3_ENDPOINT") else MotoServer(env=env)


# ---- one server of each kind ----

S3_KINDS = ("moto", "radosgw")
RADOSGW_PART_MIN = 8192  # the session radosgw's rgw_multipart_min_part_size (5 MiB on AWS)


def start_radosgw():
    """The session's radosgw (tests/conftest.py's ``radosgw`` fixture calls this once). Where
    Ceph is not installed the radosgw tests skip, saying so, or fail when
    MX8_REQUIRE_RADOSGW=1 (scripts/test.sh sets it: CI must not quietly lose them). A Ceph
    that is installed but does not start is always an error, with the daemons' logs."""
    import pytest
    from radosgw_server import PACKAGES, RadosGW, missing_binaries
    missing = missing_binaries()
    if missing:
        msg = (f"radosgw not available: {', '.join(missing)} not found "
               f"(apt-get install {PACKAGES}; scripts/setup_env.sh installs them)")
        if os.environ.get("MX8_REQUIRE_RADOSGW") == "1":
            pytest.fail(msg + "; MX8_REQUIRE_RADOSGW=1 makes that a failure", pytrace=False)
        pytest.skip(msg)
    return RadosGW(timeout=float(os.environ.get("MX8_RADOSGW_TIMEOUT", "60")),
                   multipart_min_part_size=RADOSGW_PART_MIN)


@contextmanager
def server_of_kind(request, moto=None) -> Iterator[object]:
    """The server for ``request.param`` (one of S3_KINDS), stopped afterwards if it is ours
    alone: "moto" is ``moto()`` if given, else a fresh ``s3_server()`` (the external
    server when MX8_TEST_S3_ENDPOINT is set); "radosgw" is the session's, left running."""
    kind = request.param
    if kind == "radosgw":
        yield request.getfixturevalue("radosgw")
        return
    if kind != "moto":
        raise ValueError(f"unknown S3 server kind {kind!r}")
    srv = moto() if moto is not None else s3_server()
    try:
        yield srv
    finally:
        srv.stop()


@contextmanager
def module_bucket(srv, bucket: str) -> Iterator[None]:
    """Creates the module's bucket. The session's radosgw is shared by every module, so there
    the bucket must not exist yet: each module names its own (an error otherwise, not a
    silent mix of two modules' objects). Left in place afterwards: deleting the objects
    (seconds for the scale test's 2,000) would buy nothing, the OSD goes with the session."""
    client = srv.boto3_client()
    if getattr(srv, "kind", None) == "radosgw":
        try:
            client.head_bucket(Bucket=bucket)
        except client.exceptions.ClientError:
            pass  # 404: not there yet
        else:
            raise RuntimeError(f"bucket {bucket} already exists on the session's radosgw: another test module "
                               f"uses the same name; give each module its own bucket")
    create_bucket(client, bucket)
    yield


@contextmanager
def small_list_pages(srv, n: int) -> Iterator[None]:
    """mx8's own LISTs (``mx8.s3io.list_objects``: what pack and resolve page with) come back
    in pages of n keys. moto does that by itself: its default page size, for a LIST that names
    no max-keys, is MOTO_S3_DEFAULT_MAX_KEYS, set when it started (checked here). radosgw's
    default page is 1,000 keys whatever its settings (``rgw_max_listing_results`` only caps a
    max-keys that is sent), so there mx8 is made to ask for n keys a page (max-keys=n)."""
    if getattr(srv, "kind", None) != "radosgw":
        if getattr(srv, "kind", None) == "moto":
            assert srv.env.get("MOTO_S3_DEFAULT_MAX_KEYS") == str(n), srv.env
        yield
        return
    from mx8.s3io import list_objects
    saved = list_objects.__kwdefaults__
    list_objects.__kwdefaults__ = dict(saved, page_size=n)
    try:
        yield
    finally:
        list_objects.__kwdefaults__ = saved


def max_keys_for_pages(srv, n: int) -> int:
    """The max-keys a test passes to ``S3Client.list_page`` for pages of n keys: 0 (none sent:
    the server's default page) on moto started with MOTO_S3_DEFAULT_MAX_KEYS=n; n on radosgw,
    whose default page cannot be made smaller than 1,000 keys."""
    if getattr(srv, "kind", None) == "moto":
        assert srv.env.get("MOTO_S3_DEFAULT_MAX_KEYS") == str(n), srv.env
        return 0
    return n


def create_bucket(client, bucket: str) -> None:
    """Creates the bucket, or keeps it when an earlier run on the same server made it."""
    try:
        client.create_bucket(Bucket=bucket)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass


def self_signed_cert(directory: str) -> Tuple[str, str]:
    """(cert.pem, key.pem) of a self-signed certificate for IP 127.0.0.1, valid for a day."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx8 test server")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


class FaultServer:
    """Answers request i with actions[i] (the last one repeats); records (method, path, headers)."""

    def __init__(self, actions: List[Action], tls: Optional[Tuple[str, str]] = None):
        self.actions = list(actions)
        self.seen: List[tuple] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                server.seen.append((self.command, self.path, dict(self.headers.items()), time.monotonic()))
                i = min(len(server.seen), len(server.actions)) - 1
                server.actions[i](self)

            do_GET = do_HEAD = do_PUT = do_POST = _any

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        scheme = "http"
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.endpoint = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ---- where AWS hands out credentials ----

class CredentialEndpoints:
    """One loopback HTTP server answering as the EC2 instance metadata service (IMDSv2: a
    PUT for a session token, then the role's credentials, which need that token), as the
    ECS/EKS container credentials endpoint (``/ecs/creds``, with an Authorization header when
    ``auth_token`` is set) and as STS's AssumeRoleWithWebIdentity (a POST to ``/``, the STS
    endpoint of EKS's web identity; ``web_identity_tokens`` lists the accepted tokens). ``credentials`` (AccessKeyId, SecretAccessKey, Token) is what both
    hand out; tests may replace it at any time (a rotation). ``requests`` counts by path."""

    ROLE = "mx8-instance-role"

    def __init__(self, credentials: Dict[str, str], auth_token: Optional[str] = None,
                 expires_in_s: int = 3600) -> None:
        self.credentials = dict(credentials)
        self.auth_token = auth_token
        self.expires_in_s = expires_in_s
        self.requests: Dict[str, int] = {}
        self.web_identity_tokens: List[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _creds(self) -> bytes:
                exp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + owner.expires_in_s))
                c = owner.credentials
                return json.dumps({"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": c["AccessKeyId"],
                                   "SecretAccessKey": c["SecretAccessKey"], "Token": c.get("Token", ""),
                                   "Expiration": exp, "LastUpdated": exp}).encode()

            def do_POST(self):
                owner.requests["POST " + self.path] = owner.requests.get("POST " + self.path, 0) + 1
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                form = dict(urllib.parse.parse_qsl(body))
                if form.get("Action") != "AssumeRoleWithWebIdentity":
                    return self._send(400, b"<ErrorResponse><Error><Code>InvalidAction</Code></Error></ErrorResponse>")
                if form.get("WebIdentityToken") not in owner.web_identity_tokens:
                    return self._send(400, b"<ErrorResponse><Error><Code>InvalidIdentityToken</Code>"
                                           b"<Message>bad token</Message></Error></ErrorResponse>", "text/xml")
                c = owner.credentials
                exp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + owner.expires_in_s))
                xml = (f'<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
                       f"<AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>{c['AccessKeyId']}</AccessKeyId>"
                       f"<SecretAccessKey>{c['SecretAccessKey']}</SecretAccessKey>"
                       f"<SessionToken>{c.get('Token', '')}</SessionToken><Expiration>{exp}</Expiration>"
                       f"</Credentials><SubjectFromWebIdentityToken>mx8</SubjectFromWebIdentityToken>"
                       f"<AssumedRoleUser><Arn>{form.get('RoleArn')}/mx8</Arn><AssumedRoleId>AROA:mx8</AssumedRoleId>"
                       f"</AssumedRoleUser></AssumeRoleWithWebIdentityResult>"
                       f"<ResponseMetadata><RequestId>r1</RequestId></ResponseMetadata>"
                       f"</AssumeRoleWithWebIdentityResponse>")
                self._send(200, xml.encode(), "text/xml")

            def do_PUT(self):
                owner.requests[self.path] = owner.requests.get(self.path, 0) + 1
                if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    return self._send(200, b"imds-session-token")
                self._send(400, b"bad token request")

            def do_GET(self):
                owner.requests[self.path] = owner.requests.get(self.path, 0) + 1
                base = "/latest/meta-data/iam/security-credentials/"
                if self.path.startswith(base):
                    if self.headers.get("X-aws-ec2-metadata-token") != "imds-session-token":
                        return self._send(401, b"")  # IMDSv2 only: no token, no answer
                    if self.path == base:
                        return self._send(200, owner.ROLE.encode())
                    if self.path == base + owner.ROLE:
                        return self._send(200, self._creds(), "application/json")
                if self.path == "/ecs/creds":
                    if owner.auth_token and self.headers.get("Authorization") != owner.auth_token:
                        return self._send(403, b'{"message": "bad token"}', "application/json")
                    return self._send(200, self._creds(), "application/json")
                self._send(404, b"not found")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
