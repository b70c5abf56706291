"""`edgeatlas fleet up|down|status|check`: emulated boards and board health (the probes room).

Thin commands over probes.emulate and probes.fleet; the lead adds them to the `fleet` group.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.markup import escape

from registry.commands.common import db_option, devices_option, emit, err_console, json_option, open_store


def _boards_option(fn):
    return click.option(
        "--boards", "boards", multiple=True, metavar="NAME", help="Only these boards (repeat, or comma-separate)."
    )(fn)


def _names(boards: tuple[str, ...]) -> list[str]:
    return [n.strip() for b in boards for n in b.split(",") if n.strip()]


def _fleet(devices_path: Path):
    from registry.config import load_devices

    return load_devices(devices_path, check_keys=False)


@click.command("up")
@devices_option
@db_option
@_boards_option
@json_option
def up(devices_path: Path, db_url: str | None, boards: tuple[str, ...], as_json: bool) -> None:
    """Start the emulated boards of devices.toml (real sshd, cgroup-v1 quota, shaped link).

    Each board gets its own sshd (own host key, key auth only) inside a cgroup-v1 cpu/cpuset
    group with the declared cpu_quota and cpus. A board with a declared link runs in its own
    network namespace: tbf on its veth pair shapes the rate, and a user-space proxy on
    127.0.0.1:<port> adds the RTT (netem is absent); `link_shaper = "proxy"` keeps a proxy-only
    link. Keys and known_hosts go to the data dir.
    Needs root. Boards already up are left running.

    \b
    Example:
        edgeatlas fleet up
        edgeatlas fleet up --boards little-1,edge-1 --json
    """
    from probes.emulate import fleet_up
    from registry.config import sync_fleet_to_store

    fleet = _fleet(devices_path)
    started = fleet_up(fleet, _names(boards) or None)
    sync_fleet_to_store(fleet, open_store(db_url))
    rows = [
        {
            "name": b.name,
            "port": b.port,
            "sshd_pid": b.sshd_pid,
            "proxy_pid": b.proxy_pid,
            "rtt_ms": b.link.get("rtt_ms"),
            "link_mbit": b.link.get("link_mbit"),
            "shaper": b.link.get("shaper"),
            "cgroup": b.cgroups.get("cpu"),
        }
        for b in started
    ]
    emit(rows, as_json, ["name", "port", "sshd_pid", "proxy_pid", "rtt_ms", "link_mbit"], title="emulated boards up")


@click.command("down")
@_boards_option
@json_option
def down(boards: tuple[str, ...], as_json: bool) -> None:
    """Stop the emulated boards that `fleet up` started (only the pids it recorded).

    \b
    Example:
        edgeatlas fleet down
        edgeatlas fleet down --boards little-2
    """
    from probes.emulate import fleet_down

    rows = fleet_down(_names(boards) or None)
    emit(rows, as_json, ["name", "sshd_stopped", "proxy_stopped"], title="emulated boards stopped")


@click.command("status")
@devices_option
@json_option
def status(devices_path: Path, as_json: bool) -> None:
    """Show whether each emulated board is up: pids, port, cgroup quota, throttling.

    \b
    Example:
        edgeatlas fleet status --json
    """
    from probes.emulate import fleet_status

    fleet = _fleet(devices_path) if devices_path.exists() else None
    rows = fleet_status(fleet)
    emit(
        rows,
        as_json,
        ["name", "state", "port", "sshd_pid", "proxy_pid", "cpu_quota", "cpus", "rtt_ms", "link_mbit", "nr_throttled"],
        title="emulated fleet",
    )


@click.command("check")
@devices_option
@db_option
@_boards_option
@click.option("--trust-new-hosts", is_flag=True, help="Accept and record unknown host keys (trust on first use).")
@json_option
def check(
    devices_path: Path, db_url: str | None, boards: tuple[str, ...], trust_new_hosts: bool, as_json: bool
) -> None:
    """Connect to each board; report and store its facts, runtimes, energy sensors and clock.

    A board that cannot be reached is named with exactly what is wrong (refused, timed
    out, unknown host key, key refused, no python/runtime) and how to fix it. Exits 1
    when any board failed.

    \b
    Example:
        edgeatlas fleet check
        edgeatlas fleet check --boards big-1 --json
        edgeatlas fleet check --trust-new-hosts   # first contact with a new real board
    """
    from probes.fleet import check_fleet

    fleet = _fleet(devices_path)
    rows = check_fleet(fleet, open_store(db_url), _names(boards) or None, trust_new_hosts=trust_new_hosts)
    if as_json:
        emit(rows, True)
    else:
        table = []
        for r in rows:
            f = r.get("facts") or {}
            rt = f.get("runtimes") or {}
            table.append(
                {
                    "name": r["name"],
                    "status": r["status"],
                    "cpu": f.get("cpu_model"),
                    "cores": f.get("cores_allowed"),
                    "quota": f.get("cpu_quota"),
                    "onnxruntime": rt.get("onnxruntime"),
                    "litert": rt.get("litert"),
                    "energy": ",".join(f.get("energy_backends") or []) or ("-" if f else None),
                    "clock_offset_s": (f.get("clock") or {}).get("offset_s"),
                    "problem": r.get("error_code"),
                }
            )
        emit(table, False, title="fleet check")
        for r in rows:
            if r["status"] != "ok":
                err_console.print(
                    f"[bold red]{escape(r['name'])}[/] \\[{r['error_code']}]: "
                    + escape(f"{r['error']}" + (f" (fix: {r['hint']})" if r.get("hint") else "")),
                    highlight=False,
                    soft_wrap=True,
                )
    if any(r["status"] != "ok" for r in rows):
        sys.exit(1)


commands = [up, down, status, check]
