"""Two controllers on one PostgreSQL (started by the test session), three real sshd boards.

A sweep (model jobs on two device boards, and split jobs whose tail runs on the edge board) is
enqueued; two `edgeatlas bench worker` processes work it; one is SIGKILLed while it holds a job.
Its lease expires, the survivor releases and re-runs that job, and every job completes exactly
once: one ok measurement per key, nothing extra, every job done, each by exactly one worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures_probes import make_onnx
from test_queue_sqlite import sweep_tasks

from probes.fleet import ModelTask, SweepConfig, sha256_file
from probes.protocol import MeasureProtocol
from probes.queue import enqueue
from registry.config import load_devices
from registry.store import Store

pytest_plugins = ["fixtures_probes"]
pytestmark = [pytest.mark.sshd, pytest.mark.postgres]

REPO = Path(__file__).resolve().parents[1]
JOB = MeasureProtocol(warmup_runs=1, warmup_s=0.0, repeat=3, number=3, min_repeat_ms=100.0)
LEASE_S = 3
N_MODELS = 8
#: more model jobs on A's board only, so A is still working when B is up and has taken a job (on a
#: loaded 2-core CI machine a worker process takes seconds to start; with A's share of the sweep
#: alone, A could finish everything first and exit)
N_EXTRA = 12


def start_worker(url: str, devices: Path, home: Path, log: Path, boards: tuple[str, ...] = ()) -> subprocess.Popen:
    argv = [sys.executable, "-m", "registry.cli", "bench", "worker", "--db", url, "--devices", str(devices)]
    argv += [a for b in boards for a in ("--boards", b)]
    argv += ["--lease-s", str(LEASE_S), "--poll-s", "0.2", "--retries", "1", "--json"]
    env = {**os.environ, "EDGEATLAS_HOME": str(home)}
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=open(log, "wb"))  # noqa: SIM115


def owned_by(job, proc: subprocess.Popen) -> bool:
    return (job.lease_owner or "").split(":")[2:3] == [str(proc.pid)]


def test_two_workers_one_killed_every_job_completes_exactly_once(pg_url, tmp_path, monkeypatch, queue_boards):
    home = tmp_path / "home"
    monkeypatch.setenv("EDGEATLAS_HOME", str(home))
    devices = queue_boards["devices"](tmp_path / "devices.toml", str(tmp_path / "remote"))
    fleet = load_devices(devices)
    store = Store.open(pg_url)
    models, splits = sweep_tasks(tmp_path, n_models=N_MODELS)
    boards = [b.name for b in fleet.devices()]
    enq = enqueue(store, fleet, SweepConfig(protocol=JOB), boards, models, splits)
    extra = []
    for i in range(N_EXTRA):
        m = make_onnx(tmp_path / f"q extra {i}.onnx", channels=24 + 2 * i)
        extra.append(ModelTask(m.stem, m, sha256_file(m)))
    enq_a = enqueue(store, fleet, SweepConfig(protocol=JOB), boards[:1], extra, [])
    n_jobs = 2 * (N_MODELS + 1) + N_EXTRA
    assert enq.queued + enq_a.queued == n_jobs
    keys = {k for j in store.list_jobs() for k in j.payload["keys"].values()}
    assert len(keys) == 2 * (N_MODELS + 3) + N_EXTRA

    # A works one board, B all of them. A board runs one job at a time across workers, and a worker
    # re-claims the board it just freed at once, while the others poll: started together, one
    # worker could take every board and the other none. So A starts first and holds its board;
    # B then takes the other, and is the one that can re-run A's orphans after the kill.
    a = start_worker(pg_url, devices, home, tmp_path / "a.log", boards=(boards[0],))
    b = None

    def wait_for(cond, what: str) -> None:
        deadline = time.monotonic() + 60
        while not cond(store.list_jobs()):
            for p, name in ((a, "a"), (b, "b")):
                assert p is None or p.poll() is None, (
                    f"worker {name} exited while waiting for {what}: " + (tmp_path / f"{name}.log").read_text()
                )
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.01)

    try:
        wait_for(lambda jobs: any(owned_by(j, a) for j in jobs if j.status == "claimed"), "A to claim a job")
        b = start_worker(pg_url, devices, home, tmp_path / "b.log")
        # both workers hold jobs; kill A while it holds one (and after B has taken one too)
        wait_for(
            lambda jobs: (
                any(owned_by(j, b) for j in jobs) and any(owned_by(j, a) for j in jobs if j.status == "claimed")
            ),
            "both workers to hold a job",
        )
        os.kill(a.pid, signal.SIGKILL)
        a.wait(10)
        orphans = [j for j in store.list_jobs(status="claimed") if owned_by(j, a)]
        assert orphans, "worker A was killed between two jobs"
        out, _ = b.communicate(timeout=120)
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)
    assert b.returncode == 0, (tmp_path / "b.log").read_text()
    summary = json.loads(out)
    assert summary["released"] >= len(orphans) and summary["lost"] == 0 and summary["failed"] == 0, summary

    jobs = store.list_jobs()
    assert len(jobs) == n_jobs and all(j.status == "done" for j in jobs), [(j.id, j.status, j.error) for j in jobs]
    # each job completed by exactly one worker: B's completions and A's (before it died) partition the jobs
    by_b = summary["completed_jobs"]
    by_a = [j.id for j in jobs if owned_by(j, a)]
    assert len(by_b) == len(set(by_b)) and not set(by_a) & set(by_b)
    assert sorted(by_a + by_b) == sorted(j.id for j in jobs)
    for o in orphans:  # the killed worker's jobs were re-claimed after the lease expired and run by B
        j = next(x for x in jobs if x.id == o.id)
        assert owned_by(j, b) and j.attempts == 2
    # one ok measurement per key, and nothing else
    rows = store.list_measurements(status=None)
    assert sorted(r.key for r in rows) == sorted(keys) and all(r.status == "ok" for r in rows)
    by_id = {r.id: r for r in rows}
    assert all(j.measurement_id in by_id for j in jobs)
    split_rows = [r for r in rows if r.config["kind"] == "split"]
    assert len(split_rows) == 6 and {r.config["codec"] for r in split_rows} == {"fp16", "int8", "pca"}
    assert all(r.stats["tail_ms"] > 0 and r.config["edge"] == "q-edge" for r in split_rows)
    assert [r.status for r in store.list_runs()] == ["done", "done"]
    store.dispose()
