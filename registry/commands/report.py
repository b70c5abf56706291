"""`edgeatlas report`: the static HTML report."""

from __future__ import annotations

from pathlib import Path

import click

from registry.commands.common import db_option, emit, json_option, open_store
from registry.errors import EdgeatlasError, ErrorCode


@click.command("report")
@click.option(
    "--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=Path("report.html"), show_default=True
)
@click.option(
    "--plots",
    "plots_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Embed the PNG plots and decision-table JSON files of this folder.",
)
@db_option
@json_option
def report(out: Path, plots_dir: Path | None, db_url: str | None, as_json: bool) -> None:
    """Write a static HTML report: fleet, coverage matrix, variants, predictor metrics, plots.

    \b
    Example:
        edgeatlas report --out report.html
        edgeatlas report --out out/report.html --plots out/demo
    """
    from registry.report import build_report

    if plots_dir is not None and not plots_dir.is_dir():
        raise EdgeatlasError(
            f"--plots {plots_dir}: no such folder",
            code=ErrorCode.NOT_FOUND,
            hint="give the folder that holds the PNG plots (e.g. out/demo after `make demo`), or leave --plots out",
        )
    path = build_report(open_store(db_url), out, plots_dir)
    emit({"report": str(path.resolve()), "bytes": path.stat().st_size}, as_json)


commands = [report]
