"""FleetRunner and BoardConnection against real sshd boards on loopback (fixtures_probes.sshd_boards)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fixtures_probes import host_key_line, make_onnx, write_devices

from probes.fleet import BoardConnection, BoardError, FleetRunner, ModelTask, SplitTask, SweepConfig, sha256_file
from probes.protocol import ErrorCode, MeasureProtocol
from registry.config import load_devices
from registry.store import Store

pytest_plugins = ["fixtures_probes"]
pytestmark = pytest.mark.sshd

FAST = MeasureProtocol(warmup_runs=1, warmup_s=0.0, repeat=2, number=3, min_repeat_ms=5.0)


@pytest.fixture
def env(tmp_path, monkeypatch, sshd_boards, client_key):
    monkeypatch.setenv("EDGEATLAS_HOME", str(tmp_path / "home"))
    boards = sshd_boards["boards"]
    remote = str(tmp_path / "remote dir;x")  # the remote cache path itself has a space and a ';'
    spec = [
        {"name": boards["a"].name, "port": boards["a"].port},
        {"name": boards["b"].name, "port": boards["b"].port, "role": "edge"},
        {"name": boards["noruntime"].name, "port": boards["noruntime"].port},
        {"name": "unreachable", "port": 1},
    ]
    devices = write_devices(tmp_path / "devices.toml", spec, client_key, sshd_boards["known_hosts"], remote)
    fleet = load_devices(devices)
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    yield {"fleet": fleet, "store": store, "boards": boards, "tmp": tmp_path, "known": sshd_boards["known_hosts"]}
    store.dispose()


def task(path: Path) -> ModelTask:
    return ModelTask(variant_id=path.stem, artifact=path, sha256=sha256_file(path))


def test_commands_with_shell_metacharacters_run_verbatim(env):
    nasty = "a b;$(touch /tmp/pwned)`id`'\"|&>x"
    with BoardConnection.from_spec(env["fleet"].board(env["boards"]["a"].name)) as c:
        r = c.run(["printf", "%s", nasty])
        assert r.rc == 0 and r.stdout == nasty
        assert not Path("/tmp/pwned").exists()


def test_unknown_host_key_is_refused_with_how_to_trust(env, tmp_path):
    b = env["fleet"].board(env["boards"]["a"].name)
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    conn = BoardConnection(b.name, b.host, b.port, b.user, b.key_file, empty, remote_dir=b.remote_dir)
    with pytest.raises(BoardError) as e:
        conn.run(["true"])
    assert e.value.code == ErrorCode.HOST_KEY_ERROR
    assert "ssh-keyscan" in e.value.hint and "--trust-new-hosts" in e.value.hint
    # trust on first use records exactly the board's key, then strict checking passes
    tofu = BoardConnection(
        b.name, b.host, b.port, b.user, b.key_file, empty, remote_dir=b.remote_dir, trust_new_hosts=True
    )
    assert tofu.run(["true"]).rc == 0
    tofu.close()
    assert empty.read_text().split()[1:] == host_key_line(env["boards"]["a"]).split()[1:]
    # a changed key is refused even with trust_new_hosts
    other = host_key_line(env["boards"]["b"]).split()
    empty.write_text(f"[127.0.0.1]:{b.port} {other[1]} {other[2]}\n")
    changed = BoardConnection(
        b.name, b.host, b.port, b.user, b.key_file, empty, remote_dir=b.remote_dir, trust_new_hosts=True
    )
    with pytest.raises(BoardError, match="differs") as e:
        changed.run(["true"])
    assert e.value.code == ErrorCode.HOST_KEY_ERROR


def test_wrong_key_and_unreachable(env, tmp_path):
    import subprocess

    wrong = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    b = env["fleet"].board(env["boards"]["a"].name)
    with pytest.raises(BoardError) as e:
        BoardConnection(b.name, b.host, b.port, b.user, wrong, b.known_hosts, remote_dir=b.remote_dir).run(["true"])
    assert e.value.code == ErrorCode.AUTH_ERROR and "authorized_keys" in e.value.hint
    u = env["fleet"].board("unreachable")
    with pytest.raises(BoardError, match="connection refused") as e:
        BoardConnection.from_spec(u).run(["true"])
    assert e.value.code == ErrorCode.CONNECTION_ERROR and "fleet up" in e.value.hint


def test_sweep_errors_are_per_job_and_a_rerun_uploads_nothing(env, tiny_models, tmp_path):
    fleet, store, boards = env["fleet"], env["store"], env["boards"]
    bad = tmp_path / "broken model.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    tasks = [task(tiny_models["full"]), task(bad)]
    names = [boards["a"].name, boards["b"].name, boards["noruntime"].name, "unreachable"]
    cfg = SweepConfig(protocol=FAST, timeout_s=60, retries=1, backoff_s=0.1, connect_timeout=3)
    runner = FleetRunner(store, fleet, cfg, progress=False)
    rep = runner.run(names, tasks)
    runner.close()
    by = {(o.board, o.variant_id): o for o in rep.outcomes}
    for n in names[:2]:
        assert by[(n, "tiny full")].status == "ok", by[(n, "tiny full")]
        assert by[(n, "tiny full")].latency_ms > 0
        assert by[(n, "broken model")].error_code == "MODEL_LOAD_ERROR"
    assert by[(boards["noruntime"].name, "tiny full")].error_code == "RUNTIME_MISSING"
    assert by[("unreachable", "tiny full")].error_code == "CONNECTION_ERROR"
    assert rep.done == 2 and rep.failed == 6 and rep.uploaded_bytes > 0
    ok = store.list_measurements(board=boards["a"].name)
    assert len(ok) == 1 and ok[0].stats["n"] >= 6 and ok[0].energy_source == "estimated:power-model-active_w"
    assert ok[0].system["system_before"]["loadavg"] and ok[0].device_class == "test-cpu"
    # rerun: the ok jobs are skipped, the failed ones retried; nothing is uploaded again
    runner2 = FleetRunner(store, fleet, cfg, progress=False)
    rep2 = runner2.run(names[:2], tasks)
    runner2.close()
    assert rep2.skipped == 2 and rep2.failed == 2 and rep2.uploaded_bytes == 0
    assert len(store.list_measurements(status=None)) == 8  # one row per key, failures replaced


def test_job_past_its_timeout_is_a_per_job_error(env, tiny_models):
    slow = MeasureProtocol(warmup_runs=1, warmup_s=0.0, repeat=100, number=3, min_repeat_ms=100.0)
    cfg = SweepConfig(protocol=slow, timeout_s=1.0, retries=0)
    runner = FleetRunner(env["store"], env["fleet"], cfg, progress=False)
    rep = runner.run([env["boards"]["a"].name], [task(tiny_models["full"])])
    runner.close()
    assert rep.outcomes[0].error_code == "TIMEOUT"


def test_board_dies_mid_sweep_then_returns(env, tmp_path):
    """Kill a board's sshd (and its sessions) mid-sweep, restart it: failed jobs are retried,
    a rerun completes, every key has exactly one ok row."""
    fleet, store, boards = env["fleet"], env["store"], env["boards"]
    victim = boards["b"]
    models = [task(make_onnx(tmp_path / f"m{i}.onnx", channels=4 + i)) for i in range(6)]
    cfg = SweepConfig(protocol=FAST, timeout_s=60, retries=2, backoff_s=0.4, connect_timeout=3)
    seen = threading.Event()

    def on_event(status, outcome):
        if outcome.board == victim.name and not seen.is_set():
            seen.set()
            victim.die()
            threading.Timer(1.0, victim.start).start()

    names = [boards["a"].name, victim.name]
    runner = FleetRunner(store, fleet, cfg, progress=False, on_event=on_event)
    rep = runner.run(names, models)
    runner.close()
    assert seen.is_set()
    vic = [o for o in rep.outcomes if o.board == victim.name]
    assert any(o.attempts > 1 for o in vic), vic  # the dead board's jobs were retried
    assert all(o.status == "ok" for o in rep.outcomes if o.board == boards["a"].name)  # the other board went on
    deadline = time.monotonic() + 15
    while victim.proc is None and time.monotonic() < deadline:
        time.sleep(0.1)
    runner = FleetRunner(store, fleet, cfg, progress=False)
    rep2 = runner.run(names, models)
    runner.close()
    assert rep2.failed == 0 and rep2.done + rep2.skipped == 12
    rows = store.list_measurements(status=None)
    assert len(rows) == 12 and len({r.key for r in rows}) == 12 and all(r.status == "ok" for r in rows)


def test_split_head_on_device_tail_on_edge(env, tiny_models):
    fleet, store, boards = env["fleet"], env["store"], env["boards"]
    head, tail = tiny_models["head"], tiny_models["tail"]
    st = SplitTask("tiny", 7, head, sha256_file(head), tail, sha256_file(tail), boards["b"].name, ("fp32", "int8"))
    runner = FleetRunner(store, fleet, SweepConfig(protocol=FAST, retries=0), progress=False)
    rep = runner.run([boards["a"].name], splits=[st])
    runner.close()
    assert rep.done == 2, rep.outcomes
    rows = {r.config["codec"]: r for r in store.list_measurements(board=boards["a"].name)}
    for r in rows.values():
        s = r.stats
        parts = ("head_ms", "encode_ms", "transfer_ms", "decode_ms", "tail_ms")
        assert all(s[p] > 0 for p in parts) and s["e2e_ms"] == pytest.approx(sum(s[p] for p in parts))
        assert r.latency_ms == s["e2e_ms"] and r.split_id == 7 and r.config["edge"] == boards["b"].name
        assert r.energy_source.startswith("estimated:")
    assert rows["fp32"].stats["payload_bytes"] > 3 * rows["int8"].stats["payload_bytes"]
    assert list((env["tmp"] / "remote dir;x" / "jobs").iterdir()) == []  # payloads cleaned up on both ends


def test_persistent_agent_serves_jobs_and_survives_its_death(env, tiny_models):
    """One `agent.py --serve` per connection runs every job; if it dies, the next job still runs
    (a fresh server, or one-shot), and a one-shot-only connection gives the same result shape."""
    from probes.protocol import Job

    b = env["fleet"].board(env["boards"]["a"].name)
    with BoardConnection.from_spec(b) as c:
        c.persistent = True
        remote = c.ensure_artifact(tiny_models["full"], sha256_file(tiny_models["full"]))
        r1 = c.run_agent(Job(job_id="p1", model=remote, protocol=FAST))
        pid = c._server.pid
        r2 = c.run_agent(Job(job_id="p2", model=remote, protocol=FAST))
        assert r1.ok and r2.ok and c.served_jobs == 2 and c._server.pid == pid
        assert r2.raw["peak_rss_scope"] == "job"
        c.run(["kill", "-9", str(pid)])
        r3 = c.run_agent(Job(job_id="p3", model=remote, protocol=FAST))
        assert r3.ok and r3.job_id == "p3", r3.error_message
        c.persistent = False
        r4 = c.run_agent(Job(job_id="p4", model=remote, protocol=FAST))
        assert r4.ok and set(r4.stats) == set(r1.stats)


def test_clock_offset_echo_and_its_date_fallback(env):
    """The loopback board shares our clock: the echo reading is ~0 within its round trip. A board
    whose interpreter does not exist falls back to one `date` command, and says so."""
    b = env["fleet"].board(env["boards"]["a"].name)
    with BoardConnection.from_spec(b) as c:
        clock = c.clock_offset()
        assert clock["method"] == "echo:min-rtt-of-8", clock
        assert abs(clock["offset_s"]) <= clock["uncertainty_s"] + 0.005 and clock["uncertainty_s"] < 0.05, clock
        c.python = "/nonexistent/python3"
        clock = c.clock_offset(timeout=10)
        assert clock["method"] == "date" and abs(clock["offset_s"]) < 1.0, clock
