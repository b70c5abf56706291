"""Shared fixtures: an isolated data dir, real SQLite stores, and a real PostgreSQL server.

PostgreSQL: the session starts its own private cluster (initdb as the `postgres` user on a
free port, Unix socket in a temp dir) when the Debian postgresql binaries are installed,
so the store tests run on both backends; without them those tests are skipped.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# fixture plugins of each room (tests/ is on sys.path through this rootdir conftest)
pytest_plugins: list[str] = [
    p
    for p in ("fixtures_probes", "fixtures_zoo", "fixtures_predictors", "fixtures_selector")
    if (REPO / "tests" / f"{p}.py").exists()
]


_MADE_HOME: list[str] = []  # the data dir this run made (removed at the end of the run)


def pytest_configure(config: pytest.Config) -> None:
    # never touch the user's data dir from tests
    if "EDGEATLAS_HOME" not in os.environ or not os.environ["EDGEATLAS_HOME"].startswith(tempfile.gettempdir()):
        os.environ["EDGEATLAS_HOME"] = tempfile.mkdtemp(prefix="edgeatlas-test-home-")
        _MADE_HOME.append(os.environ["EDGEATLAS_HOME"])
    os.environ.pop("EDGEATLAS_DB", None)


def pytest_unconfigure(config: pytest.Config) -> None:
    # each run left ~90 MB of feature caches in /tmp
    import shutil

    for d in _MADE_HOME:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def ea_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("EDGEATLAS_HOME", str(home))
    monkeypatch.delenv("EDGEATLAS_DB", raising=False)
    return home


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'atlas.db'}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A private PostgreSQL server for this test session; yields a base URL (no db name)."""
    env_url = os.environ.get("EDGEATLAS_TEST_PG")
    if env_url:
        yield env_url
        return
    initdbs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not initdbs:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    bindir = Path(initdbs[-1]).parent
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres system user")
    root = Path(tempfile.mkdtemp(prefix="edgeatlas-pg-"))
    os.chown(root, pw.pw_uid, pw.pw_gid)
    data = root / "data"
    port = _free_port()
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if os.geteuid() != 0 and os.getuid() != pw.pw_uid:
        as_pg = []  # a non-root user runs its own cluster
    subprocess.run(
        [*as_pg, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    proc = subprocess.Popen(
        [
            *as_pg,
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(root),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}"
    deadline = time.time() + 30
    import sqlalchemy

    while True:
        try:
            eng = sqlalchemy.create_engine(url + "/postgres")
            with eng.connect():
                pass
            eng.dispose()
            break
        except Exception:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.skip("PostgreSQL did not start")
            time.sleep(0.3)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    import sqlalchemy

    name = f"t_{os.getpid()}_{time.time_ns() % 10**12}"
    admin = sqlalchemy.create_engine(pg_server + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield f"{pg_server}/{name}"
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            )
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on SQLite and on PostgreSQL (skipped where PostgreSQL cannot start)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'atlas.db'}"
    return request.getfixturevalue("pg_url")
