"""Ceph's radosgw for the S3 tests: a one-node Ceph cluster on loopback, started in seconds.

``RadosGW()`` builds the whole cluster in a fresh temporary directory and tears it down in
``stop()``; nothing under /etc/ceph or /var/lib/ceph is read or written (every daemon gets
``-c <tmp>/ceph.conf``, and the conf names every data, run and log path). The steps:

1. ``ceph.conf`` with a new fsid and two free loopback ports (the monitor's, radosgw's).
2. ``monmaptool --create`` + ``ceph-mon --mkfs``, then ``ceph-mon -f`` (foreground: the
   process we started is the daemon, so stopping it is a kill of a known pid).
3. ``ceph osd new <uuid>`` (the monitor hands out osd id 0) while ``ceph-osd --mkfs`` formats
   a memstore OSD, then ``ceph-osd -f``.
4. ``radosgw -f`` at once (it waits for the OSD by itself: its first act is creating its
   pools, which needs their placement groups active); ready when ``GET /`` answers 200.
5. ``radosgw-admin user create --uid=testing --access-key=testing --secret=testing``: the
   keys every test uses (moto's "testing"/"testing", so hard-coded keys work on both), plus
   ``create_user`` / ``create_access_key`` for other identities.

If a daemon exits or radosgw does not answer within ``timeout`` seconds, everything is killed
and a RuntimeError carries the tail of each daemon's log. Measured on 2 shared cores: up and
answering in 1.1-1.3 s, the first bucket and PUT 0.2 s more (that creates the data pools);
``stop()`` takes ~0.03 s.

The unusual settings, and why:

- ``auth {cluster,service,client} required = none``: no cephx, so no keyrings to make. The
  S3 side is unaffected: radosgw still checks every SigV4 signature against its users' keys.
- ``ms mon client mode = crc``: radosgw's built-in default is ``secure`` (encrypted monitor
  sessions), which only cephx can provide; without this it never gets past authentication.
- ``mon host = v2:127.0.0.1:PORT``, ``ms bind msgr1 = false``, ``public addr = 127.0.0.1``,
  ``ms bind ipv6 = false``: one messenger port per daemon, loopback only (the OSD picks free
  ports of its own in ``ms bind port min..max``).
- ``osd objectstore = memstore``: the OSD keeps objects in memory (``memstore device bytes``
  caps it at 1 GiB, allocated as data arrives): no disk format, no block device, instant mkfs.
- ``osd pool default size = 1``, ``min size = 1``, ``mon allow pool size one``,
  ``mon warn on pool no redundancy = false``: one OSD can hold every replica, and says
  nothing about it. ``osd pool default pg num = 8`` (+ autoscale off; there is no mgr
  anyway): radosgw makes 7 pools, and few placement groups peer quickly.
- ``paxos propose interval = 0.01`` (1 s by default): every pool radosgw creates is an
  OSD-map change, committed by the monitor's Paxos after this delay; with the default the
  start-up took 11.7 s and the first bucket 4.5 s.
- ``mon data avail warn/crit = 1``: the monitor refuses to run when its disk is less than
  5% free by default; the test data lives in the OSD's memory, not on that disk.
- ``rgw frontends = beast endpoint=127.0.0.1:PORT tcp_nodelay=1``: only loopback. Without
  ``tcp_nodelay`` every small GET took 44 ms instead of 1.2 ms (Nagle's algorithm holding
  the body behind the headers until the client's delayed ACK; boto3 saw the same).
  ``rgw dns name`` stays unset, so every request is path-style (``/bucket/key``), as mx8
  sends to custom endpoints.
- ``rgw multipart min part size = 8192`` (5 MiB by default, as on AWS): the tests' small
  multipart uploads; parts under it still fail with EntityTooSmall, as on AWS and moto.
- ``rgw thread pool size = 32`` (512): 2 cores; ``rgw init timeout = 30`` and
  ``client mount timeout = 20`` (300 each): a broken start fails in seconds, not minutes.
- ``rgw enable lc threads = false``, ``rgw enable quota threads = false``: no lifecycle or
  quota work in the background.

``log`` reads radosgw's access log (one ``"GET /bucket/key HTTP/1.1" 200`` line per
request, logged at debug_rgw 1, the default), as the tests read moto's. Unlike moto,
radosgw's default LIST page (no max-keys sent) is always 1,000 keys: ``rgw_max_listing_results``
only caps a max-keys that is sent (tests/s3_server.py: small_list_pages).

Each daemon is started under ``setpriv --pdeathsig KILL``, so if the test process dies
without ``stop()`` (SIGKILL, a crash) the daemons die with it; ``stop()`` also runs at exit.
Start it from the thread that lives longest (pytest's main thread): the death signal follows
the thread that started the daemon.
"""
from __future__ import annotations

import atexit
import http.client
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from typing import Dict, List, Optional

from s3_server import free_port  # (s3_server imports this module only inside a function)

BINARIES = ("monmaptool", "ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph")
PACKAGES = "radosgw ceph-mon ceph-osd"  # Debian 12: Ceph 16.2 (pacific); `ceph` comes with them


def missing_binaries() -> List[str]:
    return [b for b in BINARIES if shutil.which(b) is None]


def _tail(path: str, n: int = 25) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:]) or "(empty)"


class AccessLog:
    """radosgw's access log lines (its beast frontend logs one per request at debug_rgw 1):
    ``mark()`` then ``since(mark)`` gives the (method, raw path, status) of the requests in
    between, like tests/test_s3_pack_resolve.py's RequestLog over moto's werkzeug log."""

    _LINE = re.compile(r' beast: \S+ \S+ - (\S+) \[[^\]]*\] "(GET|PUT|POST|DELETE|HEAD) (\S+) HTTP/[\d.]+" (\d+) ')

    def __init__(self, path: str) -> None:
        self.path = path

    def _size(self) -> int:
        try:
            return os.path.getsize(self.path)
        except OSError:
            return 0

    def _settle(self) -> int:
        """A request is logged just after its answer: wait until the log stops growing."""
        deadline = time.monotonic() + 3.0
        n = self._size()
        while time.monotonic() < deadline:
            time.sleep(0.15)
            m = self._size()
            if m == n:
                break
            n = m
        return n

    def mark(self) -> int:
        return self._settle()

    def since(self, mark: int) -> List[tuple]:
        return [(method, path, status) for _, method, path, status in self.requests_since(mark)]

    def requests_since(self, mark: int) -> List[tuple]:
        """(user, method, raw path, status): the user is radosgw's uid for a signed request,
        "anonymous" for an unsigned one."""
        end = self._settle()
        with open(self.path, "rb") as f:
            f.seek(mark)
            text = f.read(end - mark).decode(errors="replace")
        return [(m.group(1), m.group(2), m.group(3), int(m.group(4)))
                for m in map(self._LINE.search, text.splitlines()) if m]


class RadosGW:
    """A one-node Ceph cluster with radosgw on 127.0.0.1 (module docstring); ``endpoint`` is
    ``http://127.0.0.1:PORT``. Same interface as MotoServer / ExternalS3 where they overlap."""

    kind = "radosgw"
    external = False  # started (and stopped) by the tests
    host = "127.0.0.1"
    region = "us-east-1"  # radosgw does not check the signing region (its zonegroup is "default")
    access_key = secret_key = "testing"
    proc = None  # the daemons log to files, not to pipes a test must drain
    uid = "testing"

    def __init__(self, timeout: float = 60.0, multipart_min_part_size: int = 8192) -> None:
        missing = missing_binaries()
        if missing:
            raise FileNotFoundError(f"radosgw: {', '.join(missing)} not installed "
                                    f"(apt-get install {PACKAGES}; scripts/setup_env.sh does)")
        t0 = time.monotonic()
        self.dir = tempfile.mkdtemp(prefix="mx8-radosgw-")
        self.procs: Dict[str, subprocess.Popen] = {}
        self._stopped = False
        atexit.register(self.stop)
        self.mon_port, self.port = free_port(), free_port()
        while self.port == self.mon_port:
            self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        d = self.dir
        for sub in ("mon", "osd", "rgw", "run", "log"):
            os.mkdir(os.path.join(d, sub))
        self.conf = os.path.join(d, "ceph.conf")
        self.fsid = str(uuid.uuid4())
        with open(self.conf, "w") as f:
            f.write(self._conf_text(multipart_min_part_size))
        self.log = AccessLog(os.path.join(d, "log", "client.rgw.log"))
        try:
            self._start(t0, timeout)
        except Exception as e:
            tails = self._log_tails()  # before stop() removes them
            self.stop()
            raise RuntimeError(f"{e} (after {time.monotonic() - t0:.1f}s)\n{tails}") from e
        except BaseException:
            self.stop()
            raise

    # ---- set-up ----

    def _conf_text(self, part_min: int) -> str:
        d = self.dir
        return f"""[global]
fsid = {self.fsid}
mon host = v2:127.0.0.1:{self.mon_port}
public addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
run dir = {d}/run
admin socket =
pid file =
log file = {d}/log/$name.log
log to stderr = false
err to stderr = true
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 1
paxos propose interval = 0.01
osd objectstore = memstore
memstore device bytes = {1 << 30}
osd crush update on start = true

[mon.a]
mon data = {d}/mon
admin socket = {d}/run/$name.asok

[osd.0]
osd data = {d}/osd
admin socket = {d}/run/$name.asok

[client.rgw]
admin socket = {d}/run/$name.asok
rgw data = {d}/rgw
rgw frontends = beast endpoint=127.0.0.1:{self.port} tcp_nodelay=1
rgw thread pool size = 32
rgw multipart min part size = {part_min}
rgw init timeout = 30
client mount timeout = 20
rgw enable lc threads = false
rgw enable quota threads = false
"""

    def _run(self, *cmd: str, timeout: float = 30.0) -> str:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"radosgw set-up: {' '.join(cmd)} did not finish in {timeout:.0f}s")
        if p.returncode != 0:
            raise RuntimeError(f"radosgw set-up: {' '.join(cmd)} exited {p.returncode}: "
                               f"{(p.stderr or p.stdout)[-2000:]}")
        return p.stdout

    def _daemon(self, name: str, *cmd: str) -> None:
        out = open(os.path.join(self.dir, "log", name + ".out"), "wb")
        wrap = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
        try:
            self.procs[name] = subprocess.Popen(wrap + list(cmd), stdin=subprocess.DEVNULL, stdout=out,
                                                stderr=subprocess.STDOUT, cwd=self.dir)
        finally:
            out.close()

    def _check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"radosgw set-up: {name} exited with {p.returncode}")

    def _start(self, t0: float, timeout: float) -> None:
        c = ("-c", self.conf)
        monmap = os.path.join(self.dir, "monmap")
        self._run("monmaptool", "--create", "--addv", "a", f"[v2:127.0.0.1:{self.mon_port}]", "--fsid", self.fsid,
                  monmap)
        self._run("ceph-mon", *c, "--mkfs", "-i", "a", "--monmap", monmap)
        self._daemon("mon.a", "ceph-mon", *c, "-f", "-i", "a")
        osd_uuid = str(uuid.uuid4())
        # The monitor hands out the OSD's id while the OSD formats its (in-memory) store.
        mkfs = subprocess.Popen(["ceph-osd", *c, "-i", "0", "--mkfs", "--osd-uuid", osd_uuid],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.dir)
        try:
            osd_id = self._run("ceph", *c, "--connect-timeout", "20", "osd", "new", osd_uuid).strip()
            out, _ = mkfs.communicate(timeout=30)
        finally:
            if mkfs.poll() is None:
                mkfs.kill()
                mkfs.wait()
        if osd_id != "0":
            raise RuntimeError(f"radosgw set-up: the monitor gave the OSD id {osd_id!r}, not 0")
        if mkfs.returncode != 0:
            raise RuntimeError(f"radosgw set-up: ceph-osd --mkfs exited {mkfs.returncode}: "
                               f"{out.decode(errors='replace')[-2000:]}")
        self._daemon("osd.0", "ceph-osd", *c, "-f", "-i", "0")
        self._daemon("client.rgw", "radosgw", *c, "-f", "-n", "client.rgw")
        deadline = t0 + timeout
        while True:
            self._check_alive()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/")
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"radosgw set-up: radosgw did not answer S3 on port {self.port} "
                                   f"within {timeout:g}s")
            time.sleep(0.1)
        self._admin("user", "create", f"--uid={self.uid}", "--display-name=mx8 tests",
                    f"--access-key={self.access_key}", f"--secret={self.secret_key}")

    def _log_tails(self) -> str:
        parts = []
        for name in ("mon.a", "osd.0", "client.rgw"):
            for suffix in (".log", ".out"):
                path = os.path.join(self.dir, "log", name + suffix)
                if os.path.exists(path):
                    parts.append(f"--- {name}{suffix} (last lines) ---\n{_tail(path)}")
        return "\n".join(parts)

    # ---- use ----

    def _admin(self, *args: str) -> dict:
        out = self._run("radosgw-admin", "-c", self.conf, *args)
        return json.loads(out) if out.strip() else {}

    def create_user(self, uid: str, access_key: Optional[str] = None,
                    secret_key: Optional[str] = None) -> Dict[str, str]:
        """A new radosgw user (its own buckets, no rights on others') and its S3 keys."""
        access_key = access_key or ("AK" + uuid.uuid4().hex[:18].upper())
        secret_key = secret_key or uuid.uuid4().hex + uuid.uuid4().hex[:8]
        self._admin("user", "create", f"--uid={uid}", f"--display-name={uid}", f"--access-key={access_key}",
                    f"--secret={secret_key}")
        return {"access_key": access_key, "secret_key": secret_key}

    def create_access_key(self, name: str) -> Dict[str, str]:
        """A second S3 key of the main user (what moto's IAM user allowed everything is in
        the tests: a valid key that is not "testing")."""
        access_key = "AK" + uuid.uuid5(uuid.NAMESPACE_OID, name + self.fsid).hex[:18].upper()
        secret_key = uuid.uuid4().hex + uuid.uuid4().hex[:8]
        self._admin("key", "create", f"--uid={self.uid}", "--key-type=s3", f"--access-key={access_key}",
                    f"--secret={secret_key}")
        return {"access_key": access_key, "secret_key": secret_key}

    def remove_bucket(self, bucket: str) -> None:
        """Deletes the bucket and everything in it (objects, unfinished multipart uploads)."""
        self._admin("bucket", "rm", f"--bucket={bucket}", "--purge-objects", "--bypass-gc")

    def set_auth(self, on: bool) -> None:
        """moto's switch; radosgw checks signatures always (only keys of its users work)."""

    def boto3_client(self, service: str = "s3", **creds):
        import boto3
        from botocore.config import Config
        kw = dict(aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)
        kw.update(creds)
        return boto3.client(service, endpoint_url=self.endpoint, region_name=self.region,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}), **kw)

    def stop(self) -> None:
        """Kills every daemon (radosgw, OSD, monitor) and removes the directory. Idempotent.
        SIGKILL, not SIGTERM: nothing is worth saving (the objects live in the OSD's memory),
        and a terminated OSD or radosgw takes seconds to wind down."""
        if self._stopped:
            return
        self._stopped = True
        for name in ("client.rgw", "osd.0", "mon.a"):
            p = self.procs.get(name)
            if p is not None and p.poll() is None:
                p.kill()
        for p in self.procs.values():
            p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        try:
            atexit.unregister(self.stop)
        except Exception:  # pragma: no cover - interpreter shutting down
            pass
