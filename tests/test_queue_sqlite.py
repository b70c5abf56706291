"""The sweep job queue on real SQLite (and the lease rules on PostgreSQL too) with real sshd boards.

`bench run` enqueues and works the queue in-process; a re-enqueue adds nothing; a worker that
lost its lease writes nothing; transient failures are re-queued until the attempts run out.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fixtures_probes import make_onnx

from probes.fleet import ModelTask, SplitTask, SweepConfig, sha256_file
from probes.protocol import MeasureProtocol
from probes.queue import QueueWorker, commit_job, enqueue, split_job_key
from registry.config import load_devices
from registry.store import Store

pytest_plugins = ["fixtures_probes"]
pytestmark = pytest.mark.sshd

FAST = MeasureProtocol(warmup_runs=1, warmup_s=0.0, repeat=2, number=3, min_repeat_ms=5.0)


def sweep_tasks(d: Path, n_models: int = 3, edge: str = "q-edge") -> tuple[list[ModelTask], list[SplitTask]]:
    """Tiny real ONNX models, and one split (head 8 channels -> tail) with a pca basis (k = 4)."""
    models = []
    for i in range(n_models):
        m = make_onnx(d / f"q model {i}.onnx", channels=4 + 2 * i)
        models.append(ModelTask(m.stem, m, sha256_file(m)))
    head, tail = make_onnx(d / "q_head.onnx", part="head"), make_onnx(d / "q_tail.onnx", part="tail")
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    basis = d / "q basis.npz"
    np.savez(basis, components=q[:4].astype(np.float32), mean=np.zeros(8, np.float32))
    split = SplitTask(
        "q-split", 11, head, sha256_file(head), tail, sha256_file(tail), edge, ("fp16", "int8", "pca"),
        pca_basis=basis, pca_basis_sha256=sha256_file(basis),
    )  # fmt: skip
    return models, [split]


@pytest.fixture
def qenv(tmp_path, monkeypatch, queue_boards):
    monkeypatch.setenv("EDGEATLAS_HOME", str(tmp_path / "home"))
    devices = queue_boards["devices"](tmp_path / "devices.toml", str(tmp_path / "remote"))
    fleet = load_devices(devices)
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    store = Store.open(url)
    models, splits = sweep_tasks(tmp_path)
    yield {"fleet": fleet, "store": store, "url": url, "devices": devices, "models": models, "splits": splits}
    store.dispose()


def test_enqueue_is_idempotent_and_one_worker_runs_everything_once(qenv):
    store, fleet = qenv["store"], qenv["fleet"]
    boards = [b.name for b in fleet.devices()]
    cfg = SweepConfig(protocol=FAST, retries=0)
    first = enqueue(store, fleet, cfg, boards, qenv["models"], qenv["splits"])
    assert first.jobs == first.queued == 2 * (3 + 1) and not first.skipped
    again = enqueue(store, fleet, cfg, boards, qenv["models"], qenv["splits"])
    assert again.queued == 0 and len(again.keys) == 8  # queued already: nothing added
    assert store.queue_counts() == {"queued": 8}

    rep = QueueWorker(store, fleet, base=cfg, lease_s=10).run()
    s = rep.summary()
    assert s["completed"] == 8 and s["claimed"] == 8 and s["lost"] == 0 and s["failed"] == 0, rep.outcomes
    assert store.queue_counts() == {"done": 8}
    rows = store.list_measurements(status=None)
    assert len(rows) == 2 * (3 + 3) == len({r.key for r in rows}) and all(r.status == "ok" for r in rows)
    jobs = store.list_jobs()
    by_id = {r.id: r for r in rows}
    assert all(j.measurement_id in by_id and by_id[j.measurement_id].board == j.board for j in jobs)
    # the split job ran head on the device, payload over the link, tail on the edge; pca with its basis
    split_rows = [r for r in rows if r.config.get("kind") == "split"]
    assert {r.config["codec"] for r in split_rows} == {"fp16", "int8", "pca"}
    for r in split_rows:
        assert r.split_id == 11 and r.config["edge"] == "q-edge" and r.stats["tail_ms"] > 0
    pca = next(r for r in split_rows if r.config["codec"] == "pca" and r.board == boards[0])
    fp16 = next(r for r in split_rows if r.config["codec"] == "fp16" and r.board == boards[0])
    assert pca.config["basis_sha256"] == qenv["splits"][0].pca_basis_sha256
    assert pca.stats["payload_bytes"] < 0.6 * fp16.stats["payload_bytes"]  # k=4 of 8 channels, fp16
    # a finished sweep re-enqueued adds nothing; --force queues it all again
    after = enqueue(store, fleet, cfg, boards, qenv["models"], qenv["splits"])
    assert after.queued == 0 and len(after.skipped) == 12 and after.run_id is None
    forced = enqueue(store, fleet, SweepConfig(protocol=FAST, force=True), boards, qenv["models"], qenv["splits"])
    assert forced.queued == 8
    runs = store.list_runs()
    assert runs[0].status == "done"


def test_a_worker_that_lost_its_lease_writes_nothing(any_db_url, tmp_path, monkeypatch):
    """The exactly-once rule, on SQLite and PostgreSQL: only the lease holder completes a job."""
    monkeypatch.setenv("EDGEATLAS_HOME", str(tmp_path / "home"))
    store = Store.open(any_db_url)
    key = "a" * 64
    store.enqueue_jobs(None, [(key, {"board": "b1", "keys": {"": key}})])
    slow = store.claim_job("worker-x", lease_s=0.2)
    assert slow is not None and slow.lease_owner == "worker-x"
    time.sleep(0.4)
    assert store.release_expired() == 1
    fast = store.claim_job("worker-y", lease_s=30)
    assert fast.id == slow.id and fast.attempts == 2
    row = dict(key=key, board="b1", variant_id="v", runtime="onnxruntime", config={}, status="ok", latency_ms=1.0)
    assert commit_job(store, slow.id, "worker-x", [{**row, "latency_ms": 99.0}], "done", None, False) is False
    assert store.list_measurements(status=None) == []  # nothing written by the loser
    assert commit_job(store, fast.id, "worker-y", [row], "done", None, False) is True
    assert commit_job(store, fast.id, "worker-y", [row], "done", None, False) is False  # completes once
    (m,) = store.list_measurements()
    (j,) = store.list_jobs()
    assert m.latency_ms == 1.0 and j.status == "done" and j.measurement_id == m.id and j.lease_owner == "worker-y"
    # an energy value without provenance is refused before anything is written
    store.enqueue_jobs(None, [("b" * 64, {"board": "b1"})])
    j2 = store.claim_job("worker-y")
    bad = {**row, "key": "b" * 64, "energy_mj": 1.0, "energy_source": "guess"}
    with pytest.raises(Exception, match="energy"):
        commit_job(store, j2.id, "worker-y", [bad], "done", None, False)
    assert store.list_jobs(status="claimed")[0].id == j2.id
    store.dispose()


def test_transient_failures_are_requeued_until_attempts_run_out(qenv, tmp_path, queue_boards, client_key):
    from fixtures_probes import write_devices

    spec = [
        {"name": "gone", "port": 1},
        {"name": "q-edge", "port": queue_boards["boards"]["edge"].port, "role": "edge"},
    ]
    devices = write_devices(tmp_path / "gone.toml", spec, client_key, queue_boards["known_hosts"], str(tmp_path / "r"))
    fleet = load_devices(devices)
    store = qenv["store"]
    cfg = SweepConfig(protocol=FAST, retries=0, connect_timeout=2)
    enq = enqueue(store, fleet, cfg, ["gone"], qenv["models"][:1])
    assert enq.queued == 1
    rep = QueueWorker(store, fleet, base=cfg, lease_s=10, max_attempts=2, poll_s=0.05).run()
    assert rep.requeued == 1 and rep.completed == 1, rep.summary()
    (job,) = store.list_jobs()
    assert job.status == "failed" and job.attempts == 2 and "CONNECTION_ERROR" in job.error
    (m,) = store.list_measurements(status=None)
    assert m.status == "error" and m.error_code == "CONNECTION_ERROR" and "connection refused" in m.error_message
    assert store.list_runs()[0].status == "partial"
    # re-enqueuing puts a failed job back in the queue
    assert enqueue(store, fleet, cfg, ["gone"], qenv["models"][:1]).queued == 1


def test_cli_enqueue_only_then_worker(qenv):
    """`bench run --enqueue-only` then `bench worker --json` on SQLite (the store holds one variant + split)."""
    from registry.cli import main

    store, url, dev = qenv["store"], qenv["url"], str(qenv["devices"])
    m = qenv["models"][0]
    store.add_variant(
        m.sha256, "tiny", "onnx", str(m.artifact), 1000, 1000, m.artifact.stat().st_size, (1, 3, 32, 32), "fp32"
    )
    sp = qenv["splits"][0]
    store.add_split(
        m.sha256, "relu0", 2, str(sp.head), sp.head_sha256, str(sp.tail), sp.tail_sha256, (1, 8, 32, 32), "float32",
        32768,
    )  # fmt: skip
    r = CliRunner()
    fast = ["--repeat", "2", "--number", "3", "--min-repeat-ms", "5", "--warmup-s", "0"]
    base = ["--devices", dev, "--db", url]
    out = r.invoke(
        main, ["bench", "run", *base, "--grid", "--splits", "--codecs", "fp16", *fast, "--enqueue-only", "--json"]
    )
    assert out.exit_code == 0, out.output
    q = json.loads(out.output)
    assert q["queued"] == 4 and q["skipped"] == 0  # 2 boards x (model + split)
    w = r.invoke(main, ["bench", "worker", *base, "--once", "--json"])
    assert w.exit_code == 0, w.output
    one = json.loads(w.output)
    assert one["completed"] == 1 and len(one["completed_jobs"]) == 1
    w = r.invoke(main, ["bench", "worker", *base, "--json", "--lease-s", "10"])
    rest = json.loads(w.output)
    assert rest["completed"] == 3 and rest["failed"] == 0 and rest["lost"] == 0, w.output
    assert store.queue_counts() == {"done": 4}
    again = json.loads(
        r.invoke(main, ["bench", "run", *base, "--grid", "--splits", "--codecs", "fp16", *fast, "--json"]).output
    )
    assert again["queued"] == 0 and again["skipped"] == 4 and again["done"] == 0
    splits = [j for j in store.list_jobs() if j.payload["kind"] == "split"]
    assert len(splits) == 2 and all(j.key == split_job_key(j.payload["keys"]) for j in splits)


def test_max_splits_keeps_evenly_spaced_interior_cuts():
    from probes.sweep import pick_splits
    from registry.store.records import Split

    def split(i: int, interior: bool = True) -> Split:
        h = f"h{i}.onnx" if interior else None
        return Split(i, "v", f"cut{i}", i, h, None, f"t{i}.onnx" if interior else None, None, (1, 8), "float32", 32)

    cuts = [split(i) for i in (5, 1, 3, 2, 4, 6, 7)] + [split(0, interior=False)]
    assert [s.position for s in pick_splits(cuts, None)] == [1, 2, 3, 4, 5, 6, 7]
    assert [s.position for s in pick_splits(cuts, 3)] == [1, 4, 7]
    assert [s.position for s in pick_splits(cuts, 2)] == [1, 7]
    assert [s.position for s in pick_splits(cuts, 1)] == [4]
    assert pick_splits(cuts, 0) == [] and len(pick_splits(cuts, 10)) == 7
