"""The CLI skeleton through the installed console script and through CliRunner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from registry import __version__
from registry.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_version_and_help() -> None:
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output
    r = CliRunner().invoke(main, ["--help"])
    assert r.exit_code == 0 and "Example:" in r.output and "fleet" in r.output


def test_every_command_has_example_and_printing_commands_have_json() -> None:
    import click

    def walk(cmd: click.Command, path: list[str]):
        yield path, cmd  # groups too: `edgeatlas zoo --help` shows an example as well
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*path, name])

    missing = []
    for path, cmd in walk(main, []):
        if "Example:" not in (cmd.help or ""):
            missing.append(" ".join(path))
    assert not missing, f"commands without an Example: block: {missing}"


def test_db_upgrade_and_status(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    r = CliRunner().invoke(main, ["db", "upgrade", "--db", url, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["to"]
    r = CliRunner().invoke(main, ["db", "status", "--json"], env={"EDGEATLAS_DB": url})
    assert (
        r.exit_code == 0
        and json.loads(r.output)["revision"]
        == json.loads(CliRunner().invoke(main, ["db", "upgrade", "--db", url, "--json"]).output)["to"]
    )


def test_console_script_fleet_list(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "edgeatlas"
    env = dict(os.environ, EDGEATLAS_HOME=str(tmp_path))
    r = subprocess.run(
        [str(exe), "fleet", "list", "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert {b["name"] for b in json.loads(r.stdout)} >= {"little-1", "edge-1"}
    # the default store is a SQLite file in the data dir, created on first use
    assert (tmp_path / "edgeatlas.db").exists()


def test_bad_db_url_is_one_line(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["db", "status", "--db", "postgresql+psycopg2://x@127.0.0.1:1/none"])
    assert r.exit_code == 1 and "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


def test_errors_pickle_with_their_code_and_hint() -> None:
    """An EdgeatlasError raised in a worker process (a large training's fits run in loky workers)
    reaches the caller with its code and hint, not as a bare message."""
    import pickle

    from registry.errors import EdgeatlasError, ErrorCode

    err = EdgeatlasError("no rows", code=ErrorCode.INSUFFICIENT_DATA, hint="measure first")
    back = pickle.loads(pickle.dumps(err))
    assert (back.message, back.code, back.hint, str(back)) == (err.message, err.code, err.hint, str(err))
