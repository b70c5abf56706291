"""Emulated boards: real sshd in real cgroup-v1 groups behind the user-space link proxy."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fixtures_probes import free_port, write_devices

from probes import emulate
from probes.fleet import BoardConnection, check_fleet
from registry.config import load_devices
from registry.errors import EdgeatlasError, ErrorCode
from registry.store import Store

pytest_plugins = ["fixtures_probes"]
pytestmark = pytest.mark.sshd

CAN_CGROUP = os.geteuid() == 0 and os.access("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", os.W_OK)


def test_cgroup_check_names_what_is_missing(tmp_path):
    (tmp_path / "cpu").mkdir()
    with pytest.raises(EdgeatlasError) as e:
        emulate.check_cgroup_v1(tmp_path)  # a stand-in /sys/fs/cgroup without controllers
    assert e.value.code == ErrorCode.FLEET_ERROR and "cpu.cfs_quota_us" in e.value.message
    assert "root" in e.value.hint


@pytest.mark.parametrize("share", [0.1, 0.25, 0.4, 0.5, 0.6, 0.9])
def test_cfs_quota_is_at_least_two_and_a_half_ticks_and_keeps_the_share(share):
    # HZ=250 enforces CFS bandwidth on 4 ms ticks: a shorter quota over-throttles and goes bimodal
    period, quota = emulate.cfs_params(share)
    assert quota >= emulate.MIN_QUOTA_US == 10_000
    assert quota / period == pytest.approx(share, rel=0.01)
    assert emulate.cfs_params(2.0) == (100_000, 200_000)  # >= 1 core: the kernel's default period


@pytest.mark.skipif(not CAN_CGROUP or not os.path.exists(emulate.SSHD), reason="needs root, cgroup v1 and sshd")
def test_fleet_up_status_check_down(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEATLAS_HOME", str(tmp_path / "home"))
    port = free_port()
    devices = write_devices(
        tmp_path / "devices.toml",
        [
            {
                "name": "emu 1;$(x)",
                "port": port,
                "emulate": '{ cpu_quota = 0.3, cpus = "0", link_mbit = 8, rtt_ms = 40 }',
            }
        ],
        "{data_dir}/fleet/id_ed25519",
        "{data_dir}/fleet/known_hosts",
        str(tmp_path / "remote"),
    )
    fleet = load_devices(devices)
    try:
        up = emulate.fleet_up(fleet)
        assert len(up) == 1 and up[0].proxy_pid and up[0].sshd_port != port
        again = emulate.fleet_up(fleet)  # idempotent: the running board is kept
        assert again[0].sshd_pid == up[0].sshd_pid
        st = emulate.fleet_status(fleet)[0]
        assert st["state"] == "up" and st["cpu_quota"] == pytest.approx(0.3, abs=1e-3) and st["cpus"] == "0"
        board = fleet.board("emu 1;$(x)")
        assert Path(board.known_hosts).read_text().startswith(f"[127.0.0.1]:{port} ssh-ed25519 ")
        with BoardConnection.from_spec(board) as c:
            # every session lives in the board's cgroups
            cg = c.run(["cat", "/proc/self/cgroup"]).stdout
            assert emulate.safe_name(board.name) in cg
            # the link adds its RTT to every round trip ...
            t0 = time.perf_counter()
            c.run(["true"])
            assert time.perf_counter() - t0 >= 0.04
            # ... and serialises bytes at 8 Mbit/s: 200 kB take >= 0.2 s
            c.mkdirs(board.remote_dir)
            c.put_bytes(os.urandom(200_000), f"{board.remote_dir}/blob")
            t0 = time.perf_counter()
            assert len(c.get_bytes(f"{board.remote_dir}/blob")) == 200_000
            assert time.perf_counter() - t0 >= 0.2
        store = Store.open(f"sqlite:///{tmp_path / 's.db'}")
        rows = check_fleet(fleet, store)
        assert rows[0]["status"] == "ok", rows
        f = rows[0]["facts"]
        assert (
            f["cpu_quota"] == pytest.approx(0.3, abs=1e-3)
            and f["cores_allowed"] == [0]
            and f["runtimes"]["onnxruntime"]
        )
        # the board shares the host's clock: the offset is zero within the best round trip's half
        # (an RTT of 40 ms here), whatever the board's CPU quota does to starting a command
        clock = f["clock"]
        assert clock["method"].startswith("echo:") and clock["uncertainty_s"] >= 0.02, clock
        assert abs(clock["offset_s"]) <= clock["uncertainty_s"] + 0.005, clock
        assert store.get_board("emu 1;$(x)").facts["cpu_quota"] == pytest.approx(0.3, abs=1e-3)
        store.dispose()
    finally:
        down = emulate.fleet_down()
    assert down and down[0]["sshd_stopped"] and down[0]["proxy_stopped"]
    for pid in (up[0].sshd_pid, up[0].proxy_pid):
        assert not emulate._alive(pid)
    assert not any(Path(p).exists() for p in up[0].cgroups.values())
    assert emulate.fleet_status(fleet)[0]["state"] == "down"


def test_check_names_what_is_wrong_with_an_unreachable_board(tmp_path, monkeypatch, client_key):
    monkeypatch.setenv("EDGEATLAS_HOME", str(tmp_path / "home"))
    devices = write_devices(
        tmp_path / "devices.toml", [{"name": "gone", "port": free_port()}], client_key, tmp_path / "kh", "/tmp/x"
    )
    rows = check_fleet(load_devices(devices), None)
    assert rows[0]["status"] == "error" and rows[0]["error_code"] == "CONNECTION_ERROR"
    assert "connection refused" in rows[0]["error"] and rows[0]["hint"]
