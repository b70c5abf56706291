"""`bench run` as a library function: pick variants/splits from the store, run them on boards.

The CLI, the HTTP API and Python users call :func:`run_bench`: it enqueues the jobs in the
store's queue (:mod:`probes.queue`) and works them in-process; it returns a :class:`BenchResult`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probes.agent import graph_level
from probes.fleet import ModelTask, SplitTask, SweepConfig, SweepReport, sha256_file
from probes.queue import EnqueueReport, QueueWorker, WorkerReport, enqueue

RUNTIME_FORMATS = {"onnxruntime": "onnx", "litert": "tflite"}


def _err(message: str, hint: str | None = None, code: str = "INVALID_ARGUMENT") -> Exception:
    from registry.errors import EdgeatlasError, ErrorCode

    return EdgeatlasError(message, ErrorCode(code), hint=hint)


def artifact_path(path: str) -> Path:
    """A variant's file: absolute, or relative to the artifacts dir."""
    from registry.paths import artifacts_dir

    p = Path(path)
    if not p.is_absolute():
        p = artifacts_dir() / p
    return p


def select_variants(store: Any, runtime: str, variants: Sequence[str] = (), grid: bool = False) -> list[Any]:
    if runtime not in RUNTIME_FORMATS:
        raise _err(f"unknown runtime {runtime!r}", hint="use --runtime onnxruntime or --runtime litert")
    if variants:
        chosen = [store.get_variant(v) for v in variants]
        wrong = [v.id for v in chosen if v.format != RUNTIME_FORMATS[runtime]]
        if wrong:
            raise _err(
                f"variants {', '.join(w[:12] for w in wrong)} are not {RUNTIME_FORMATS[runtime]} files, "
                f"which {runtime} runs",
                hint="pick variants of the runtime's format, or change --runtime",
            )
        return chosen
    if grid:
        found = store.list_variants(format=RUNTIME_FORMATS[runtime], artifacts_only=True)
        if not found:
            raise _err(
                f"the store has no {RUNTIME_FORMATS[runtime]} variants",
                hint="build some first: edgeatlas zoo grid",
                code="NOT_FOUND",
            )
        return found
    raise _err("say what to run", hint="pass --variants ID[,ID...] or --grid")


def model_tasks(variants: Sequence[Any]) -> list[ModelTask]:
    out = []
    for v in variants:
        p = artifact_path(v.path)
        if not p.is_file():
            raise _err(
                f"variant {v.id[:12]}: artifact {p} is missing",
                hint="rebuild it with `edgeatlas zoo build` (artifacts are content-addressed in the data dir)",
                code="NOT_FOUND",
            )
        out.append(ModelTask(variant_id=v.id, artifact=p, sha256=sha256_file(p)))
    return out


def pick_splits(splits: Sequence[Any], max_splits: int | None) -> list[Any]:
    """At most ``max_splits`` interior split points, evenly spaced along the network (first and
    last kept), so a reduced sweep still spans early, middle and late cuts."""
    inner = sorted((s for s in splits if s.head_path and s.tail_path), key=lambda s: (s.position, s.id))
    if max_splits is None or len(inner) <= max_splits:
        return inner
    if max_splits <= 0:
        return []
    if max_splits == 1:
        return [inner[len(inner) // 2]]
    step = (len(inner) - 1) / (max_splits - 1)
    return [inner[round(i * step)] for i in range(max_splits)]


def split_tasks(
    store: Any, variants: Sequence[Any], edge: str, codecs: Sequence[str], max_splits: int | None = None
) -> list[SplitTask]:
    """Split jobs for the variants' interior split points (all-on-device / all-on-edge are the plain
    model jobs). ``pca`` runs where the zoo stored a basis for that cut (``split.codecs["pca"]["basis"]``,
    an artifact shipped to both ends); cuts without one run the other codecs."""
    out = []
    for v in variants:
        for s in pick_splits(store.list_splits(v.id), max_splits):
            head, tail = artifact_path(s.head_path), artifact_path(s.tail_path)
            for p, what in ((head, "head"), (tail, "tail")):
                if not p.is_file():
                    raise _err(
                        f"variant {v.id[:12]} split {s.id} ({s.cut_name}): {what} artifact {p} is missing",
                        hint="rebuild the splits with `edgeatlas zoo splits`",
                        code="NOT_FOUND",
                    )
            basis, basis_sha = None, None
            info = (s.codecs or {}).get("pca") or {}
            if "pca" in codecs and info.get("basis"):
                basis = artifact_path(str(info["basis"]))
                if not basis.is_file():
                    raise _err(
                        f"variant {v.id[:12]} split {s.id}: pca basis {basis} is missing",
                        hint="rebuild the splits with `edgeatlas zoo splits`, or leave pca out of --codecs",
                        code="NOT_FOUND",
                    )
                basis_sha = sha256_file(basis)  # the board cache is keyed by the bytes, not by a stored name
            chosen = tuple(c for c in codecs if c != "pca" or basis is not None)
            if not chosen:
                continue
            out.append(
                SplitTask(
                    variant_id=v.id,
                    split_id=s.id,
                    head=head,
                    head_sha256=s.head_sha256 or sha256_file(head),
                    tail=tail,
                    tail_sha256=s.tail_sha256 or sha256_file(tail),
                    edge=edge,
                    codecs=chosen,
                    pca_basis=basis,
                    pca_basis_sha256=basis_sha,
                )
            )
    return out


@dataclass(frozen=True)
class BenchPlan:
    boards: tuple[str, ...]
    models: tuple[ModelTask, ...]
    splits: tuple[SplitTask, ...]


def plan_bench(
    store: Any,
    fleet: Any,
    config: SweepConfig,
    boards: Sequence[str] = (),
    variants: Sequence[str] = (),
    grid: bool = False,
    splits: bool = False,
    edge: str | None = None,
    max_splits: int | None = None,
) -> BenchPlan:
    """What `bench run` would run: the boards, the model jobs and (``splits``) the split jobs.

    With ``splits`` the plain model jobs are planned too (they are the all-on-device points);
    the ones the store already has are skipped at enqueue time."""
    from registry.config import sync_fleet_to_store

    names = list(boards) or [b.name for b in fleet.devices()]
    for n in names:
        fleet.board(n)  # unknown names fail here, with the list of known boards
    chosen = select_variants(store, config.runtime, variants, grid)
    sync_fleet_to_store(fleet, store)
    st: list[SplitTask] = []
    if splits:
        if config.runtime != "onnxruntime":
            raise _err("split jobs run ONNX heads and tails", hint="use --runtime onnxruntime with --splits")
        edge = edge or next((b.name for b in fleet.edges()), None)
        if edge is None:
            raise _err("--splits needs an edge board", hint='pass --edge NAME or add a board with role = "edge"')
        if fleet.board(edge).role != "edge":
            raise _err(f"board {edge!r} is not an edge board (role = {fleet.board(edge).role!r})")
        st = split_tasks(store, chosen, edge, config.codecs, max_splits)
        if not st:
            raise _err("the chosen variants have no split points", hint="edgeatlas zoo splits", code="NOT_FOUND")
    return BenchPlan(tuple(names), tuple(model_tasks(chosen)), tuple(st))


@dataclass(frozen=True)
class BenchResult:
    sweep: SweepReport
    enqueued: EnqueueReport
    worker: WorkerReport | None

    def summary(self) -> dict[str, Any]:
        out = {**self.sweep.summary(), "queued": self.enqueued.queued}
        if self.worker is not None:
            out.update(requeued=self.worker.requeued, released=self.worker.released, lost=self.worker.lost)
        return out


def enqueue_bench(store: Any, fleet: Any, config: SweepConfig, plan: BenchPlan) -> EnqueueReport:
    return enqueue(store, fleet, config, plan.boards, plan.models, plan.splits)


def run_bench(
    store: Any,
    fleet: Any,
    config: SweepConfig,
    boards: Sequence[str] = (),
    variants: Sequence[str] = (),
    grid: bool = False,
    splits: bool = False,
    edge: str | None = None,
    progress: bool = True,
    max_splits: int | None = None,
    lease_s: float = 60.0,
    enqueue_only: bool = False,
) -> BenchResult:
    """`bench run`: enqueue the jobs (keyed by measurement key), then (unless ``enqueue_only``)
    work the queue for these boards in-process until it is empty, as one `bench worker` would.
    On PostgreSQL other controllers' `bench worker`s may take some of the jobs meanwhile."""
    plan = plan_bench(store, fleet, config, boards, variants, grid, splits, edge, max_splits)
    enq = enqueue_bench(store, fleet, config, plan)
    if enqueue_only:
        return BenchResult(SweepReport(enq.run_id, enq.skipped, 0.0, 0), enq, None)
    worker = QueueWorker(store, fleet, plan.boards, base=config, lease_s=lease_s, progress=progress)
    rep = worker.run()
    return BenchResult(rep.sweep_report(enq.run_id, enq.skipped), enq, rep)


RESULT_COLUMNS = [
    "board",
    "variant",
    "runtime",
    "threads",
    "kind",
    "codec",
    "status",
    "p50_ms",
    "p90_ms",
    "cv",
    "n",
    "energy_mj",
    "energy_source",
    "error_code",
    "graph_opt",  # from here on, new columns go last: CSVs read by column position keep theirs
    "ref_p50_ms",
    "p50_per_ref",
]


def result_rows(
    store: Any,
    board: str | None = None,
    variant: str | None = None,
    status: str | None = None,
    source: str | None = None,
    limit: int | None = None,
    not_source: str | None = None,
) -> list[dict[str, Any]]:
    """Measurement rows for `bench results`; with ``limit``, the newest ``limit`` of them."""
    vid = store.get_variant(variant).id if variant else None
    rows = []
    for m in store.list_measurements(
        board=board,
        variant_id=vid,
        status=status,
        source=source,
        limit=limit,
        newest=limit is not None,
        not_source=not_source,
    ):
        s = m.stats or {}
        cfg = m.config or {}
        rows.append(
            {
                "board": m.board,
                "variant": m.variant_id,
                "runtime": m.runtime,
                "threads": cfg.get("threads"),
                "graph_opt": graph_level(cfg) if m.runtime == "onnxruntime" else None,
                "kind": cfg.get("kind", "model"),
                "codec": cfg.get("codec"),
                "edge": cfg.get("edge"),
                "status": m.status,
                "p50_ms": m.latency_ms,
                "p90_ms": s.get("p90_ms") if "head" not in s else None,
                "cv": s.get("cv"),
                "n": s.get("n"),
                "ref_p50_ms": s.get("ref_p50_ms"),
                "p50_per_ref": s.get("p50_per_ref"),
                "energy_mj": m.energy_mj,
                "energy_source": m.energy_source,
                "error_code": m.error_code,
                "error_message": m.error_message,
                "split": {
                    k: s.get(k)
                    for k in ("head_ms", "encode_ms", "transfer_ms", "decode_ms", "tail_ms", "payload_bytes")
                }
                if "head_ms" in s
                else None,
                "created_at": m.created_at,
                "source": m.source,  # provenance: probe, api, dataset:<name>
            }
        )
    return rows


def rows_to_csv(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    cols = [c for c in RESULT_COLUMNS] + ["edge", "error_message", "created_at", "source"]  # new ones last
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()
