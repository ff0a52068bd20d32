"""examples/etl_resize.py as real processes: the whole job (launcher, its store and workers)
SIGKILLed part-way and run again resumes from its lease log and leaves exactly the output of
an uninterrupted run, byte for byte: one shard per range, every sample once. And the lease
log and the ETL output on S3 (moto on 127.0.0.1)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

import mx8
from test_leases import N, tiny10k  # noqa: F401  (session fixture)

REPO = Path(__file__).resolve().parents[1]
ETL = REPO / "examples" / "etl_resize.py"


def etl(uri: str, out: str, *args: str, **kw) -> subprocess.Popen:
    cmd = [sys.executable, str(ETL), uri, out, "--job", "etl-test", "--size", "8", "--range-size", "500",
           "--batch-size", "100", "--threads", "1", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, **kw)


def worker_stats(stdout: bytes):
    return [json.loads(line[len(b"mx8-etl worker "):]) for line in stdout.splitlines()
            if line.startswith(b"mx8-etl worker ")]


def shards(out: Path):
    return sorted(p.name for p in out.glob("part-*.tar"))


def members(path: Path):
    with tarfile.open(path) as t:
        return [m.name for m in t.getmembers()]


def test_etl_kill_and_rerun_gives_exactly_the_input_set(tiny10k, tmp_path, clean_etl):  # noqa: F811
    out = tmp_path / "out"
    # Paced, so the kill lands in the middle of the job.
    p = etl(tiny10k, str(out), "--workers", "2", "--max-requests-per-s", "2500", "--lease-timeout", "2")
    deadline = time.monotonic() + 90
    while len(shards(out)) < 4:
        assert p.poll() is None, p.communicate()[1].decode()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGKILL)  # launcher, its store and both workers at once
    p.communicate()
    partial = shards(out)
    assert 4 <= len(partial) < 20, partial

    p = etl(tiny10k, str(out), "--workers", "2", "--lease-timeout", "2")
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 0, stderr.decode()[-3000:]
    rerun = worker_stats(stdout)
    assert len(rerun) == 2
    redone = sum(s["samples"] for s in rerun)
    assert redone <= N - 500 * (len(partial) - 2), "the rerun skips the ranges acknowledged before the kill"
    # The ETL acknowledges whole ranges (whole_ranges=True): a kill between a range's batch acks
    # (seen in CI: the rerun then wrote part-000002100-000002500.tar beside the complete shard)
    # leaves nothing acknowledged of it, and the rerun redoes it whole, under the same name.
    assert redone % 500 == 0 and sum(s["duplicates"] for s in rerun) == 0

    names = shards(out)
    assert names == [f"part-{s:09d}-{min(s + 500, N):09d}.tar" for s in range(0, N, 500)]
    ids = [int(Path(m).stem) for name in names for m in members(out / name)]
    assert sorted(ids) == list(range(N)), "every sample exactly once"
    assert not (out / "_tmp").exists()
    assert sorted(os.listdir(out)) == sorted(names + ["_leases"])

    assert_same_output(out, clean_etl)
    from PIL import Image
    with tarfile.open(out / names[0]) as t:
        m = t.getmembers()[0]
        assert Image.open(t.extractfile(m)).size == (8, 8)


@pytest.fixture(scope="module")
def clean_etl(tiny10k, tmp_path_factory) -> Path:  # noqa: F811
    """The output of an uninterrupted run."""
    out = tmp_path_factory.mktemp("etl-clean") / "out"
    p = etl(tiny10k, str(out), "--workers", "1")
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 0, stderr.decode()[-3000:]
    return out


def assert_same_output(out: Path, clean: Path) -> None:
    """Byte for byte what an uninterrupted run writes, and nothing else."""
    names = shards(clean)
    assert shards(out) == names == [f"part-{s:09d}-{min(s + 500, N):09d}.tar" for s in range(0, N, 500)]
    for name in names:
        assert (clean / name).read_bytes() == (out / name).read_bytes(), name
    assert sorted(os.listdir(out)) == sorted(names + ["_leases"])


ETL_FAULTS = ["ack:before_log@2", "ack:after_log@2", "ack:after_store@2", "log:mid_write@3",
              "deliver:after_store@7"]


@pytest.mark.parametrize("fault", ETL_FAULTS)
def test_etl_killed_at_each_step_of_the_ack_path_then_rerun(tiny10k, tmp_path, clean_etl, fault):  # noqa: F811
    """Both workers die at the same step of the ack path (at their second range, or in the
    middle of one), so the job stops there; the rerun leaves exactly a clean run's output."""
    out = tmp_path / "out"
    p = etl(tiny10k, str(out), "--workers", "2", "--lease-timeout", "2", env={**os.environ, "MX8_LEASE_FAULT": fault})
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 1 and b"workers exited with [-9, -9]" in stderr, stderr.decode()[-3000:]
    p = etl(tiny10k, str(out), "--workers", "2", "--lease-timeout", "2")
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 0, stderr.decode()[-3000:]
    assert_same_output(out, clean_etl)


def test_etl_one_worker_killed_the_other_finishes_and_a_rerun_changes_nothing(tiny10k, tmp_path, clean_etl):  # noqa: F811
    out = tmp_path / "out"
    p = etl(tiny10k, str(out), "--workers", "2", "--lease-timeout", "2", "--max-requests-per-s", "2500")
    deadline = time.monotonic() + 90
    while len(shards(out)) < 3:
        assert p.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    with open(f"/proc/{p.pid}/task/{p.pid}/children") as f:
        victim = int(f.read().split()[0])
    os.kill(victim, signal.SIGKILL)
    _, stderr = p.communicate(timeout=120)  # the other worker takes the dead one's range over
    assert p.returncode == 1 and b"workers exited with [-9, 0]" in stderr, stderr.decode()[-3000:]
    assert len(shards(out)) == 20
    p = etl(tiny10k, str(out), "--workers", "1")
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 0 and worker_stats(stdout)[0]["samples"] == 0, stderr.decode()[-3000:]
    assert_same_output(out, clean_etl)
    # A rerun into the same output with another size would mix 8x8 and 16x16 shards: refused.
    p = etl(tiny10k, str(out), "--workers", "1", "--size", "16")
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 1 and b"LeaseLogMismatchError" in stderr and b"size=16" in stderr, stderr.decode()[-3000:]
    assert b"terminate called" not in stderr
    assert_same_output(out, clean_etl)


def test_etl_help():
    r = subprocess.run([sys.executable, str(ETL), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--workers" in r.stdout and "part-<start>-<end>.tar" in r.stdout


# -- S3 ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto():
    from s3_server import MotoServer
    srv = MotoServer()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.minio
def test_lease_log_and_etl_output_on_s3(tiny10k, moto, monkeypatch, tmp_path):  # noqa: F811
    env = {"AWS_ENDPOINT_URL": moto.endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1", "MX8_MANIFEST_STORE": str(tmp_path / "store")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s3 = moto.boto3_client()
    s3.create_bucket(Bucket="leases")
    log = "s3://leases/jobs/a/log/"
    kw = dict(job="s3job", batch_size=100, range_size=1000, decode=False, log=log, prefetch_leases=0)
    ds = mx8.LeaseDataset(tiny10k, **kw)
    for k, batch in enumerate(ds):
        if k == 14:  # range [1000, 2000) acknowledged up to 1400
            break
        ds.ack(batch)
    ds.close()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="leases", Prefix="jobs/a/log/")["Contents"]]
    assert len(keys) == 15 and all(k.endswith(".json") for k in keys)  # a header and 14 records
    rest = []
    ds = mx8.LeaseDataset(tiny10k, **kw)
    for batch in ds:
        rest += batch.sample_ids.tolist()
        ds.ack(batch)
    assert sorted(rest) == list(range(1400, N))
    with pytest.raises(mx8.LeaseLogMismatchError):
        iter(mx8.LeaseDataset(tiny10k, **dict(kw, job="another")))

    # The ETL example writing to S3, one worker in this process's environment.
    r = subprocess.run([sys.executable, str(ETL), tiny10k, "s3://leases/out/", "--job", "etl-s3", "--size", "8",
                        "--range-size", "2500", "--batch-size", "250", "--threads", "1"],
                       capture_output=True, timeout=180, env={**os.environ, **env})
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    objs = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="leases", Prefix="out/part-")["Contents"])
    assert objs == [f"out/part-{s:09d}-{s + 2500:09d}.tar" for s in range(0, N, 2500)]
    body = s3.get_object(Bucket="leases", Key=objs[0])["Body"].read()
    import io
    with tarfile.open(fileobj=io.BytesIO(body)) as t:
        assert sorted(int(Path(m.name).stem) for m in t.getmembers()) == list(range(2500))
