"""Talking to boards: :class:`BoardConnection` (one SSH connection) and :class:`FleetRunner` (a sweep).

BoardConnection (after Fabric's Connection): opens lazily, is a context manager, uses key auth only
(no agent, no password, no guessing keys from ~/.ssh), and checks host keys strictly against the
known_hosts file named in devices.toml. An unknown host is refused with a message saying how to
trust it, unless ``trust_new_hosts`` (then the key is recorded: trust on first use). A *changed*
key is always refused. Every remote command is an argv list, each element ``shlex.quote``d.

FleetRunner: boards run in parallel threads, one job at a time per board (a lock per board, also
held when a split job runs its tail on the edge board). The agent and every artifact are uploaded
only when the board's cache (``<remote_dir>/cache/<sha256><ext>``) lacks them, atomically (upload
to a temporary name, then rename). Transient failures (connection lost, upload failed) are retried
with exponential backoff on a fresh connection. Every outcome lands in the store keyed by
``Store.measurement_key(artifact sha256, board, runtime config)``: a rerun skips ok keys and redoes
failed ones (``force`` redoes everything); the store replaces a failed row by the next attempt, so
a key never has two rows.
"""

from __future__ import annotations

import hashlib
import json
import select
import shlex
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko

from probes import agent as agent_module
from probes import energy as energy_module
from probes.protocol import FACTS_MARKER, RESULT_MARKER, ErrorCode, Job, MeasureProtocol, Result, parse_marked

SERVE_MARKER = agent_module.SERVE_MARKER


class BoardError(Exception):
    """A failure talking to a board; ``code`` says which kind, ``hint`` how to fix it."""

    def __init__(self, code: ErrorCode, message: str, hint: str | None = None):
        self.code = code
        self.message = message
        self.hint = hint
        super().__init__(message + (f" (fix: {hint})" if hint else ""))

    @property
    def retryable(self) -> bool:
        return self.code in (ErrorCode.CONNECTION_ERROR, ErrorCode.DEPLOY_ERROR)


@dataclass(frozen=True)
class CommandResult:
    rc: int
    stdout: str
    stderr: str
    seconds: float


class _TrustOnFirstUse(paramiko.MissingHostKeyPolicy):
    """--trust-new-hosts: accept an unknown key and append it to the known_hosts file."""

    def __init__(self, known_hosts: Path, port: int):
        self.known_hosts = known_hosts
        self.port = port

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with open(self.known_hosts, "a") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def agent_bundle() -> tuple[str, dict[str, bytes]]:
    """The files copied to a board (agent.py + energy.py) and their combined sha256."""
    files = {
        name: Path(mod.__file__).read_bytes()
        for name, mod in (("agent.py", agent_module), ("energy.py", energy_module))
    }
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name])
    return h.hexdigest(), files


def sweep_progress(enabled: bool):
    """The sweep's rich progress bar: jobs done of total, done/failed counts, elapsed and ETA."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]sweep"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("done [green]{task.fields[done]}[/] failed [red]{task.fields[failed]}[/]"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


class _ServeUnavailable(Exception):
    """The persistent agent could not start or died without a result: run the job one-shot."""


class AgentServer:
    """A persistent agent (``agent.py --serve``) on one SSH exec channel of a BoardConnection.

    One job JSON line in, one ``EDGEATLAS_RESULT`` line out; the interpreter and the runtime
    stay loaded between jobs. Transport loss raises BoardError (the runner retries on a fresh
    connection); an agent that exits without a result raises _ServeUnavailable (the job is
    run one-shot instead); a job past its timeout kills the agent and is a TIMEOUT result.
    """

    MAX_LIFE_S = 6 * 3600  # `timeout` bounds a forgotten server on the board
    HELLO_TIMEOUT_S = 60.0

    def __init__(self, conn: BoardConnection, agent_path: str):
        self.conn = conn
        self.pid: int | None = None
        self._buf = bytearray()
        self._err = bytearray()
        argv = ["timeout", "-k", "5", str(self.MAX_LIFE_S), *conn.python_argv(), agent_path, "--serve"]
        try:
            self.chan = conn.client.get_transport().open_session(timeout=conn.connect_timeout)  # type: ignore[union-attr]
            self.chan.exec_command(" ".join(shlex.quote(str(a)) for a in argv))
        except (OSError, EOFError, paramiko.SSHException) as e:
            conn.close()
            raise BoardError(ErrorCode.CONNECTION_ERROR, f"board {conn.name!r}: cannot start the agent: {e}") from e
        line = self._read_line(SERVE_MARKER, time.monotonic() + self.HELLO_TIMEOUT_S)
        if line is None:
            self.close()
            raise _ServeUnavailable(f"no hello from the persistent agent within {self.HELLO_TIMEOUT_S:g} s")
        try:
            self.pid = int(json.loads(line)["pid"])
        except (ValueError, KeyError, TypeError) as e:
            self.close()
            raise _ServeUnavailable(f"bad hello from the persistent agent: {line[:200]!r}") from e

    @property
    def alive(self) -> bool:
        return not self.chan.closed and not self.chan.exit_status_ready() and self.conn._transport_ok()

    def _read_line(self, marker: str, deadline: float) -> str | None:
        """The payload of the next stdout line starting with ``marker``; None at the deadline.

        Raises _ServeUnavailable when the agent exits, BoardError when the connection drops."""
        chan = self.chan
        while True:
            while b"\n" in self._buf:
                raw, _, rest = bytes(self._buf).partition(b"\n")
                self._buf = bytearray(rest)
                text = raw.decode(errors="replace")
                if text.startswith(marker):
                    return text[len(marker) :]
            got = False
            try:
                if chan.recv_ready():
                    self._buf += chan.recv(65536)
                    got = True
                if chan.recv_stderr_ready():
                    self._err += chan.recv_stderr(65536)
                    del self._err[:-4000]
                    got = True
            except (OSError, EOFError, paramiko.SSHException) as e:
                self.conn.close()
                raise BoardError(
                    ErrorCode.CONNECTION_ERROR, f"board {self.conn.name!r}: connection lost talking to the agent: {e}"
                ) from e
            if got:
                continue
            if not self.conn._transport_ok():
                self.conn.close()
                raise BoardError(
                    ErrorCode.CONNECTION_ERROR, f"board {self.conn.name!r}: connection lost while a job ran"
                )
            if chan.exit_status_ready() or chan.closed:
                rc = chan.recv_exit_status() if chan.exit_status_ready() else -1
                tail = self._err.decode(errors="replace").strip()[-600:]
                raise _ServeUnavailable(f"the persistent agent exited {rc}: {tail}")
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            # sleep until stdout has data (the channel's fileno wakes select) or 50 ms pass
            # (stderr and the exit status are polled), instead of spinning next to a job
            try:
                select.select([chan], [], [], min(0.05, left))
            except (OSError, ValueError):
                time.sleep(0.002)

    def request(self, job: Job) -> Result:
        try:
            self.chan.sendall((job.to_json() + "\n").encode())
        except (OSError, EOFError, paramiko.SSHException) as e:
            if not self.conn._transport_ok():
                self.conn.close()
                raise BoardError(
                    ErrorCode.CONNECTION_ERROR, f"board {self.conn.name!r}: connection lost sending a job: {e}"
                ) from e
            raise _ServeUnavailable(f"cannot send to the persistent agent: {e}") from e
        limit = max(1, int(job.timeout_s + 0.999))
        deadline = time.monotonic() + limit + 10
        while True:
            line = self._read_line(RESULT_MARKER, deadline)
            if line is None:  # hung past its own timeout (stuck in native code): kill it
                self.kill()
                return Result.failure(
                    job.job_id, ErrorCode.TIMEOUT, f"no result after {limit + 10} s (job timeout {job.timeout_s:g} s)"
                )
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if data.get("job_id") in (None, job.job_id):
                return Result.from_agent(data)

    def kill(self) -> None:
        if self.pid is not None:
            try:
                self.conn.run(["kill", "-9", str(self.pid)], timeout=30)
            except BoardError:
                pass
        self.close()

    def close(self) -> None:
        try:
            self.chan.close()
        except Exception:  # noqa: BLE001 - closing a dead channel
            pass


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class BoardConnection:
    """One SSH connection to a board. Lazy: nothing happens until the first command."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        user: str,
        key_file: Path,
        known_hosts: Path,
        remote_dir: str = "/tmp/edgeatlas-probe",
        trust_new_hosts: bool = False,
        connect_timeout: float = 10.0,
        python: str | None = None,
    ):
        if not remote_dir.startswith("/"):
            raise BoardError(
                ErrorCode.DEPLOY_ERROR,
                f"board {name!r}: remote_dir {remote_dir!r} is not an absolute path",
                hint="set remote_dir to an absolute path in devices.toml",
            )
        self.name, self.host, self.port, self.user = name, host, int(port), user
        self.key_file, self.known_hosts = Path(key_file), Path(known_hosts)
        self.remote_dir = remote_dir.rstrip("/") or "/"
        self.trust_new_hosts = trust_new_hosts
        self.connect_timeout = connect_timeout
        self.python = python
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self.uploaded_bytes = 0
        self.persistent = False  # run jobs through one `agent.py --serve` per connection
        self._server: AgentServer | None = None
        self._serve_failures = 0
        self.served_jobs = 0

    @classmethod
    def from_spec(
        cls, board: Any, trust_new_hosts: bool | None = None, connect_timeout: float = 10.0
    ) -> BoardConnection:
        python = None
        for t in board.tags:  # tag "python=/path/to/python3" overrides the board's interpreter
            if t.startswith("python="):
                python = t.split("=", 1)[1]
        return cls(
            name=board.name,
            host=board.host,
            port=board.port,
            user=board.user,
            key_file=board.key_file,
            known_hosts=board.known_hosts,
            remote_dir=board.remote_dir,
            trust_new_hosts=board.trust_new_hosts if trust_new_hosts is None else trust_new_hosts,
            connect_timeout=connect_timeout,
            python=python,
        )

    # --------------------------------------------------------------- connection
    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def client(self) -> paramiko.SSHClient:
        if self._client is None or not self._transport_ok():
            self.close()
            self._client = self._connect()
        return self._client

    def _transport_ok(self) -> bool:
        t = self._client.get_transport() if self._client else None
        return bool(t and t.is_active())

    def _connect(self) -> paramiko.SSHClient:
        if not self.key_file.exists():
            raise BoardError(
                ErrorCode.AUTH_ERROR,
                f"board {self.name!r}: key file {self.key_file} does not exist",
                hint="run `edgeatlas fleet up` (emulated boards) or set key_file in devices.toml",
            )
        c = paramiko.SSHClient()
        if self.known_hosts.exists():
            try:
                c.load_host_keys(str(self.known_hosts))
            except (OSError, paramiko.SSHException) as e:
                raise BoardError(ErrorCode.HOST_KEY_ERROR, f"cannot read known_hosts {self.known_hosts}: {e}") from e
        if self.trust_new_hosts:
            c.set_missing_host_key_policy(_TrustOnFirstUse(self.known_hosts, self.port))
        else:
            c.set_missing_host_key_policy(paramiko.RejectPolicy())
        entry = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        try:
            c.connect(
                self.host,
                port=self.port,
                username=self.user,
                key_filename=str(self.key_file),
                look_for_keys=False,
                allow_agent=False,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                channel_timeout=self.connect_timeout,
            )
        except paramiko.BadHostKeyException as e:
            c.close()
            raise BoardError(
                ErrorCode.HOST_KEY_ERROR,
                f"board {self.name!r} ({self.where}) presented a host key that differs from {self.known_hosts}: "
                f"got {e.key.get_name()} {e.key.get_fingerprint().hex()}; refusing (possible impersonation)",
                hint=f"if the board was reinstalled: ssh-keygen -R {shlex.quote(entry)} -f {shlex.quote(str(self.known_hosts))}, "
                "then trust it again",
            ) from e
        except paramiko.AuthenticationException as e:
            c.close()
            raise BoardError(
                ErrorCode.AUTH_ERROR,
                f"board {self.name!r} ({self.where}) refused the key {self.key_file}: {e}",
                hint=f"add {self.key_file}.pub to ~{self.user}/.ssh/authorized_keys on the board, or fix user/key_file",
            ) from e
        except paramiko.SSHException as e:
            c.close()
            if "not found in known_hosts" in str(e):
                raise BoardError(
                    ErrorCode.HOST_KEY_ERROR,
                    f"board {self.name!r} ({self.where}) has a host key that is not in {self.known_hosts}; "
                    "refusing an unknown host",
                    hint=f"check its fingerprint, then trust it: ssh-keyscan -p {self.port} {shlex.quote(self.host)} "
                    f">> {shlex.quote(str(self.known_hosts))} (or rerun with --trust-new-hosts)",
                ) from e
            raise BoardError(
                ErrorCode.CONNECTION_ERROR,
                f"board {self.name!r} ({self.where}): SSH handshake failed: {e}",
                hint="is an SSH server (not another service) listening on that port?",
            ) from e
        except TimeoutError as e:
            c.close()
            raise BoardError(
                ErrorCode.CONNECTION_ERROR,
                f"board {self.name!r} ({self.where}): timed out after {self.connect_timeout:g} s",
                hint="check the board is powered, on the network and that host/port are right",
            ) from e
        except (OSError, EOFError) as e:
            c.close()
            refused = isinstance(e, paramiko.ssh_exception.NoValidConnectionsError) or isinstance(
                e, ConnectionRefusedError
            )
            raise BoardError(
                ErrorCode.CONNECTION_ERROR,
                f"board {self.name!r} ({self.where}): "
                + ("connection refused (nothing listens there)" if refused else f"cannot connect: {e}"),
                hint="start sshd on the board (emulated boards: `edgeatlas fleet up`) or fix host/port in devices.toml",
            ) from e
        return c

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for obj in (self._sftp, self._client):
            try:
                if obj is not None:
                    obj.close()
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass
        self._sftp = None
        self._client = None

    def __enter__(self) -> BoardConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------- commands
    def run(self, argv: Sequence[str], timeout: float = 60.0, stdin_data: str | None = None) -> CommandResult:
        """Run ``argv`` on the board (each element shell-quoted). Transport failures raise BoardError."""
        command = " ".join(shlex.quote(str(a)) for a in argv)
        t0 = time.monotonic()
        try:
            chan = self.client.get_transport().open_session(timeout=self.connect_timeout)  # type: ignore[union-attr]
            chan.settimeout(timeout)
            chan.exec_command(command)
            if stdin_data is not None:
                chan.sendall(stdin_data.encode())
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            while True:
                got = False
                if chan.recv_ready():
                    out += chan.recv(65536)
                    got = True
                if chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    got = True
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if chan.closed and not got:
                    break
                if not got:
                    if time.monotonic() - t0 > timeout:
                        chan.close()
                        raise TimeoutError(f"no exit after {timeout:g} s")
                    if not self._transport_ok():
                        raise EOFError("connection lost")
                    time.sleep(0.002)
            rc = chan.recv_exit_status() if chan.exit_status_ready() else -1
            chan.close()
        except BoardError:
            raise
        except (OSError, EOFError, paramiko.SSHException) as e:
            self.close()
            raise BoardError(
                ErrorCode.CONNECTION_ERROR,
                f"board {self.name!r}: connection lost while running {argv[0]!r}: {type(e).__name__}: {e}",
            ) from e
        if rc == -1:
            self.close()
            raise BoardError(
                ErrorCode.CONNECTION_ERROR, f"board {self.name!r}: the session ended without an exit status"
            )
        return CommandResult(rc, out.decode(errors="replace"), err.decode(errors="replace"), time.monotonic() - t0)

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None or not self._transport_ok():
            try:
                self._sftp = self.client.open_sftp()
            except (OSError, EOFError, paramiko.SSHException) as e:
                self.close()
                raise BoardError(ErrorCode.CONNECTION_ERROR, f"board {self.name!r}: cannot open SFTP: {e}") from e
        return self._sftp

    def exists(self, path: str) -> bool:
        try:
            self.sftp.stat(path)
            return True
        except FileNotFoundError:
            return False
        except (OSError, EOFError, paramiko.SSHException) as e:
            self.close()
            raise BoardError(ErrorCode.CONNECTION_ERROR, f"board {self.name!r}: stat {path} failed: {e}") from e

    def mkdirs(self, path: str) -> None:
        r = self.run(["mkdir", "-p", "--", path], timeout=30)
        if r.rc != 0:
            raise BoardError(ErrorCode.DEPLOY_ERROR, f"board {self.name!r}: mkdir {path} failed: {r.stderr.strip()}")

    def make_dir(self, path: str) -> None:
        """``mkdir`` over SFTP (no process on the board); ``mkdir -p`` when a parent is missing."""
        try:
            self.sftp.mkdir(path)
            return
        except OSError:
            pass  # exists, or a parent is missing
        except (EOFError, paramiko.SSHException) as e:
            self.close()
            raise BoardError(ErrorCode.CONNECTION_ERROR, f"board {self.name!r}: mkdir {path} failed: {e}") from e
        self.mkdirs(path)

    def remove_files(self, directory: str, files: Sequence[str]) -> None:
        """Delete ``files`` and then ``directory`` over SFTP; ``rm -rf`` if anything else is left."""
        try:
            for f in files:
                try:
                    self.sftp.remove(f)
                except FileNotFoundError:
                    pass
            self.sftp.rmdir(directory)
            return
        except FileNotFoundError:
            return
        except OSError:
            pass  # not empty: fall back to rm -rf
        except (EOFError, paramiko.SSHException) as e:
            self.close()
            raise BoardError(
                ErrorCode.CONNECTION_ERROR, f"board {self.name!r}: cleanup of {directory} failed: {e}"
            ) from e
        self.run(["rm", "-rf", "--", directory], timeout=30)

    def put_bytes(self, data: bytes, remote: str) -> None:
        """Write ``data`` to ``remote`` atomically (temp name, then rename)."""
        tmp = f"{remote}.part-{uuid.uuid4().hex[:8]}"
        try:
            with self.sftp.open(tmp, "wb") as f:
                f.set_pipelined(True)
                f.write(data)
            self.sftp.posix_rename(tmp, remote)
        except (OSError, EOFError, paramiko.SSHException) as e:
            self.close()
            raise BoardError(ErrorCode.DEPLOY_ERROR, f"board {self.name!r}: upload to {remote} failed: {e}") from e
        self.uploaded_bytes += len(data)

    def put_file(self, local: Path, remote: str) -> None:
        tmp = f"{remote}.part-{uuid.uuid4().hex[:8]}"
        try:
            attrs = self.sftp.put(str(local), tmp, confirm=True)
            self.sftp.posix_rename(tmp, remote)
        except (OSError, EOFError, paramiko.SSHException) as e:
            self.close()
            raise BoardError(
                ErrorCode.DEPLOY_ERROR, f"board {self.name!r}: upload {local} -> {remote} failed: {e}"
            ) from e
        self.uploaded_bytes += int(attrs.st_size or 0)

    def get_bytes(self, remote: str) -> bytes:
        try:
            with self.sftp.open(remote, "rb") as f:
                f.prefetch()
                return f.read()
        except FileNotFoundError as e:
            raise BoardError(ErrorCode.RUNTIME_ERROR, f"board {self.name!r}: {remote} not found") from e
        except (OSError, EOFError, paramiko.SSHException) as e:
            self.close()
            raise BoardError(ErrorCode.CONNECTION_ERROR, f"board {self.name!r}: download {remote} failed: {e}") from e

    # --------------------------------------------------------------- the agent
    def ensure_agent(self) -> str:
        """Upload agent.py + energy.py unless this version is already there; returns the agent path."""
        sha, files = agent_bundle()
        d = f"{self.remote_dir}/agent-{sha[:16]}"
        path = f"{d}/agent.py"
        if not self.exists(path):
            self.mkdirs(d)
            for name in sorted(files, key=lambda n: n == "agent.py"):  # agent.py last: its presence = complete
                self.put_bytes(files[name], f"{d}/{name}")
        return path

    def ensure_artifact(self, local: Path, sha256: str) -> str:
        """The artifact's path in the board cache; uploaded only when the cache lacks that sha256."""
        ext = "".join(Path(local).suffixes[-1:]) or ".bin"
        remote = f"{self.remote_dir}/cache/{sha256}{ext}"
        if not self.exists(remote):
            self.mkdirs(f"{self.remote_dir}/cache")
            self.put_file(Path(local), remote)
        return remote

    def python_argv(self) -> list[str]:
        """The board's interpreter: the ``python=`` tag, else ``$EDGEATLAS_PYTHON`` of the board's
        sshd environment (emulated boards set it), else ``python3`` on the login PATH."""
        if self.python:
            return [self.python]
        return ["sh", "-c", 'exec "${EDGEATLAS_PYTHON:-python3}" "$@"', "python"]

    def run_agent(self, job: Job) -> Result:
        """Run one job through the agent; agent failures come back as error Results, transport ones raise.

        With ``persistent``, the job goes to this connection's ``agent.py --serve`` (started on
        first use); if that agent cannot start or dies without a result, the job runs one-shot
        (after two such failures the connection stays one-shot)."""
        if self.persistent and self._serve_failures < 2:
            try:
                if self._server is None or not self._server.alive:
                    if self._server is not None:
                        self._server.close()
                    self._server = None
                    self._server = AgentServer(self, self.ensure_agent())
                res = self._server.request(job)
                self.served_jobs += 1
                return res
            except _ServeUnavailable:
                self._serve_failures += 1
                if self._server is not None:
                    self._server.close()
                self._server = None
        return self.run_one_shot(job)

    def run_one_shot(self, job: Job) -> Result:
        """Run one job in a fresh agent process (``timeout`` bounds it on the board)."""
        agent_path = self.ensure_agent()
        limit = max(1, int(job.timeout_s + 0.999))
        argv = ["timeout", "-k", "5", str(limit + 5), *self.python_argv(), agent_path]
        t0 = time.monotonic()
        r = self.run(argv, timeout=limit + 30, stdin_data=job.to_json())
        data = parse_marked(r.stdout)
        if data is not None:
            return Result.from_agent(data)
        tail = (r.stderr.strip() or r.stdout.strip())[-600:]
        if r.rc == 124 or (r.rc == 137 and time.monotonic() - t0 >= limit):
            return Result.failure(
                job.job_id, ErrorCode.TIMEOUT, f"killed after {limit + 5} s (job timeout {job.timeout_s:g} s)"
            )
        if r.rc == 137:
            return Result.failure(
                job.job_id, ErrorCode.OOM, f"the agent was killed (SIGKILL, likely out of memory): {tail}"
            )
        if r.rc == 127:
            return Result.failure(
                job.job_id, ErrorCode.RUNTIME_MISSING, f"no python interpreter on board {self.name!r}: {tail}"
            )
        return Result.failure(job.job_id, ErrorCode.DEPLOY_ERROR, f"the agent exited {r.rc} without a result: {tail}")

    CLOCK_SAMPLES = 8

    def clock_offset(self, samples: int = CLOCK_SAMPLES, timeout: float = 30.0) -> dict[str, Any]:
        """The board clock minus ours, NTP style: the round trip with the smallest delay wins.

        One remote python answers each newline on stdin with its ``time.time()``, so a sample's
        round trip is two channel messages, symmetric, and the board's stamp lies within half of it
        from the midpoint of ours. (Timing a whole ``date`` command instead puts the channel open,
        the fork and, on a CPU-capped board, its throttling on one side of the midpoint: that read
        as a 0.1-0.3 s offset on emulated boards that share the host's clock.) Without a python on
        the board, one ``date`` command gives a coarse reading, marked by its method.
        """
        echo = "import sys, time\nfor _ in sys.stdin:\n    print(repr(time.time()), flush=True)"
        command = " ".join(shlex.quote(a) for a in [*self.python_argv(), "-c", echo])
        best: tuple[float, float] | None = None  # (round trip, offset)
        taken = 0
        deadline = time.monotonic() + timeout
        chan = None
        try:
            chan = self.client.get_transport().open_session(timeout=self.connect_timeout)  # type: ignore[union-attr]
            chan.settimeout(timeout)
            chan.exec_command(command)
            f = chan.makefile("r")
            # a first round trip waits for the interpreter and skips whatever a shell start-up file
            # printed before it; it is not a sample
            chan.sendall(b"\n")
            for _ in range(50):
                line = f.readline()
                if not line or _is_float(line):
                    break
            while line and taken < samples and time.monotonic() < deadline:
                t0 = time.time()
                chan.sendall(b"\n")
                line = f.readline()
                t1 = time.time()
                if not _is_float(line):
                    break  # EOF (no python there, or it died) or out of step: what was taken stands
                taken += 1
                sample = (t1 - t0, float(line) - (t0 + t1) / 2)
                best = sample if best is None or sample[0] < best[0] else best
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the samples taken before the failure stand; none: the date fallback below
        finally:
            if chan is not None:
                chan.close()
        if best is not None:
            return {"offset_s": best[1], "uncertainty_s": best[0] / 2, "method": f"echo:min-rtt-of-{taken}"}
        t0 = time.time()
        d = self.run(["date", "+%s.%N"], timeout=timeout)
        t1 = time.time()
        try:
            return {
                "offset_s": float(d.stdout.strip()) - (t0 + t1) / 2,
                "uncertainty_s": (t1 - t0) / 2,
                "method": "date",
            }
        except ValueError:
            return {"offset_s": None, "uncertainty_s": None, "method": "date", "error": d.stderr.strip()[-200:]}

    def facts(self, timeout: float = 60.0) -> dict[str, Any]:
        agent_path = self.ensure_agent()
        r = self.run(["timeout", str(int(timeout)), *self.python_argv(), agent_path, "--facts"], timeout=timeout + 10)
        data = parse_marked(r.stdout, FACTS_MARKER)
        if data is None:
            code = ErrorCode.RUNTIME_MISSING if r.rc == 127 else ErrorCode.DEPLOY_ERROR
            raise BoardError(
                code, f"board {self.name!r}: the agent printed no facts (exit {r.rc}): {r.stderr.strip()[-400:]}"
            )
        data["clock"] = {**(data.get("clock") or {}), **self.clock_offset()}
        return data


# =============================================================================== sweeps


@dataclass(frozen=True)
class SweepConfig:
    runtime: str = "onnxruntime"
    threads: int = 1
    graph_opt: str = "all"  # onnxruntime graph optimization level; "all" is onnxruntime's default
    protocol: MeasureProtocol = field(default_factory=MeasureProtocol)
    timeout_s: float = 300.0
    retries: int = 2
    backoff_s: float = 0.5
    force: bool = False
    trust_new_hosts: bool = False
    codecs: tuple[str, ...] = ("fp32", "fp16", "int8")
    connect_timeout: float = 10.0
    persistent_agent: bool = True  # one `agent.py --serve` per board for the sweep (one-shot on error)
    # interleave the drift reference (probes.drift) with each whole-model job's runs; its sha256
    # joins the measurement key (another reference, another measurement)
    drift_ref: bool = False

    def __post_init__(self) -> None:
        from probes.agent import graph_opt_problem

        problem = graph_opt_problem(self.graph_opt, self.runtime)
        if problem:
            raise ValueError(problem)
        if self.drift_ref and self.runtime != "onnxruntime":
            raise ValueError(f"the drift reference is an ONNX model; runtime {self.runtime!r} cannot run it")

    def runtime_config(self) -> dict[str, Any]:
        """What a measurement is keyed by besides artifact and board (``graph_opt`` only when not
        the default, so measurements taken before the option existed keep their keys)."""
        cfg: dict[str, Any] = {"runtime": self.runtime, "threads": self.threads, "protocol": self.protocol.to_dict()}
        if self.graph_opt != "all":
            cfg["graph_opt"] = self.graph_opt
        return cfg

    def model_config(self) -> dict[str, Any]:
        """A whole-model job's key config: the runtime config, and the drift reference's sha256
        when one is interleaved (split jobs never run one)."""
        cfg: dict[str, Any] = {"kind": "model", **self.runtime_config()}
        if self.drift_ref:
            from probes.drift import reference_model

            cfg["drift_ref"] = reference_model()[1]
        return cfg


@dataclass(frozen=True)
class ModelTask:
    variant_id: str
    artifact: Path
    sha256: str


@dataclass(frozen=True)
class SplitTask:
    variant_id: str
    split_id: int
    head: Path
    head_sha256: str
    tail: Path
    tail_sha256: str
    edge: str
    codecs: tuple[str, ...]
    # the pca codec's basis (.npz: components, mean), shipped to both ends; None: no pca
    pca_basis: Path | None = None
    pca_basis_sha256: str | None = None

    def __post_init__(self) -> None:
        if "pca" in self.codecs and not (self.pca_basis and self.pca_basis_sha256):
            raise ValueError(f"split {self.split_id}: the pca codec needs its basis file (pca_basis)")


@dataclass(frozen=True)
class JobOutcome:
    board: str
    variant_id: str
    key: str
    status: str  # ok | error | skipped
    error_code: str | None = None
    error_message: str | None = None
    latency_ms: float | None = None
    inference_s: float = 0.0
    attempts: int = 0
    split_id: int | None = None
    codec: str | None = None


@dataclass(frozen=True)
class SweepReport:
    run_id: int | None
    outcomes: tuple[JobOutcome, ...]
    wall_s: float
    uploaded_bytes: int

    @property
    def done(self) -> int:
        return sum(o.status == "ok" for o in self.outcomes)

    @property
    def failed(self) -> int:
        return sum(o.status == "error" for o in self.outcomes)

    @property
    def skipped(self) -> int:
        return sum(o.status == "skipped" for o in self.outcomes)

    @property
    def inference_s(self) -> float:
        return sum(o.inference_s for o in self.outcomes)

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "jobs": len(self.outcomes),
            "done": self.done,
            "failed": self.failed,
            "skipped": self.skipped,
            "wall_s": round(self.wall_s, 3),
            "inference_s": round(self.inference_s, 3),
            "uploaded_bytes": self.uploaded_bytes,
        }


def _inference_seconds(stats: dict[str, Any] | None) -> float:
    if not stats or not stats.get("n") or stats.get("mean_ms") is None:
        return 0.0
    return stats["n"] * stats["mean_ms"] / 1000.0


class FleetRunner:
    """Run tasks on boards: boards in parallel, jobs per board serial, results into the store."""

    def __init__(
        self,
        store: Any,
        fleet: Any,
        config: SweepConfig | None = None,
        progress: bool = True,
        on_event: Callable[[str, JobOutcome], None] | None = None,
    ):
        self.store = store
        self.fleet = fleet
        self.config = config or SweepConfig()
        self.progress = progress
        self.on_event = on_event
        self._board_locks: dict[str, threading.Lock] = {b.name: threading.Lock() for b in fleet.boards}
        self._conns: dict[str, BoardConnection] = {}
        self._store_lock = threading.Lock()
        self._conn_lock = threading.Lock()
        self._uploaded_closed = 0
        self._healthy: dict[str, bool] = {}
        # where results go: None -> the store (add_measurement); a queue worker sets a hook that
        # collects the rows and writes them in the transaction that completes the job
        self.record_hook: Callable[[dict[str, Any]], None] | None = None

    def with_config(self, config: SweepConfig) -> FleetRunner:
        """A runner with another config that shares this one's connections, board locks and hook."""
        other = FleetRunner(self.store, self.fleet, config, progress=False, on_event=self.on_event)
        other._board_locks, other._conns, other._conn_lock = self._board_locks, self._conns, self._conn_lock
        other._store_lock, other._healthy, other.record_hook = self._store_lock, self._healthy, self.record_hook
        return other

    # ------------------------------------------------------------------ helpers
    def connection(self, name: str) -> BoardConnection:
        with self._conn_lock:
            if name not in self._conns:
                self._conns[name] = BoardConnection.from_spec(
                    self.fleet.board(name),
                    trust_new_hosts=self.config.trust_new_hosts or None,
                    connect_timeout=self.config.connect_timeout,
                )
            self._conns[name].persistent = self.config.persistent_agent
            return self._conns[name]

    def close(self) -> None:
        for c in self._conns.values():
            c.close()

    def uploaded_bytes(self) -> int:
        return sum(c.uploaded_bytes for c in self._conns.values())

    def _power(self, board: Any) -> dict[str, Any] | None:
        cls = self.fleet.classes.get(board.class_name)
        return dict(cls.power) if cls and cls.power else None

    def _energy_spec(self, board: Any) -> dict[str, Any] | None:
        return {"backend": board.energy.backend, "options": dict(board.energy.options)} if board.energy else None

    def _job(self, board: Any, model: str, job_id: str, **kw: Any) -> Job:
        c = self.config
        return Job(
            job_id=job_id,
            model=model,
            runtime=c.runtime,
            threads=c.threads,
            graph_opt=c.graph_opt,
            protocol=c.protocol,
            timeout_s=c.timeout_s,
            energy=self._energy_spec(board),
            power_model=self._power(board),
            **kw,
        )

    def model_key(self, board: str, task: ModelTask) -> str:
        return self.store.measurement_key(task.sha256, board, self.config.model_config())

    def split_keys(self, board: str, task: SplitTask) -> dict[str, str]:
        base = {"kind": "split", "edge": task.edge, "tail_sha256": task.tail_sha256, **self.config.runtime_config()}
        out = {}
        for c in task.codecs:
            cfg = {**base, "codec": c}
            if c == "pca":  # another basis is another measurement
                cfg["basis_sha256"] = task.pca_basis_sha256
            out[c] = self.store.measurement_key(task.head_sha256, board, cfg)
        return out

    def _record(self, **row: Any) -> None:
        if self.record_hook is not None:
            self.record_hook(row)
            return
        with self._store_lock:
            self.store.add_measurement(**row, replace=self.config.force)

    # ------------------------------------------------------------------ one job
    def _attempts(self, board_name: str, fn: Callable[[], Any], healthy: dict[str, bool]) -> tuple[Any, int]:
        """Call fn with retries/backoff on transient errors; returns (value or BoardError, attempts)."""
        n = self.config.retries + 1 if healthy.get(board_name, True) else 1
        last: BoardError | None = None
        for i in range(n):
            try:
                return fn(), i + 1
            except BoardError as e:
                last = e
                self.connection(board_name).close()
                if not e.retryable:
                    healthy[board_name] = False
                    break
                if i + 1 < n:
                    time.sleep(self.config.backoff_s * (2**i))
        healthy[board_name] = False
        return last, n

    def _run_model(
        self, board: Any, task: ModelTask, key: str, run_id: int | None, healthy: dict[str, bool]
    ) -> JobOutcome:
        conn = self.connection(board.name)
        job_id = uuid.uuid4().hex[:12]

        def go() -> Result:
            with self._board_locks[board.name]:
                remote = conn.ensure_artifact(task.artifact, task.sha256)
                ref = None
                if self.config.drift_ref:
                    from probes.drift import reference_model

                    ref = conn.ensure_artifact(*reference_model())
                return conn.run_agent(self._job(board, remote, job_id, drift_ref=ref))

        res, attempts = self._attempts(board.name, go, healthy)
        if isinstance(res, BoardError):
            res = Result.failure(job_id, res.code, res.message + (f" (fix: {res.hint})" if res.hint else ""))
        else:
            healthy[board.name] = True
        config = self.config.model_config()
        self._record(
            key=key,
            board=board.name,
            variant_id=task.variant_id,
            runtime=self.config.runtime,
            config=config,
            status="ok" if res.ok else "error",
            latency_ms=res.latency_ms,
            stats=res.stats,
            energy_mj=res.energy_mj,
            energy_source=res.energy_source,
            system=_system(res),
            error_code=None if res.ok else res.error_code.name,
            error_message=res.error_message,
            device_class=board.class_name,
            run_id=run_id,
        )
        return JobOutcome(
            board=board.name,
            variant_id=task.variant_id,
            key=key,
            status="ok" if res.ok else "error",
            error_code=None if res.ok else res.error_code.name,
            error_message=res.error_message,
            latency_ms=res.latency_ms,
            inference_s=_inference_seconds(res.stats),
            attempts=attempts,
        )

    def _run_split(
        self, board: Any, task: SplitTask, keys: dict[str, str], run_id: int | None, healthy: dict[str, bool]
    ) -> list[JobOutcome]:
        dev = self.connection(board.name)
        edge_spec = self.fleet.board(task.edge)
        edge = self.connection(task.edge)
        job_id = uuid.uuid4().hex[:12]

        def basis_params(conn: BoardConnection) -> dict[str, Any] | None:
            if task.pca_basis is None or "pca" not in task.codecs:
                return None
            return {"pca": {"basis": conn.ensure_artifact(task.pca_basis, task.pca_basis_sha256 or "")}}

        def go() -> dict[str, Any]:
            with self._board_locks[board.name]:
                head_remote = dev.ensure_artifact(task.head, task.head_sha256)
                pay_dir = f"{dev.remote_dir}/jobs/{job_id}"
                head = dev.run_agent(
                    self._job(
                        board,
                        head_remote,
                        job_id + "-h",
                        kind="split_head",
                        codecs=task.codecs,
                        payload_dir=pay_dir,
                        codec_params=basis_params(dev),
                    )
                )
                if not head.ok:
                    return {"head": head}
                transfers: dict[str, dict[str, Any]] = {}
                blobs: dict[str, bytes] = {}
                for c, info in head.raw["codecs"].items():
                    # the payload crosses the device's (shaped) link: timed
                    t0 = time.perf_counter()
                    blobs[c] = dev.get_bytes(info["payload_path"])
                    transfers[c] = {"transfer_ms": (time.perf_counter() - t0) * 1000.0, "bytes": len(blobs[c])}
                dev.remove_files(pay_dir, [i["payload_path"] for i in head.raw["codecs"].values()])
            with self._board_locks[task.edge]:
                tail_remote = edge.ensure_artifact(task.tail, task.tail_sha256)
                edir = f"{edge.remote_dir}/jobs/{job_id}"
                edge.make_dir(edir)
                payloads = {}
                for c, blob in blobs.items():
                    payloads[c] = f"{edir}/payload-{c}.bin"
                    edge.put_bytes(blob, payloads[c])
                tail = edge.run_agent(
                    self._job(
                        edge_spec,
                        tail_remote,
                        job_id + "-t",
                        kind="split_tail",
                        payloads=payloads,
                        codec_params=basis_params(edge),
                    )
                )
                edge.remove_files(edir, list(payloads.values()))
            return {"head": head, "tail": tail, "transfers": transfers}

        res, attempts = self._attempts(board.name, go, healthy)
        outcomes = []
        for codec, key in keys.items():
            cfg: dict[str, Any] = {"kind": "split", "edge": task.edge, "codec": codec, **self.config.runtime_config()}
            if codec == "pca":
                cfg["basis_sha256"] = task.pca_basis_sha256
            row: dict[str, Any] = dict(
                key=key,
                board=board.name,
                variant_id=task.variant_id,
                runtime=self.config.runtime,
                config=cfg,
                split_id=task.split_id,
                device_class=board.class_name,
                run_id=run_id,
            )
            err: tuple[str, str] | None = None
            if isinstance(res, BoardError):
                err = (res.code.name, res.message)
            elif not res["head"].ok:
                err = (res["head"].error_code.name, "head on device: " + (res["head"].error_message or ""))
            elif not res["tail"].ok:
                err = (res["tail"].error_code.name, "tail on edge: " + (res["tail"].error_message or ""))
            if err:
                self._record(**row, status="error", error_code=err[0], error_message=err[1])
                outcomes.append(
                    JobOutcome(
                        board.name,
                        task.variant_id,
                        key,
                        "error",
                        err[0],
                        err[1],
                        attempts=attempts,
                        split_id=task.split_id,
                        codec=codec,
                    )
                )
                continue
            healthy[board.name] = True
            head, tail, tr = res["head"], res["tail"], res["transfers"][codec]
            enc = head.raw["codecs"][codec]
            dec = tail.raw["codecs"][codec]["decode"]
            parts = {
                "head_ms": head.latency_ms,
                "encode_ms": enc["encode"]["p50_ms"],
                "transfer_ms": tr["transfer_ms"],
                "decode_ms": dec["p50_ms"],
                "tail_ms": tail.latency_ms,
            }
            e2e = sum(parts.values())
            stats = {
                **parts,
                "e2e_ms": e2e,
                "payload_bytes": enc["payload_bytes"],
                "max_abs_error": enc["max_abs_error"],
                "transfer_source": "measured:sftp-over-device-link",
                "head": head.stats,
                "tail": tail.stats,
                "encode": enc["encode"],
                "decode": dec,
            }
            energy_mj, energy_source = head.energy_mj, head.energy_source
            power = self._power(board) or {}
            if energy_mj is not None and power.get("radio_nj_per_byte") is not None:
                energy_mj = energy_mj + enc["payload_bytes"] * float(power["radio_nj_per_byte"]) * 1e-6
                energy_source = (energy_source or "") + "+estimated:radio_nj_per_byte"
                if not energy_source.startswith(("measured:", "estimated:")):
                    energy_source = "estimated:radio_nj_per_byte"
            self._record(
                **row,
                status="ok",
                latency_ms=e2e,
                stats=stats,
                energy_mj=energy_mj,
                energy_source=energy_source,
                system={"device": _system(head), "edge": _system(tail)},
            )
            outcomes.append(
                JobOutcome(
                    board.name,
                    task.variant_id,
                    key,
                    "ok",
                    latency_ms=e2e,
                    inference_s=_inference_seconds(head.stats) + _inference_seconds(tail.stats),
                    attempts=attempts,
                    split_id=task.split_id,
                    codec=codec,
                )
            )
        return outcomes

    def run_task(
        self,
        board: str,
        task: ModelTask | SplitTask,
        run_id: int | None = None,
        keys: str | dict[str, str] | None = None,
        healthy: dict[str, bool] | None = None,
    ) -> list[JobOutcome]:
        """Run one task on one board and record it; never raises for a failed job (it is data)."""
        b = self.fleet.board(board)
        healthy = self._healthy if healthy is None else healthy
        try:
            if isinstance(task, ModelTask):
                return [self._run_model(b, task, keys or self.model_key(board, task), run_id, healthy)]
            return self._run_split(b, task, keys or self.split_keys(board, task), run_id, healthy)
        except Exception as e:  # noqa: BLE001 - a bug in one job must not stop the board
            ks = [keys] if isinstance(keys, str) else list((keys or {}).values()) or ["?"]
            return [
                JobOutcome(board, task.variant_id, k, "error", "AGENT_ERROR", f"{type(e).__name__}: {e}") for k in ks
            ]

    # ------------------------------------------------------------------ a sweep
    def run(
        self,
        boards: Sequence[str],
        models: Sequence[ModelTask] = (),
        splits: Sequence[SplitTask] = (),
        run_kind: str = "bench",
    ) -> SweepReport:

        t0 = time.monotonic()
        specs = [self.fleet.board(b) for b in boards]
        plan: dict[str, list[tuple[Any, ...]]] = {b.name: [] for b in specs}
        skipped: list[JobOutcome] = []
        model_keys = {(b.name, t): self.model_key(b.name, t) for b in specs for t in models}
        split_keys = {(b.name, t): self.split_keys(b.name, t) for b in specs for t in splits}
        all_keys = list(model_keys.values()) + [k for d in split_keys.values() for k in d.values()]
        done = set() if self.config.force else self.store.done_keys(all_keys)
        for b in specs:
            for t in models:
                k = model_keys[(b.name, t)]
                if k in done:
                    skipped.append(JobOutcome(b.name, t.variant_id, k, "skipped"))
                else:
                    plan[b.name].append(("model", t, k))
            for t in splits:
                ks = split_keys[(b.name, t)]
                if all(k in done for k in ks.values()):
                    skipped += [
                        JobOutcome(b.name, t.variant_id, k, "skipped", split_id=t.split_id, codec=c)
                        for c, k in ks.items()
                    ]
                else:
                    plan[b.name].append(("split", t, ks))
        total = sum(len(v) for v in plan.values())
        run_id = None
        if total:
            run_id = self.store.start_run(
                run_kind, {"boards": list(boards), **self.config.runtime_config(), "jobs": total}
            )
        outcomes: list[JobOutcome] = list(skipped)
        lock = threading.Lock()
        healthy: dict[str, bool] = {}
        counts = {"done": 0, "failed": 0}

        progress = sweep_progress(self.progress)
        bar = progress.add_task("sweep", total=total, done=0, failed=0)

        def worker(name: str) -> None:
            b = self.fleet.board(name)
            for _kind, task, key in plan[name]:
                got = self.run_task(b.name, task, run_id, key, healthy)
                with lock:
                    outcomes.extend(got)
                    for o in got:
                        counts["done" if o.status == "ok" else "failed"] += 1
                        if self.on_event:
                            self.on_event(o.status, o)
                    progress.update(bar, advance=1, **counts)

        with progress:
            threads = [threading.Thread(target=worker, args=(n,), name=f"board-{n}") for n in plan if plan[n]]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if run_id is not None:
            self.store.finish_run(run_id, "done" if counts["failed"] == 0 else "partial")
        return SweepReport(run_id, tuple(outcomes), time.monotonic() - t0, self.uploaded_bytes())


def _system(res: Result) -> dict[str, Any] | None:
    if not res.raw:
        return None
    keep = (
        "system_before",
        "system_after",
        "pinned_cpus",
        "threads",
        "graph_opt",
        "load_ms",
        "warmup",
        "protocol",
        "runtime_version",
        "peak_rss_scope",
    )
    return {k: res.raw.get(k) for k in keep if k in res.raw}


# =============================================================================== fleet check


def check_board(board: Any, trust_new_hosts: bool = False, connect_timeout: float = 10.0) -> dict[str, Any]:
    """Connect, run the agent's facts probe; never raises for board problems (they are reported)."""
    out: dict[str, Any] = {"name": board.name, "host": board.host, "port": board.port, "class": board.class_name}
    try:
        with BoardConnection.from_spec(
            board, trust_new_hosts=trust_new_hosts or None, connect_timeout=connect_timeout
        ) as c:
            facts = c.facts()
    except BoardError as e:
        out.update(status="error", error_code=e.code.name, error=e.message, hint=e.hint)
        return out
    out.update(status="ok", facts=facts)
    return out


def check_fleet(
    fleet: Any, store: Any | None, names: Sequence[str] | None = None, trust_new_hosts: bool = False
) -> list[dict[str, Any]]:
    """`fleet check`: every board in parallel; facts stored for the reachable ones."""
    from concurrent.futures import ThreadPoolExecutor

    boards = fleet.select(list(names) if names else None)
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(boards)))) as ex:
        rows = list(ex.map(lambda b: check_board(b, trust_new_hosts), boards))
    for b, r in zip(boards, rows, strict=True):
        cls = fleet.classes.get(b.class_name)
        if r["status"] != "ok" or cls is None:
            continue
        have = r["facts"].get("runtimes") or {}
        missing = [rt for rt in cls.runtimes if not have.get(rt)]
        if missing:  # reachable, but cannot run what its class declares
            r.update(
                status="error",
                error_code="RUNTIME_MISSING",
                error=f"board {b.name!r} is reachable but lacks {', '.join(missing)} "
                f"(class {b.class_name!r} declares runtimes {list(cls.runtimes)}; python {r['facts'].get('python')})",
                hint="pip install onnxruntime / ai-edge-litert for the board's python3 (or set EDGEATLAS_PYTHON "
                "in its sshd environment, or a python=<path> tag), or fix the class's runtimes",
            )
    if store is not None:
        from registry.config import sync_fleet_to_store

        sync_fleet_to_store(fleet, store)
        for r in rows:
            if r.get("facts"):
                store.set_board_facts(r["name"], r["facts"])
    return rows


def sync_fleet(store: Any, fleet: Any) -> None:
    """Write devices.toml's classes and boards into the store (idempotent)."""
    for name, cls in fleet.classes.items():
        store.upsert_device_class(name, cls.facts())
    for b in fleet.boards:
        store.upsert_board(
            b.name,
            b.class_name,
            b.host,
            b.port,
            b.role,
            emulate=None
            if b.emulate is None
            else {k: getattr(b.emulate, k) for k in ("cpu_quota", "cpus", "link_mbit", "rtt_ms")},
            energy=None if b.energy is None else {"backend": b.energy.backend, "options": dict(b.energy.options)},
            tags=b.tags,
        )


__all__ = [
    "AgentServer",
    "BoardConnection",
    "BoardError",
    "CommandResult",
    "FleetRunner",
    "JobOutcome",
    "ModelTask",
    "SplitTask",
    "SweepConfig",
    "SweepReport",
    "agent_bundle",
    "check_board",
    "check_fleet",
    "sync_fleet",
]


def sha256_file(path: Path | str) -> str:
    return _sha256_file(Path(path))
