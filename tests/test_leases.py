"""Lease mode with real processes on 127.0.0.1 and a real TCPStore (hosted by the test): three
workers drain 10,000 samples while one is SIGKILLed in the middle of a lease (every sample at
least once, duplicates exactly the dead worker's unacknowledged batch); a worker paused past
its lease timeout cannot acknowledge (fencing); a late joiner gets work; the pacing caps hold
across workers; and the durable lease log (resume, torn lines, mismatch refusal)."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Dict, List, Set

import pytest
import torch

import mx8
from mx8.leases.log import LeaseLog, plan_ranges

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "lease_worker.py"
N = 10_000


def make_tiny_dataset(root: Path, n: int) -> Path:
    """n tiny JPEGs (16 different 16x12 images) in 4 classes, packed."""
    from PIL import Image
    src = root / "src"
    datas = []
    for k in range(16):
        buf = io.BytesIO()
        Image.new("RGB", (16, 12), (k * 15, 100, 200 - k * 10)).save(buf, "JPEG", quality=80)
        datas.append(buf.getvalue())
    for c in range(4):
        (src / f"c{c}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (src / f"c{i % 4}" / f"{i:06d}.jpg").write_bytes(datas[i % 16])
    out = root / "packed"
    mx8.pack(str(src), str(out), shard_mb=1, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny10k(tmp_path_factory) -> str:
    return mx8.resolve(str(make_tiny_dataset(tmp_path_factory.mktemp("tiny10k"), N))).pinned_uri


@pytest.fixture
def store():
    import torch.distributed as dist
    s = dist.TCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=30), wait_for_workers=False)
    yield s
    del s


class Record:
    def __init__(self, path: Path) -> None:
        self.delivered: List[List[int]] = []
        self.acked: Set[int] = set()
        self.refused: Set[int] = set()
        self.stats: Dict = {}
        self.pace: List = []
        self.ended = False
        for line in path.read_text().splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "D":
                self.delivered.append([int(x) for x in rest.split()])
            elif kind == "A":
                self.acked.update(int(x) for x in rest.split())
            elif kind == "R":
                self.refused.update(int(x) for x in rest.split())
            elif kind == "S":
                self.stats = json.loads(rest)
            elif kind == "P":
                self.pace = json.loads(rest)
            elif kind == "END":
                self.ended = True

    @property
    def ids(self) -> List[int]:
        return [i for b in self.delivered for i in b]


def start_worker(uri: str, out: Path, store, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, str(WORKER), uri, str(out), "--store", f"127.0.0.1:{store.port}", *args]
    return subprocess.Popen(cmd, stderr=subprocess.PIPE)


def finish(procs, timeout=90.0) -> None:
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            raise AssertionError(f"worker {p.args} did not finish: {p.stderr.read().decode()[-3000:]}")
        err = p.stderr.read().decode()
        assert p.returncode == 0, f"worker failed ({p.returncode}): {err[-3000:]}"


def wait_for(path: Path, timeout=60.0, procs=()) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"worker exited early: {p.stderr.read().decode()[-3000:]}")
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


def test_sigkill_mid_lease_drains_with_duplicates_only_from_the_dead(tiny10k, store, tmp_path):
    marker = tmp_path / "victim-stalled"
    outs = [tmp_path / f"w{i}.txt" for i in range(3)]
    common = ["--job", "kill", "--sleep", "0.01", "--timeout", "2"]
    victim = start_worker(tiny10k, outs[0], store, *common, "--stall-at", "3", "--marker", str(marker))
    others = [start_worker(tiny10k, o, store, *common) for o in outs[1:]]
    wait_for(marker, procs=[victim])
    # The victim holds its range with batches 0-2 acknowledged and batch 3 delivered, unacked.
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    finish(others)
    dead, live = Record(outs[0]), [Record(o) for o in outs[1:]]
    assert len(dead.delivered) == 4 and not dead.ended
    counts = Counter(i for r in [dead] + live for i in r.ids)
    assert set(counts) == set(range(N)), "every sample delivered at least once"
    unacked = set(dead.ids) - dead.acked
    assert len(unacked) == 50
    dups = {i for i, c in counts.items() if c > 1}
    assert dups == unacked, "duplicates come only from the dead worker's unacknowledged batch"
    assert max(counts.values()) == 2
    assert sum(r.stats["duplicates"] for r in live) == len(unacked)
    assert sum(r.stats["leases_reclaimed"] for r in live) >= 1
    assert sum(r.stats["workers_declared_dead"] for r in live) == 1
    assert all(r.stats["acks_refused"] == 0 for r in live)


def test_expired_holder_cannot_ack_and_rejoins(tiny10k, store, tmp_path):
    """A worker SIGSTOPped past its lease timeout: another takes its ranges over and finishes
    the job; resumed, the stale worker's acknowledgement is refused (fenced) and it ends."""
    marker = tmp_path / "stalled"
    a_out, b_out = tmp_path / "a.txt", tmp_path / "b.txt"
    common = ["--job", "fence", "--timeout", "1.5"]
    a = start_worker(tiny10k, a_out, store, *common, "--stall-at", "2", "--marker", str(marker))
    wait_for(marker, procs=[a])
    os.kill(a.pid, signal.SIGSTOP)
    try:
        b = start_worker(tiny10k, b_out, store, *common)
        finish([b])  # drains everything, taking over a's ranges once a's heartbeat stalled
    finally:
        marker.unlink()
        os.kill(a.pid, signal.SIGCONT)
    finish([a])
    ra, rb = Record(a_out), Record(b_out)
    stalled = set(ra.delivered[2])
    assert ra.refused == stalled, "the expired holder's acknowledgement is refused"
    assert rb.stats["workers_declared_dead"] == 1 and rb.stats["leases_reclaimed"] >= 1
    assert set(ra.ids) | set(rb.ids) == set(range(N))
    assert set(ra.ids) & set(rb.ids) == stalled
    assert rb.stats["duplicates"] == len(stalled)
    assert ra.stats["rejoined"] == 1 or ra.stats["acks_refused"] == 1


def test_late_joiner_gets_work(tiny10k, store, tmp_path):
    a_out, b_out = tmp_path / "a.txt", tmp_path / "b.txt"
    common = ["--job", "late", "--sleep", "0.03", "--range-size", "250"]
    a = start_worker(tiny10k, a_out, store, *common)
    deadline = time.monotonic() + 60
    while not a_out.exists() or a_out.read_text().count("\nA ") < 5:
        assert time.monotonic() < deadline and a.poll() is None
        time.sleep(0.02)
    b = start_worker(tiny10k, b_out, store, *common)
    finish([a, b])
    ra, rb = Record(a_out), Record(b_out)
    assert len(rb.ids) > 0, "the late joiner got ranges"
    assert sorted(ra.ids + rb.ids) == list(range(N)), "no death: every sample exactly once"
    assert ra.stats["duplicates"] == rb.stats["duplicates"] == 0


def test_pacing_caps_hold_across_workers(tiny10k, store, tmp_path):
    rate, max_bytes = 4000.0, 100_000  # samples/s; ~630 B a sample, ~31 KB a batch of 50
    outs = [tmp_path / f"p{i}.txt" for i in range(2)]
    procs = [start_worker(tiny10k, o, store, "--job", "pace", "--max-requests-per-s", str(rate),
                          "--max-bytes-in-flight", str(max_bytes)) for o in outs]
    finish(procs)
    recs = [Record(o) for o in outs]
    assert sorted(i for r in recs for i in r.ids) == list(range(N))
    req = sorted((t, n) for r in recs for t, kind, n, _ in r.pace if kind == "req")
    assert sum(n for _, n in req) == N
    # Requests: no one-second window (sliding, not only the slots) holds more than the cap,
    # and the whole run keeps most of it (the slots grant m/(m+1) of it: 0.91 here).
    times = [t for t, _ in req]
    worst = 0
    j = 0
    total = 0
    for i, (t, n) in enumerate(req):
        total += n
        while times[j] <= t - 1.0:
            total -= req[j][1]
            j += 1
        worst = max(worst, total)
    assert worst <= rate, f"{worst} requests within one second, cap {rate}/s"
    span = times[-1] - times[0]
    overall = (N - req[-1][1]) / span  # grants after the first instant, over the span
    assert 0.6 * rate <= overall <= rate, f"{overall:.0f} requests/s over {span:.2f}s, cap {rate}/s"
    # Bytes in flight: the job's counter just after each reservation (the store's own figure,
    # which every reservation raises and every release lowers) never exceeds the cap, and
    # every reservation is released.
    res = [(n, level) for r in recs for _, kind, n, level in r.pace if kind == "bytes"]
    assert sum(n for n, _ in res) == 0
    peak = max(level for n, level in res if n > 0)
    assert 0 < peak <= max_bytes, f"peak {peak} bytes in flight, cap {max_bytes}"
    for r in recs:
        assert 0 < r.stats["pace_request_share"] <= 1 and r.stats["pace_requests"] > 0
        assert r.stats["pace_peak_bytes_in_flight"] <= max_bytes


# -- the lease log ---------------------------------------------------------------------------


def test_plan_ranges_resumes_partial_ranges():
    assert plan_ranges(10, 4, []) == [(0, 4), (4, 8), (8, 10)]
    # [0,4) done, [4,8) acked up to 6, [8,10) untouched
    assert plan_ranges(10, 4, [(0, 4), (4, 6)]) == [(6, 8), (8, 10)]
    assert plan_ranges(10, 4, [(0, 10)]) == []
    assert plan_ranges(12, 4, [(4, 8)]) == [(0, 4), (8, 12)]
    # whole_ranges: only grid ranges done entirely count; a partial one is planned whole
    assert plan_ranges(10, 4, [(0, 4), (4, 6)], whole_ranges=True) == [(4, 8), (8, 10)]
    assert plan_ranges(10, 4, [(2, 10)], whole_ranges=True) == [(0, 4)]
    assert plan_ranges(10, 4, [(0, 9)], whole_ranges=True) == [(8, 10)]
    assert plan_ranges(10, 4, [(0, 10)], whole_ranges=True) == []


def test_ranges_run_on_one_engine_without_new_threads(tiny10k):
    """A lease worker reads range after range on one engine: 20 ranges (the next one queued
    behind the current, prefetch_leases=1) start no thread after the first, and every sample
    comes once, in ascending order within its range."""
    import gc
    from test_dataset import native_thread_ids
    gc.collect()
    before = frozenset(native_thread_ids())
    ds = mx8.LeaseDataset(tiny10k, job="threads", batch_size=100, range_size=500, decode=False, threads=2)
    seen, ids = [], []
    for batch in ds:
        seen.append(native_thread_ids(besides=before))
        ids += batch.sample_ids.tolist()
        ds.ack(batch)
    st = ds.stats()
    assert sorted(ids) == list(range(N)) and st["leases_completed"] == 20
    assert len(seen[0]) == 2 and all(t == seen[0] for t in seen), "no thread started after the first range"
    deadline = time.monotonic() + 2.0  # a joined thread's /proc entry outlives the join by a moment
    while native_thread_ids() & seen[0] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not native_thread_ids() & seen[0], "the end of the job stops them"


def test_whole_ranges_record_a_range_once_and_redo_it_whole(tiny10k, tmp_path):
    """whole_ranges=True: a range whose batches were only partly acknowledged when the job
    stopped left nothing in the store or the log and is redone from its first sample; a log
    written batch by batch (whole_ranges=False) that stopped mid-range resumes that range
    whole too. One log record per completed range."""
    def run(log: Path, whole: bool, stop_after_acks: int = -1):
        kw = dict(job="whole", batch_size=50, range_size=500, decode=False, log=str(log), prefetch_leases=0,
                  whole_ranges=whole)
        ds = mx8.LeaseDataset(tiny10k, **kw)
        got, infos = [], set()
        for k, batch in enumerate(ds):
            got += batch.sample_ids.tolist()
            infos.add(ds.lease_info(batch)[:2])
            if k == stop_after_acks:
                break
            assert ds.ack(batch)
        ds.close()
        return got, infos, ds.stats()

    log = tmp_path / "log"
    first, _, st = run(log, True, stop_after_acks=13)  # range [500, 1000): 3 of 10 batches acknowledged
    assert st["log_records"] == 1 and st["samples_acked"] == 500
    second, ranges, st = run(log, True)
    assert sorted(second) == list(range(500, N)), "the partly acknowledged range is redone from its start"
    assert (500, 1000) in ranges and all(s % 500 == 0 for s, _ in ranges)
    assert st["log_records"] == len(range(500, N, 500))

    log = tmp_path / "log-batches"
    run(log, False, stop_after_acks=13)  # batch-granular: the log says [0, 650) is done
    second, ranges, _ = run(log, True)
    assert sorted(second) == list(range(500, N)) and (500, 1000) in ranges


def test_restart_resumes_from_the_log(tiny10k, tmp_path):
    """A job stopped part-way (in-process, private store) restarts from its log: completed
    ranges are skipped, a partly acknowledged range resumes after its last acknowledged batch,
    and a torn last line (crash in the middle of a write) is ignored."""
    log = tmp_path / "log"
    kw = dict(job="resume", batch_size=50, range_size=500, decode=False, log=str(log), prefetch_leases=0)
    ds = mx8.LeaseDataset(tiny10k, **kw)
    first: List[int] = []
    for k, batch in enumerate(ds):
        first += batch.sample_ids.tolist()
        if k == 12:  # batch 2 of range [500, 1000): delivered, not acknowledged
            break
        ds.ack(batch)
    ds.close()
    acked = set(range(0, 600))
    with open(next(log.glob("log-*.jsonl")), "ab") as f:
        f.write(b'{"acked_upto":1000,"ran')  # torn write: never acknowledged
    assert LeaseLog(str(log), "resume", mx8.resolve(tiny10k).manifest_hash, N).plan(500)[:2] == [(600, 1000),
                                                                                             (1000, 1500)]
    ds = mx8.LeaseDataset(tiny10k, **kw)
    second = []
    for batch in ds:
        second += batch.sample_ids.tolist()
        ds.ack(batch)
    assert sorted(second) == sorted(set(range(N)) - acked)
    assert set(first) - acked == set(range(600, 650))
    ds = mx8.LeaseDataset(tiny10k, **kw)
    assert list(ds) == [] and ds.stats()["ranges"] == 0


def test_mismatched_log_is_refused(tiny10k, tmp_path):
    log = tmp_path / "log"
    w = LeaseLog(str(log), "job", "0" * 64, N).writer("old")
    w.record(0, 500, 500, 1, "old")
    w.close()
    ds = mx8.LeaseDataset(tiny10k, job="job", batch_size=50, decode=False, log=str(log))
    with pytest.raises(mx8.LeaseLogMismatchError) as e:
        iter(ds)
    msg = str(e.value)
    assert "0" * 64 in msg and mx8.resolve(tiny10k).manifest_hash in msg and str(log) in msg
    assert isinstance(e.value, mx8.SnapshotMismatchError)
    # Another job name in the same log is refused too.
    w = LeaseLog(str(tmp_path / "log2"), "other-job", mx8.resolve(tiny10k).manifest_hash, N).writer("x")
    w.record(0, 500, 500, 1, "x")
    w.close()
    with pytest.raises(mx8.LeaseLogMismatchError, match="other-job"):
        iter(mx8.LeaseDataset(tiny10k, job="job", batch_size=50, decode=False, log=str(tmp_path / "log2")))


def test_options_and_environment(tiny10k, monkeypatch):
    with pytest.raises(ValueError, match="job"):
        mx8.LeaseDataset(tiny10k, batch_size=10)
    with pytest.raises(ValueError, match="shuffle"):
        mx8.LeaseDataset(tiny10k, job="j", batch_size=10, shuffle=True)
    with pytest.raises(ValueError, match="world_size"):
        mx8.LeaseDataset(tiny10k, job="j", batch_size=10, world_size=2)
    mx8.LeaseDataset(tiny10k, job="j", batch_size=10, world_size=1, rank=0)  # the defaults are allowed
    with pytest.raises(ValueError, match="crop"):  # the reading options are validated as mx8.Dataset's
        mx8.LeaseDataset(tiny10k, job="j", batch_size=10, size=8, crop="diagonal")
    monkeypatch.setenv("MX8_LEASE_JOB", "envjob")
    monkeypatch.setenv("MX8_LEASE_RANGE", "300")
    monkeypatch.setenv("MX8_LEASE_TIMEOUT_S", "7.5")
    monkeypatch.setenv("MX8_LEASE_AUTO_ACK", "1")
    ds = mx8.LeaseDataset(tiny10k, batch_size=100, size=8)
    assert (ds.job, ds.range_size, ds.lease_timeout_s, ds.auto_ack) == ("envjob", 300, 7.5, True)
    n = 0
    for batch in ds:
        assert batch.images.shape[1:] == (3, 8, 8)
        info = ds.lease_info(batch)
        assert info.range_end - info.range_start <= 300 and info.batch_end - info.batch_start == len(batch.sample_ids)
        n += len(batch.sample_ids)
    st = ds.stats()
    assert n == N and st["leases_completed"] == st["ranges"] == 34 and st["samples_acked"] == N
    assert st["images"] == N


def test_dataset_mode_lease_dispatches(tiny10k, monkeypatch):
    """mx8.Dataset(mode="lease") (or MX8_MODE=lease, for launchers) is a LeaseDataset; a plain
    Dataset still pickles back as itself under MX8_MODE=lease."""
    import pickle
    ds = mx8.Dataset(tiny10k, mode="lease", job="dispatch", batch_size=500, decode=False, auto_ack=True)
    assert isinstance(ds, mx8.LeaseDataset)
    assert sum(len(b.sample_ids) for b in ds) == N
    with pytest.raises(ValueError, match="mode"):
        mx8.Dataset(tiny10k, mode="elastic", batch_size=10)
    plain = mx8.Dataset(tiny10k, batch_size=10, decode=False)
    monkeypatch.setenv("MX8_MODE", "lease")
    monkeypatch.setenv("MX8_LEASE_JOB", "envjob")
    assert isinstance(mx8.Dataset(tiny10k, batch_size=10, decode=False), mx8.LeaseDataset)
    assert type(pickle.loads(pickle.dumps(plain))) is mx8.Dataset
    assert type(mx8.Dataset(tiny10k, mode="train", batch_size=10, decode=False)) is mx8.Dataset


def test_torchrun_workers_share_the_agent_store(tiny10k, tmp_path):
    """Under torchrun with no store named, the workers coordinate through the agent's c10d
    store: together they deliver every sample exactly once (nobody died)."""
    import socket
    import sys
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--nnodes=1",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=mx8-lease-test",
           "--monitor-interval=0.5", str(Path(__file__).with_name("lease_worker.py")), tiny10k,
           str(tmp_path / "rank{rank}.txt"), "--job", "torchrun", "--range-size", "1000", "--batch-size", "100"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for k in ("MX8_LEASE_STORE", "MX8_LEASE_STORE_HOST"):
        env.pop(k, None)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    recs = [Record(tmp_path / f"rank{r}.txt") for r in range(2)]
    assert all(r.ended for r in recs)
    assert all(r.stats["store"].startswith("torchrun agent") for r in recs), [r.stats["store"] for r in recs]
    ids = [i for r in recs for b in r.delivered for i in b]
    assert sorted(ids) == list(range(N))


# -- accounting, mismatches, DataLoader ------------------------------------------------------


def _die(ds) -> None:
    """The worker stops heartbeating and never speaks again: to the others it has died."""
    ds._it.coord._hb_stop.set()


def test_duplicates_are_exact_after_two_deaths_and_a_graceful_leave(tiny10k, store):
    """One range of N samples: A delivers 3 batches and acknowledges 1, then dies; B takes the
    range over (re-delivering 2 batches), delivers 1 more and dies unacknowledged; C takes it
    over and drains it. Each re-delivery is counted once, by whoever made it. Then a graceful
    leave: D delivers 3 and acknowledges 1 of a fresh job, closes, and E counts the 2 batches
    it re-delivers."""
    kw = dict(store=f"127.0.0.1:{store.port}", batch_size=50, range_size=N, decode=False, lease_timeout_s=0.5,
              prefetch_leases=0)
    a = mx8.LeaseDataset(tiny10k, job="dups", **kw)
    it = iter(a)
    got = [next(it) for _ in range(3)]
    a.ack(got[0])
    _die(a)
    b = mx8.LeaseDataset(tiny10k, job="dups", **kw)
    it = iter(b)
    again = [next(it).sample_ids.tolist() for _ in range(3)]
    assert again[0][0] == 50 and again[2][-1] == 199
    assert b.stats()["duplicates"] == 100 and b.stats()["leases_reclaimed"] == 1
    _die(b)
    c = mx8.LeaseDataset(tiny10k, job="dups", **kw)
    ids = []
    for batch in c:
        ids += batch.sample_ids.tolist()
        c.ack(batch)
    assert ids == list(range(50, N))
    assert c.stats()["duplicates"] == 150  # [50, 200): delivered before by A or B, unacknowledged
    # Actual extra deliveries: [50, 150) three times, [150, 200) twice: 2*100 + 50 = 250 = 100 + 150.

    d = mx8.LeaseDataset(tiny10k, job="dups-leave", **kw)
    it = iter(d)
    got = [next(it) for _ in range(3)]
    d.ack(got[0])
    d.close()
    e = mx8.LeaseDataset(tiny10k, job="dups-leave", **kw)
    ids = []
    for batch in e:
        ids += batch.sample_ids.tolist()
        e.ack(batch)
    assert ids == list(range(50, N)) and e.stats()["duplicates"] == 100
    assert e.stats()["leases_reclaimed"] == 0  # given back, not taken from the dead
    for ds in (a, b, c, d, e):
        ds.close()  # while the store is up


def test_workers_with_other_settings_are_refused_naming_both(tiny10k, store, tmp_path):
    """A worker whose lease timeout, range size, snapshot or fingerprint differ from the job's
    is refused with LeaseJobMismatchError naming both values, and exits cleanly (never by
    SIGABRT); so is a rerun whose log was written with another fingerprint."""
    kw = dict(store=f"127.0.0.1:{store.port}", batch_size=50, decode=False)
    first = mx8.LeaseDataset(tiny10k, job="settings", lease_timeout_s=5, **kw)
    it = iter(first)
    next(it)
    for other, want in [(dict(lease_timeout_s=9), "lease_timeout_s: 5.0 in the job, 9.0 here"),
                        (dict(lease_timeout_s=5, range_size=100), "range_size: 512 in the job, 100 here"),
                        (dict(lease_timeout_s=5, fingerprint="size=48"), "fingerprint: None in the job, 'size=48'")]:
        with pytest.raises(mx8.LeaseJobMismatchError, match=want):
            iter(mx8.LeaseDataset(tiny10k, job="settings", **kw, **other))
    other_snapshot = make_tiny_dataset(tmp_path, 100)
    with pytest.raises(mx8.LeaseJobMismatchError, match="manifest_hash"):
        iter(mx8.LeaseDataset(str(other_snapshot), job="settings", lease_timeout_s=5, **kw))
    first.close()

    log = tmp_path / "log"
    ds = mx8.LeaseDataset(tiny10k, job="fp", batch_size=500, decode=False, log=str(log), fingerprint="size=32",
                          auto_ack=True)
    assert sum(len(b.sample_ids) for b in ds) == N
    r = subprocess.run([sys.executable, str(WORKER), tiny10k, str(tmp_path / "w.txt"), "--job", "fp",
                        "--log", str(log), "--fingerprint", "size=48"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    assert "LeaseLogMismatchError" in r.stderr and "'size=32'" in r.stderr and "'size=48'" in r.stderr
    assert "terminate called" not in r.stderr


def test_dataloader_workers_are_refused_clearly(tiny10k, store):
    ds = mx8.LeaseDataset(tiny10k, job="loader", store=f"127.0.0.1:{store.port}", batch_size=100, decode=False,
                          auto_ack=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    with pytest.raises(mx8.UsageError, match="LeaseDataset cannot run in DataLoader worker processes") as e:
        next(iter(loader))
    assert "num_workers=0" in str(e.value)
    assert sum(len(b.sample_ids) for b in torch.utils.data.DataLoader(ds, batch_size=None, num_workers=0)) == N
