"""The `edgeatlas` command line: thin click commands over the library.

Every command that prints data takes --json; errors are one red line, no traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click
from rich.markup import escape

from registry import __version__
from registry.commands.common import db_option, devices_option, emit, err_console, json_option, open_store
from registry.errors import EdgeatlasError

# command modules owned by each room; each exposes `group` (a click group) or `commands` (a list)
COMMAND_MODULES = (
    "registry.commands.zoo",
    "registry.commands.bench",
    "registry.commands.predictors",
    "registry.commands.selector",
    "registry.commands.report",
)
FLEET_MODULES = ("registry.commands.fleet_ops",)


class EdgeatlasGroup(click.Group):
    """Turns EdgeatlasError into one clear line and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgeatlasError as exc:
            err_console.print(
                f"[bold red]error[/] \\[{exc.code.value}]: {escape(exc.one_line())}", highlight=False, soft_wrap=True
            )
            if os.environ.get("EDGEATLAS_DEBUG"):
                raise
            ctx.exit(1)
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: finished work is saved; rerun the same command to resume")
            ctx.exit(130)


@click.group(cls=EdgeatlasGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="edgeatlas")
def main() -> None:
    """edgeatlas: hardware-in-the-loop profiling and model selection for edge AI.

    Probes benchmark compressed model variants and their device/edge split points
    on real or emulated boards; the measurements train latency and energy
    predictors; the selector recommends a model, split and codec for a device
    nobody has measured.

    \b
    Example:
        edgeatlas fleet up                 # start the emulated fleet of devices.toml
        edgeatlas zoo grid --config zoo.toml
        edgeatlas bench run --grid
        edgeatlas predictors train
        edgeatlas recommend --device mid-1 --edge edge-1 --bandwidth-mbit 20 \\
            --rtt-ms 20 --prefs examples/prefs/realtime_camera.toml

    The store is SQLite in the data dir unless --db / EDGEATLAS_DB names another
    SQLAlchemy URL (postgresql://... for a lab).
    """


# ---------------------------------------------------------------------------- db
@main.group(cls=EdgeatlasGroup)
def db() -> None:
    """The store: migrations and status.

    \b
    Example:
        edgeatlas db upgrade --db postgresql+psycopg2://atlas@db-host/atlas
        edgeatlas db status --json
    """


@db.command("upgrade")
@db_option
@json_option
def db_upgrade(db_url: str | None, as_json: bool) -> None:
    """Apply the store's migrations (every command also does this on first use).

    \b
    Example:
        edgeatlas db upgrade
        edgeatlas db upgrade --db postgresql://atlas@localhost/atlas
    """
    from registry.store import Store

    store = Store.open(db_url, upgrade=False)
    before, after = store.upgrade()
    emit({"url": store.url, "from": before, "to": after}, as_json)


@db.command("status")
@db_option
@json_option
def db_status(db_url: str | None, as_json: bool) -> None:
    """Show the store URL, schema revision and row counts.

    \b
    Example:
        edgeatlas db status --json
    """
    store = open_store(db_url)
    emit(
        {
            "url": store.url,
            "revision": store.revision(),
            "device_classes": len(store.list_device_classes()),
            "boards": len(store.list_boards()),
            "variants": len(store.list_variants()),
            "measurements": store.count_measurements(status=None),
            "predictors": len(store.list_predictors()),
        },
        as_json,
    )


# ------------------------------------------------------------------------- fleet
@main.group(cls=EdgeatlasGroup)
def fleet() -> None:
    """The fleet of boards declared in devices.toml.

    \b
    Example:
        edgeatlas fleet up && edgeatlas fleet check --json   # emulated boards: start, then check
        edgeatlas fleet list --devices lab.toml
        edgeatlas fleet down
    """


@fleet.command("list")
@devices_option
@db_option
@json_option
def fleet_list(devices_path: str, db_url: str | None, as_json: bool) -> None:
    """List the boards of devices.toml with class, role, address and emulation.

    The boards and classes are also recorded in the store.

    \b
    Example:
        edgeatlas fleet list
        edgeatlas fleet list --devices lab.toml --json
    """
    from registry.config import fleet_rows, load_devices, sync_fleet_to_store

    fl = load_devices(devices_path)
    sync_fleet_to_store(fl, open_store(db_url))
    rows = fleet_rows(fl)
    if as_json:
        emit(rows, True)
        return
    for r in rows:
        e = r["emulate"]
        r["emulate"] = (
            f"{e['cpu_quota']} cpu on {e['cpus']}"
            + (f", {e['link_mbit']} Mbit/s" if e.get("link_mbit") else "")
            + (f", {e['rtt_ms']} ms RTT" if e.get("rtt_ms") else "")
            if e
            else "-"
        )
        r["tags"] = ",".join(r["tags"])
    emit(
        rows, False, ["name", "class", "role", "address", "emulate", "energy", "tags"], title=f"fleet ({devices_path})"
    )


def _register() -> None:
    for modname in COMMAND_MODULES + FLEET_MODULES:
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name == modname:
                continue  # that room has not landed its commands yet
            raise
        target = fleet if modname in FLEET_MODULES else main
        grp = getattr(mod, "group", None)
        if grp is not None:
            target.add_command(grp)
        for cmd in getattr(mod, "commands", []) or []:
            target.add_command(cmd)


_register()


def run() -> None:  # pragma: no cover - console entry
    main(prog_name="edgeatlas")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
