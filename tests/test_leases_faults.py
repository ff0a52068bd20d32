"""Lease mode under faults, with real worker processes and a real TCPStore: one worker of three
is SIGKILLed or SIGSTOPped at each step of the ack path (mx8/leases/faults.py), or meets a
full disk under its lease log, or the store's host dies. Every run must end with every sample
acknowledged, the log covering exactly what was acknowledged (plus, at most, a batch whose
acknowledgement a stopped holder logged just before it was fenced), the duplicates stat equal
to the actual extra deliveries, and no worker waiting more than a few lease timeouts."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional

import pytest

import mx8
from mx8.leases.log import LeaseLog
from test_leases import N, WORKER, Record, store, tiny10k  # noqa: F401  (fixtures)
from test_leases_etl import moto  # noqa: F401  (fixture)

TIMEOUT = 1.5  # lease timeout: a dead worker's range waits this long
BATCH, RANGE = 50, 500


def worker(uri: str, out: str, store_addr: str, job: str, log: str, *args: str,
           env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
    cmd = [sys.executable, str(WORKER), uri, out, "--store", store_addr, "--job", job, "--log", log,
           "--timeout", str(TIMEOUT), "--sleep", "0.005", "--batch-size", str(BATCH),
           "--range-size", str(RANGE), *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})


def wait_started(p: subprocess.Popen, out: Path, timeout: float = 90.0) -> None:
    """Until the worker delivered its first batch: the victim gets a head start, so it holds
    ranges (and reaches its fault point) before the others could drain the job."""
    deadline = time.monotonic() + timeout
    while not (out.exists() and out.read_text().startswith("D ")):
        assert p.poll() is None, f"worker exited early ({p.returncode}): {p.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "worker delivered nothing"
        time.sleep(0.01)


def wait_stopped(p: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{p.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        assert p.poll() is None, f"worker exited instead of stopping: {p.stderr.read().decode()[-2000:]}"
        time.sleep(0.01)
    raise AssertionError("worker did not reach its fault point")


def ended(p: subprocess.Popen, timeout: float) -> str:
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        raise AssertionError(f"worker {p.pid} still running after {timeout:.0f} s: {p.stderr.read().decode()[-2000:]}")
    return err.decode()


def log_intervals(log: str, uri: str, job: str) -> List:
    snap = mx8.resolve(uri)
    return LeaseLog(log, job, snap.manifest_hash, len(snap.manifest)).done_intervals()


def check_drained(recs: List[Record], log: str, uri: str, job: str, *, marked_unseen: int = 0,
                  committed: frozenset = frozenset()) -> None:
    """Every sample acknowledged (committed: the victim's acknowledgement that the store took
    before it died, so its worker never said so); the log covers all of them; the duplicates
    stat (of every worker that ended) equals the extra deliveries plus the samples a killed
    holder marked delivered but never handed over (marked_unseen)."""
    acked = set().union(*(r.acked for r in recs)) | committed
    assert acked == set(range(N)), f"{N - len(acked)} samples never acknowledged"
    assert log_intervals(log, uri, job) == [(0, N)], "the log misses acknowledged samples"
    deliveries = Counter(i for r in recs for i in r.ids)
    extra = sum(deliveries.values()) - N
    assert set(deliveries) == set(range(N))
    dups = sum(r.stats.get("duplicates", 0) for r in recs if r.ended)
    assert dups == extra + marked_unseen, f"duplicates stat {dups}, extra deliveries {extra} (+{marked_unseen})"


KILL_POINTS = [
    # point (n-th pass), samples the victim marked delivered but never handed over
    ("deliver:after_store@3", BATCH),  # marked batch 2 delivered, then died before handing it over
    ("ack:before_log@3", 0),           # batch 2 handled, nothing recorded: redelivered
    ("ack:after_log@3", 0),            # in the log, not in the store: redelivered, log already has it
    ("ack:after_store@3", 0),          # recorded everywhere: nothing redelivered
    ("ack:after_store@10", 0),         # completed its first range, died before the done counter
    ("log:mid_write@4", 0),            # a torn record at the end of its stream
]


def run_with_a_victim_killed(uri: str, store, tmp_path: Path, fault: str, marked_unseen: int, log: str,
                             env: Optional[Dict[str, str]] = None, args: tuple = ()) -> None:
    job = "kill-" + fault.replace(":", "-").replace("@", "-")
    addr = f"127.0.0.1:{store.port}"
    outs = [tmp_path / f"w{i}.txt" for i in range(3)]
    victim = worker(uri, str(outs[0]), addr, job, log, *args, env={**(env or {}), "MX8_LEASE_FAULT": fault})
    wait_started(victim, outs[0])
    others = [worker(uri, str(o), addr, job, log, *args, env=env) for o in outs[1:]]
    victim.wait(120)
    assert victim.returncode == -signal.SIGKILL, f"victim did not reach {fault}: {victim.stderr.read().decode()[-2000:]}"
    died = time.monotonic()
    for p in others:
        err = ended(p, timeout=60)
        assert p.returncode == 0, err[-3000:]
    # After the death: its lease times out, a worker takes the range over and the job drains.
    assert time.monotonic() - died < 4 * TIMEOUT + 10
    recs = [Record(o) for o in outs]
    assert not recs[0].ended
    in_flight = set(recs[0].delivered[-1]) - recs[0].acked if recs[0].delivered else set()
    committed = frozenset(in_flight) if fault.startswith("ack:after_store") else frozenset()
    check_drained(recs, log, uri, job, marked_unseen=marked_unseen, committed=committed)
    assert sum(r.stats["workers_declared_dead"] for r in recs[1:]) >= 1


@pytest.mark.parametrize("fault,marked_unseen", KILL_POINTS, ids=[p for p, _ in KILL_POINTS])
def test_a_worker_killed_at_each_step_of_the_ack_path(tiny10k, store, tmp_path, fault, marked_unseen):
    run_with_a_victim_killed(tiny10k, store, tmp_path, fault, marked_unseen, str(tmp_path / "log"))


S3_KILL_POINTS = ["ack:before_log@3", "ack:after_log@3", "ack:after_store@8"]  # @8: completes its 2nd range


@pytest.mark.minio
@pytest.mark.parametrize("fault", S3_KILL_POINTS)
def test_a_worker_killed_with_the_log_on_s3(tiny10k, store, tmp_path, moto, monkeypatch, fault):
    """The same with the lease log on S3 (moto on 127.0.0.1): one object per record, so fewer,
    larger batches (40 acknowledgements for the job) keep moto's one thread from timing out."""
    env = {"AWS_ENDPOINT_URL": moto.endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    bucket = "faults-" + fault.replace(":", "-").replace("@", "-").replace("_", "-")
    moto.boto3_client().create_bucket(Bucket=bucket)
    run_with_a_victim_killed(tiny10k, store, tmp_path, fault, 0, f"s3://{bucket}/log/", env=env,
                             args=("--batch-size", "250", "--range-size", "1000"))


def test_the_table_builder_killed_before_it_publishes(tiny10k, store, tmp_path):
    """The first worker dies while building the range table: another takes the building over
    once its heartbeat stalls (instead of waiting minutes and failing)."""
    job, log = "kill-init", str(tmp_path / "log")
    addr = f"127.0.0.1:{store.port}"
    outs = [tmp_path / f"w{i}.txt" for i in range(3)]
    victim = worker(tiny10k, str(outs[0]), addr, job, log, env={"MX8_LEASE_FAULT": "init:before_table"})
    victim.wait(120)
    assert victim.returncode == -signal.SIGKILL
    t0 = time.monotonic()
    others = [worker(tiny10k, str(o), addr, job, log) for o in outs[1:]]
    for p in others:
        err = ended(p, timeout=60)
        assert p.returncode == 0, err[-3000:]
    assert time.monotonic() - t0 < 4 * TIMEOUT + 15
    recs = [Record(o) for o in outs[1:]]
    check_drained(recs, log, tiny10k, job)
    assert sum(len(r.ids) for r in recs) == N  # nothing was delivered twice


STOP_POINTS = ["deliver:after_store:stop@3", "ack:after_log:stop@3", "ack:before_log:stop@3"]


@pytest.mark.parametrize("fault", STOP_POINTS)
def test_a_worker_stopped_past_its_timeout_is_fenced(tiny10k, store, tmp_path, fault):
    """SIGSTOP at a step of the ack path, past the lease timeout: the others free its ranges
    and finish; resumed, it cannot acknowledge into them (its ack is refused), counts nothing
    twice, and ends cleanly."""
    job, log = "stop-" + fault.split(":stop")[0].replace(":", "-"), str(tmp_path / "log")
    addr = f"127.0.0.1:{store.port}"
    outs = [tmp_path / f"w{i}.txt" for i in range(3)]
    victim = worker(tiny10k, str(outs[0]), addr, job, log, env={"MX8_LEASE_FAULT": fault})
    try:
        wait_stopped(victim)
        others = [worker(tiny10k, str(o), addr, job, log) for o in outs[1:]]
        for p in others:
            err = ended(p, timeout=60)
            assert p.returncode == 0, err[-3000:]
    finally:
        os.kill(victim.pid, signal.SIGCONT)
    err = ended(victim, timeout=60)
    assert victim.returncode == 0, err[-3000:]
    recs = [Record(o) for o in outs]
    assert recs[0].refused or fault.startswith("deliver"), "the stale holder's acknowledgement is refused"
    check_drained(recs, log, tiny10k, job)
    assert recs[0].stats["acks_refused"] >= 1


def test_a_full_disk_under_the_log_fails_the_worker_loudly_and_loses_nothing(tiny10k, store, tmp_path):
    """RLIMIT_FSIZE makes one worker's log writes come up short and then fail (EFBIG, as a
    full disk gives ENOSPC): its ack raises LeaseLogError naming the log, the store is left
    unchanged, the stream keeps no torn record, and the others finish the job."""
    job, log = "full-disk", str(tmp_path / "log")
    addr = f"127.0.0.1:{store.port}"
    outs = [tmp_path / f"w{i}.txt" for i in range(1, 3)]
    victim = worker(tiny10k, "-", addr, job, log, "--fsize-limit", "900")
    first = victim.stdout.readline()  # its first delivery: a head start over the others
    assert first.startswith(b"D "), victim.stderr.read().decode()[-2000:]
    others = [worker(tiny10k, str(o), addr, job, log) for o in outs]
    out, err = victim.communicate(timeout=120)
    out = first + out
    assert victim.returncode == 1, err.decode()[-3000:]
    assert "mx8.errors.LeaseLogError: lease log " + log in err.decode() and "failed after" in err.decode()
    vpath = tmp_path / "victim.txt"
    vpath.write_bytes(out)
    for p in others:
        e = ended(p, timeout=60)
        assert p.returncode == 0, e[-3000:]
    recs = [Record(vpath)] + [Record(o) for o in outs]
    streams = sorted(Path(log).glob("log-*.jsonl"))
    small = [s for s in streams if s.stat().st_size <= 900]
    assert small and all(s.read_bytes().endswith(b"\n") for s in small), "a failed write is truncated away"
    check_drained(recs, log, tiny10k, job)


def test_corrupt_records_are_refused_except_a_torn_tail(tiny10k, tmp_path):
    log = tmp_path / "log"
    ds = mx8.LeaseDataset(tiny10k, job="torn", batch_size=100, range_size=1000, decode=False, log=str(log),
                          prefetch_leases=0)
    for k, b in enumerate(ds):
        ds.ack(b)
        if k == 4:
            break
    ds.close()
    (stream,) = log.glob("log-*.jsonl")
    lines = stream.read_bytes().splitlines(keepends=True)
    assert len(lines) == 6  # the header and 5 records
    stream.write_bytes(b"".join(lines) + lines[-1][:30])  # torn at the end: ignored
    assert log_intervals(str(log), tiny10k, "torn") == [(0, 500)]
    flipped = lines[3].replace(b'"acked_upto":300', b'"acked_upto":900')
    assert flipped != lines[3]
    stream.write_bytes(b"".join(lines[:3] + [flipped] + lines[4:]))  # checksum no longer matches
    with pytest.raises(mx8.ManifestError, match=r"record 4 of 6 is corrupt"):
        log_intervals(str(log), tiny10k, "torn")
    stream.write_bytes(b"".join(lines[:3] + [lines[3][:20] + b"\n"] + lines[4:]))  # torn in the middle
    with pytest.raises(mx8.ManifestError, match=str(stream)):
        log_intervals(str(log), tiny10k, "torn")


def test_an_unwritable_log_fails_at_start_naming_it(tiny10k, tmp_path):
    (tmp_path / "file").write_text("x")
    log = str(tmp_path / "file" / "log")  # a directory under a regular file: ENOTDIR, even as root
    ds = mx8.LeaseDataset(tiny10k, job="unwritable", batch_size=100, decode=False, log=log)
    with pytest.raises(mx8.LeaseLogError, match=f"lease log {log}/log-.*: cannot create it"):
        iter(ds)


def test_the_store_host_dying_fails_workers_loudly_and_a_rerun_finishes(tiny10k, tmp_path):
    """The process serving the store dies mid-job: the workers fail with an error naming the
    store (they do not hang); rerun against a new store, the job resumes from its log and
    every sample ends acknowledged."""
    log, job = str(tmp_path / "log"), "store-death"
    serve = subprocess.Popen([sys.executable, "-m", "mx8.leases", "serve", "--host", "127.0.0.1", "--port", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = serve.stdout.readline()
    addr = line.split("MX8_LEASE_STORE=")[1].rstrip(")\n")
    outs = [tmp_path / f"a{i}.txt" for i in range(2)]
    first = [worker(tiny10k, str(o), addr, job, log, "--sleep", "0.05") for o in outs]
    deadline = time.monotonic() + 60
    while sum(len(Record(o).acked) for o in outs if o.exists()) < 1000:
        assert time.monotonic() < deadline, "the first run made no progress"
        time.sleep(0.05)
    serve.kill()
    serve.wait()
    t0 = time.monotonic()
    for p in first:
        err = ended(p, timeout=60)
        assert p.returncode == 1 and "mx8.errors.LeaseStoreError: lease store " + addr in err, err[-2000:]
    assert time.monotonic() - t0 < 4 * TIMEOUT + 30, "a worker kept waiting on a dead store"
    import torch.distributed as dist
    from datetime import timedelta
    fresh = dist.TCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=30), wait_for_workers=False)
    again = [tmp_path / f"b{i}.txt" for i in range(2)]
    procs = [worker(tiny10k, str(o), f"127.0.0.1:{fresh.port}", job, log) for o in again]
    for p in procs:
        err = ended(p, timeout=90)
        assert p.returncode == 0, err[-3000:]
    recs = [Record(o) for o in outs + again]
    # A first-run worker whose store died inside an ack had logged the batch, then failed:
    # that batch is in the log (so the rerun skips it) without the worker's "A".
    in_flight = set().union(*(set(r.delivered[-1]) - r.acked for r in recs[:2] if r.delivered))
    acked = set().union(*(r.acked for r in recs))
    assert acked | in_flight == set(range(N)) and len(in_flight) <= 2 * BATCH
    assert log_intervals(log, tiny10k, job) == [(0, N)]
    resumed = set().union(*(set(r.ids) for r in recs[2:]))
    assert not resumed & set().union(*(r.acked for r in recs[:2])), "the rerun redid acknowledged samples"


def test_no_store_at_the_address_is_named_quickly():
    import socket
    from mx8.leases.store import open_store
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    t0 = time.monotonic()
    with pytest.raises(mx8.LeaseStoreError, match=f"lease store 127.0.0.1:{port}: no store answered within 2 s"):
        open_store(f"127.0.0.1:{port}", timeout_s=2)
    assert time.monotonic() - t0 < 30


def test_ranges_left_held_are_taken_a_failed_build_is_retried_and_equal_settings_agree(store, tmp_path):
    """Three ways a job could be stuck for good: a member that left still owning ranges (an
    interrupted release) has them taken at once; a table build that failed for a reason of
    its own (an unreadable log stream) is given back and the next worker builds; and 4000
    requests/s given as an int and as a float are the same setting."""
    from mx8.leases.coordinator import Coordinator
    kw = dict(job="stuck", manifest_hash="ab" * 32, samples=1000, range_size=500, timeout_s=30)
    a = Coordinator(store, pace={"max_requests_per_s": 4000, "slot_s": 0.1}, **kw)
    assert a.acquire() is not None and a.acquire() is not None
    a._stop(mark="left")  # gone without giving its two ranges back
    b = Coordinator(store, pace={"max_requests_per_s": 4000.0, "slot_s": 0.1}, **kw)
    t0 = time.monotonic()
    got = b.acquire(scan=True)
    assert got is not None and got.reclaimed_from == a.worker and time.monotonic() - t0 < 5
    b.leave()

    log_dir = tmp_path / "log"
    (log_dir / "log-broken.jsonl").mkdir(parents=True)  # a stream that cannot be read
    kw = dict(kw, job="rebuild")
    with pytest.raises(mx8.LeaseLogError, match="log-broken.jsonl"):
        Coordinator(store, log=LeaseLog(str(log_dir), "rebuild", "ab" * 32, 1000), **kw)
    (log_dir / "log-broken.jsonl").rmdir()
    c = Coordinator(store, log=LeaseLog(str(log_dir), "rebuild", "ab" * 32, 1000), **kw)
    assert c.num_ranges == 2 and c.acquire() is not None
    c.leave()


def test_close_after_the_store_died_names_the_store(tiny10k, tmp_path):
    serve = subprocess.Popen([sys.executable, "-m", "mx8.leases", "serve", "--host", "127.0.0.1", "--port", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    addr = serve.stdout.readline().split("MX8_LEASE_STORE=")[1].rstrip(")\n")
    ds = mx8.LeaseDataset(tiny10k, job="close-dead", store=addr, batch_size=50, decode=False)
    it = iter(ds)
    ds.ack(next(it))
    serve.kill()
    serve.wait()
    with pytest.raises(mx8.LeaseStoreError, match=f"lease store {addr}"):
        ds.close()  # gives its lease back: through the store, which is gone
