"""The sweep job queue: `bench run` enqueues, `bench worker` (any number of controllers) runs.

One queue row per job, keyed like the measurement it produces (a model job: its measurement
key; a split job, which yields one measurement per payload codec: the sha256 of its codec
keys), so enqueuing twice or re-running a finished sweep adds nothing (``force`` re-queues).
The payload is self-contained: board, artifact paths (relative to the artifacts dir when they
are in it) and sha256s, the runtime config and the measurement keys; any controller whose
devices.toml names the board can run it.

A worker (:class:`QueueWorker`) claims jobs with :meth:`Store.claim_job` (PostgreSQL:
``FOR UPDATE SKIP LOCKED`` + a per-board advisory lock + compare-and-set; a board runs one job
at a time across all controllers), renews the lease from a heartbeat thread while the job runs,
and finishes with :func:`commit_job`: in ONE transaction it takes the job back from "claimed by
me" (a compare-and-set UPDATE that is also the first write, so SQLite takes its write lock up
front) and writes the measurements. A worker whose lease expired and was re-claimed by another
controller writes nothing: every job completes exactly once. Dead workers' jobs go back to the
queue when their lease expires (:meth:`Store.release_expired`, called by every worker's loop).

Decision: an error that may pass (connection lost, upload failed) re-queues the job until it
has used ``max_attempts`` claims; any other error (the model does not load, a timeout) is data:
the job is "failed" and its error row is stored, as in a direct sweep. Re-enqueuing re-queues
failed jobs.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from probes.fleet import (
    FleetRunner,
    JobOutcome,
    ModelTask,
    SplitTask,
    SweepConfig,
    SweepReport,
    sha256_file,
    sweep_progress,
)
from probes.protocol import MeasureProtocol

RETRYABLE = frozenset({"CONNECTION_ERROR", "DEPLOY_ERROR"})


# ============================================================================ payloads


def _portable(path: Path | None) -> str | None:
    """A path relative to the artifacts dir when it is inside it (controllers may differ), else absolute."""
    from registry.paths import artifacts_dir

    if path is None:
        return None
    p = Path(path).resolve()
    try:
        return str(p.relative_to(artifacts_dir().resolve()))
    except ValueError:
        return str(p)


def _local(path: str | None) -> Path | None:
    from registry.paths import artifacts_dir

    if path is None:
        return None
    p = Path(path)
    return p if p.is_absolute() else artifacts_dir() / p


def split_job_key(keys: dict[str, str]) -> str:
    """The queue key of a split job: its per-codec measurement keys, hashed."""
    blob = "split:" + ",".join(f"{c}={k}" for c, k in sorted(keys.items()))
    return hashlib.sha256(blob.encode()).hexdigest()


def config_payload(cfg: SweepConfig) -> dict[str, Any]:
    return {
        "runtime": cfg.runtime,
        "threads": cfg.threads,
        "graph_opt": cfg.graph_opt,
        "protocol": cfg.protocol.to_dict(),
        "timeout_s": cfg.timeout_s,
        "force": cfg.force,
        "drift_ref": cfg.drift_ref,
    }


def config_from_payload(d: dict[str, Any], base: SweepConfig) -> SweepConfig:
    """The job's measurement config on top of the worker's own (retries, timeouts, host trust)."""
    return replace(
        base,
        runtime=str(d["runtime"]),
        threads=int(d["threads"]),
        graph_opt=str(d.get("graph_opt") or "all"),
        protocol=MeasureProtocol(**d["protocol"]),
        timeout_s=float(d["timeout_s"]),
        force=bool(d.get("force", False)),
        drift_ref=bool(d.get("drift_ref", False)),  # a payload queued before the option: no reference
    )


def model_payload(board: str, task: ModelTask, key: str, cfg: SweepConfig) -> dict[str, Any]:
    return {
        "board": board,
        "kind": "model",
        "variant_id": task.variant_id,
        "artifact": _portable(task.artifact),
        "sha256": task.sha256,
        "keys": {"": key},
        "config": config_payload(cfg),
    }


def split_payload(board: str, task: SplitTask, keys: dict[str, str], cfg: SweepConfig) -> dict[str, Any]:
    return {
        "board": board,
        "kind": "split",
        "variant_id": task.variant_id,
        "split_id": task.split_id,
        "head": _portable(task.head),
        "head_sha256": task.head_sha256,
        "tail": _portable(task.tail),
        "tail_sha256": task.tail_sha256,
        "edge": task.edge,
        "codecs": list(task.codecs),
        "pca_basis": _portable(task.pca_basis),
        "pca_basis_sha256": task.pca_basis_sha256,
        "keys": dict(keys),
        "config": config_payload(cfg),
    }


class PayloadError(Exception):
    """A queued job this controller cannot run as written (artifact missing or changed)."""


def _checked(path: str | None, sha: str | None, what: str) -> Path:
    p = _local(path)
    if p is None or not p.is_file():
        raise PayloadError(f"{what} {p} is missing on this controller (artifacts dir or shared path)")
    if sha and sha256_file(p) != sha:
        raise PayloadError(f"{what} {p} changed since the job was queued (sha256 differs); re-enqueue it")
    return p


def task_from_payload(payload: dict[str, Any]) -> tuple[ModelTask | SplitTask, str | dict[str, str]]:
    """The task and its measurement key(s): a model job has one key, a split job one per codec."""
    try:
        keys = dict(payload["keys"])
        if payload["kind"] == "model":
            art = _checked(payload["artifact"], payload["sha256"], "artifact")
            return ModelTask(payload["variant_id"], art, payload["sha256"]), keys[""]
        if payload["kind"] == "split":
            basis = payload.get("pca_basis")
            task = SplitTask(
                variant_id=payload["variant_id"],
                split_id=int(payload["split_id"]),
                head=_checked(payload["head"], payload["head_sha256"], "split head"),
                head_sha256=payload["head_sha256"],
                tail=_checked(payload["tail"], payload["tail_sha256"], "split tail"),
                tail_sha256=payload["tail_sha256"],
                edge=payload["edge"],
                codecs=tuple(payload["codecs"]),
                pca_basis=_checked(basis, payload.get("pca_basis_sha256"), "pca basis") if basis else None,
                pca_basis_sha256=payload.get("pca_basis_sha256"),
            )
            return task, keys
    except (KeyError, TypeError, ValueError) as e:
        raise PayloadError(f"malformed job payload: {type(e).__name__}: {e}") from e
    raise PayloadError(f"unknown job kind {payload.get('kind')!r} (model, split)")


# ============================================================================ enqueue


@dataclass(frozen=True)
class EnqueueReport:
    run_id: int | None
    jobs: int  # jobs planned (model jobs + split jobs)
    queued: int  # newly queued or re-queued now
    skipped: tuple[JobOutcome, ...]  # measurements the store already has
    keys: tuple[str, ...]  # queue keys of the planned jobs that still need a run

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "jobs": self.jobs,
            "queued": self.queued,
            "already_queued": len(self.keys) - self.queued,
            "skipped": len(self.skipped),
        }


def enqueue(
    store: Any,
    fleet: Any,
    config: SweepConfig,
    boards: Sequence[str],
    models: Sequence[ModelTask] = (),
    splits: Sequence[SplitTask] = (),
    run_kind: str = "bench",
) -> EnqueueReport:
    """Queue one job per (task, board); what the store already measured is skipped (unless force)."""
    keyer = FleetRunner(store, fleet, config, progress=False)
    planned: list[tuple[str, dict[str, Any], list[str]]] = []
    for b in boards:
        for t in models:
            k = keyer.model_key(b, t)
            planned.append((k, model_payload(b, t, k, config), [k]))
        for st in splits:
            ks = keyer.split_keys(b, st)
            planned.append((split_job_key(ks), split_payload(b, st, ks, config), list(ks.values())))
    all_keys = [k for _, _, ks in planned for k in ks]
    done = set() if config.force else store.done_keys(all_keys)
    todo, skipped = [], []
    for qk, payload, ks in planned:
        if all(k in done for k in ks):
            for codec, k in payload["keys"].items():
                skipped.append(
                    JobOutcome(
                        payload["board"], payload["variant_id"], k, "skipped", split_id=payload.get("split_id"),
                        codec=codec or None,
                    )
                )  # fmt: skip
        else:
            todo.append((qk, payload))
    run_id = None
    queued = 0
    if todo:
        run_id = store.start_run(run_kind, {"boards": list(boards), **config.runtime_config(), "jobs": len(todo)})
        queued = store.enqueue_jobs(run_id, todo, force=config.force)
    return EnqueueReport(run_id, len(planned), queued, tuple(skipped), tuple(k for k, _ in todo))


# ============================================================================ completion


class _LeaseLost(Exception):
    pass


def commit_job(
    store: Any,
    job_id: int,
    owner: str,
    rows: Sequence[dict[str, Any]],
    status: str,
    error: str | None,
    replace_ok: bool,
) -> bool:
    """Finish a claimed job and write its measurements in one transaction.

    ``status``: done | failed | queued (re-queued for another attempt). Returns False, writing
    nothing, when ``owner`` no longer holds the job (its lease expired and another worker took it).
    An ok measurement is never overwritten unless ``replace_ok`` (``--force``); an error row is
    replaced by the next attempt (one row per key).
    """
    from sqlalchemy import select, update

    from registry.store.models import JobRow, MeasurementRow, utcnow

    for r in rows:
        store._check_energy_source(r.get("energy_source"), r.get("energy_mj"))
    values: dict[str, Any] = {"status": status, "lease_expires_at": None, "error": error}
    if status == "queued":
        values["lease_owner"] = None
    try:
        with store.session() as s:
            # the compare-and-set comes first: it is the lock (PostgreSQL row lock; SQLite write lock)
            res = s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.lease_owner == owner, JobRow.status == "claimed")
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if res.rowcount != 1:
                raise _LeaseLost
            first: int | None = None
            for r in rows:
                m = s.scalars(select(MeasurementRow).where(MeasurementRow.key == r["key"]).with_for_update()).first()
                keep = m is not None and m.status == "ok" and not (replace_ok and r.get("status") == "ok")
                if m is None:
                    m = MeasurementRow(key=r["key"])
                    s.add(m)
                if not keep:
                    for f in store._MEASUREMENT_FIELDS:
                        setattr(m, f, r.get(f, "probe" if f == "source" else None))
                    m.config = m.config or {}
                    m.created_at = utcnow()
                s.flush()
                if first is None and m.status == "ok":
                    first = m.id
            if first is not None:
                s.execute(
                    update(JobRow)
                    .where(JobRow.id == job_id)
                    .values(measurement_id=first)
                    .execution_options(synchronize_session=False)
                )
    except _LeaseLost:
        return False
    return True


def _machine_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()[:8]
    except OSError:
        return "noboot"


def new_owner() -> str:
    """A worker's lease owner: host, boot, pid and a nonce (the pid lets a restart on the same
    machine release what a crashed worker held, without waiting for its lease)."""
    return f"{socket.gethostname()}:{_machine_id()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def release_dead_local(store: Any) -> int:
    """Re-queue jobs claimed by workers on THIS machine whose process is gone. Returns how many."""
    from sqlalchemy import update

    from registry.store.models import JobRow

    host, boot = socket.gethostname(), _machine_id()
    n = 0
    for j in store.list_jobs(status="claimed"):
        parts = (j.lease_owner or "").split(":")
        if len(parts) != 4 or parts[0] != host or parts[1] != boot or not parts[2].isdigit():
            continue
        try:
            os.kill(int(parts[2]), 0)
            continue  # alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, another user's
        with store.session() as s:
            res = s.execute(
                update(JobRow)
                .where(JobRow.id == j.id, JobRow.lease_owner == j.lease_owner, JobRow.status == "claimed")
                .values(status="queued", lease_owner=None, lease_expires_at=None)
                .execution_options(synchronize_session=False)
            )
            n += int(res.rowcount or 0)
    return n


def pending_jobs(store: Any, boards: Sequence[str] | None, max_attempts: int) -> int:
    """Jobs that may still run on ``boards``: queued with attempts left, or claimed (by anyone)."""
    from sqlalchemy import func, or_, select

    from registry.store.models import JobRow

    with store.session() as s:
        q = select(func.count(JobRow.id)).where(
            or_(
                (JobRow.status == "queued") & (JobRow.attempts < max_attempts),
                JobRow.status == "claimed",
            )
        )
        if boards:
            q = q.where(JobRow.board.in_(list(boards)))
        return int(s.scalar(q) or 0)


# ============================================================================ the worker


@dataclass
class WorkerReport:
    owner: str
    outcomes: list[JobOutcome] = field(default_factory=list)  # final outcome per measurement key
    claimed: int = 0
    completed: int = 0  # jobs done or failed by this worker
    requeued: int = 0  # transient failures put back for another attempt
    lost: int = 0  # leases lost to another worker (results discarded)
    released: int = 0  # expired or dead-local leases this worker put back
    exhausted: int = 0  # jobs that used up their attempts
    wall_s: float = 0.0
    uploaded_bytes: int = 0
    run_ids: set[int] = field(default_factory=set)
    completed_jobs: list[int] = field(default_factory=list)

    def sweep_report(self, run_id: int | None = None, skipped: Sequence[JobOutcome] = ()) -> SweepReport:
        final: dict[str, JobOutcome] = {}
        for o in self.outcomes:
            final[o.key] = o
        return SweepReport(run_id, tuple(skipped) + tuple(final.values()), self.wall_s, self.uploaded_bytes)

    def summary(self) -> dict[str, Any]:
        final = {o.key: o for o in self.outcomes}.values()
        return {
            "owner": self.owner,
            "claimed": self.claimed,
            "completed": self.completed,
            "requeued": self.requeued,
            "lost": self.lost,
            "released": self.released,
            "exhausted": self.exhausted,
            "done": sum(o.status == "ok" for o in final),
            "failed": sum(o.status == "error" for o in final),
            "wall_s": round(self.wall_s, 3),
            "inference_s": round(sum(o.inference_s for o in final), 3),
            "uploaded_bytes": self.uploaded_bytes,
            "completed_jobs": self.completed_jobs,
        }


class QueueWorker:
    """Claims and runs queued jobs on the boards of ``fleet`` until the queue is empty.

    One slot thread per board (a board runs one job at a time, enforced by the store across
    all controllers), a heartbeat thread renewing the leases held, and one FleetRunner whose
    connections (and persistent agents) stay open for the whole drain.
    """

    def __init__(
        self,
        store: Any,
        fleet: Any,
        boards: Sequence[str] | None = None,
        base: SweepConfig | None = None,
        lease_s: float = 60.0,
        max_attempts: int = 3,
        poll_s: float = 0.5,
        once: bool = False,
        follow: bool = False,
        progress: bool = False,
        owner: str | None = None,
        on_event: Callable[[str, Any], None] | None = None,
    ):
        if lease_s <= 0:
            raise ValueError("lease_s must be > 0")
        self.store, self.fleet = store, fleet
        self.boards = list(boards) if boards else [b.name for b in fleet.devices()]
        self.base = base or SweepConfig()
        self.lease_s, self.max_attempts, self.poll_s = float(lease_s), int(max_attempts), float(poll_s)
        self.once, self.follow, self.progress = once, follow, progress
        self.owner = owner or new_owner()
        self.on_event = on_event
        self.report = WorkerReport(self.owner)
        self.runner = FleetRunner(store, fleet, self.base, progress=False)
        self.runner.record_hook = self._collect
        self._rows: dict[str, dict[str, Any]] = {}
        self._held: dict[int, float] = {}  # job id -> monotonic time of the last renewal
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sqlite = store.engine.dialect.name == "sqlite"
        self._db_lock = threading.Lock()  # SQLite: one claim at a time in this process
        self._last_housekeeping = -1e9

    # ------------------------------------------------------------------ plumbing
    def _event(self, kind: str, data: Any) -> None:
        if self.on_event:
            self.on_event(kind, data)

    def _collect(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._rows[row["key"]] = row

    def _db(self, fn: Callable[[], Any], tries: int = 6) -> Any:
        """A store call, retried on transient database errors (lock conflicts, deadlock, restart)."""
        from sqlalchemy.exc import DBAPIError

        for i in range(tries):
            try:
                if self._sqlite:
                    with self._db_lock:
                        return fn()
                return fn()
            except DBAPIError as e:
                if i + 1 == tries or not (e.connection_invalidated or "lock" in str(e).lower() or "deadlock" in str(e)):
                    raise
                time.sleep(0.05 * (2**i))
        return None

    def _housekeeping(self, force: bool = False) -> None:
        """Release expired leases and fail exhausted jobs: at most every few seconds (each is a
        write transaction), or at once when nothing was claimable."""
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last_housekeeping < min(5.0, self.lease_s / 4.0):
                return
            self._last_housekeeping = now
        released = self._db(self.store.release_expired)
        exhausted = self._db(lambda: self.store.fail_exhausted_jobs(self.max_attempts))
        with self._lock:
            self.report.released += released or 0
            self.report.exhausted += exhausted or 0
        if released:
            self._event("released", released)

    def _heartbeat(self) -> None:
        every = max(0.2, self.lease_s / 3.0)
        while not self._stop.wait(every / 2):
            now = time.monotonic()
            with self._lock:
                due = [j for j, t in self._held.items() if now - t >= every]
            for job_id in due:
                ok = self._db(lambda j=job_id: self.store.renew_lease(j, self.owner, self.lease_s))
                with self._lock:
                    if job_id in self._held:
                        self._held[job_id] = time.monotonic()
                if not ok:
                    self._event("lease_lost", job_id)

    # ------------------------------------------------------------------ one job
    def _run_one(self, job: Any) -> list[JobOutcome]:
        payload = job.payload
        rows: list[dict[str, Any]] = []
        cfg = self.base
        try:
            cfg = config_from_payload(payload["config"], self.base)
            task, keys = task_from_payload(payload)
            outs = self.runner.with_config(cfg).run_task(job.board or payload["board"], task, job.run_id, keys)
            key_list = [keys] if isinstance(keys, str) else list(keys.values())
            with self._lock:
                rows = [self._rows.pop(k) for k in key_list if k in self._rows]
        except (PayloadError, KeyError, TypeError, ValueError) as e:
            msg = str(e) if isinstance(e, PayloadError) else f"malformed job payload: {type(e).__name__}: {e}"
            ks = dict(payload.get("keys") or {}) or {"": job.key}
            outs = [
                JobOutcome(str(payload.get("board")), str(payload.get("variant_id")), k, "error", "BAD_JOB", msg,
                           split_id=payload.get("split_id"), codec=c or None)
                for c, k in ks.items()
            ]  # fmt: skip
        codes = {o.error_code for o in outs if o.status != "ok"}
        if not codes:
            status, error = "done", None
        elif codes <= RETRYABLE and job.attempts < self.max_attempts:
            status, error = "queued", "; ".join(sorted(codes))
        else:
            status = "failed"
            error = "; ".join(f"{o.error_code}: {(o.error_message or '')[:300]}" for o in outs if o.status != "ok")
        ok = self._db(lambda: commit_job(self.store, job.id, self.owner, rows, status, error, cfg.force))
        with self._lock:
            if not ok:
                self.report.lost += 1
                self._event("lost", job)
                return []
            if status == "queued":
                self.report.requeued += 1
            else:
                self.report.completed += 1
                self.report.completed_jobs.append(job.id)
            if job.run_id is not None:
                self.report.run_ids.add(job.run_id)
            self.report.outcomes.extend(outs)
        for o in outs:
            self._event(o.status, o)
        return outs if status != "queued" else []

    def _slot(self, advance: Callable[[list[JobOutcome]], None]) -> None:
        while not self._stop.is_set():
            self._housekeeping()
            job = self._db(lambda: self.store.claim_job(self.owner, self.lease_s, self.max_attempts, self.boards))
            if job is None:
                self._housekeeping(force=True)
                job = self._db(lambda: self.store.claim_job(self.owner, self.lease_s, self.max_attempts, self.boards))
            if job is None:
                if self.once and self.report.claimed:
                    return
                if not self.follow and self._db(lambda: pending_jobs(self.store, self.boards, self.max_attempts)) == 0:
                    return
                self._stop.wait(self.poll_s)
                continue
            with self._lock:
                self.report.claimed += 1
                self._held[job.id] = time.monotonic()
            self._event("claimed", job)
            try:
                advance(self._run_one(job))
            finally:
                with self._lock:
                    self._held.pop(job.id, None)
            if self.once:
                self._stop.set()
                return

    def _give_back(self) -> None:
        """On the way out (Ctrl-C, error): put back what this worker still holds, without charging an attempt."""
        from sqlalchemy import update

        from registry.store.models import JobRow

        try:
            with self.store.session() as s:
                s.execute(
                    update(JobRow)
                    .where(JobRow.lease_owner == self.owner, JobRow.status == "claimed")
                    .values(status="queued", lease_owner=None, lease_expires_at=None, attempts=JobRow.attempts - 1)
                    .execution_options(synchronize_session=False)
                )
        except Exception:  # noqa: BLE001 - best effort; the lease expires anyway
            pass

    def _finish_runs(self) -> None:
        from sqlalchemy import func, select

        from registry.store.models import JobRow

        for run_id in sorted(self.report.run_ids):
            with self.store.session() as s:
                counts = dict(
                    s.execute(
                        select(JobRow.status, func.count(JobRow.id))
                        .where(JobRow.run_id == run_id)
                        .group_by(JobRow.status)
                    ).all()
                )
            if not counts.get("queued") and not counts.get("claimed"):
                self.store.finish_run(run_id, "done" if not counts.get("failed") else "partial")

    # ------------------------------------------------------------------ the drain
    def run(self, total: int | None = None) -> WorkerReport:
        """Work until the queue (for this worker's boards) is empty, or one job with ``once``,
        or forever with ``follow``. ``total`` sizes the progress bar (default: pending jobs)."""

        t0 = time.monotonic()
        self.report.released += self._db(lambda: release_dead_local(self.store)) or 0
        if total is None and self.progress:
            total = pending_jobs(self.store, self.boards, self.max_attempts)
        counts = {"done": 0, "failed": 0}
        progress = sweep_progress(self.progress)
        bar = progress.add_task("sweep", total=total or None, done=0, failed=0)
        bar_lock = threading.Lock()

        def advance(outs: list[JobOutcome]) -> None:
            if not outs:
                return
            with bar_lock:
                for o in outs:
                    counts["done" if o.status == "ok" else "failed"] += 1
                progress.update(bar, advance=1, **counts)

        n = 1 if self.once else max(1, len(self.boards))
        hb = threading.Thread(target=self._heartbeat, name="lease-heartbeat", daemon=True)
        slots = [threading.Thread(target=self._slot, args=(advance,), name=f"slot-{i}") for i in range(n)]
        try:
            with progress:
                hb.start()
                for t in slots:
                    t.start()
                for t in slots:
                    while t.is_alive():
                        t.join(0.5)
        except BaseException:
            self._stop.set()
            self._give_back()
            raise
        finally:
            self._stop.set()
            self.report.uploaded_bytes = self.runner.uploaded_bytes()
            self.runner.close()
            self.report.wall_s = time.monotonic() - t0
        self._finish_runs()
        return self.report


__all__ = [
    "EnqueueReport",
    "PayloadError",
    "QueueWorker",
    "WorkerReport",
    "commit_job",
    "config_from_payload",
    "enqueue",
    "new_owner",
    "pending_jobs",
    "release_dead_local",
    "split_job_key",
    "task_from_payload",
]
