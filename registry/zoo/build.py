"""Build one zoo variant: (train | init | load weights) -> prune -> export -> quantise ->
content-addressed artifact -> measured accuracy -> store row (-> split points).

The Builder in TVM's sense: a typed :class:`VariantSpec` in, a store :class:`Variant` out.

- A spec is validated on construction; every problem is an :class:`EdgeatlasError` naming the
  field and the fix.
- The variant id is the sha256 of the artifact bytes; the file is
  ``artifacts_dir()/<sha256>.onnx|.tflite`` (written to a temporary name, then ``os.replace``).
- The *recipe key* (a hash of the spec, the weights file's sha256 and the build versions) is
  stored in the recipe, so building the same spec again finds the row before doing any work.
- Accuracy is never invented: ``measured:shapes-v1`` when the model was trained here (evaluated
  in the artifact's own runtime, onnxruntime or ai-edge-litert, on the held-out ``test`` split);
  ``cited:...`` only when the user loaded real torchvision weights (``weights=FILE``) and the
  configuration matches the published one exactly; otherwise unknown (``None``).
- Nothing reaches the store until the artifact is written, checked and evaluated, so a failure
  leaves the store unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import math
import os
import shutil
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from registry.errors import EdgeatlasError, ErrorCode
from registry.paths import artifacts_dir, cache_dir
from registry.store.records import Variant

PRECISIONS = ("fp32", "fp16", "int8", "int8-dynamic")
FORMATS = ("onnx", "tflite")
DATASETS = ("shapes-v1",)
BUILD_VERSION = 1  # bump when the export/quantise pipeline changes the bytes
MAX_RESOLUTION = 512
CITED_RESOLUTION = 224  # torchvision's published ImageNet figures are at 224x224
DEFAULT_MAX_SPLIT_POINTS = 8

Progress = Callable[[str], None]


def _field_error(
    field_name: str, message: str, hint: str, code: ErrorCode = ErrorCode.INVALID_ARGUMENT
) -> EdgeatlasError:
    return EdgeatlasError(f"field {field_name!r}: {message}", code=code, hint=hint)


@dataclass(frozen=True)
class VariantSpec:
    """What to build. ``dataset="shapes-v1"`` trains the model here on the generated task;
    ``dataset=None`` builds the ImageNet-shaped torchvision model (1000 classes), randomly
    initialised (seeded) unless ``weights`` names a local torchvision ``state_dict`` file."""

    family: str
    width: float = 1.0
    resolution: int = 64
    precision: str = "fp32"
    prune: float = 0.0
    format: str = "onnx"
    dataset: str | None = "shapes-v1"
    weights: str | None = None
    seed: int = 0
    task: str | None = None  # single-task families: shape (default), colour or position

    def __post_init__(self) -> None:
        from registry.zoo.families import FAMILIES, check_width, get_family

        try:
            fam = get_family(self.family)
        except EdgeatlasError:
            raise _field_error(
                "family", f"unknown model family {self.family!r}", f"use one of: {', '.join(FAMILIES)}"
            ) from None
        if isinstance(self.width, bool) or not isinstance(self.width, int | float) or not math.isfinite(self.width):
            raise _field_error("width", f"{self.width!r} is not a number", "give a width multiplier such as 0.5 or 1.0")
        if self.width <= 0:
            raise _field_error(
                "width", f"width must be > 0, got {self.width}", "use a width multiplier such as 0.5 or 1.0"
            )
        try:
            check_width(fam, float(self.width))
        except EdgeatlasError as exc:
            raise _field_error("width", exc.message, exc.hint or "", exc.code) from None
        object.__setattr__(self, "width", float(self.width))
        if isinstance(self.resolution, bool) or not isinstance(self.resolution, int):
            raise _field_error(
                "resolution", f"{self.resolution!r} is not an integer", "give the input side in pixels, e.g. 64"
            )
        if not fam.min_resolution <= self.resolution <= MAX_RESOLUTION:
            raise _field_error(
                "resolution",
                f"{self.resolution} px is outside {fam.min_resolution}..{MAX_RESOLUTION} for {fam.name}",
                f"{fam.name} downsamples by 32: use {fam.min_resolution} <= resolution <= {MAX_RESOLUTION}",
            )
        precision = str(self.precision).replace("_", "-")
        if precision not in PRECISIONS:
            raise _field_error(
                "precision", f"unknown precision {self.precision!r}", f"use one of: {', '.join(PRECISIONS)}"
            )
        object.__setattr__(self, "precision", precision)
        if self.format not in FORMATS:
            raise _field_error("format", f"unknown format {self.format!r}", f"use one of: {', '.join(FORMATS)}")
        if precision == "int8-dynamic" and self.format == "onnx":
            # measured (PLATFORM.md): quantize_dynamic turns every Conv into ConvInteger, which is
            # far slower than fp32 on CPU; every family here is a CNN, so it does not fit
            raise _field_error(
                "precision",
                f"int8-dynamic does not fit the CNN {fam.name} in ONNX (quantize_dynamic makes ConvInteger kernels, slower than fp32)",
                "use --precision int8 (static, calibrated) for ONNX, or --format tflite for int8-dynamic",
                ErrorCode.UNSUPPORTED,
            )
        if (
            isinstance(self.prune, bool)
            or not isinstance(self.prune, int | float)
            or not 0.0 <= float(self.prune) < 0.95
        ):
            raise _field_error(
                "prune",
                f"prune ratio {self.prune!r} out of range",
                "use 0 <= prune < 0.95 (e.g. 0.3 removes 30 % of channels)",
            )
        object.__setattr__(self, "prune", float(self.prune))
        if self.dataset in ("", "none", "imagenet"):
            object.__setattr__(self, "dataset", None)
        if self.dataset is not None and self.dataset not in DATASETS:
            raise _field_error(
                "dataset",
                f"unknown dataset {self.dataset!r}",
                f"use one of {list(DATASETS)} (trained here) or none (ImageNet-shaped)",
            )
        if self.dataset is None and fam.torchvision_name is None:
            raise _field_error("dataset", f"{fam.name} exists only for the generated task", "use dataset shapes-v1")
        if self.weights is not None:
            if self.dataset is not None:
                raise _field_error(
                    "weights",
                    "weights are a torchvision ImageNet state_dict, but the spec trains on shapes-v1",
                    "give dataset none (ImageNet-shaped) with --weights",
                )
            if not Path(self.weights).is_file():
                raise _field_error(
                    "weights",
                    f"{self.weights}: no such file",
                    "give a local torchvision state_dict (.pth)",
                    ErrorCode.NOT_FOUND,
                )
        if self.task is not None:
            from registry.zoo.dataset import TASKS

            if self.dataset is None or fam.name == "multitask":
                raise _field_error(
                    "task",
                    f"task {self.task!r} applies only to a single-task family trained on the generated data",
                    "drop --task (the multi-task model trains all heads; ImageNet-shaped models have no task here)",
                )
            if self.task not in TASKS:
                raise _field_error("task", f"unknown task {self.task!r}", f"use one of: {', '.join(TASKS)}")
            if self.task == "shape":
                object.__setattr__(self, "task", None)  # the default: one key for both spellings
        if self.dataset is not None and self.resolution < 16:
            raise _field_error("resolution", "too small for the generated task", "use >= 32")

    # ------------------------------------------------------------------ naming
    def describe(self) -> str:
        w = f"x{self.width:g}"
        p = f" prune{self.prune:g}" if self.prune else ""
        d = self.dataset or ("weights" if self.weights else "random-init")
        if self.task:
            d += f":{self.task}"
        return f"{self.family} {w} {self.resolution}px {self.precision}{p} {self.format} [{d}]"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def recipe_key(self) -> str:
        """Stable hash of everything that decides the artifact's bytes (spec, weights file, versions)."""
        from registry.zoo import train

        d = self.as_dict()
        if d["task"] is None:
            del d["task"]  # keys of default-task specs stay as they were before the field existed
        d["weights"] = _file_sha256(self.weights) if self.weights else None
        d["versions"] = {
            "build": BUILD_VERSION,
            "train": [train.TRAIN_VERSION, train.EPOCHS, train.FINETUNE_EPOCHS, train.BATCH, train.LR]
            if self.dataset
            else None,
        }
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:32]

    def model_key(self) -> str:
        """Hash of the torch model (all but precision/format): its TFLite fp32 base is cached by it."""
        return replace(self, precision="fp32", format="onnx").recipe_key()


@lru_cache(maxsize=64)
def _file_sha256_cached(path: str, mtime: float, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _file_sha256(path: str | Path) -> str:
    st = os.stat(path)
    return _file_sha256_cached(str(Path(path).resolve()), st.st_mtime, st.st_size)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def artifact_path(variant_or_path: Variant | str) -> Path:
    """A variant's file: its stored path is relative to the artifacts dir (or absolute)."""
    p = Path(variant_or_path.path if isinstance(variant_or_path, Variant) else variant_or_path)
    return p if p.is_absolute() else artifacts_dir() / p


def write_artifact(data: bytes, suffix: str) -> tuple[str, Path, bool]:
    """Write ``data`` content-addressed; returns (sha256, path, created). Atomic (tmp + os.replace)."""
    sha = sha256_bytes(data)
    dst = artifacts_dir() / f"{sha}.{suffix}"
    if dst.exists() and dst.stat().st_size == len(data) and _file_sha256(dst) == sha:
        return sha, dst, False
    fd, tmp = tempfile.mkstemp(prefix=f".{sha[:12]}.", suffix=".tmp", dir=artifacts_dir())
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return sha, dst, True


# ------------------------------------------------------------------------ results
@dataclass(frozen=True)
class BuildResult:
    """One build: the stored variant, whether work was done, the split points made (or why not)."""

    variant: Variant
    built: bool
    seconds: float
    splits: int | None = None
    splits_note: str | None = None
    accuracy_by_task: dict[str, float] = field(default_factory=dict)


def find_by_recipe(store: Any, spec: VariantSpec) -> Variant | None:
    key = spec.recipe_key()
    for v in store.list_variants(family=spec.family, format=spec.format):
        if (v.recipe or {}).get("key") == key and artifact_path(v).is_file():
            return v
    return None


def library_versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for mod in (
        "torch",
        "torchvision",
        "onnx",
        "onnxruntime",
        "litert_torch",
        "ai_edge_litert",
        "ai_edge_quantizer",
        "numpy",
    ):
        try:
            from importlib.metadata import version

            dist = {
                "litert_torch": "litert-torch",
                "ai_edge_litert": "ai-edge-litert",
                "ai_edge_quantizer": "ai-edge-quantizer",
            }.get(mod, mod)
            out[mod] = version(dist)
        except Exception:  # noqa: BLE001 - a missing package is simply not listed
            continue
    return out


# ---------------------------------------------------------------------- the model
def _cited_entry(spec: VariantSpec) -> dict[str, Any] | None:
    """The published figure for exactly this configuration, or None."""
    if not spec.weights or spec.dataset is not None:
        return None
    if spec.resolution != CITED_RESOLUTION or spec.prune or spec.precision != "fp32":
        return None
    path = Path(__file__).resolve().parents[1] / "data" / "cited_accuracy.toml"
    with open(path, "rb") as f:
        table = tomllib.load(f)
    for row in table.get("cited", []):
        if row["family"] == spec.family and float(row["width"]) == spec.width:
            return row
    return None


def _load_weights(model: Any, spec: VariantSpec) -> None:
    import torch

    try:
        state = torch.load(spec.weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types
        raise _field_error(
            "weights",
            f"{spec.weights}: not a readable torch state_dict ({type(exc).__name__}: {exc})",
            "save it with torch.save(model.state_dict(), FILE)",
            ErrorCode.BAD_DATA,
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # noqa: BLE001
        text = " ".join(str(exc).split())[:300]
        raise _field_error(
            "weights",
            f"{spec.weights} does not fit {spec.family} x{spec.width:g}: {text}",
            "give the torchvision state_dict of exactly this architecture",
            ErrorCode.BAD_DATA,
        ) from exc


def torch_model(spec: VariantSpec) -> Any:
    """The torch model of a spec: trained on the task (cached) or ImageNet-shaped (random or loaded)."""
    import torch

    from registry.zoo.families import build_model
    from registry.zoo.prune import prune_model
    from registry.zoo.train import trained_model

    if spec.dataset is not None:
        return trained_model(spec.family, spec.width, spec.resolution, spec.prune, spec.dataset, spec.seed, spec.task)
    torch.manual_seed(spec.seed)
    model = build_model(spec.family, spec.width, 1000)
    if spec.weights:
        _load_weights(model, spec)
    if spec.prune:
        prune_model(model, spec.prune)
    return model.eval()


def _calibration(spec: VariantSpec) -> np.ndarray:
    """Calibration images: the task's ``calib`` split (ImageNet-shaped models see the same
    generated images; their activation ranges are what matters, not the labels)."""
    from registry.zoo.dataset import load_dataset

    data = load_dataset(spec.dataset or "shapes-v1", "calib", spec.resolution)
    return np.ascontiguousarray(data.x[:64])


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_dir()))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _tflite_base(model: Any, spec: VariantSpec, work: Path, say: Progress) -> Path:
    """The fp32 .tflite of the torch model, cached by model key (litert-torch takes 10-40 s)."""
    from registry.zoo.export import export_tflite

    cached = cache_dir() / "tflite-base" / f"{spec.model_key()}.tflite"
    if cached.is_file() and cached.stat().st_size > 0:
        return cached
    say("converting to TFLite (litert-torch)")
    out = work / "base.tflite"
    export_tflite(model, spec.resolution, out)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
    shutil.copyfile(out, tmp)
    os.replace(tmp, cached)
    return cached


def _features(onnx_path: Path, precision: str) -> dict[str, float] | None:
    """Graph features (predictors.features) of the ONNX graph; for a TFLite variant the graph of
    the same torch model with the precision flags of the TFLite artifact."""
    try:
        from predictors.features import onnx_features
    except ImportError:  # pragma: no cover - the predictors room is part of the distribution
        return None
    feats = onnx_features(str(onnx_path)).to_dict()
    if precision != "fp32" and "precision_fp32" in feats:
        p = "int8" if precision.startswith("int8") else precision
        for k in ("precision_fp32", "precision_fp16", "precision_int8"):
            feats[k] = 1.0 if k == f"precision_{p}" else 0.0
    return feats


def _tflite_features(model: Any, spec: VariantSpec, fp32_onnx: Path) -> dict[str, float] | None:
    """A TFLite variant's graph features: those of the ONNX graph of the same torch model (exported
    to ``fp32_onnx``), with the precision flags of the TFLite artifact."""
    from registry.zoo.export import export_onnx
    from registry.zoo.families import output_names

    export_onnx(model, spec.resolution, output_names(spec.family), fp32_onnx)
    return _features(fp32_onnx, spec.precision)


def stale_features(v: Variant) -> bool:
    """Whether a variant's stored graph features come from another feature set version."""
    from predictors.features import FEATURES_VERSION

    return bool(v.features) and v.features.get("features_version", 1) < FEATURES_VERSION


def refresh_features(store: Any, v: Variant) -> Variant:
    """Recompute a variant's graph features with this edgeatlas's feature set and store them.

    An ONNX variant is read from its artifact. A TFLite variant's features come, as at build
    time, from the ONNX graph of the same torch model, rebuilt from the recipe's spec (trained
    weights come from the cache, or are trained again if the cache was cleared). A TFLite file
    added by hand has no ONNX graph: it is returned unchanged (no features, as when it was added).
    """
    if v.format == "onnx":
        path = artifact_path(v)
        if not path.is_file():
            raise EdgeatlasError(
                f"variant {v.id[:12]}: artifact {path} is missing",
                code=ErrorCode.NOT_FOUND,
                hint="rebuild it with `edgeatlas zoo build`",
            )
        feats = _features(path, "fp32")
    else:
        spec_d = (v.recipe or {}).get("spec")
        if not spec_d:
            return v
        try:
            spec = VariantSpec(**spec_d)
        except TypeError as exc:  # a recipe from a build with other spec fields
            raise EdgeatlasError(
                f"variant {v.id[:12]}: its recipe's spec no longer builds ({exc})",
                code=ErrorCode.BAD_DATA,
                hint="build the variant again with `edgeatlas zoo build`",
            ) from exc
        with _workdir() as work:
            feats = _tflite_features(torch_model(spec), spec, work / "fp32.onnx")
    return store.set_variant_features(v.id, feats) if feats else v


def build(
    store: Any,
    spec: VariantSpec,
    progress: Progress | None = None,
    *,
    splits: bool = True,
    max_split_points: int | None = DEFAULT_MAX_SPLIT_POINTS,
    codecs: tuple[str, ...] | None = None,
) -> BuildResult:
    """Build ``spec`` into the store (a no-op when its recipe key is already there)."""
    say: Progress = progress or (lambda _m: None)
    t0 = time.perf_counter()
    existing = find_by_recipe(store, spec)
    if existing is not None:
        if stale_features(existing):
            say("refreshing graph features")
            existing = refresh_features(store, existing)
        return BuildResult(
            existing,
            False,
            time.perf_counter() - t0,
            splits=_count_splits(store, existing.id),
            splits_note="already built",
        )

    from registry.zoo import train
    from registry.zoo.evaluate import evaluate_artifact
    from registry.zoo.export import (
        export_onnx,
        load_onnx_checked,
        onnx_stats,
        quantize_onnx,
        quantize_tflite,
        tflite_stats,
    )
    from registry.zoo.families import output_names

    say("training" if spec.dataset else "initialising")
    model = torch_model(spec)
    calib = _calibration(spec)
    precision_arg = spec.precision.replace("-", "_")
    with _workdir() as work:
        fp32_onnx = work / "fp32.onnx"
        if spec.format == "onnx":
            say("exporting ONNX")
            export_onnx(model, spec.resolution, output_names(spec.family), fp32_onnx)
            out = work / "variant.onnx"
            say(f"quantising ({spec.precision})" if spec.precision != "fp32" else "checking")
            how = quantize_onnx(fp32_onnx, out, precision_arg, calib)
            proto = load_onnx_checked(out)
            stats = onnx_stats(proto)
            runtime_needs = {"runtime": "onnxruntime", "opset": stats["opset"], "ops": stats["op_types"]}
            input_shape = stats["input_shape"] or [1, 3, spec.resolution, spec.resolution]
            opset = stats["opset"]
            features = _features(out, "fp32")  # the graph itself carries its precision
        else:
            base = _tflite_base(model, spec, work, say)
            out = work / "variant.tflite"
            if spec.precision != "fp32":
                say(f"quantising ({spec.precision}, ai-edge-quantizer)")
            how = quantize_tflite(base, out, precision_arg, calib)
            stats = tflite_stats(out)  # loads it in ai-edge-litert: a broken file fails here
            runtime_needs = {"runtime": "litert", "ops": stats["op_types"], "input_dtype": stats["input_dtype"]}
            input_shape = stats["input_shape"]
            opset = None
            try:
                features = _tflite_features(model, spec, fp32_onnx)
            except EdgeatlasError:
                features = None
        data = out.read_bytes()
        if not data:
            raise EdgeatlasError(f"{spec.describe()}: the exported artifact is empty", code=ErrorCode.BUILD_ERROR)

        accuracy = source = None
        by_task: dict[str, float] = {}
        cited = _cited_entry(spec)
        if spec.dataset is not None:
            say("measuring accuracy")
            tasks = train.task_names(spec.family, spec.task)
            try:
                by_task = evaluate_artifact(out, spec.format, tasks, spec.dataset, spec.resolution)
            except EdgeatlasError:
                raise
            except Exception as exc:  # noqa: BLE001 - a runtime that cannot run the artifact
                raise EdgeatlasError(
                    f"{spec.describe()}: the {spec.format} artifact does not run in its runtime: {type(exc).__name__}: {exc}",
                    code=ErrorCode.BUILD_ERROR,
                ) from exc
            accuracy = float(np.mean(list(by_task.values())))
            source = f"measured:{spec.dataset}"
        elif cited is not None:
            accuracy = float(cited["top1"])
            source = (
                f"cited:torchvision {cited['weights']} ImageNet-1K acc@1 (docs.pytorch.org/vision/stable/models.html)"
            )

        recipe = {
            "key": spec.recipe_key(),
            "spec": spec.as_dict(),
            "build_version": BUILD_VERSION,
            "export": {"tool": "torch.onnx.export", "opset": stats.get("opset"), "dynamo": False}
            if spec.format == "onnx"
            else {"tool": "litert_torch.convert"},
            "quantisation": how,
            "training": _training_recipe(spec),
            "weights": {"file": str(spec.weights), "sha256": _file_sha256(spec.weights)}
            if spec.weights
            else ("trained:" + spec.dataset if spec.dataset else f"random-init (seed {spec.seed}); accuracy unknown"),
            "accuracy": {
                "by_task": by_task,
                "split": "test",
                "aggregate": "mean top-1 over tasks",
                "runtime": "onnxruntime" if spec.format == "onnx" else "ai-edge-litert",
            }
            if by_task
            else None,
            "cited": dict(cited) if cited else None,
            "libraries": library_versions(),
        }
        sha, dst, created = write_artifact(data, spec.format)
        try:
            variant = store.add_variant(
                id=sha,
                family=spec.family,
                format=spec.format,
                path=dst.name,
                params=int(stats["params"]),
                macs=int(stats["macs"]),
                size_bytes=len(data),
                input_shape=[int(s) for s in input_shape],
                precision=spec.precision,
                width=spec.width,
                resolution=spec.resolution,
                prune=spec.prune,
                opset=opset,
                runtime_needs=runtime_needs,
                recipe=recipe,
                accuracy=accuracy,
                accuracy_source=source,
                features=features,
            )
        except BaseException:
            if created:
                with contextlib.suppress(OSError):
                    dst.unlink()
            raise
    n_splits, note = (None, "not requested")
    if splits:
        n_splits, note = _build_splits(store, variant, max_split_points, codecs, say)
    return BuildResult(variant, True, time.perf_counter() - t0, n_splits, note, by_task)


def _training_recipe(spec: VariantSpec) -> dict[str, Any] | None:
    if spec.dataset is None:
        return None
    from registry.zoo import train

    return {
        "dataset": spec.dataset,
        "split": "train",
        "epochs": train.EPOCHS,
        "finetune_epochs_after_prune": train.FINETUNE_EPOCHS if spec.prune else 0,
        "batch": train.BATCH,
        "optimizer": "AdamW + OneCycle",
        "lr": train.LR,
        "seed": spec.seed,
        "tasks": train.task_names(spec.family, spec.task),
    }


def _count_splits(store: Any, variant_id: str) -> int | None:
    try:
        return len(store.list_splits(variant_id))
    except Exception:  # noqa: BLE001
        return None


def _build_splits(
    store: Any, variant: Variant, max_points: int | None, codecs: tuple[str, ...] | None, say: Progress
) -> tuple[int | None, str | None]:
    """Split points through registry.zoo.split_build (the splits room), when it exists."""
    try:
        mod = importlib.import_module("registry.zoo.split_build")
    except ModuleNotFoundError as exc:
        if exc.name == "registry.zoo.split_build":
            return None, "skipped: registry.zoo.split_build is not on this branch yet"
        raise
    fn = getattr(mod, "build_splits", None)
    if fn is None:
        return None, "skipped: registry.zoo.split_build has no build_splits"
    say("split points")
    kwargs: dict[str, Any] = {"max_points": max_points}
    if codecs is not None:
        kwargs["codecs"] = tuple(codecs)
    try:
        made = fn(store, variant.id, progress=lambda stage, done, total: say(f"{stage} {done}/{total}"), **kwargs)
    except EdgeatlasError as exc:
        return _count_splits(store, variant.id), f"split building failed: {exc.one_line()}"
    except Exception as exc:  # noqa: BLE001 - the variant stands; the failure is reported, not hidden
        return _count_splits(store, variant.id), f"split building failed: {type(exc).__name__}: {exc}"
    return len(made), None


def build_variant(store: Any, spec: VariantSpec, progress: Progress | None = None, **kwargs: Any) -> Variant:
    """Build ``spec`` (or find it) and return the stored variant."""
    return build(store, spec, progress, **kwargs).variant


# --------------------------------------------------------------------- user artifacts
def _tflite_precision(path: Path) -> str:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    dtypes = {np.dtype(t["dtype"]).name for t in it.get_tensor_details()}
    if dtypes & {"int8", "uint8"}:
        return "int8"
    if "float16" in dtypes:
        return "fp16"
    return "fp32"


def _static_batch(proto: Any, src: Path) -> Any:
    """A copy of ``proto`` whose graph inputs have batch 1, for the stats the zoo records.

    A dynamic batch dimension (dim 0 of a graph input, symbolic as torch's
    ``dynamic_axes={'input': {0: 'batch'}}`` writes it, ``dim_param: "batch"``, or left unset) is
    taken as 1: the zoo records, and the predictors' features assume, one sample per inference.
    Its symbol is set to 1 wherever else it appears (outputs, value_info), so shape inference gives
    every tensor a concrete shape and the MACs are counted. Any other dynamic dimension (height,
    width, channels, a sequence length) is an error naming the input and the dim: the MACs and the
    resolution depend on a size the file does not fix."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(proto)
    g = fixed.graph
    inits = {i.name for i in g.initializer}
    batch_symbols: set[str] = set()
    for vi in g.input:
        if vi.name in inits or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = vi.type.tensor_type.shape.dim
        dynamic = [k for k, d in enumerate(dims) if not (d.HasField("dim_value") and d.dim_value > 0)]
        other = [k for k in dynamic if k != 0]
        if other:
            shape = [x.dim_value if x.HasField("dim_value") else (x.dim_param or "?") for x in dims]
            named = ", ".join(
                f"dim {k} ({dims[k].dim_param!r})" if dims[k].dim_param else f"dim {k} (unset)" for k in other
            )
            symbols = [dims[k].dim_param for k in other if dims[k].dim_param]
            fix = (
                ", or fix them with python -m onnxruntime.tools.make_dynamic_shape_fixed --dim_param NAME "
                f"--dim_value SIZE IN.onnx OUT.onnx (NAME: {', '.join(symbols)})"
                if symbols
                else ""
            )
            raise EdgeatlasError(
                f"{src}: input {vi.name!r} has dynamic {named} (shape {shape}); only the batch dim (0) may be "
                "dynamic: MACs and resolution need the other sizes fixed",
                code=ErrorCode.UNSUPPORTED,
                hint="re-export with a fixed input size (torch.onnx.export with dynamic_axes={'input': {0: 'batch'}} "
                "only)" + fix,
            )
        if dynamic:  # the batch dim: taken as 1
            if dims[0].dim_param:
                batch_symbols.add(dims[0].dim_param)
            dims[0].dim_value = 1  # clears dim_param (a oneof)
    if batch_symbols:
        for vi in list(g.output) + list(g.value_info):
            for d in vi.type.tensor_type.shape.dim:
                if d.HasField("dim_param") and d.dim_param in batch_symbols:
                    d.dim_value = 1
    return fixed


def add_artifact(store: Any, file: str | Path, family: str = "user", precision: str | None = None) -> BuildResult:
    """Register a user's .onnx / .tflite (checked: onnx.checker, or loaded in ai-edge-litert).
    Accuracy stays unknown until ``zoo accuracy`` attaches one with its source.

    An ONNX model with a dynamic batch dimension is recorded at batch 1 (input_shape, MACs,
    resolution: see :func:`_static_batch`); the artifact keeps its dynamic axis. Other dynamic
    dimensions are refused with an error naming the input and the dim."""
    t0 = time.perf_counter()
    src = Path(file)
    suffix = src.suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise EdgeatlasError(f"{src}: not a .onnx or .tflite file", hint="give FILE.onnx or FILE.tflite")
    if not src.is_file():
        raise EdgeatlasError(f"{src}: no such file", code=ErrorCode.NOT_FOUND, hint="check the path")
    if precision is not None and precision.replace("_", "-") not in PRECISIONS:
        raise _field_error("precision", f"unknown precision {precision!r}", f"use one of: {', '.join(PRECISIONS)}")
    if not family or not family.replace("_", "").replace("-", "").isalnum():
        raise _field_error("family", f"{family!r} is not a usable family name", "use letters, digits, - and _")
    data = src.read_bytes()
    if suffix == "onnx":
        from registry.zoo.export import load_onnx_checked, onnx_stats

        proto = load_onnx_checked(src)
        stats = onnx_stats(_static_batch(proto, src))
        try:
            features = _features(src, "fp32")
        except EdgeatlasError as exc:
            raise EdgeatlasError(f"{src}: {exc.message}", code=ErrorCode.BAD_DATA, hint=exc.hint) from exc
        detected = "fp32"
        if features:
            detected = (
                "int8" if features.get("precision_int8") else ("fp16" if features.get("precision_fp16") else "fp32")
            )
        shape = stats["input_shape"] or []
        resolution = int(shape[2]) if len(shape) == 4 else None
        runtime_needs = {"runtime": "onnxruntime", "opset": stats["opset"], "ops": stats["op_types"]}
        opset = stats["opset"]
    else:
        from registry.zoo.export import tflite_stats

        stats = tflite_stats(src)
        features = None
        detected = _tflite_precision(src)
        shape = stats["input_shape"]
        resolution = int(shape[1]) if len(shape) == 4 else None
        runtime_needs = {"runtime": "litert", "ops": stats["op_types"], "input_dtype": stats["input_dtype"]}
        opset = None
    prec = precision.replace("_", "-") if precision else detected
    sha, dst, created = write_artifact(data, suffix)
    recipe = {
        "key": None,
        "source": "user artifact",
        "file": src.name,
        "precision_detected": detected,
        "libraries": library_versions(),
    }
    try:
        variant = store.add_variant(
            id=sha,
            family=family,
            format=suffix,
            path=dst.name,
            params=int(stats["params"]),
            macs=int(stats["macs"]),
            size_bytes=len(data),
            input_shape=[int(s) for s in shape],
            precision=prec,
            resolution=resolution,
            opset=opset,
            runtime_needs=runtime_needs,
            recipe=recipe,
            features=features,
        )
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                dst.unlink()
        raise
    return BuildResult(variant, created, time.perf_counter() - t0)
