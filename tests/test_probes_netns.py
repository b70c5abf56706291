"""Emulated boards in their own network namespace: sshd on a veth end, tbf on both veth ends for the
rate, the loopback proxy for the RTT only. Real namespaces, real tc, real sshd, real SSH/SFTP."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fixtures_probes import free_port, write_devices

from probes import emulate
from probes.fleet import BoardConnection
from registry.config import Fleet, load_devices
from registry.errors import EdgeatlasError, ErrorCode

pytest_plugins = ["fixtures_probes"]
pytestmark = pytest.mark.sshd

CAN_BOARD = (
    os.geteuid() == 0 and os.access("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", os.W_OK) and os.path.exists(emulate.SSHD)
)
needs_board = pytest.mark.skipif(not CAN_BOARD, reason="needs root, cgroup v1 and openssh-server")


@pytest.fixture(scope="module")
def netns_ok() -> None:
    ok, why = emulate.netns_support()
    if not ok:
        pytest.skip(f"network namespaces with tbf are not usable here: {why}")


def _netns_list() -> set[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {n["name"] for n in json.loads(out or "[]")}


def _qdisc(dev: str, netns: str | None = None) -> dict[str, Any]:
    where = ["-n", netns] if netns else []
    out = subprocess.run(
        ["tc", *where, "-j", "qdisc", "show", "dev", dev], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)[0]


@pytest.fixture
def fleet_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, netns_ok: None) -> Iterator[Callable[..., Fleet]]:
    """Writes a devices.toml with the given boards (name -> emulate table), starts them; always
    stops them and makes sure no namespace or veth of theirs is left behind."""
    monkeypatch.setenv("EDGEATLAS_HOME", str(tmp_path / "home"))
    made: list[Fleet] = []

    def make(boards: dict[str, str]) -> Fleet:
        devices = write_devices(
            tmp_path / "devices.toml",
            [{"name": n, "port": free_port(), "emulate": e} for n, e in boards.items()],
            "{data_dir}/fleet/id_ed25519",
            "{data_dir}/fleet/known_hosts",
            str(tmp_path / "remote"),
        )
        fleet = load_devices(devices)
        made.append(fleet)
        emulate.fleet_up(fleet)
        return fleet

    try:
        yield make
    finally:
        emulate.fleet_down()
        for fleet in made:
            for b in fleet.emulated():
                names = emulate.netns_names(b.name)
                subprocess.run(["ip", "link", "del", names["host_veth"]], capture_output=True)
                subprocess.run(["ip", "netns", "del", names["netns"]], capture_output=True)
                assert names["netns"] not in _netns_list()


def _time_transfer(board: Any, nbytes: int, repeat: int = 1) -> tuple[float, float]:
    """(upload s, download s) of ``nbytes`` over SFTP through the board's address in devices.toml;
    the best of ``repeat`` runs (this host is shared: a run can lose the CPU, never gain link rate)."""
    blob = os.urandom(nbytes)
    ups, downs = [], []
    with BoardConnection.from_spec(board) as c:
        c.mkdirs(board.remote_dir)
        c.run(["true"])  # the session is warm: only the transfer is timed
        for _ in range(repeat):
            t0 = time.perf_counter()
            c.put_bytes(blob, f"{board.remote_dir}/blob-{os.getpid()}")
            ups.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            assert c.get_bytes(f"{board.remote_dir}/blob-{os.getpid()}") == blob
            downs.append(time.perf_counter() - t0)
    return min(ups), min(downs)


@needs_board
def test_board_gets_a_namespace_with_tbf_on_both_veth_ends(fleet_of):
    fleet = fleet_of({"shaped;$(x) 1": '{ cpu_quota = 0.5, cpus = "0", link_mbit = 20, rtt_ms = 10 }'})
    board = fleet.board("shaped;$(x) 1")
    bp = emulate.load_state()[board.name]
    link = bp.link
    names = emulate.netns_names(board.name)
    assert {k: link[k] for k in names} == names and len(names["host_veth"]) <= 15
    subnet = ipaddress.ip_network(link["subnet"])
    assert subnet.prefixlen == 30 and subnet.subnet_of(emulate.NETNS_POOL)
    assert [link["host_addr"], link["board_addr"]] == [str(a) for a in subnet.hosts()]
    assert link["shaper"] == f"tbf on veth {names['host_veth']} + {names['board_veth']} + user-space delay proxy"
    assert "shaper_fallback_reason" not in link
    # tbf at 20 Mbit on the host end (controller -> board) and on the namespace end (board -> controller)
    for q in (_qdisc(names["host_veth"]), _qdisc(names["board_veth"], names["netns"])):
        assert q["kind"] == "tbf" and q["root"], q
        assert q["options"]["rate"] == 20_000_000 // 8, q  # tc -j gives bytes/s
    # sshd listens in the namespace (not on loopback); the proxy on the declared port adds no rate
    assert bp.sshd_port == emulate.NETNS_SSHD_PORT and not emulate._port_open(bp.sshd_port)
    proxy_cmd = Path(f"/proc/{bp.proxy_pid}/cmdline").read_bytes().split(b"\0")
    assert proxy_cmd[proxy_cmd.index(b"--rate-mbit") + 1] == b"0.0"
    assert proxy_cmd[proxy_cmd.index(b"--target-host") + 1] == link["board_addr"].encode()
    with BoardConnection.from_spec(board) as c:
        # sessions run in the board's network namespace ...
        ns_inode = c.run(["stat", "-L", "-c", "%i", "/proc/self/ns/net"]).stdout.strip()
        assert int(ns_inode) == os.stat(emulate.NETNS_DIR / names["netns"]).st_ino
        # ... and still in its cgroups, whose files stay readable there (the agent reads its quota)
        assert emulate.safe_name(board.name) in c.run(["cat", "/proc/self/cgroup"]).stdout
        quota = c.run(["cat", f"{bp.cgroups['cpu']}/cpu.cfs_quota_us"]).stdout.strip()
        assert int(quota) == emulate.cfs_params(0.5)[1]
    # `fleet status --json` shows the link
    from registry.cli import main

    res = CliRunner().invoke(main, ["fleet", "status", "--json", "--devices", str(fleet.path)])
    assert res.exit_code == 0, res.output
    row = json.loads(res.output)[0]
    assert row["state"] == "up" and row["netns"] == names["netns"] and row["netns_present"]
    assert row["shaper"] == link["shaper"] and row["board_addr"] == link["board_addr"]
    assert row["tbf"]["rate_kbit"] == 20_000


@needs_board
def test_transfer_time_follows_the_tbf_rate_and_an_unshaped_board_is_much_faster(fleet_of):
    fleet = fleet_of(
        {
            "slow": '{ cpu_quota = 1.0, cpus = "0", link_mbit = 16, rtt_ms = 0 }',
            "fast": '{ cpu_quota = 1.0, cpus = "1" }',
        }
    )
    nbytes = 1_500_000
    expect = nbytes * 8 / 16e6  # 0.75 s
    slow_up, slow_down = _time_transfer(fleet.board("slow"), nbytes)
    fast_up, fast_down = _time_transfer(fleet.board("fast"), nbytes, repeat=3)
    print(
        f"\n1.5 MB over 16 Mbit/s tbf: up {slow_up:.3f} s, down {slow_down:.3f} s (size/rate {expect:.3f} s); "
        f"unshaped board (best of 3): up {fast_up:.3f} s, down {fast_down:.3f} s"
    )
    for t in (slow_up, slow_down):  # both directions are shaped (each veth end's egress)
        assert 0.6 * expect <= t <= 2.0 * expect
    assert max(fast_up, fast_down) < min(slow_up, slow_down) / 3
    # rtt_ms = 0: the loopback proxy stays (zero delay), so devices.toml's address is the board's
    bp = emulate.load_state()["slow"]
    assert bp.proxy_pid and bp.link["netns"]
    assert emulate.load_state()["fast"].proxy_pid is None and "netns" not in emulate.load_state()["fast"].link


@needs_board
def test_rtt_still_applies_through_the_delay_proxy(fleet_of):
    fleet = fleet_of({"far": '{ cpu_quota = 1.0, cpus = "0", link_mbit = 50, rtt_ms = 80 }'})
    with BoardConnection.from_spec(fleet.board("far")) as c:
        c.run(["true"])
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            c.run(["true"])
            times.append(time.perf_counter() - t0)
    assert min(times) >= 0.08, times


@needs_board
def test_fleet_down_removes_only_the_recorded_namespace_and_veth(fleet_of):
    fleet = fleet_of(
        {
            "a": '{ cpu_quota = 0.5, cpus = "0", link_mbit = 20, rtt_ms = 5 }',
            "b": '{ cpu_quota = 0.5, cpus = "1", rtt_ms = 5 }',  # an RTT alone: a namespace, no tbf
        }
    )
    state = emulate.load_state()
    la, lb = state["a"].link, state["b"].link
    assert lb["tbf"] is None and "no rate declared" in lb["shaper"]
    assert _qdisc(lb["host_veth"])["kind"] != "tbf"
    assert la["subnet"] != lb["subnet"] and {la["netns"], lb["netns"]} <= _netns_list()
    decoy = "edgeatlas-" + "0" * 10  # our naming pattern, but not in this state: must survive
    subprocess.run(["ip", "netns", "add", decoy], check=True)
    try:
        # b's namespace vanishes behind our back: status says so, and fleet down tolerates it
        subprocess.run(["ip", "link", "del", lb["host_veth"]], check=True)
        subprocess.run(["ip", "netns", "del", lb["netns"]], check=True)
        st = {r["name"]: r for r in emulate.fleet_status(fleet)}
        assert st["b"]["state"] == "degraded" and not st["b"]["netns_present"]
        assert st["a"]["state"] == "up" and st["a"]["netns_present"]
        down = {r["name"]: r for r in emulate.fleet_down()}
        assert down["a"]["veth_removed"] and down["a"]["netns_removed"] and down["a"]["sshd_stopped"]
        assert not down["b"]["veth_removed"] and not down["b"]["netns_removed"] and down["b"]["sshd_stopped"]
        left = _netns_list()
        assert la["netns"] not in left and lb["netns"] not in left and decoy in left
        assert not Path(f"/sys/class/net/{la['host_veth']}").exists()
        assert emulate.fleet_down() == []  # nothing recorded any more
    finally:
        subprocess.run(["ip", "netns", "del", decoy], capture_output=True)


@needs_board
def test_link_shaper_proxy_keeps_the_proxy_only_path(fleet_of):
    fleet = fleet_of({"old": '{ cpu_quota = 1.0, cpus = "0", link_mbit = 8, rtt_ms = 40, link_shaper = "proxy" }'})
    bp = emulate.load_state()["old"]
    assert "netns" not in bp.link and bp.link["shaper"].startswith("user-space delay proxy (token bucket")
    assert "link_shaper" in bp.link["shaper_fallback_reason"]
    assert emulate.netns_names("old")["netns"] not in _netns_list()
    assert emulate._port_open(bp.sshd_port)  # sshd on loopback, behind the rate + delay proxy
    proxy_cmd = Path(f"/proc/{bp.proxy_pid}/cmdline").read_bytes().split(b"\0")
    assert proxy_cmd[proxy_cmd.index(b"--rate-mbit") + 1] == b"8.0"
    st = emulate.fleet_status(fleet)[0]
    assert st["state"] == "up" and st["shaper_fallback_reason"] and "netns" not in st
    up, _ = _time_transfer(fleet.board("old"), 200_000)
    assert up >= 0.2  # 200 kB at 8 Mbit/s, shaped by the proxy's token bucket


def _one_board(path: Path, emulate_table: str) -> Path:
    return write_devices(
        path,
        [{"name": "x", "port": 2222, "emulate": emulate_table}],
        "{data_dir}/fleet/id_ed25519",
        "{data_dir}/fleet/known_hosts",
        "/tmp/x",
    )


def test_link_shaper_rejects_unknown_values(tmp_path):
    devices = _one_board(tmp_path / "devices.toml", '{ cpu_quota = 1.0, link_mbit = 8, link_shaper = "netem" }')
    with pytest.raises(EdgeatlasError) as e:
        load_devices(devices)
    assert e.value.code == ErrorCode.INVALID_CONFIG
    msg = e.value.message
    assert "emulate.link_shaper" in msg and "'netem'" in msg and all(v in msg for v in ("auto", "netns", "proxy"))
    ok = _one_board(tmp_path / "ok.toml", '{ cpu_quota = 1.0, link_shaper = "netns" }')
    assert load_devices(ok).board("x").emulate.link_shaper == "netns"
    default = _one_board(tmp_path / "d.toml", "{ cpu_quota = 1.0 }")
    assert load_devices(default).board("x").emulate.link_shaper == "auto"
