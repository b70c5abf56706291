"""`edgeatlas zoo ...`: build variants and grids, list/show them, their splits, export, add, accuracy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from registry.commands.common import db_option, emit, err_console, json_option, note, open_store, print_json
from registry.errors import EdgeatlasError, ErrorCode

LIST_COLUMNS = [
    "id",
    "family",
    "format",
    "precision",
    "width",
    "resolution",
    "prune",
    "params",
    "macs",
    "size_bytes",
    "accuracy",
    "accuracy_source",
]


@click.group(name="zoo")
def group() -> None:
    """The variant zoo: compressed ONNX / TFLite variants, split points, measured accuracy.

    \b
    Example:
        edgeatlas zoo grid --config zoo.toml
        edgeatlas zoo list --family mobilenet_v2 --json
        edgeatlas zoo add my_model.onnx
    """


def _summary(result: Any) -> dict[str, Any]:
    from registry.zoo.build import artifact_path

    v = result.variant
    return {
        "id": v.id,
        "built": result.built,
        "family": v.family,
        "format": v.format,
        "precision": v.precision,
        "width": v.width,
        "resolution": v.resolution,
        "prune": v.prune,
        "path": str(artifact_path(v)),
        "params": v.params,
        "macs": v.macs,
        "size_bytes": v.size_bytes,
        "input_shape": list(v.input_shape),
        "accuracy": v.accuracy,
        "accuracy_source": v.accuracy_source,
        "accuracy_by_task": (v.recipe or {}).get("accuracy", {}).get("by_task")
        if (v.recipe or {}).get("accuracy")
        else None,
        "splits": result.splits,
        "splits_note": result.splits_note,
        "seconds": round(result.seconds, 2),
    }


def _short(v: Any) -> dict[str, Any]:
    d = {c: getattr(v, c) for c in LIST_COLUMNS}
    return d


@group.command(name="build")
@click.argument("family")
@click.option("--width", default=1.0, show_default=True, type=float, help="Width multiplier.")
@click.option("--resolution", default=64, show_default=True, type=int, help="Input side in pixels.")
@click.option(
    "--precision",
    default="fp32",
    show_default=True,
    help="fp32, fp16, int8 (static, calibrated) or int8-dynamic (TFLite).",
)
@click.option("--prune", default=0.0, show_default=True, type=float, help="Structured channel pruning ratio (0..0.95).")
@click.option(
    "--format", "fmt", default="onnx", show_default=True, type=click.Choice(["onnx", "tflite"]), help="Artifact format."
)
@click.option(
    "--dataset",
    default="shapes-v1",
    show_default=True,
    help="shapes-v1: train here on the generated task (accuracy measured); none: ImageNet-shaped, random init (accuracy unknown).",
)
@click.option(
    "--weights",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="A local torchvision state_dict for an ImageNet-shaped model (implies --dataset none; a cited accuracy only for the exact published config).",
)
@click.option("--task", default=None, help="Single-task families trained here: shape (default), colour or position.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--max-split-points",
    default=8,
    show_default=True,
    type=int,
    help="Split points to extract (ONNX), including the two ends.",
)
@click.option("--no-splits", is_flag=True, help="Do not build split points.")
@db_option
@json_option
def build_cmd(
    family: str,
    width: float,
    resolution: int,
    precision: str,
    prune: float,
    fmt: str,
    dataset: str,
    weights: str | None,
    task: str | None,
    seed: int,
    max_split_points: int,
    no_splits: bool,
    db_url: str | None,
    as_json: bool,
) -> None:
    """Build one variant: train or initialise, prune, export, quantise, measure accuracy, store.

    The variant id is the sha256 of the artifact; building the same spec again is a no-op.

    \b
    Example:
        edgeatlas zoo build multitask --width 0.5 --resolution 48 --precision int8
        edgeatlas zoo build multitask --width 0.5 --resolution 48 --format tflite --precision fp16 --json
        edgeatlas zoo build resnet18 --dataset none --resolution 224 --weights resnet18.pth
    """
    from registry.zoo.build import VariantSpec, build

    ds: str | None = None if (weights or dataset.lower() in ("none", "imagenet", "")) else dataset
    spec = VariantSpec(family, width, resolution, precision, prune, fmt, ds, weights, seed, task)
    store = open_store(db_url)
    if as_json:
        result = build(store, spec, None, splits=not no_splits, max_split_points=max_split_points)
    else:
        with err_console.status(escape(f"building {spec.describe()}")) as status:
            result = build(
                store,
                spec,
                lambda m: status.update(escape(f"{spec.describe()}: {m}")),
                splits=not no_splits,
                max_split_points=max_split_points,
            )
    emit(_summary(result), as_json)


@group.command(name="grid")
@click.option(
    "--config",
    "config_path",
    default="zoo.toml",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The grid file.",
)
@click.option("--dry-run", is_flag=True, help="List the specs (and which are already built) without building.")
@db_option
@json_option
def grid_cmd(config_path: str, dry_run: bool, db_url: str | None, as_json: bool) -> None:
    """Build every variant of a grid with a progress bar; finished variants are skipped, so an
    interrupted grid resumes where it stopped.

    \b
    Example:
        edgeatlas zoo grid --config zoo.toml
        edgeatlas zoo grid --config zoo.toml --dry-run --json
    """
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from registry.zoo.build import find_by_recipe
    from registry.zoo.grid import load_grid, run_grid

    cfg = load_grid(config_path)
    store = open_store(db_url)
    if dry_run:
        rows = [
            {
                "block": e.block,
                "line": e.line,
                "spec": e.spec.describe(),
                "built": find_by_recipe(store, e.spec) is not None,
            }
            for e in cfg.entries
        ]
        emit(rows, as_json, ["block", "line", "spec", "built"], title=f"{config_path}: {len(rows)} variants")
        return
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with Progress(
        TextColumn("[bold]zoo grid[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=err_console,
        transient=as_json,
    ) as prog:
        task = prog.add_task("", total=len(cfg.entries))

        def on_start(i: int, e: Any) -> None:
            prog.update(task, description=escape(e.spec.describe()))

        def on_done(i: int, e: Any, r: Any) -> None:
            rows.append({"block": e.block, **_summary(r)})
            prog.advance(task)

        run_grid(store, cfg, on_start, on_done, lambda m: prog.update(task, description=escape(m)))
    built = sum(1 for r in rows if r["built"])
    summary = {
        "config": config_path,
        "variants": len(rows),
        "built": built,
        "skipped": len(rows) - built,
        "seconds": round(time.perf_counter() - t0, 1),
        "formats": sorted({r["format"] for r in rows}),
        "families": sorted({r["family"] for r in rows}),
    }
    if as_json:
        print_json({"summary": summary, "variants": rows})
        return
    emit(
        rows,
        False,
        [
            "block",
            "id",
            "family",
            "format",
            "precision",
            "width",
            "resolution",
            "prune",
            "macs",
            "accuracy",
            "splits",
            "built",
        ],
    )
    notes = {r["splits_note"] for r in rows if r["splits_note"] and r["splits_note"] != "already built"}
    for n in sorted(notes):
        err_console.print(f"[yellow]splits[/]: {escape(n)}", highlight=False, soft_wrap=True)
    emit(summary, False, title="grid")


@group.command(name="list")
@click.option("--family", default=None, help="Only this family.")
@click.option("--format", "fmt", default=None, type=click.Choice(["onnx", "tflite"]), help="Only this format.")
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Also variants without an artifact file (archs imported with `predictors import`).",
)
@db_option
@json_option
def list_cmd(family: str | None, fmt: str | None, show_all: bool, db_url: str | None, as_json: bool) -> None:
    """List the variants in the store (those with an artifact file; --all adds imported archs).

    \b
    Example:
        edgeatlas zoo list
        edgeatlas zoo list --family multitask --json
        edgeatlas zoo list --all --family nb201 --json
    """
    variants = open_store(db_url).list_variants(family=family, format=fmt, artifacts_only=not show_all)
    if as_json:
        print_json([_short(v) | {"path": v.path} for v in variants])
        return
    rows = [_short(v) | {"id": v.id[:12]} for v in variants]
    emit(rows, False, LIST_COLUMNS, title=f"{len(rows)} variants")


@group.command(name="refresh-features")
@db_option
@json_option
def refresh_features_cmd(db_url: str | None, as_json: bool) -> None:
    """Recompute the graph features of zoo variants stored by an older edgeatlas.

    The predictors read one feature set version (predictors.features.FEATURES_VERSION; version 2
    added the kernel-level terms). Variants whose stored features are of another version are
    refused by training and the selector until this has run. ONNX variants are read from their
    artifact; zoo-built TFLite variants from the ONNX graph of the same model, rebuilt from the
    recipe. Imported dataset archs are refreshed by `edgeatlas predictors import NAME` again.

    \b
    Example:
        edgeatlas zoo refresh-features
        edgeatlas zoo refresh-features --json
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from registry.zoo.build import refresh_features, stale_features

    store = open_store(db_url)
    variants = store.list_variants()
    zoo = [v for v in variants if v.path]
    stale = [v for v in zoo if stale_features(v)]
    # imported dataset archs have no artifact: a re-import refreshes them
    imported = sorted({v.family for v in variants if not v.path and stale_features(v)})
    refreshed, failed = [], []
    with Progress(
        TextColumn("refreshing features"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=as_json or not stale,
    ) as bar:
        task = bar.add_task("", total=len(stale))
        for v in stale:
            try:
                if stale_features(refresh_features(store, v)):
                    failed.append({"id": v.id, "error": "not recomputed: no ONNX graph of it could be made"})
                else:
                    refreshed.append(v.id)
            except EdgeatlasError as exc:
                failed.append({"id": v.id, "error": exc.one_line()})
            except Exception as exc:  # noqa: BLE001 - one variant's failure must not stop the others
                failed.append({"id": v.id, "error": f"{type(exc).__name__}: {exc}"})
            bar.advance(task)
    out = {
        "checked": len(zoo),
        "stale": len(stale),
        "refreshed": refreshed,
        "failed": failed,
        "stale_imported_families": imported,
    }
    if as_json:
        print_json(out)
    else:
        emit(
            [{"checked": out["checked"], "stale": out["stale"], "refreshed": len(refreshed), "failed": len(failed)}],
            False,
            title="graph features",
        )
        for f in failed:
            err_console.print(escape(f"{f['id'][:12]}: {f['error']}"))
    if imported:
        note(
            f"imported archs of an older feature set ({', '.join(imported)}): run `edgeatlas predictors "
            "import NAME` again for their datasets (they block training only if measured rows use them)"
        )
    if failed:
        raise SystemExit(1)


@group.command(name="show")
@click.argument("variant_id")
@db_option
@json_option
def show_cmd(variant_id: str, db_url: str | None, as_json: bool) -> None:
    """Show one variant (an id or a unique prefix): stats, recipe, accuracy and its source.

    \b
    Example:
        edgeatlas zoo show 3f2a9c --json
    """
    from registry.zoo.build import artifact_path

    store = open_store(db_url)
    v = store.get_variant(variant_id)
    data = {**v.__dict__, "artifact": str(artifact_path(v)), "splits": len(store.list_splits(v.id))}
    if not as_json:
        data.pop("features", None)
    emit(data, as_json)


def _split_rows(store: Any, variant_id: str) -> list[dict[str, Any]]:
    from registry.zoo.build import artifact_path

    rows = []
    for s in store.list_splits(variant_id):
        codecs = s.codecs or {}
        rows.append(
            {
                "id": s.id,
                "cut": s.cut_name,
                "position": s.position,
                "head": str(artifact_path(s.head_path)) if s.head_path else None,
                "tail": str(artifact_path(s.tail_path)) if s.tail_path else None,
                "payload_shape": list(s.payload_shape),
                "payload_dtype": s.payload_dtype,
                "payload_bytes": s.payload_bytes,
                "codec_bytes": {
                    k: (c.get("bytes", c.get("payload_bytes")) if isinstance(c, dict) else c) for k, c in codecs.items()
                },
                "accuracy_delta": {k: c.get("accuracy_delta") for k, c in codecs.items() if isinstance(c, dict)},
                "head_macs": s.head_macs,
                "tail_macs": s.tail_macs,
            }
        )
    return rows


@group.command(name="splits")
@click.argument("variant_id")
@db_option
@json_option
def splits_cmd(variant_id: str, db_url: str | None, as_json: bool) -> None:
    """List a variant's split points: cut, head/tail files, payload bytes per codec, accuracy delta.

    \b
    Example:
        edgeatlas zoo splits 3f2a9c
        edgeatlas zoo splits 3f2a9c --json
    """
    store = open_store(db_url)
    v = store.get_variant(variant_id)
    rows = _split_rows(store, v.id)
    if as_json:
        print_json(rows)
        return
    emit(
        rows,
        False,
        ["cut", "position", "payload_shape", "payload_bytes", "codec_bytes", "accuracy_delta"],
        title=f"splits of {v.id[:12]} ({len(rows)})",
    )


@group.command(name="export")
@click.argument("variant_id")
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Destination folder."
)
@db_option
@json_option
def export_cmd(variant_id: str, out_dir: Path, db_url: str | None, as_json: bool) -> None:
    """Copy a variant's artifact, its split heads/tails and a JSON card to a folder.

    \b
    Example:
        edgeatlas zoo export 3f2a9c --out dist/model
    """
    from registry.commands.common import to_jsonable
    from registry.zoo.build import artifact_path

    store = open_store(db_url)
    v = store.get_variant(variant_id)
    src = artifact_path(v)
    if not src.is_file():
        raise EdgeatlasError(
            f"artifact {src} of {v.id[:12]} is missing",
            ErrorCode.NOT_FOUND,
            hint="rebuild it with `edgeatlas zoo build`",
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [src.name]
    shutil.copyfile(src, out_dir / src.name)
    splits = _split_rows(store, v.id)
    if splits:
        (out_dir / "splits").mkdir(exist_ok=True)
    for s in splits:
        for side in ("head", "tail"):
            if s[side]:
                p = Path(s[side])
                if not p.is_file():
                    raise EdgeatlasError(
                        f"split {side} {p} of {v.id[:12]} is missing",
                        ErrorCode.NOT_FOUND,
                        hint="rebuild the variant's splits",
                    )
                if f"splits/{p.name}" not in files:  # the ends reuse the whole model's file
                    shutil.copyfile(p, out_dir / "splits" / p.name)
                    files.append(f"splits/{p.name}")
                s[side] = f"splits/{p.name}"
    card = to_jsonable({**v.__dict__, "artifact": src.name, "splits": splits})
    card_path = out_dir / f"{v.id}.card.json"
    tmp = card_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(card, indent=2))
    tmp.replace(card_path)
    files.append(card_path.name)
    emit({"id": v.id, "out": str(out_dir), "files": files}, as_json)


@group.command(name="add")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--family", default="user", show_default=True, help="A family name for the model.")
@click.option("--precision", default=None, help="fp32, fp16, int8 (default: detected from the file).")
@db_option
@json_option
def add_cmd(file: Path, family: str, precision: str | None, db_url: str | None, as_json: bool) -> None:
    """Register your own .onnx or .tflite (checked with onnx.checker / loaded in ai-edge-litert).
    Its accuracy is unknown until you attach one with `zoo accuracy`.

    \b
    Example:
        edgeatlas zoo add my_model.onnx --family mynet
        edgeatlas zoo add my_model.tflite --json
    """
    from registry.zoo.build import add_artifact

    result = add_artifact(open_store(db_url), file, family=family, precision=precision)
    emit(_summary(result), as_json)


@group.command(name="accuracy")
@click.argument("variant_id")
@click.option("--value", required=True, type=float, help="Top-1 as a fraction (0.71 for 71 %).")
@click.option("--source", required=True, help="Provenance: measured:<dataset>, cited:<source> or user:<who>.")
@db_option
@json_option
def accuracy_cmd(variant_id: str, value: float, source: str, db_url: str | None, as_json: bool) -> None:
    """Attach an accuracy (with its source) to a variant.

    \b
    Example:
        edgeatlas zoo accuracy 3f2a9c --value 0.712 --source "measured:my-val-set (5000 images)"
    """
    v = open_store(db_url).set_accuracy(variant_id, value, source)
    emit({"id": v.id, "accuracy": v.accuracy, "accuracy_source": v.accuracy_source}, as_json)
