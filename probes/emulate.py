"""Emulated boards: a real sshd per board, in a cgroup-v1 cpu/cpuset group, behind a shaped link.

``fleet_up(fleet)`` starts, for every board of devices.toml with an ``emulate`` table:

- its own directory under ``fleet_dir()/boards/<name>``: an ed25519 host key, an ``sshd_config``
  (own Port/ListenAddress/HostKey/PidFile/AuthorizedKeysFile; key auth only; no PAM;
  ``Subsystem sftp internal-sftp``; ``SetEnv EDGEATLAS_PYTHON`` naming this venv's python, which
  has the runtimes; the runner prefers it over ``python3``), and ``authorized_keys`` with the fleet client key;
- the client key (``defaults.key_file``) if missing, and the board's host key in ``known_hosts``;
- cgroup-v1 groups ``/sys/fs/cgroup/{cpu,cpuset}/edgeatlas-<home>/<board>`` with
  ``cpu.cfs_quota_us = cpu_quota x cfs_period_us`` (a 10 ms quota per period, see
  :func:`cfs_params`) and ``cpuset.cpus`` / ``cpuset.mems``; sshd is
  moved into them before it execs, so every session and every agent it starts inherits them;
- the link, when the board declares ``link_mbit`` and/or ``rtt_ms``. Default (``link_shaper =
  "auto"``), when this host allows it (root, iproute2, a throwaway namespace + veth + tbf probe
  works, see :func:`netns_support`): the board gets its own network namespace
  ``edgeatlas-<hash of data dir and board>`` and a veth pair ``ea<hash>h`` (host) / ``ea<hash>b``
  (board) on a free /30 of 10.213.0.0/16 (host .1, board .2; the slot starts at the name's hash and
  skips subnets the host already uses), ``lo`` up in the namespace; sshd listens on the board
  address, port 22. ``tc`` tbf at ``link_mbit`` sits on both veth ends: the host end's egress shapes
  controller -> board, the namespace end's egress board -> controller. Only the board's traffic
  crosses that veth, so, unlike tbf on ``lo`` (which would shape every loopback flow of the host,
  other users' included), it shapes exactly the board's link. netem is absent, so the RTT comes from
  the user-space delay proxy (this module, ``python -m probes.emulate proxy``) on 127.0.0.1:<declared
  port>, forwarding to the namespace address and adding RTT/2 each way with no rate limit of its own.
  With ``rtt_ms`` 0 the proxy still runs (zero delay), so devices.toml's 127.0.0.1:port and its
  known_hosts entry stay the board's address either way. sshd joins its cgroups and then setns()s
  into the network namespace in the same pre-exec hook: only the network namespace changes (not
  ``ip netns exec``, which would remount ``/sys`` and hide the cgroup files the agent reads), and
  every session and agent inherits both.
  Fallback (``link_shaper = "proxy"``, or "auto" where the namespace is not usable; the reason is
  recorded as ``shaper_fallback_reason``): sshd on an internal loopback port behind the same proxy,
  which then also serialises bytes at ``link_mbit`` (a token bucket). ``link_shaper = "netns"``
  refuses to fall back. Either way the proxy is "the board's shaped link"; split payloads cross it.

Every pid started is recorded in ``fleet_dir()/state.json``, with the namespace, veth names, addresses
and tbf settings in the board's ``link``; ``fleet_down`` stops only those pids (after checking
``/proc/<pid>/cmdline`` still names our config), removes the cgroups, and deletes only the veth and
namespace its record names (gone already is fine).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import fcntl
import hashlib
import ipaddress
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CGROUP_ROOT = Path("/sys/fs/cgroup")
SSHD = "/usr/sbin/sshd"
PERIOD_US = 100_000
MIN_QUOTA_US = 10_000  # >= 2.5 scheduler ticks at HZ=250 (see cfs_params)


# ----------------------------------------------------------------------------- errors


def _fleet_error(message: str, hint: str | None = None) -> Exception:
    from registry.errors import EdgeatlasError, ErrorCode

    return EdgeatlasError(message, ErrorCode.FLEET_ERROR, hint=hint)


# ----------------------------------------------------------------------------- cgroups


def _home_tag() -> str:
    from registry.paths import fleet_dir

    return hashlib.sha256(str(fleet_dir().resolve()).encode()).hexdigest()[:8]


def safe_name(name: str) -> str:
    """A file/cgroup-safe, unique name for a board (names may hold spaces and metacharacters)."""
    clean = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:40]
    return f"{clean}-{hashlib.sha256(name.encode()).hexdigest()[:6]}"


def check_cgroup_v1(root: Path = CGROUP_ROOT) -> dict[str, Any]:
    """Check that cgroup-v1 cpu and cpuset groups can be made and written here. Raises FLEET_ERROR."""
    problems = []
    for ctl, f in (("cpu", "cpu.cfs_quota_us"), ("cpuset", "cpuset.cpus")):
        base = root / ctl
        if not (base / f).exists():
            problems.append(f"{base / f} does not exist (cgroup v1 '{ctl}' controller not mounted)")
            continue
        probe = base / f"edgeatlas-check-{os.getpid()}"
        try:
            probe.mkdir(exist_ok=True)
            if ctl == "cpu":
                (probe / "cpu.cfs_quota_us").write_text("50000")
            else:
                (probe / "cpuset.cpus").write_text((base / "cpuset.cpus").read_text().strip())
        except OSError as e:
            problems.append(f"cannot create or write {probe}: {e.strerror or e}")
        finally:
            try:
                probe.rmdir()
            except OSError:
                pass
    if problems:
        raise _fleet_error(
            "cgroup v1 is not usable, so emulated boards cannot be throttled: " + "; ".join(problems),
            hint="run `edgeatlas fleet up` as root on a host with cgroup v1 cpu+cpuset mounted at /sys/fs/cgroup "
            "(or use real boards: drop the `emulate` tables from devices.toml)",
        )
    return {"cgroup": "v1", "cpu": str(root / "cpu"), "cpuset": str(root / "cpuset")}


def cfs_params(cpu_quota: float) -> tuple[int, int]:
    """(cfs_period_us, cfs_quota_us) for a CPU share: a quota of at least ``MIN_QUOTA_US`` per period.

    Decision, measured on this kernel (HZ=250, so CFS bandwidth is enforced on 4 ms ticks; bench
    notes in the session-3 closing note): a 1 ms quota in a 2 ms period over-throttles (a 0.5-core
    board ran a 1.4 ms model 3.2-3.9x slower, a 9.6 ms one 3.1x) and is bimodal across agent
    processes (p50 6.3 ms or 1.5 ms), because the tick overruns the quota by up to 4 ms. A 10 ms
    quota (2.5 ticks; period = 10 ms / share, 20 ms at 0.5) slows a 9.6 ms model 2.1-2.4x and keeps
    p50 within ~1 % across fresh agent processes. What a quota cannot emulate: an inference much
    shorter than the quota runs at host speed and pays the stalls in its tail and mean (p50 x1.0,
    mean x2.0 at 0.5) -- the board is slower in throughput, as its declared share says.
    """
    if cpu_quota >= 1.0:
        return PERIOD_US, int(cpu_quota * PERIOD_US)
    period = int(math.ceil(MIN_QUOTA_US / cpu_quota))
    return period, max(1000, int(round(period * cpu_quota)))


def _make_cgroup(board_tag: str, cpu_quota: float, cpus: str, root: Path = CGROUP_ROOT) -> dict[str, str]:
    parent = f"edgeatlas-{_home_tag()}"
    cpu_dir = root / "cpu" / parent / board_tag
    cpuset_parent = root / "cpuset" / parent
    cpuset_dir = cpuset_parent / board_tag
    try:
        cpu_dir.mkdir(parents=True, exist_ok=True)
        period, quota = cfs_params(cpu_quota)
        (cpu_dir / "cpu.cfs_quota_us").write_text("-1")  # so any period is accepted
        (cpu_dir / "cpu.cfs_period_us").write_text(str(period))
        (cpu_dir / "cpu.cfs_quota_us").write_text(str(quota))
        cpuset_parent.mkdir(exist_ok=True)
        for f in ("cpuset.cpus", "cpuset.mems"):  # a cpuset child needs its parent's set first
            if not (cpuset_parent / f).read_text().strip():
                (cpuset_parent / f).write_text((root / "cpuset" / f).read_text().strip())
        cpuset_dir.mkdir(exist_ok=True)
        (cpuset_dir / "cpuset.cpus").write_text(cpus)
        (cpuset_dir / "cpuset.mems").write_text((root / "cpuset" / "cpuset.mems").read_text().strip())
    except OSError as e:
        raise _fleet_error(
            f"cannot set up the cgroup for a board ({cpu_dir} / {cpuset_dir}): {e}",
            hint="check `cpus` in devices.toml names cores this host has "
            f"(host cpuset: {(root / 'cpuset' / 'cpuset.cpus').read_text().strip()}) and that you are root",
        ) from e
    return {"cpu": str(cpu_dir), "cpuset": str(cpuset_dir)}


def _remove_cgroup(paths: dict[str, str]) -> None:
    for p in paths.values():
        d = Path(p)
        for _ in range(50):
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)  # tasks still exiting
    for p in paths.values():
        try:
            Path(p).parent.rmdir()  # the per-home parent, when it is empty
        except OSError:
            pass


# ----------------------------------------------------------------------------- netns link

NETNS_POOL = ipaddress.ip_network("10.213.0.0/16")  # one /30 per board: host side .1, board side .2
NETNS_SSHD_PORT = 22  # the board's own namespace: sshd listens on its usual port there
TBF_LATENCY_MS = 50  # tbf queue limit, as the time a packet may wait (then it drops: TCP backs off)
TBF_MIN_BURST = 16384  # bytes: >= 10 full-size frames
NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
_NETNS_RE = re.compile(r"^edgeatlas-[0-9a-f]{10}$")
_VETH_RE = re.compile(r"^ea[0-9a-f]{10}[hb]$")
_netns_support: tuple[bool, str] | None = None


def netns_names(board_name: str) -> dict[str, str]:
    """The board's namespace and veth names: derived from the data dir and the board (two data dirs
    never collide), at most 15 characters for the interfaces (IFNAMSIZ)."""
    key = hashlib.sha256(f"{_home_tag()}/{safe_name(board_name)}".encode()).hexdigest()[:10]
    return {"netns": f"edgeatlas-{key}", "host_veth": f"ea{key}h", "board_veth": f"ea{key}b"}


def tbf_params(link_mbit: float) -> dict[str, int]:
    """tbf settings for a link of ``link_mbit``: the rate in kbit/s (tc takes no exponent), a burst of
    one HZ=250 tick of line rate but at least ``TBF_MIN_BURST`` (a smaller bucket cannot pass a
    full frame plus its neighbours; a larger one lets the first bytes of a transfer through
    unshaped), and a ``TBF_LATENCY_MS`` queue."""
    rate_bytes = link_mbit * 1e6 / 8
    return {
        "rate_kbit": max(1, int(round(link_mbit * 1000))),
        "burst_bytes": max(TBF_MIN_BURST, int(rate_bytes * 0.004)),
        "latency_ms": TBF_LATENCY_MS,
    }


def _tbf_argv(dev: str, tbf: dict[str, int], netns: str | None = None) -> list[str]:
    where = ["-n", netns] if netns else []
    return [
        "tc",
        *where,
        "qdisc",
        "replace",
        "dev",
        dev,
        "root",
        "tbf",
        "rate",
        f"{tbf['rate_kbit']}kbit",
        "burst",
        str(tbf["burst_bytes"]),
        "latency",
        f"{tbf['latency_ms']}ms",
    ]


def _cmd(argv: list[str], what: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise _fleet_error(f"{what}: `{shlex.join(argv)}` failed: {(r.stderr or r.stdout).strip()}")
    return r


def _quiet(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _setns_fn() -> Callable[[int], None] | None:
    """setns(fd, CLONE_NEWNET): os.setns (python >= 3.12) or libc through ctypes; None if neither."""
    if hasattr(os, "setns"):
        return lambda fd: os.setns(fd, CLONE_NEWNET)  # type: ignore[attr-defined]
    try:
        libc_setns = ctypes.CDLL(None, use_errno=True).setns
    except (OSError, AttributeError):
        return None

    def call(fd: int) -> None:
        if libc_setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    return call


def _probe_netns() -> str:
    """'' when boards can get a namespace + veth + tbf here, else why not (one line)."""
    if os.geteuid() != 0:
        return "not root: network namespaces and tc need CAP_NET_ADMIN"
    for tool in ("ip", "tc"):
        if not shutil.which(tool):
            return f"`{tool}` (iproute2) not found"
    if _setns_fn() is None:
        return "setns(2) is not reachable from python (no os.setns, no libc)"
    tag = f"{os.getpid():06x}"[-6:]
    ns, h, b = f"edgeatlas-probe-{tag}", f"eap{tag}h", f"eap{tag}b"
    tbf = tbf_params(1.0)
    steps = [
        ["ip", "netns", "add", ns],
        ["ip", "link", "add", h, "type", "veth", "peer", "name", b, "netns", ns],
        ["ip", "-n", ns, "link", "set", "lo", "up"],
        _tbf_argv(h, tbf),
        _tbf_argv(b, tbf, ns),
    ]
    try:
        for argv in steps:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                return f"`{shlex.join(argv)}` failed: {(r.stderr or r.stdout).strip() or f'exit {r.returncode}'}"
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"probing network namespaces failed: {e}"
    finally:
        _quiet(["ip", "link", "del", h])
        _quiet(["ip", "netns", "del", ns])
    return ""


def netns_support(refresh: bool = False) -> tuple[bool, str]:
    """(usable, reason): can a board get its own network namespace, a veth pair and tbf on both
    ends? Probed once per process by really making (and removing) a throwaway namespace."""
    global _netns_support
    if _netns_support is None or refresh:
        why = _probe_netns()
        _netns_support = (not why, why)
    return _netns_support


@contextlib.contextmanager
def _netns_lock() -> Iterator[None]:
    """Serialises subnet allocation between concurrent `fleet up` runs (any data dir)."""
    lock_dir = Path("/run/lock") if Path("/run/lock").is_dir() else Path("/run")
    with open(lock_dir / "edgeatlas-netns.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _taken_on_host() -> tuple[set[ipaddress.IPv4Address], list[ipaddress.IPv4Network]]:
    """Host IPv4 addresses, and routes at least as specific as the pool (both would clash)."""
    addrs: set[ipaddress.IPv4Address] = set()
    nets: list[ipaddress.IPv4Network] = []
    for ifc in json.loads(_cmd(["ip", "-j", "-4", "addr", "show"], "listing host addresses").stdout or "[]"):
        for a in ifc.get("addr_info", []):
            if a.get("local"):
                addrs.add(ipaddress.IPv4Address(a["local"]))
    routes = _cmd(["ip", "-j", "-4", "route", "show", "table", "all"], "listing host routes").stdout
    for r in json.loads(routes or "[]"):
        dst = r.get("dst", "default")
        if dst == "default":
            continue
        try:
            net = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if isinstance(net, ipaddress.IPv4Network) and net.prefixlen >= NETNS_POOL.prefixlen:
            nets.append(net)
    return addrs, nets


def pick_subnet(key: str) -> ipaddress.IPv4Network:
    """A free /30 of ``NETNS_POOL``: the board's slot from its name hash, else the next free one."""
    subnets = list(NETNS_POOL.subnets(new_prefix=30))
    addrs, nets = _taken_on_host()
    start = int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(subnets)
    for i in range(len(subnets)):
        cand = subnets[(start + i) % len(subnets)]
        if not any(a in cand for a in addrs) and not any(n.overlaps(cand) for n in nets):
            return cand
    raise _fleet_error(f"no free /30 left in {NETNS_POOL} for a board's veth pair")


def _setup_netns(board_name: str, link_mbit: float | None) -> dict[str, Any]:
    """The board's namespace, veth pair (addresses, lo up) and tbf on both ends; removed on failure."""
    names = netns_names(board_name)
    ns, h, b = names["netns"], names["host_veth"], names["board_veth"]
    with _netns_lock():
        # a leftover of a crashed run of this data dir and board (the names are derived from both)
        _teardown_netns(names)
        subnet = pick_subnet(ns)
        host_addr, board_addr = (str(a) for a in subnet.hosts())
        link: dict[str, Any] = {**names, "subnet": str(subnet), "host_addr": host_addr, "board_addr": board_addr}
        try:
            _cmd(["ip", "netns", "add", ns], "creating the board's network namespace")
            _cmd(["ip", "link", "add", h, "type", "veth", "peer", "name", b, "netns", ns], "creating the veth pair")
            _cmd(["ip", "addr", "add", f"{host_addr}/30", "dev", h], "addressing the host side")
            _cmd(["ip", "link", "set", h, "up"], "bringing the host side up")
            _cmd(["ip", "-n", ns, "addr", "add", f"{board_addr}/30", "dev", b], "addressing the board side")
            _cmd(["ip", "-n", ns, "link", "set", b, "up"], "bringing the board side up")
            _cmd(["ip", "-n", ns, "link", "set", "lo", "up"], "bringing lo up in the namespace")
            tbf = tbf_params(link_mbit) if link_mbit else None
            if tbf:
                _cmd(_tbf_argv(h, tbf), "tbf on the host side (controller -> board)")
                _cmd(_tbf_argv(b, tbf, ns), "tbf on the board side (board -> controller)")
            link["tbf"] = tbf
        except Exception:
            _teardown_netns(link)
            raise
    return link


def _teardown_netns(link: dict[str, Any]) -> dict[str, Any]:
    """Delete the veth pair and namespace named in ``link`` (only names of our own pattern);
    already-gone parts are fine. Deleting one end of a veth deletes both, and its qdiscs."""
    out: dict[str, Any] = {"veth_removed": False, "netns_removed": False}
    h, ns = link.get("host_veth"), link.get("netns")
    if h and _VETH_RE.match(h) and Path(f"/sys/class/net/{h}").exists():
        out["veth_removed"] = _quiet(["ip", "link", "del", h])
    if ns and _NETNS_RE.match(ns) and (NETNS_DIR / ns).exists():
        out["netns_removed"] = _quiet(["ip", "netns", "del", ns])
    return out


def netns_present(link: dict[str, Any]) -> bool:
    """Whether the namespace and host-side veth recorded in ``link`` still exist."""
    return (NETNS_DIR / str(link.get("netns"))).exists() and Path(f"/sys/class/net/{link.get('host_veth')}").exists()


# ----------------------------------------------------------------------------- state


@dataclass(frozen=True)
class BoardProcess:
    name: str
    port: int
    sshd_port: int
    sshd_pid: int
    proxy_pid: int | None
    directory: str
    config: str
    cgroups: dict[str, str]
    link: dict[str, Any]
    started_at: float


def _state_path() -> Path:
    from registry.paths import fleet_dir

    return fleet_dir() / "state.json"


def load_state() -> dict[str, BoardProcess]:
    p = _state_path()
    if not p.exists():
        return {}
    data = json.loads(p.read_text())
    return {k: BoardProcess(**v) for k, v in data.get("boards", {}).items()}


def _save_state(state: dict[str, BoardProcess]) -> None:
    p = _state_path()
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps({"boards": {k: asdict(v) for k, v in state.items()}}, indent=2))
    tmp.replace(p)


def _alive(pid: int | None, marker: str | None = None) -> bool:
    if not pid:
        return False
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[1].split()[0] == "Z":
        return False
    return marker is None or marker in cmd


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes], log: Path, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise _fleet_error(f"process exited with code {proc.returncode}: {log.read_text(errors='replace')[-800:]}")
        if _port_open(port, host):
            return
        time.sleep(0.05)
    raise _fleet_error(f"nothing listens on {host}:{port} after {timeout:g} s (log: {log})")


# ----------------------------------------------------------------------------- keys


def ensure_client_key(key_file: Path) -> Path:
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        _keygen(key_file, "edgeatlas-fleet")
    if not key_file.with_suffix(key_file.suffix + ".pub").exists():
        pub = subprocess.run(["ssh-keygen", "-y", "-f", str(key_file)], capture_output=True, text=True, check=True)
        key_file.with_suffix(key_file.suffix + ".pub").write_text(pub.stdout)
    return key_file.with_suffix(key_file.suffix + ".pub")


def _keygen(path: Path, comment: str) -> None:
    if shutil.which("ssh-keygen"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
            capture_output=True,
        )
        return
    # fallback without ssh-keygen: the cryptography package (a paramiko dependency)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    k = Ed25519PrivateKey.generate()
    path.write_bytes(
        k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    os.chmod(path, 0o600)
    pub = k.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    path.with_suffix(path.suffix + ".pub").write_text(pub.decode() + f" {comment}\n")


def known_hosts_entry(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def write_known_host(known_hosts: Path, host: str, port: int, pubkey_line: str) -> None:
    """Replace the entries for host:port with this key (atomically)."""
    entry = known_hosts_entry(host, port)
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    lines = known_hosts.read_text().splitlines() if known_hosts.exists() else []
    keep = [ln for ln in lines if ln.split(" ", 1)[0] != entry]
    ktype, key = pubkey_line.split()[:2]
    keep.append(f"{entry} {ktype} {key}")
    tmp = known_hosts.with_suffix(".tmp")
    tmp.write_text("\n".join(keep) + "\n")
    tmp.replace(known_hosts)


# ----------------------------------------------------------------------------- sshd


def _q(path: Path | str) -> str:
    s = str(path)
    if '"' in s or "\n" in s:
        raise _fleet_error(f"path {s!r} cannot appear in an sshd_config (it holds a quote or newline)")
    return f'"{s}"'


def sshd_config_text(
    directory: Path, sshd_port: int, path_env: str, python: str, listen_address: str = "127.0.0.1"
) -> str:
    ipaddress.ip_address(listen_address)  # an address, never free text, goes into the config
    return "\n".join(
        [
            "# written by edgeatlas fleet up: one emulated board",
            f"Port {sshd_port}",
            f"ListenAddress {listen_address}",
            f"HostKey {_q(directory / 'ssh_host_ed25519_key')}",
            f"PidFile {_q(directory / 'sshd.pid')}",
            f"AuthorizedKeysFile {_q(directory / 'authorized_keys')}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            f"SetEnv PATH={path_env} EDGEATLAS_PYTHON={python}",
            "Subsystem sftp internal-sftp",
            "",
        ]
    )


def _board_dir(name: str) -> Path:
    from registry.paths import fleet_dir

    d = fleet_dir() / "boards" / safe_name(name)
    d.mkdir(parents=True, exist_ok=True)
    return d


def _choose_shaper(board: Any) -> tuple[bool, str | None]:
    """(use a network namespace, why not) for a board that declares a link."""
    mode = getattr(board.emulate, "link_shaper", "auto")
    if mode == "proxy":
        return False, 'link_shaper = "proxy" in devices.toml'
    ok, why = netns_support()
    if ok:
        return True, None
    if mode == "netns":
        raise _fleet_error(
            f'board {board.name!r} asks for link_shaper = "netns", but a network namespace with tbf is not usable '
            f"here: {why}",
            hint='run `edgeatlas fleet up` as root on a host with iproute2 and tbf, or set link_shaper = "auto" '
            '(falls back to the user-space proxy) or "proxy" in devices.toml',
        )
    return False, why


def start_board(board: Any, python_bin_dir: str | None = None) -> BoardProcess:
    """Start one emulated board (``board`` is a registry.config.BoardSpec with ``emulate``).

    A board that declares ``link_mbit`` or ``rtt_ms`` gets, when this host allows it (and its
    ``link_shaper`` is not "proxy"), its own network namespace: sshd listens on the namespace end of a
    veth pair, tbf on both ends shapes the rate, and the loopback proxy on the declared port adds
    only the delay. Otherwise the proxy does rate and delay (the reason is in ``link``).
    """
    em = board.emulate
    if em is None:
        raise _fleet_error(f"board {board.name!r} has no `emulate` table: it is a real board, not started here")
    if not os.path.exists(SSHD):
        raise _fleet_error(f"{SSHD} not found", hint="apt-get install -y openssh-server")
    if board.host not in ("127.0.0.1", "localhost"):
        raise _fleet_error(
            f"emulated board {board.name!r} has host {board.host!r}",
            hint='emulated boards listen on 127.0.0.1 (set host = "127.0.0.1" in devices.toml)',
        )
    if _port_open(board.port):
        raise _fleet_error(
            f"port {board.port} of board {board.name!r} is already in use",
            hint="run `edgeatlas fleet down`, or give the board a free port in devices.toml",
        )
    d = _board_dir(board.name)
    hostkey = d / "ssh_host_ed25519_key"
    if not hostkey.exists():
        _keygen(hostkey, f"edgeatlas-board {safe_name(board.name)}")
    pub = ensure_client_key(Path(board.key_file))
    shutil.copy(pub, d / "authorized_keys")
    shaped = bool(em.link_mbit or em.rtt_ms)
    use_netns, fallback_reason = _choose_shaper(board) if shaped else (False, None)
    bindir = python_bin_dir or str(Path(sys.executable).parent)
    python = str(Path(bindir) / Path(sys.executable).name)
    if " " in python or " " in bindir:
        raise _fleet_error(f"the python path {python!r} holds a space, which sshd SetEnv cannot carry")
    link: dict[str, Any] = {"rtt_ms": em.rtt_ms, "link_mbit": em.link_mbit}
    setns = _setns_fn() if use_netns else None
    if use_netns:
        link.update(_setup_netns(board.name, em.link_mbit))
        sshd_host, sshd_port = link["board_addr"], NETNS_SSHD_PORT
    else:
        sshd_host, sshd_port = "127.0.0.1", _free_port() if shaped else board.port
    cg: dict[str, str] = {}
    sshd: subprocess.Popen[bytes] | None = None
    proxy_pid = None
    try:
        cfg = d / "sshd_config"
        path_env = f"{bindir}:/usr/local/bin:/usr/bin:/bin"
        cfg.write_text(sshd_config_text(d, sshd_port, path_env, python, listen_address=sshd_host))
        # privilege separation dir: sshd -t refuses the config without it, and /run is emptied at boot
        Path("/run/sshd").mkdir(exist_ok=True)
        test = subprocess.run([SSHD, "-t", "-f", str(cfg)], capture_output=True, text=True)
        if test.returncode != 0:
            raise _fleet_error(f"sshd rejects {cfg}: {test.stderr.strip()}")
        cg = _make_cgroup(safe_name(board.name), em.cpu_quota, em.cpus)
        log = d / "sshd.log"
        tasks = [Path(cg["cpu"]) / "tasks", Path(cg["cpuset"]) / "tasks"]
        netns_path = str(NETNS_DIR / link["netns"]) if use_netns else None

        def _enter_board() -> None:  # runs in the child, before exec: sshd and all it starts inherit both
            for t in tasks:
                with open(t, "w") as f:
                    f.write(str(os.getpid()))
            if netns_path and setns:  # the network namespace only: /sys (cgroup files) stays the host's
                fd = os.open(netns_path, os.O_RDONLY)
                try:
                    setns(fd)
                finally:
                    os.close(fd)

        with open(log, "ab") as lf:
            sshd = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(cfg)],
                stdout=lf,
                stderr=lf,
                stdin=subprocess.DEVNULL,
                preexec_fn=_enter_board,  # noqa: PLW1509 - needed to enter the cgroup (and netns) before exec
                start_new_session=True,
            )
        _wait_port(sshd_port, 10, sshd, log, host=sshd_host)
        if shaped:
            # with tbf on the veth the proxy adds only the delay (rate 0 = unlimited); with rtt_ms = 0
            # it still runs (zero delay), so devices.toml's 127.0.0.1:port stays the board's address
            proxy_rate = 0.0 if use_netns else (em.link_mbit or 0)
            plog = d / "proxy.log"
            env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
            argv = [sys.executable, "-m", "probes.emulate", "proxy", "--listen-port", str(board.port)]
            argv += ["--target-host", sshd_host, "--target-port", str(sshd_port), "--rtt-ms", str(em.rtt_ms or 0)]
            argv += ["--rate-mbit", str(proxy_rate), "--tag", str(d)]
            with open(plog, "ab") as lf:
                proxy = subprocess.Popen(
                    argv, stdout=lf, stderr=lf, stdin=subprocess.DEVNULL, env=env, start_new_session=True
                )
            proxy_pid = proxy.pid
            _wait_port(board.port, 10, proxy, plog)
            if use_netns:
                tbf = link.get("tbf")
                link.update(
                    shaper=(
                        f"tbf on veth {link['host_veth']} + {link['board_veth']} + user-space delay proxy"
                        if tbf
                        else "user-space delay proxy into the board's network namespace (no rate declared)"
                    ),
                    proxy=f"127.0.0.1:{board.port} -> {sshd_host}:{sshd_port}, RTT/2 each way, rate unlimited",
                )
            else:
                link.update(
                    shaper="user-space delay proxy (token bucket + RTT/2 each way)",
                    tc="not applied: tbf on lo would shape every loopback flow of this host",
                    shaper_fallback_reason=fallback_reason,
                )
    except Exception:
        if sshd is not None:
            _kill(sshd.pid)
        if proxy_pid:
            _kill(proxy_pid)
        if cg:
            _remove_cgroup(cg)
        if use_netns:
            _teardown_netns(link)
        raise
    write_known_host(Path(board.known_hosts), board.host, board.port, (d / "ssh_host_ed25519_key.pub").read_text())
    return BoardProcess(
        name=board.name,
        port=board.port,
        sshd_port=sshd_port,
        sshd_pid=sshd.pid,
        proxy_pid=proxy_pid,
        directory=str(d),
        config=str(cfg),
        cgroups=cg,
        link=link,
        started_at=time.time(),
    )


def _kill(pid: int, timeout: float = 5.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)  # reap when it is our child
            if done == pid:
                return
        except ChildProcessError:
            pass
        if not _alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def fleet_up(fleet: Any, names: list[str] | None = None) -> list[BoardProcess]:
    """Start the emulated boards (all, or ``names``). Boards already up are left running."""
    check_cgroup_v1()
    state = load_state()
    started = []
    for b in fleet.select(names) if names else fleet.emulated():
        if b.emulate is None:
            continue
        cur = state.get(b.name)
        if cur and _alive(cur.sshd_pid, cur.config):
            started.append(cur)
            continue
        if cur:  # stale record from a crashed run
            stop_board(cur)
        bp = start_board(b)
        state[b.name] = bp
        _save_state(state)
        started.append(bp)
    return started


def stop_board(bp: BoardProcess) -> dict[str, Any]:
    out = {"name": bp.name, "sshd_stopped": False, "proxy_stopped": False}
    if _alive(bp.sshd_pid, bp.config):
        _kill(bp.sshd_pid)
        out["sshd_stopped"] = True
    if bp.proxy_pid and _alive(bp.proxy_pid, bp.directory):
        _kill(bp.proxy_pid)
        out["proxy_stopped"] = True
    # sessions still inside the board's cgroup (agents) belong to the board: stop them too
    for p in bp.cgroups.values():
        try:
            for pid in (Path(p) / "tasks").read_text().split():
                _kill(int(pid), timeout=2)
        except OSError:
            pass
    _remove_cgroup(bp.cgroups)
    if bp.link.get("netns"):  # only the namespace and veth this board's record names
        out.update(_teardown_netns(bp.link))
    return out


def fleet_down(names: list[str] | None = None) -> list[dict[str, Any]]:
    """Stop only what fleet_up recorded (by pid)."""
    state = load_state()
    out = []
    for name in list(state):
        if names and name not in names:
            continue
        out.append(stop_board(state.pop(name)))
        _save_state(state)
    return out


def fleet_status(fleet: Any | None = None) -> list[dict[str, Any]]:
    state = load_state()
    names = [b.name for b in fleet.emulated()] if fleet is not None else list(state)
    rows = []
    for name in names:
        bp = state.get(name)
        if bp is None:
            rows.append({"name": name, "state": "down"})
            continue
        sshd_ok = _alive(bp.sshd_pid, bp.config)
        proxy_ok = bp.proxy_pid is None or _alive(bp.proxy_pid, bp.directory)
        row: dict[str, Any] = {
            "name": name,
            "state": "up" if sshd_ok and proxy_ok and _port_open(bp.port) else "degraded",
            "port": bp.port,
            "sshd_pid": bp.sshd_pid if sshd_ok else None,
            "proxy_pid": bp.proxy_pid if proxy_ok else None,
            "rtt_ms": bp.link.get("rtt_ms"),
            "link_mbit": bp.link.get("link_mbit"),
            "shaper": bp.link.get("shaper"),
        }
        if bp.link.get("shaper_fallback_reason"):
            row["shaper_fallback_reason"] = bp.link["shaper_fallback_reason"]
        if bp.link.get("netns"):
            for k in ("netns", "host_veth", "board_veth", "host_addr", "board_addr", "subnet", "tbf"):
                row[k] = bp.link.get(k)
            row["netns_present"] = netns_present(bp.link)
            if not row["netns_present"]:
                row["state"] = "degraded"
        try:
            q = int((Path(bp.cgroups["cpu"]) / "cpu.cfs_quota_us").read_text())
            per = int((Path(bp.cgroups["cpu"]) / "cpu.cfs_period_us").read_text())
            row["cpu_quota"] = q / per if q > 0 else None
            row["cpus"] = (Path(bp.cgroups["cpuset"]) / "cpuset.cpus").read_text().strip()
            stat = dict(
                ln.split() for ln in (Path(bp.cgroups["cpu"]) / "cpu.stat").read_text().splitlines() if ln.strip()
            )
            row["nr_throttled"] = int(stat.get("nr_throttled", 0))
        except (OSError, ValueError):
            row["state"] = "degraded"
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- link proxy


class _Link:
    """One direction of a board's link: serialisation at ``rate`` and a one-way delay."""

    def __init__(self, one_way_s: float, rate_bps: float):
        self.one_way_s = one_way_s
        self.rate_bps = rate_bps
        self.free_at = 0.0

    def schedule(self, nbytes: int, now: float) -> float:
        start = max(now, self.free_at)
        done = start + (nbytes * 8 / self.rate_bps if self.rate_bps > 0 else 0.0)
        self.free_at = done
        return done + self.one_way_s


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link) -> None:
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            at, data = await q.get()
            wait = at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                try:
                    if writer.can_write_eof():
                        writer.write_eof()
                except OSError:
                    pass
                return
            writer.write(data)
            await writer.drain()

    task = asyncio.create_task(deliver())
    try:
        while True:
            # read in MTU-ish chunks so the rate limit is smooth
            data = await reader.read(16384)
            now = loop.time()
            if not data:
                await q.put((now + link.one_way_s, None))
                break
            await q.put((link.schedule(len(data), now), data))
        await task
    except (ConnectionError, OSError):
        task.cancel()


async def _serve(listen_host: str, listen_port: int, target_host: str, target_port: int, rtt_ms: float, mbit: float):
    up = _Link(rtt_ms / 2000.0, mbit * 1e6)
    down = _Link(rtt_ms / 2000.0, mbit * 1e6)

    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(target_host, target_port)
        except OSError:
            cw.close()
            return
        for s in (cw, uw):
            sock = s.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(_pump(cr, uw, up), _pump(ur, cw, down), return_exceptions=True)
        for w in (cw, uw):
            w.close()

    server = await asyncio.start_server(handle, listen_host, listen_port, reuse_address=True)
    async with server:
        await server.serve_forever()


def run_proxy(
    listen_port: int,
    target_port: int,
    rtt_ms: float,
    rate_mbit: float,
    host: str = "127.0.0.1",
    target_host: str | None = None,
) -> None:
    """Listen on host:listen_port, forward to target_host (default: host):target_port; ``rate_mbit``
    0 means unlimited (tbf on the board's veth shapes the rate)."""
    asyncio.run(_serve(host, listen_port, target_host or host, target_port, rtt_ms, rate_mbit))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m probes.emulate")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("proxy", help="run a board's link: delay (+ rate, unless tbf shapes it) proxy")
    p.add_argument("--listen-port", type=int, required=True)
    p.add_argument("--target-host", default="127.0.0.1", help="sshd's address (a board namespace's veth end)")
    p.add_argument("--target-port", type=int, required=True)
    p.add_argument("--rtt-ms", type=float, default=0.0)
    p.add_argument("--rate-mbit", type=float, default=0.0)
    p.add_argument("--tag", default="", help="board dir (lets fleet down recognise this process)")
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    run_proxy(a.listen_port, a.target_port, a.rtt_ms, a.rate_mbit, target_host=a.target_host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
