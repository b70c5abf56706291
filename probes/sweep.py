"""`bench run` as a library function: pick variants/splits from the store, run them on boards.

The CLI, the HTTP API and Python users call :func:`run_bench`; it returns a SweepReport.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from probes.fleet import FleetRunner, ModelTask, SplitTask, SweepConfig, SweepReport, sha256_file

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
        found = store.list_variants(format=RUNTIME_FORMATS[runtime])
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


def split_tasks(store: Any, variants: Sequence[Any], edge: str, codecs: Sequence[str]) -> list[SplitTask]:
    out = []
    for v in variants:
        for s in store.list_splits(v.id):
            if not (s.head_path and s.tail_path):
                continue  # all-on-device / all-on-edge: covered by the plain model jobs
            head, tail = artifact_path(s.head_path), artifact_path(s.tail_path)
            out.append(
                SplitTask(
                    variant_id=v.id,
                    split_id=s.id,
                    head=head,
                    head_sha256=s.head_sha256 or sha256_file(head),
                    tail=tail,
                    tail_sha256=s.tail_sha256 or sha256_file(tail),
                    edge=edge,
                    codecs=tuple(c for c in codecs if c != "pca"),  # pca needs its basis on both ends: TODO
                )
            )
    return out


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
) -> SweepReport:
    from registry.config import sync_fleet_to_store

    names = list(boards) or [b.name for b in fleet.devices()]
    for n in names:
        fleet.board(n)  # unknown names fail here, with the list of known boards
    chosen = select_variants(store, config.runtime, variants, grid)
    sync_fleet_to_store(fleet, store)
    runner = FleetRunner(store, fleet, config, progress=progress)
    try:
        if splits:
            if config.runtime != "onnxruntime":
                raise _err("split jobs run ONNX heads and tails", hint="use --runtime onnxruntime with --splits")
            edge = edge or next((b.name for b in fleet.edges()), None)
            if edge is None:
                raise _err("--splits needs an edge board", hint='pass --edge NAME or add a board with role = "edge"')
            if fleet.board(edge).role != "edge":
                raise _err(f"board {edge!r} is not an edge board (role = {fleet.board(edge).role!r})")
            st = split_tasks(store, chosen, edge, config.codecs)
            if not st:
                raise _err("the chosen variants have no split points", hint="edgeatlas zoo splits", code="NOT_FOUND")
            return runner.run(names, splits=st)
        return runner.run(names, model_tasks(chosen))
    finally:
        runner.close()


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
]


def result_rows(
    store: Any, board: str | None = None, variant: str | None = None, status: str | None = None
) -> list[dict[str, Any]]:
    vid = store.get_variant(variant).id if variant else None
    rows = []
    for m in store.list_measurements(board=board, variant_id=vid, status=status):
        s = m.stats or {}
        cfg = m.config or {}
        rows.append(
            {
                "board": m.board,
                "variant": m.variant_id,
                "runtime": m.runtime,
                "threads": cfg.get("threads"),
                "kind": cfg.get("kind", "model"),
                "codec": cfg.get("codec"),
                "edge": cfg.get("edge"),
                "status": m.status,
                "p50_ms": m.latency_ms,
                "p90_ms": s.get("p90_ms") if "head" not in s else None,
                "cv": s.get("cv"),
                "n": s.get("n"),
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
            }
        )
    return rows


def rows_to_csv(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    cols = [c for c in RESULT_COLUMNS] + ["edge", "error_message", "created_at"]
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()
