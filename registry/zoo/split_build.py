"""Build a variant's split points into the store: head/tail artifacts, payloads, codecs.

:func:`build_splits` is what ``zoo build`` calls after a variant is stored:

1. load the variant's ONNX artifact (its sha256 must equal the variant id: artifacts are
   content-addressed, a changed file is corrupt) and list its split points
   (:func:`registry.zoo.splits.list_split_points`: every cut with exactly one crossing tensor,
   de-duplicated, at most ``max_points`` including the two ends);
2. extract each interior cut's head and tail (onnx.utils.Extractor), check head∘tail == full on
   a seeded random input in onnxruntime (relative error <= :data:`TOLERANCE`, graph
   optimisations off; :data:`FP16_TOLERANCE` for a float16 payload, see :func:`tolerance_for`),
   and write both as ``artifacts_dir()/<sha256>.onnx``;
3. per interior cut and payload codec (``fp32``, ``fp16``, ``int8``, ``pca``) measure the
   encoded bytes of one payload (batch 1, header included) and, when the variant was trained
   here on a known task, the accuracy delta ``accuracy(head -> codec round trip -> tail) -
   accuracy(full)`` on the first :data:`EVAL_SAMPLES` images of the task's held-out ``test``
   split, with ``accuracy_source = "measured:<dataset>"``. Otherwise the delta is ``None``
   and the source ``"unknown"`` (never invented). ``fidelity`` (relative L2 error of the tail
   outputs against the full model's) is recorded in both cases, with the inputs it was
   measured on. PCA bases are fitted with scikit-learn on the payloads of the data set's
   ``calib`` split (128 training images; random-normal inputs for a model that does not take
   3xRxR images) and stored content-addressed as ``artifacts_dir()/<sha256>.npz``; the codec
   info names the file (``basis``) so a probe can ship it;
4. write every split row with its codecs in **one transaction**: any failure above writes
   nothing. Building a variant that already has splits is a no-op (it returns them).

Ends, as :mod:`probes.sweep` and :mod:`registry.selector.sources` read them (both skip a split
without both a head and a tail): ``input`` (position 0, all on the edge: no head, the tail is
the full model, the payload is the raw input) and ``output`` (position = node count, all on the
device: the head is the full model, no tail, the payload is the model's outputs). Ends carry no
codecs (the selector prices all-on-edge as the raw fp32 input).

Paths in split rows and codec infos are file names relative to ``artifacts_dir()`` (resolved by
``probes.sweep.artifact_path``), so a data directory can move.

A TFLite variant has no ONNX graph to cut: :func:`build_splits` returns ``[]`` for it and
writes nothing (its ONNX sibling carries the splits), unless asked with ``tflite=True``: then
:func:`build_tflite_splits` converts heads and tails from the torch model at module boundaries
(see the TFLite section below).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from registry.errors import EdgeatlasError, ErrorCode
from registry.paths import artifacts_dir
from registry.store.records import Split, Variant
from registry.zoo import codecs as C
from registry.zoo.splits import SplitExtractor, SplitPoint, full_reference, list_split_points, verify_split

TOLERANCE = 1e-4
FP16_TOLERANCE = 5e-2  # a structural check: a wrong cut is off by O(1)
FP16_ATOL = 2.0**-14  # float16's smallest normal: a payload value below it may flush to zero
EVAL_SAMPLES = 200
CALIB_SPLIT = "calib"
EVAL_SPLIT = "test"
CHUNK_BYTES = 192 * 2**20  # payload memory per evaluation chunk
Progress = Callable[[str, int, int], None]
"""``progress(step, done, total)``: ``step`` is "splits" or "codecs"."""


@dataclass(frozen=True)
class EvalTask:
    """What a variant's accuracy is measured on: data set, tasks (in output order), resolution."""

    dataset: str
    tasks: tuple[str, ...]
    resolution: int


@dataclass
class _Planned:
    point: SplitPoint
    head: str | None = None
    head_sha: str | None = None
    tail: str | None = None
    tail_sha: str | None = None
    head_macs: int | None = None
    tail_macs: int | None = None
    codecs: dict[str, Any] = field(default_factory=dict)
    head_bytes: bytes | None = None
    tail_bytes: bytes | None = None


# --------------------------------------------------------------------------- artifacts


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_artifact(data: bytes, suffix: str) -> tuple[str, str]:
    """Write ``data`` as ``artifacts_dir()/<sha256><suffix>`` (tmp + os.replace; kept if already
    there). Returns (file name relative to the artifacts dir, sha256)."""
    sha = sha256_bytes(data)
    name = f"{sha}{suffix}"
    path = artifacts_dir() / name
    if not (path.is_file() and path.stat().st_size == len(data)):
        tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return name, sha


def artifact_file(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else artifacts_dir() / p


def load_variant_model(v: Variant) -> onnx.ModelProto:
    """The variant's ONNX model; a missing, altered or invalid file is a BAD_DATA/NOT_FOUND error."""
    path = artifact_file(v.path)
    if not path.is_file():
        raise EdgeatlasError(
            f"variant {v.id[:12]}: artifact {path} is missing",
            code=ErrorCode.NOT_FOUND,
            hint="rebuild it with `edgeatlas zoo build` (artifacts are content-addressed in the data dir)",
        )
    data = path.read_bytes()
    if len(v.id) == 64 and sha256_bytes(data) != v.id:
        raise EdgeatlasError(
            f"{path}: its sha256 is not the variant id {v.id[:12]}… (the file was altered or is corrupt)",
            code=ErrorCode.BAD_DATA,
            hint="rebuild the variant with `edgeatlas zoo build`, or re-add the original file with `edgeatlas zoo add`",
        )
    from registry.zoo.export import load_onnx_checked

    return load_onnx_checked(path, data)


# --------------------------------------------------------------------------- eval task


def eval_task(v: Variant) -> EvalTask | None:
    """The generated task the variant was trained on (from its recipe, or its accuracy's
    ``measured:<dataset>`` provenance), or None when no accuracy can be measured."""
    from registry.zoo.dataset import DATASET, TASKS

    recipe = dict(v.recipe or {})
    train = next((recipe[k] for k in ("training", "train") if isinstance(recipe.get(k), dict)), {})
    spec = recipe.get("spec") if isinstance(recipe.get("spec"), dict) else {}
    dataset = recipe.get("dataset") or train.get("dataset") or spec.get("dataset")
    if not dataset and v.accuracy_source and v.accuracy_source.startswith("measured:"):
        dataset = v.accuracy_source.split(":", 1)[1]
    if dataset != DATASET:
        return None
    tasks = recipe.get("tasks") or train.get("tasks")
    if not tasks:
        tasks = list(TASKS) if v.family == "multitask" else ["shape"]
    if isinstance(tasks, str):
        tasks = [tasks]
    if any(t not in TASKS for t in tasks):
        return None
    shape = tuple(v.input_shape)
    resolution = v.resolution or (shape[-1] if len(shape) == 4 else None)
    if not resolution or len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3] != resolution:
        return None
    return EvalTask(dataset=str(dataset), tasks=tuple(tasks), resolution=int(resolution))


# --------------------------------------------------------------------------- onnx helpers


def _input_info(model: onnx.ModelProto) -> tuple[str, list[int], np.dtype]:
    inits = {i.name for i in model.graph.initializer}
    vi = next(i for i in model.graph.input if i.name not in inits)
    dims = [d.dim_value or 1 for d in vi.type.tensor_type.shape.dim]
    return vi.name, dims, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))


def with_outputs(model: onnx.ModelProto, tensors: Sequence[str]) -> onnx.ModelProto:
    """A copy of the (shape-inferred) model that also outputs ``tensors``."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    vis = {vi.name: vi for vi in m.graph.value_info}
    for t in tensors:
        if t not in have:
            m.graph.output.append(vis[t])
            have.add(t)
    return m


def batchable(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with a symbolic batch dimension on its inputs/outputs, and ``Reshape`` targets whose
    baked-in leading 1 (the traced batch of 1) becomes -1. Only used after checking that it
    reproduces the batch-1 model sample by sample (:class:`BatchRunner`)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for vi in list(g.input) + list(g.output):
        d = vi.type.tensor_type.shape.dim
        if len(d):
            d[0].ClearField("dim_value")
            d[0].dim_param = "N"
    del g.value_info[:]
    consts: dict[str, onnx.TensorProto] = {i.name: i for i in g.initializer}
    for node in g.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = node.attribute[0].t
    fixed: dict[str, str] = {}
    for node in g.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in consts:
            continue
        target = onnx.numpy_helper.to_array(consts[node.input[1]])
        if target.ndim != 1 or not len(target) or target[0] != 1 or -1 in target[1:]:
            continue
        name = fixed.get(node.input[1])
        if name is None:
            name = f"{node.input[1]}__batch"
            g.initializer.append(
                onnx.numpy_helper.from_array(np.concatenate([[-1], target[1:]]).astype(np.int64), name)
            )
            fixed[node.input[1]] = name
        node.input[1] = name
    return m


class BatchRunner:
    """Runs a batch-1 ONNX model over many samples: batched through :func:`batchable` when that
    copy reproduces the model on two random samples (relative error <= 1e-4), one by one
    otherwise."""

    def __init__(self, model: onnx.ModelProto, threads: int = 2):
        import onnxruntime as ort

        from registry.zoo.splits import rel_error, session

        self.input_name, dims, self.dtype = _input_info(model)
        self.output_names = [o.name for o in model.graph.output]
        self._single = session(model, threads)
        self._batched = None
        quiet = ort.RunOptions()
        quiet.log_severity_level = 4
        probe = np.random.default_rng(2).standard_normal([2, *dims[1:]]).astype(self.dtype)
        try:
            s = session(batchable(model), threads)
            got = s.run(None, {self.input_name: probe}, quiet)
            for i in range(2):
                want = self._single.run(None, {self.input_name: probe[i : i + 1]})
                if any(rel_error(w, g[i : i + 1]) > 1e-4 for w, g in zip(want, got, strict=True)):
                    raise ValueError("the batched copy differs")
            self._batched = s
        except Exception:
            self._batched = None

    @property
    def batched(self) -> bool:
        return self._batched is not None

    def run(self, x: np.ndarray, batch: int = 64) -> list[np.ndarray]:
        x = np.ascontiguousarray(x.astype(self.dtype, copy=False))
        chunks: list[list[np.ndarray]] = []
        if self._batched is not None:
            for i in range(0, len(x), batch):
                chunks.append(self._batched.run(None, {self.input_name: x[i : i + batch]}))
        else:
            for i in range(len(x)):
                chunks.append(self._single.run(None, {self.input_name: x[i : i + 1]}))
        return [np.concatenate([c[k] for c in chunks]) for k in range(len(self.output_names))]


def _macs(model: onnx.ModelProto) -> int | None:
    try:
        from registry.zoo.export import onnx_stats
    except ImportError:  # pragma: no cover - zoo-build's module
        return None
    return int(onnx_stats(model)["macs"])


# --------------------------------------------------------------------------- build


def _plan(model: onnx.ModelProto, v: Variant, max_points: int, progress: Progress | None) -> list[_Planned]:
    """Points, head/tail extraction and the head∘tail == full check (nothing written yet)."""
    points = list_split_points(model, max_points)
    ex = SplitExtractor(model)
    _, dims, dtype = _input_info(model)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(dims).astype(dtype)
    ref = full_reference(model, x)
    planned: list[_Planned] = []
    interior = [p for p in points if not p.is_end]
    for p in points:
        if p.name == "input":
            planned.append(_Planned(p, tail=v.path, tail_sha=v.id, head_macs=0, tail_macs=v.macs))
            continue
        if p.name == "output":
            planned.append(_Planned(p, head=v.path, head_sha=v.id, head_macs=v.macs, tail_macs=0))
            continue
        head, tail = ex.extract(p)
        try:
            verify_split(ref, head, tail, x, tolerance_for(p), atol=FP16_ATOL if p.dtype == "float16" else 0.0)
        except EdgeatlasError as exc:
            raise EdgeatlasError(
                f"variant {v.id[:12]}, cut {p.name!r}: {exc.message}",
                code=ErrorCode.BUILD_ERROR,
                hint="report the model: this cut's extracted head/tail do not reproduce the full model",
            ) from exc
        planned.append(
            _Planned(
                p,
                head_macs=_macs(head),
                tail_macs=_macs(tail),
                head_bytes=head.SerializeToString(),
                tail_bytes=tail.SerializeToString(),
            )
        )
        if progress:
            progress("splits", sum(1 for q in planned if not q.point.is_end), len(interior))
    return planned


def tolerance_for(point: SplitPoint) -> float:
    """head∘tail tolerance: :data:`TOLERANCE`, or :data:`FP16_TOLERANCE` for a float16 payload.
    onnxruntime's CPU provider computes an fp16 graph in float32 behind inserted casts, so the
    full model keeps float32 across the cut where the split rounds the payload to float16; the
    tail amplifies that rounding (measured up to 3e-2 on a random-weight MobileNetV2), while a
    wrong cut is off by O(1)."""
    return FP16_TOLERANCE if point.dtype == "float16" else TOLERANCE


def _chunks(n: int, per_sample_bytes: int) -> list[slice]:
    size = max(1, min(100, CHUNK_BYTES // max(1, per_sample_bytes)))
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


def _inputs(model: onnx.ModelProto, task: EvalTask | None, split: str, n: int | None) -> tuple[np.ndarray, str]:
    """Evaluation/calibration inputs and their description."""
    from registry.zoo.dataset import DATASET, load_dataset

    _, dims, dtype = _input_info(model)
    if task is not None:
        data = load_dataset(task.dataset, split, task.resolution)
        return np.asarray(data.x[:n]), f"{task.dataset}:{split}"
    if len(dims) == 4 and dims[1] == 3 and dims[2] == dims[3] and 16 <= dims[2] <= 512:
        # an image model with no task of ours: our images still make a sensible PCA calibration
        data = load_dataset(DATASET, CALIB_SPLIT, dims[2])
        return np.asarray(data.x[:n]), f"{DATASET}:{CALIB_SPLIT}"
    rng = np.random.default_rng(1)
    count = n or 128
    return rng.standard_normal([count, *dims[1:]]).astype(dtype), "random-normal"


def roundtrip_batch(y: np.ndarray, codec: str, pca: C.PcaBasis | None = None) -> tuple[np.ndarray, int]:
    """Every sample of ``y`` (N, ...) encoded as its own batch-1 payload and decoded, computed
    vectorised; returns (decoded float32, encoded bytes of the first sample). The result is
    checked against :func:`registry.zoo.codecs.encode`/``decode`` on the first sample."""
    blob0 = C.encode(y[:1], codec, pca)
    if codec == "fp32":
        out = y.astype(np.float32)
    elif codec == "fp16":
        out = y.astype("<f2").astype(np.float32)
    elif codec == "int8":
        out = np.empty(y.shape, np.float32)
        for i in range(len(y)):
            xf = y[i : i + 1].astype(np.float32)
            scale, zp = C.int8_params(xf)
            q = np.clip(np.round(xf / scale) + zp, -128, 127).astype(np.int8)
            out[i : i + 1] = (q.astype(np.float32) - float(zp)) * float(scale)
    elif codec == "pca":
        if pca is None:
            raise C.CodecError("codec 'pca' needs a fitted PcaBasis")
        flat = np.moveaxis(y.astype(np.float32), 1, -1).reshape(-1, y.shape[1])
        coeffs = ((flat - pca.mean) @ pca.components.T).astype("<f2").astype(np.float32)
        rest = (y.shape[0],) + y.shape[2:]
        out = np.moveaxis((coeffs @ pca.components + pca.mean).reshape(rest + (y.shape[1],)), -1, 1)
        out = out.astype(np.float32)
    else:
        raise C.CodecError(f"unknown codec {codec!r}")
    ref = C.decode(blob0, pca)
    # pca: a batched matmul may round a float16 coefficient the other way (one fp16 ulp)
    tol = (2e-3 if codec == "pca" else 1e-5) * (float(np.max(np.abs(ref), initial=0.0)) + 1e-6)
    if ref.shape != out[:1].shape or not float(np.max(np.abs(ref - out[:1]), initial=0.0)) <= tol:
        raise EdgeatlasError(f"vectorised {codec} round trip differs from the codec", code=ErrorCode.BUILD_ERROR)
    return out, len(blob0)


def _codec_stats(
    model: onnx.ModelProto,
    planned: list[_Planned],
    task: EvalTask | None,
    codecs: Sequence[str],
    progress: Progress | None,
    eval_samples: int = EVAL_SAMPLES,
) -> None:
    """Fill ``planned[i].codecs`` (interior points) with bytes, measured deltas and fidelity."""
    interior = [p for p in planned if not p.point.is_end]
    if not interior or not codecs:
        return
    inferred = onnx.shape_inference.infer_shapes(model)
    n_out = len(model.graph.output)
    probe = BatchRunner(with_outputs(inferred, [p.point.tensor for p in interior if p.point.tensor]))
    full_runner = BatchRunner(model)
    per_sample = sum(p.point.payload_bytes for p in interior)

    # 1. PCA bases from calibration payloads (channel-wise rows, at most 20000 per split)
    bases: dict[str, tuple[C.PcaBasis, str, str] | None] = {}
    if "pca" in codecs:
        calib, calib_desc = _inputs(model, task, CALIB_SPLIT, None)
        rows: dict[str, list[np.ndarray]] = {p.point.name: [] for p in interior}
        rng = np.random.default_rng(0)
        for sl in _chunks(len(calib), per_sample):
            outs = probe.run(calib[sl])[n_out:]
            for p, y in zip(interior, outs, strict=True):
                if y.ndim < 2 or not np.issubdtype(y.dtype, np.floating):
                    continue
                flat = np.moveaxis(y.astype(np.float32), 1, -1).reshape(-1, y.shape[1])
                keep = max(1, int(20000 * (sl.stop - sl.start) / len(calib)))
                if len(flat) > keep:
                    flat = flat[rng.choice(len(flat), keep, replace=False)]
                rows[p.point.name].append(flat)
        for p in interior:
            r = rows[p.point.name]
            if not r:
                bases[p.point.name] = None
                continue
            basis = C.fit_pca(np.concatenate(r))
            name, sha = write_artifact(basis.to_bytes(), ".npz")
            bases[p.point.name] = (basis, name, calib_desc)

    # 2. evaluation: full outputs + payloads per chunk, codec round trips, tails
    x, eval_desc = _inputs(model, task, EVAL_SPLIT, eval_samples)
    tails = {p.point.name: BatchRunner(onnx.load_from_string(p.tail_bytes or b"")) for p in interior}
    active = {p.point.name: [c for c in codecs if c != "pca" or bases.get(p.point.name)] for p in interior}
    full_out: list[list[np.ndarray]] = [[] for _ in range(n_out)]
    tail_out = {(p.point.name, c): [[] for _ in range(n_out)] for p in interior for c in active[p.point.name]}
    nbytes: dict[tuple[str, str], int] = {}
    for sl in _chunks(len(x), per_sample):
        outs = probe.run(x[sl])
        # the reference is the unmodified model: extra outputs can stop onnxruntime's fusions
        # (a QDQ pair into QLinearConv), so the probe's own outputs are not the deployed model's
        for k, y in enumerate(full_runner.run(x[sl])):
            full_out[k].append(y)
        for p, y in zip(interior, outs[n_out:], strict=True):
            tail = tails[p.point.name]
            for c in active[p.point.name]:
                b = bases.get(p.point.name)
                decoded, size = roundtrip_batch(y, c, b[0] if b else None)
                nbytes.setdefault((p.point.name, c), size)
                # the probe agent feeds ``decoded.astype(tail input dtype)``: so does the runner
                got = dict(zip(tail.output_names, tail.run(decoded), strict=True))
                for k, o in enumerate(model.graph.output):
                    tail_out[(p.point.name, c)][k].append(got[o.name])
    full = [np.concatenate(f) for f in full_out]
    labels = _labels(model, task, len(x))
    acc_full = _accuracy(full, labels)
    for j, p in enumerate(interior):
        for c in active[p.point.name]:
            got = [np.concatenate(t) for t in tail_out[(p.point.name, c)]]
            num = sum(float(np.sum((g.astype(np.float64) - f) ** 2)) for g, f in zip(got, full, strict=True))
            den = sum(float(np.sum(f.astype(np.float64) ** 2)) for f in full)
            info: dict[str, Any] = {
                "bytes": int(nbytes[(p.point.name, c)]),
                "fidelity": float(np.sqrt(num / den)) if den > 0 else 0.0,
                "fidelity_inputs": f"{eval_desc}[:{len(x)}]",
            }
            if labels is not None and acc_full is not None:
                acc = _accuracy(got, labels)
                assert acc is not None
                per_task = {t: acc[t] - acc_full[t] for t in acc}
                info.update(
                    accuracy_delta=float(np.mean(list(per_task.values()))),
                    accuracy_source=f"measured:{task.dataset}" if task else "unknown",
                    accuracy_samples=int(len(x)),
                )
                if len(per_task) > 1:
                    info["accuracy_delta_per_task"] = per_task
            else:
                info.update(accuracy_delta=None, accuracy_source="unknown")
            if c == "pca":
                basis, name, calib_desc = bases[p.point.name]  # type: ignore[misc]
                info.update(basis=name, basis_sha256=name.split(".")[0], k=basis.k, calibration=calib_desc)
            p.codecs[c] = info
        if progress:
            progress("codecs", j + 1, len(interior))


def _labels(model: onnx.ModelProto, task: EvalTask | None, n: int) -> dict[int, tuple[str, np.ndarray]] | None:
    """Output index -> (task, labels) of the task it predicts (by output name, else in order)."""
    if task is None:
        return None
    from registry.zoo.dataset import load_dataset

    data = load_dataset(task.dataset, EVAL_SPLIT, task.resolution)
    names = [o.name for o in model.graph.output]
    out: dict[int, tuple[str, np.ndarray]] = {}
    for i, t in enumerate(task.tasks):
        k = names.index(t) if t in names else i
        if k >= len(names):
            return None
        out[k] = (t, np.asarray(data.labels[t][:n]))
    return out


def _accuracy(
    outputs: Sequence[np.ndarray], labels: dict[int, tuple[str, np.ndarray]] | None
) -> dict[str, float] | None:
    """Top-1 accuracy (fraction) per task."""
    if labels is None:
        return None
    return {t: float(np.mean(np.argmax(outputs[k].reshape(len(y), -1), axis=1) == y)) for k, (t, y) in labels.items()}


def _write(store: Any, v: Variant, planned: list[_Planned]) -> None:
    """Every split row in one transaction (nothing written when any insert fails)."""
    from sqlalchemy import select

    from registry.store.models import SplitRow

    with store.session() as s:
        existing = set(s.scalars(select(SplitRow.cut_name).where(SplitRow.variant_id == v.id)).all())
        for p in planned:
            if p.point.name in existing:
                continue
            s.add(
                SplitRow(
                    variant_id=v.id,
                    cut_name=p.point.name,
                    position=int(p.point.position),
                    head_path=p.head,
                    head_sha256=p.head_sha,
                    tail_path=p.tail,
                    tail_sha256=p.tail_sha,
                    payload_shape=[int(d) for d in p.point.shape],
                    payload_dtype=p.point.dtype,
                    payload_bytes=int(p.point.payload_bytes),
                    head_macs=p.head_macs,
                    tail_macs=p.tail_macs,
                    codecs=dict(p.codecs),
                )
            )


def build_splits(
    store: Any,
    variant_id: str,
    *,
    max_points: int | None = None,
    codecs: Sequence[str] = C.CODECS,
    progress: Progress | None = None,
    eval_samples: int = EVAL_SAMPLES,
    tflite: bool = False,
) -> list[Split]:
    """Build and store the split points of a variant (see the module doc); returns them in
    position order. A variant that already has splits is returned unchanged (no-op).
    A TFLite variant gets TFLite splits only with ``tflite=True`` (slow: see
    :func:`build_tflite_splits`); otherwise ``[]``."""
    unknown = [c for c in codecs if c not in C.CODECS]
    if unknown:
        raise EdgeatlasError(
            f"unknown payload codec(s) {unknown}", code=ErrorCode.INVALID_ARGUMENT, hint=f"use {', '.join(C.CODECS)}"
        )
    v = store.get_variant(variant_id)
    existing = store.list_splits(v.id)
    if existing:
        return existing
    if v.format == "tflite" and tflite:
        return build_tflite_splits(
            store, v.id, max_points=int(max_points) if max_points is not None else 4, codecs=codecs, progress=progress
        )
    if v.format != "onnx":
        return []
    model = load_variant_model(v)
    planned = _plan(model, v, int(max_points) if max_points is not None else _default_points(), progress)
    _codec_stats(model, planned, eval_task(v), tuple(codecs), progress, eval_samples)
    # artifacts first (content-addressed: harmless if the rows are never written), then rows
    for p in planned:
        if p.head_bytes is not None and p.tail_bytes is not None:
            p.head, p.head_sha = write_artifact(p.head_bytes, ".onnx")
            p.tail, p.tail_sha = write_artifact(p.tail_bytes, ".onnx")
    _write(store, v, planned)
    return store.list_splits(v.id)


def _default_points() -> int:
    from registry.zoo.splits import MAX_POINTS

    return MAX_POINTS


# --------------------------------------------------------------------------- TFLite splits
#
# A .tflite has no graph we can cut and re-emit, so TFLite heads and tails are converted from the
# torch model at module boundaries where the forward pass is a plain chain of stages (a
# torchvision ``features`` Sequential, ResNet's layers, the multi-task backbone). The stage chain
# is checked in torch (composing the stages must give the model's output) before anything is
# converted, and head∘tail is checked against the full .tflite in ai-edge-litert.
# Only fp32 TFLite variants: an fp16/int8 .tflite is quantised by ai-edge-quantizer as a whole
# (calibrated ranges per tensor), and quantising a head and a tail separately is another model.
# Conversion costs 10-50 s per part on this host, so TFLite splits are built on request
# (``build_splits(..., tflite=True)``), not by default.

TFLITE_EVAL_SAMPLES = 100


def torch_stages(family: str, model: Any) -> list[tuple[str, Any]]:
    """The model's forward pass as a chain of (name, module) stages."""
    from torch import nn

    class _Fn(nn.Module):
        def __init__(self, fn: Callable[[Any], Any]):
            super().__init__()
            self.fn = fn

        def forward(self, x: Any) -> Any:
            return self.fn(x)

    import torch

    def named(prefix: str, seq: Any) -> list[tuple[str, Any]]:
        return [(f"{prefix}.{i}", m) for i, m in enumerate(seq)]

    if family == "mobilenet_v2":
        pool = _Fn(lambda x: torch.flatten(nn.functional.adaptive_avg_pool2d(x, (1, 1)), 1))
        return [*named("features", model.features), ("pool", pool), ("classifier", model.classifier)]
    if family in ("mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0"):
        return [
            *named("features", model.features),
            ("avgpool", model.avgpool),
            ("flatten", _Fn(lambda x: torch.flatten(x, 1))),
            ("classifier", model.classifier),
        ]
    if family == "squeezenet":
        return [
            *named("features", model.features),
            ("classifier", model.classifier),
            ("flatten", _Fn(lambda x: torch.flatten(x, 1))),
        ]
    if family == "resnet18":
        stem = nn.Sequential(model.conv1, model.bn1, model.relu)
        layers = [(f"layer{i}.{j}", b) for i in range(1, 5) for j, b in enumerate(getattr(model, f"layer{i}"))]
        return [
            ("stem", stem),
            ("maxpool", model.maxpool),
            *layers,
            ("avgpool", model.avgpool),
            ("flatten", _Fn(lambda x: torch.flatten(x, 1))),
            ("fc", model.fc),
        ]
    if family == "shufflenet_v2":
        return [
            ("conv1", model.conv1),
            ("maxpool", model.maxpool),
            *named("stage2", model.stage2),
            *named("stage3", model.stage3),
            *named("stage4", model.stage4),
            ("conv5", model.conv5),
            ("mean", _Fn(lambda x: x.mean([2, 3]))),
            ("fc", model.fc),
        ]
    if family == "multitask":
        heads = _Fn(lambda x: tuple(h(x) for h in model.heads.values()))
        return [*named("backbone", model.backbone), ("heads", heads)]
    raise EdgeatlasError(
        f"family {family!r} has no known stage chain, so no TFLite split points",
        code=ErrorCode.UNSUPPORTED,
        hint="TFLite splits exist for the zoo's torchvision families and the multi-task model; use the ONNX variant's splits",
    )


def _tflite_run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    from registry.zoo.evaluate import run_tflite

    return run_tflite(path, x, threads=2)


def _tflite_convert(module: Any, sample: Any) -> bytes:
    import tempfile

    from registry.zoo.export import _quiet

    try:
        import litert_torch
    except ImportError as exc:  # pragma: no cover - environment
        raise EdgeatlasError("litert-torch is not installed", code=ErrorCode.ENVIRONMENT) from exc
    with tempfile.TemporaryDirectory(prefix="edgeatlas-split-") as d:
        out = Path(d) / "part.tflite"
        try:
            with _quiet():
                litert_torch.convert(module.eval(), (sample,)).export(str(out))
        except Exception as exc:
            raise EdgeatlasError(
                f"TFLite conversion of a split part failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}",
                code=ErrorCode.UNSUPPORTED,
                hint="use the ONNX variant's split points",
            ) from exc
        return out.read_bytes()


def _tflite_outputs_ordered(path: Path, outs: list[np.ndarray], v: Variant) -> list[np.ndarray]:
    """TFLite outputs in the torch model's order (litert-torch may reorder a tuple's outputs)."""
    if len(outs) == 1:
        return outs
    from registry.zoo.evaluate import tflite_output_order
    from registry.zoo.families import MultiTaskNet

    order = tflite_output_order(path, [n for _, n in MultiTaskNet.HEADS]) if v.family == "multitask" else None
    return [outs[k] for k in order] if order else outs


def build_tflite_splits(
    store: Any,
    variant_id: str,
    *,
    max_points: int = 4,
    codecs: Sequence[str] = C.CODECS,
    progress: Progress | None = None,
    eval_samples: int = TFLITE_EVAL_SAMPLES,
) -> list[Split]:
    """Head/tail .tflite pairs of an fp32 TFLite variant at module boundaries (see above), with
    payload codecs measured like the ONNX ones but in ai-edge-litert. Idempotent."""
    import torch

    from registry.zoo.build import VariantSpec, torch_model

    v = store.get_variant(variant_id)
    if v.format != "tflite":
        raise EdgeatlasError(f"variant {v.id[:12]} is {v.format}, not tflite", hint="use build_splits for ONNX")
    existing = store.list_splits(v.id)
    if existing:
        return existing
    if v.precision != "fp32":
        raise EdgeatlasError(
            f"variant {v.id[:12]} is a {v.precision} TFLite model: only fp32 TFLite variants get TFLite splits",
            code=ErrorCode.UNSUPPORTED,
            hint="quantising a head and a tail separately is a different model; use the fp32 variant or the ONNX splits",
        )
    spec_d = (v.recipe or {}).get("spec")
    if not isinstance(spec_d, dict):
        raise EdgeatlasError(
            f"variant {v.id[:12]} has no zoo build spec in its recipe (a user's file?): no torch model to cut",
            code=ErrorCode.UNSUPPORTED,
            hint="TFLite splits exist for variants built by `edgeatlas zoo build`",
        )
    full_path = artifact_file(v.path)
    if not full_path.is_file() or (len(v.id) == 64 and sha256_bytes(full_path.read_bytes()) != v.id):
        raise EdgeatlasError(
            f"{full_path}: missing, or its sha256 is not the variant id",
            code=ErrorCode.BAD_DATA,
            hint="rebuild the variant",
        )
    spec = VariantSpec(**{**spec_d, "format": "tflite", "precision": "fp32"})
    model = torch_model(spec).eval()
    stages = torch_stages(v.family, model)
    dims = [int(d) for d in v.input_shape]
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(dims).astype(np.float32))
    acts: list[Any] = []
    with torch.no_grad():
        h = x
        for _, m in stages:
            h = m(h)
            acts.append(h)
        want = model(x)
    want_t = want if isinstance(want, tuple) else (want,)
    got_t = acts[-1] if isinstance(acts[-1], tuple) else (acts[-1],)
    if any(
        float((a - b).abs().max()) > 1e-5 * (float(a.abs().max()) + 1e-12) for a, b in zip(want_t, got_t, strict=True)
    ):
        raise EdgeatlasError(f"{v.family}: the stage chain does not reproduce the model", code=ErrorCode.BUILD_ERROR)
    n = len(stages)
    cands = [
        SplitPoint(
            stages[k - 1][0], k, stages[k - 1][0], tuple(acts[k - 1].shape), "float32", int(acts[k - 1].numel()) * 4, n
        )
        for k in range(1, n - 1)
        if isinstance(acts[k - 1], torch.Tensor)
    ]
    from registry.zoo.splits import select_points

    if max_points < 2:
        raise EdgeatlasError(f"max_points={max_points} leaves no room for the two ends", hint="use max_points >= 2")
    chosen = select_points(cands, max_points - 2)
    out_bytes = sum(int(t.numel()) * 4 for t in want_t)
    planned = [
        _Planned(
            SplitPoint("input", 0, None, tuple(dims), "float32", int(np.prod(dims)) * 4, n), tail=v.path, tail_sha=v.id
        ),
        *[_Planned(p) for p in chosen],
        _Planned(
            SplitPoint("output", n, None, tuple(want_t[0].shape), "float32", out_bytes, n), head=v.path, head_sha=v.id
        ),
    ]
    task = eval_task(v)
    xe, eval_desc = _inputs_for_dims(dims, task, EVAL_SPLIT, eval_samples)
    full_ref = _tflite_outputs_ordered(full_path, _tflite_run(full_path, x.numpy()), v)
    full_eval = _tflite_outputs_ordered(full_path, _tflite_run(full_path, xe), v)
    labels = _labels_for(task, len(xe))
    acc_full = _accuracy(full_eval, labels)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgeatlas-split-") as d:
        for j, p in enumerate(pl for pl in planned if not pl.point.is_end):
            k = p.point.position
            head_m = torch.nn.Sequential(*[m for _, m in stages[:k]])
            tail_m = torch.nn.Sequential(*[m for _, m in stages[k:]])
            hb = _tflite_convert(head_m, x)
            tb = _tflite_convert(tail_m, acts[k - 1])
            hp, tp = Path(d) / f"h{k}.tflite", Path(d) / f"t{k}.tflite"
            hp.write_bytes(hb)
            tp.write_bytes(tb)
            payload = _tflite_run(hp, x.numpy())[0]
            got = _tflite_outputs_ordered(tp, _tflite_run(tp, payload), v)
            from registry.zoo.splits import rel_error

            err = max(rel_error(a, b) for a, b in zip(full_ref, got, strict=True))
            if not err <= 1e-3:
                raise EdgeatlasError(
                    f"variant {v.id[:12]}, TFLite cut {p.point.name!r}: head∘tail differs from the full model by {err:.3g}",
                    code=ErrorCode.BUILD_ERROR,
                )
            p.head_bytes, p.tail_bytes = hb, tb
            p.codecs = _tflite_codecs(hp, tp, v, codecs, xe, eval_desc, task, full_eval, labels, acc_full)
            if progress:
                progress("tflite splits", j + 1, len(chosen))
    for p in planned:
        if p.head_bytes is not None and p.tail_bytes is not None:
            p.head, p.head_sha = write_artifact(p.head_bytes, ".tflite")
            p.tail, p.tail_sha = write_artifact(p.tail_bytes, ".tflite")
    _write(store, v, planned)
    return store.list_splits(v.id)


def _inputs_for_dims(dims: list[int], task: EvalTask | None, split: str, n: int) -> tuple[np.ndarray, str]:
    from registry.zoo.dataset import DATASET, load_dataset

    if task is not None:
        return np.asarray(load_dataset(task.dataset, split, task.resolution).x[:n]), f"{task.dataset}:{split}"
    if len(dims) == 4 and dims[1] == 3 and dims[2] == dims[3] and 16 <= dims[2] <= 512:
        return np.asarray(load_dataset(DATASET, CALIB_SPLIT, dims[2]).x[:n]), f"{DATASET}:{CALIB_SPLIT}"
    return np.random.default_rng(1).standard_normal([n, *dims[1:]]).astype(np.float32), "random-normal"


def _labels_for(task: EvalTask | None, n: int) -> dict[int, tuple[str, np.ndarray]] | None:
    if task is None:
        return None
    from registry.zoo.dataset import load_dataset

    data = load_dataset(task.dataset, EVAL_SPLIT, task.resolution)
    return {i: (t, np.asarray(data.labels[t][:n])) for i, t in enumerate(task.tasks)}


def _tflite_codecs(
    head: Path,
    tail: Path,
    v: Variant,
    codecs: Sequence[str],
    xe: np.ndarray,
    eval_desc: str,
    task: EvalTask | None,
    full: list[np.ndarray],
    labels: dict[int, tuple[str, np.ndarray]] | None,
    acc_full: dict[str, float] | None,
) -> dict[str, Any]:
    """Codec bytes, fidelity and measured deltas of one TFLite cut (ai-edge-litert, per sample)."""
    y = _tflite_run(head, xe)[0]
    out: dict[str, Any] = {}
    basis = None
    if "pca" in codecs and y.ndim >= 2:
        dims = [1, *xe.shape[1:]]
        calib, calib_desc = _inputs_for_dims(dims, task, CALIB_SPLIT, 128)
        basis = C.fit_pca(_tflite_run(head, calib)[0])
        basis_name, _ = write_artifact(basis.to_bytes(), ".npz")
    for c in codecs:
        if c == "pca" and basis is None:
            continue
        decoded, size = roundtrip_batch(y, c, basis)
        got = _tflite_outputs_ordered(tail, _tflite_run(tail, decoded), v)
        num = sum(float(np.sum((g.astype(np.float64) - f) ** 2)) for g, f in zip(got, full, strict=True))
        den = sum(float(np.sum(f.astype(np.float64) ** 2)) for f in full)
        info: dict[str, Any] = {
            "bytes": int(size),
            "fidelity": float(np.sqrt(num / den)) if den > 0 else 0.0,
            "fidelity_inputs": f"{eval_desc}[:{len(xe)}]",
            "runtime": "ai-edge-litert",
        }
        acc = _accuracy(got, labels)
        if acc is not None and acc_full is not None and task is not None:
            per_task = {t: acc[t] - acc_full[t] for t in acc}
            info.update(
                accuracy_delta=float(np.mean(list(per_task.values()))),
                accuracy_source=f"measured:{task.dataset}",
                accuracy_samples=int(len(xe)),
            )
            if len(per_task) > 1:
                info["accuracy_delta_per_task"] = per_task
        else:
            info.update(accuracy_delta=None, accuracy_source="unknown")
        if c == "pca" and basis is not None:
            info.update(basis=basis_name, basis_sha256=basis_name.split(".")[0], k=basis.k, calibration=calib_desc)
        out[c] = info
    return out
