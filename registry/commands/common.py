"""Shared option decorators and output helpers for the click commands (sqlite-utils style)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

console = Console(stderr=False, width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


def json_option(fn: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(fn)


def db_option(fn: Callable) -> Callable:
    return click.option(
        "--db",
        "db_url",
        envvar="EDGEATLAS_DB",
        default=None,
        metavar="URL",
        help="SQLAlchemy URL of the store (env EDGEATLAS_DB; default: SQLite in the data dir).",
    )(fn)


def devices_option(fn: Callable) -> Callable:
    return click.option(
        "--devices",
        "devices_path",
        envvar="EDGEATLAS_DEVICES",
        default="devices.toml",
        show_default=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="The fleet file (env EDGEATLAS_DEVICES).",
    )(fn)


def open_store(db_url: str | None):
    """Open (and upgrade on first use) the store named by --db / EDGEATLAS_DB."""
    from registry.store import Store

    return Store.open(db_url or os.environ.get("EDGEATLAS_DB"))


def to_jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    return obj


def print_json(data: Any) -> None:
    click.echo(json.dumps(to_jsonable(data), indent=2, sort_keys=False, default=str))


def print_table(rows: Sequence[dict[str, Any]], columns: Iterable[str] | None = None, title: str | None = None) -> None:
    rows = [to_jsonable(r) for r in rows]
    cols = list(columns) if columns else (list(rows[0].keys()) if rows else [])
    table = Table(title=escape(title) if title else None, show_lines=False)
    for c in cols:
        table.add_column(c)
    for r in rows:
        table.add_row(*[_cell(r.get(c)) for c in cols])
    console.print(table)


def _cell(v: Any) -> Text:
    """A table cell as plain text: names and messages with [brackets] are shown, not read as markup."""
    if v is None:
        return Text("-")
    if isinstance(v, float):
        return Text(f"{v:.4g}")
    if isinstance(v, dict | list):
        return Text(json.dumps(v, separators=(",", ":")))
    return Text(str(v))


def emit(data: Any, as_json: bool, columns: Iterable[str] | None = None, title: str | None = None) -> None:
    """Print ``data`` (a list of records or one record) as JSON or as a rich table."""
    if as_json:
        print_json(data)
        return
    if isinstance(data, list):
        print_table([to_jsonable(d) for d in data], columns, title)
    else:
        d = to_jsonable(data)
        if isinstance(d, dict):
            print_table([{"field": k, "value": v} for k, v in d.items()], ["field", "value"], title)
        else:
            click.echo(d)


def note(message: str) -> None:
    """One "note: ..." line on stderr, as plain text (never read as rich markup)."""
    err_console.print(f"note: {escape(message)}", highlight=False, soft_wrap=True)


def fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(1)
