"""Debian's nginx on 127.0.0.1 serving a packed dataset under a bucket path (path-style URLs,
HTTP range requests): a fast loopback "S3" that, unlike moto, keeps connections open and
serves ranges without reading whole objects. nginx checks no signatures; every client still
signs every request as it would for S3. Needs nginx (apt-get install nginx-light)."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Iterator

BUCKET = "bench"
PREFIX = "ds"  # the dataset is s3://bench/ds/
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(packed: str) -> Iterator[str]:
    """nginx serving `packed` as s3://bench/ds/ while the block runs, with the AWS_* variables
    (endpoint, dummy keys, region) and a private MX8_MANIFEST_STORE set; yields the endpoint."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        raise SystemExit("bench_s3: nginx not found (apt-get install nginx-light)")
    tmp = tempfile.mkdtemp(prefix="mx8-bench-s3-")
    root = os.path.join(tmp, "root")
    os.makedirs(os.path.join(root, BUCKET))
    os.symlink(os.path.abspath(packed), os.path.join(root, BUCKET, PREFIX))
    port = _free_port()
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        # Started as root, nginx's workers would drop to 'nobody' and could not read the corpus.
        user = "user root;" if os.geteuid() == 0 else ""
        f.write(NGINX_CONF.format(tmp=tmp, port=port, root=root, user=user))
    proc = subprocess.Popen([nginx, "-c", conf, "-p", tmp], stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise SystemExit("bench_s3: nginx did not start")
        endpoint = f"http://127.0.0.1:{port}"
        os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                           "AWS_REGION": "us-east-1", "MX8_MANIFEST_STORE": os.path.join(tmp, "store")})
        yield endpoint
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def shard_objects(packed: str) -> list:
    """(key under the bucket, size) of every shard, as nginx serves them."""
    d = os.path.join(packed, "shards")
    return [(f"{PREFIX}/shards/{n}", os.path.getsize(os.path.join(d, n))) for n in sorted(os.listdir(d))]
