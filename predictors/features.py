"""Model features from an ONNX graph, and device features (declared facts, probe-set embedding).

The same code serves a zoo variant, a split head or tail and an imported NAS architecture:
anything that is an ONNX graph gets a fixed-order feature vector (:data:`FEATURE_NAMES`).

Features are *additive over graph nodes* (counts, MACs, weights, activation bytes), except the few
global ones (input shape, precision, depth). :func:`combine` relies on that to compose the features
of a large architecture from the features of its exported blocks (see predictors/nb201.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from registry.errors import EdgeatlasError, ErrorCode

#: Op categories with per-category count / MACs / weight params / output elements.
CATEGORIES: tuple[str, ...] = (
    "conv",  # dense or grouped KxK convolution (K > 1 or groups > 1, not depthwise)
    "depthwise",  # groups == in_channels > 1
    "pointwise",  # 1x1, groups == 1
    "fc",  # Gemm / MatMul with a constant weight
    "matmul",  # MatMul of two activations (attention)
    "pool",
    "add",  # Add / Sum / Sub / Mul (elementwise binary)
    "concat",
    "activation",
    "norm",
    "other",
)
PER_CATEGORY: tuple[str, ...] = ("count", "macs", "params", "out_elems")
GLOBAL_ADDITIVE: tuple[str, ...] = ("macs", "params", "weight_bytes", "act_bytes", "n_nodes")
GLOBAL_FIXED: tuple[str, ...] = (
    "depth",
    "batch",
    "input_c",
    "input_h",
    "input_w",
    "input_elems",
    "output_elems",
    "precision_fp32",
    "precision_fp16",
    "precision_int8",
)
#: Kernel-level terms, as nn-Meter splits a model into kernels and predicts each by its type and
#: configuration: every convolution (ConvTranspose aside: it counts under ``conv_*`` only) is one
#: kernel (with the BatchNormalization / activation that
#: follow it fused in, as runtimes run them), bucketed by kind, kernel size and stride, because a
#: MAC of a 1x1 convolution, a strided 5x5 one and a depthwise 3x3 one cost very different times.
#: Per bucket: count, MACs, MACs with both channel counts rounded up to the SIMD block of 8
#: (vectorised kernels pad channels: 12 channels cost about what 16 do), input and output elements.
KERNEL_SIZES: tuple[int, ...] = (1, 3, 5, 7)  # a kernel side k goes to the first size >= k (7: 7 and more)
KERNEL_STRIDES: tuple[int, ...] = (1, 2)  # stride 2 and more -> 2
KERNEL_BUCKETS: tuple[str, ...] = tuple(f"conv_k{k}s{s}" for k in KERNEL_SIZES for s in KERNEL_STRIDES) + tuple(
    f"dw_k{k}s{s}" for k in KERNEL_SIZES[1:] for s in KERNEL_STRIDES
)
KERNEL_STATS: tuple[str, ...] = ("count", "macs", "padded_macs", "in_elems", "out_elems")
KERNEL_NAMES: tuple[str, ...] = tuple(f"kernel_{b}_{k}" for b in KERNEL_BUCKETS for k in KERNEL_STATS)
#: The version of the feature set. A feature dict stored by an older edgeatlas (no
#: ``features_version`` key: version 1, without the kernel-level terms) is refused by
#: :func:`features_from_dict` with the command that refreshes it, never read with zeros.
FEATURES_VERSION = 2
SIMD_BLOCK = 8

FEATURE_NAMES: tuple[str, ...] = (
    tuple(GLOBAL_ADDITIVE)
    + tuple(f"{c}_{k}" for c in CATEGORIES for k in PER_CATEGORY)
    + tuple(GLOBAL_FIXED)
    + KERNEL_NAMES
)
ADDITIVE_NAMES: frozenset[str] = (
    frozenset(GLOBAL_ADDITIVE)
    | frozenset(f"{c}_{k}" for c in CATEGORIES for k in PER_CATEGORY)
    | frozenset(KERNEL_NAMES)
)


def _ceil_to(x: float, block: int) -> float:
    return float(-(-int(x) // block) * block)


def kernel_bucket(k: int, stride: int, depthwise: bool) -> str:
    """The :data:`KERNEL_BUCKETS` name of a convolution (``k``: its largest kernel side)."""
    size = next((s for s in KERNEL_SIZES if k <= s), KERNEL_SIZES[-1])
    if depthwise:
        size = max(size, KERNEL_SIZES[1])
    st = next((s for s in KERNEL_STRIDES if stride <= s), KERNEL_STRIDES[-1])
    return f"{'dw' if depthwise else 'conv'}_k{size}s{st}"


def add_kernel_terms(
    vals: dict[str, float],
    *,
    k: int,
    kernel_volume: float,
    stride: int,
    depthwise: bool,
    groups: int,
    cin_per_group: float,
    cout: float,
    out_positions: float,
    in_elems: float,
) -> dict[str, Any]:
    """Add one convolution kernel's terms to ``vals`` (a dict keyed by :data:`FEATURE_NAMES`) and
    return its kernel row.

    ``k``: the largest kernel side (it picks the bucket); ``kernel_volume``: the product of the
    kernel's sides (9 for 3x3, 7 for 1x7, 3 for a 1-D k=3); ``out_positions``: output positions
    (batch x output pixels). MACs = out_positions * cout * cin_per_group * kernel_volume. Padded
    MACs round each group's channel counts up to the SIMD block (a depthwise kernel vectorises
    across channels, so only its channel count is padded)."""
    bucket = kernel_bucket(k, stride, depthwise)
    macs = out_positions * cout * cin_per_group * kernel_volume
    if depthwise:
        padded = out_positions * _ceil_to(cout, SIMD_BLOCK) * kernel_volume
    else:
        g = max(int(groups), 1)
        padded = (
            out_positions * g * _ceil_to(cout / g, SIMD_BLOCK) * _ceil_to(cin_per_group, SIMD_BLOCK) * kernel_volume
        )
    for stat, v in (
        ("count", 1.0),
        ("macs", macs),
        ("padded_macs", padded),
        ("in_elems", in_elems),
        ("out_elems", out_positions * cout),
    ):
        vals[f"kernel_{bucket}_{stat}"] += v
    return {
        "kernel": bucket,
        "k": int(k),
        "kernel_volume": int(kernel_volume),
        "stride": int(stride),
        "groups": int(groups),
        "cin_per_group": int(cin_per_group),
        "cout": int(cout),
        "out_positions": int(out_positions),
        "in_elems": int(in_elems),
        "macs": macs,
    }


def feature_dict(vector: Sequence[float] | np.ndarray) -> dict[str, float]:
    """A feature vector as the dict the store keeps (names of :data:`FEATURE_NAMES` and the
    ``features_version`` it was made with)."""
    d = {n: float(x) for n, x in zip(FEATURE_NAMES, vector, strict=True)}
    d["features_version"] = float(FEATURES_VERSION)
    return d


_ACTIVATIONS = {
    "Relu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Gelu",
    "LeakyRelu",
    "PRelu",
    "Elu",
    "Selu",
    "Softmax",
    "LogSoftmax",
    "Swish",
    "Mish",
    "Erf",
}
_POOLS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "LpPool"}
_ELEMENTWISE = {"Add", "Sum", "Sub", "Mul", "Div"}
_NORMS = {"BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization"}
_QUANT_OPS = {
    "QuantizeLinear",
    "DequantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "QLinearAdd",
    "QLinearMul",
    "QLinearGlobalAveragePool",
    "QLinearConcat",
    "QLinearAveragePool",
    "QLinearSigmoid",
    "QLinearLeakyRelu",
    "ConvInteger",
    "MatMulInteger",
    "DynamicQuantizeLinear",
}
_IGNORED = {"Constant", "Identity"}
# onnx TensorProto elem_type -> bytes
_DTYPE_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}


@dataclass(frozen=True)
class ModelFeatures:
    """Graph features of one model (or one split head/tail), keyed by :data:`FEATURE_NAMES`."""

    values: Mapping[str, float]
    source: str = ""
    op_types: Mapping[str, int] = field(default_factory=dict)
    #: nn-Meter-style kernel rows (one per convolution: bucket, kernel side and volume, stride,
    #: groups, channels, output positions, MACs; see :func:`add_kernel_terms`), in graph order;
    #: empty for features composed by :func:`combine` or read from a dict
    kernels: tuple[Mapping[str, Any], ...] = ()

    def vector(self) -> np.ndarray:
        return np.array([float(self.values.get(n, 0.0)) for n in FEATURE_NAMES], dtype=np.float64)

    def to_dict(self) -> dict[str, float]:
        return feature_dict(self.vector())

    @property
    def precision(self) -> str:
        if self.values.get("precision_int8"):
            return "int8"
        if self.values.get("precision_fp16"):
            return "fp16"
        return "fp32"


def feature_matrix(rows: Iterable[ModelFeatures | Mapping[str, float]]) -> np.ndarray:
    """Stack features (records or plain dicts as stored in the store) into an (n, d) matrix."""
    out = []
    for r in rows:
        vals = r.values if isinstance(r, ModelFeatures) else r
        out.append([float(vals.get(n, 0.0)) for n in FEATURE_NAMES])
    return np.asarray(out, dtype=np.float64).reshape(-1, len(FEATURE_NAMES))


#: How a variant gets its graph features, from the command line.
FEATURES_FIX = (
    "`edgeatlas zoo add MODEL.onnx` stores an ONNX file's features (a .tflite added by hand has no ONNX graph: "
    "add the same model's .onnx export and predict that variant, or measure the .tflite with `edgeatlas bench "
    "run`); `edgeatlas zoo build` stores those of the variants it builds (TFLite ones too), `edgeatlas zoo "
    "refresh-features` recomputes stale ones, `edgeatlas predictors import NAME` those of a dataset's archs"
)


def features_from_dict(d: Mapping[str, Any] | None, what: str = "variant") -> ModelFeatures:
    """Validate a stored feature dict; a missing/partial dict is an error, never zeros."""
    if not d:
        raise EdgeatlasError(
            f"{what} has no ONNX graph features",
            code=ErrorCode.BAD_DATA,
            hint=FEATURES_FIX,
        )
    version = d.get("features_version", 1)
    if isinstance(version, int | float) and version > FEATURES_VERSION:
        raise EdgeatlasError(
            f"{what} features are of feature set version {version}, newer than this edgeatlas's {FEATURES_VERSION}",
            code=ErrorCode.BAD_DATA,
            hint="upgrade edgeatlas to the version that wrote this store",
        )
    if version != FEATURES_VERSION:
        raise EdgeatlasError(
            f"{what} features are of feature set version {version}; this edgeatlas reads version "
            f"{FEATURES_VERSION} (version 2 added the kernel-level terms)",
            code=ErrorCode.BAD_DATA,
            hint="refresh them: `edgeatlas zoo refresh-features` for zoo variants, "
            "`edgeatlas predictors import NAME` again for an imported dataset",
        )
    missing = [n for n in ("macs", "params", "n_nodes", "input_h") if n not in d]
    if missing:
        raise EdgeatlasError(
            f"{what} features lack {', '.join(missing)}",
            code=ErrorCode.BAD_DATA,
            hint=FEATURES_FIX,
        )
    bad = [k for k, v in d.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise EdgeatlasError(f"{what} features hold NaN/inf in {', '.join(bad)}", code=ErrorCode.BAD_DATA)
    return ModelFeatures(values={n: float(d.get(n, 0.0)) for n in FEATURE_NAMES}, source=what)


def _shape_of(vi: Any) -> tuple[int, ...] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(1)  # symbolic (batch) -> 1
    return tuple(dims)


def onnx_features(model: Any, source: str | None = None) -> ModelFeatures:
    """Features of an ONNX model (a path or an ``onnx.ModelProto``), shapes by onnx.shape_inference."""
    import onnx
    from onnx import numpy_helper, shape_inference

    if isinstance(model, str | Path):
        path = Path(model)
        if not path.exists():
            raise EdgeatlasError(f"{path}: no such ONNX file", code=ErrorCode.NOT_FOUND)
        try:
            proto = onnx.load(str(path))
        except Exception as exc:  # noqa: BLE001 - protobuf raises various types
            raise EdgeatlasError(f"{path}: not a readable ONNX model ({exc})", code=ErrorCode.BAD_DATA) from exc
        source = source or str(path)
    else:
        proto = model
        source = source or proto.graph.name
    try:
        inferred = shape_inference.infer_shapes(proto)
    except Exception as exc:  # noqa: BLE001
        raise EdgeatlasError(f"{source}: ONNX shape inference failed ({exc})", code=ErrorCode.BAD_DATA) from exc
    g = inferred.graph

    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, int] = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        s = _shape_of(vi)
        if s is not None:
            shapes[vi.name] = s
        dtypes[vi.name] = vi.type.tensor_type.elem_type
    const_names: set[str] = set()
    params = 0.0
    weight_bytes = 0.0
    any_fp16 = False
    for init in g.initializer:
        shp = tuple(int(d) for d in init.dims)
        shapes[init.name] = shp
        dtypes[init.name] = init.data_type
        const_names.add(init.name)
        n = float(np.prod(shp)) if shp else 1.0
        params += n
        weight_bytes += n * _DTYPE_BYTES.get(init.data_type, 4)
        any_fp16 |= init.data_type == 10
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    arr = numpy_helper.to_array(a.t)
                    shapes[node.output[0]] = tuple(arr.shape)
                    dtypes[node.output[0]] = a.t.data_type
                    const_names.add(node.output[0])
                    if arr.size > 16:  # scalars and small shape tensors are not weights
                        params += float(arr.size)
                        weight_bytes += float(arr.size) * _DTYPE_BYTES.get(a.t.data_type, 4)
                        any_fp16 |= a.t.data_type == 10
    # tensors computed from constants only (DequantizeLinear of int8 weights, Cast of fp16 weights)
    for node in g.node:
        if node.op_type in {"DequantizeLinear", "Cast", "Transpose", "Reshape"} and node.input:
            if all(i in const_names or i == "" for i in node.input):
                const_names.update(node.output)

    graph_inputs = [i for i in g.input if i.name not in const_names]
    in_shape = shapes.get(graph_inputs[0].name, ()) if graph_inputs else ()
    if any_fp16 is False and graph_inputs:
        any_fp16 = dtypes.get(graph_inputs[0].name) == 10

    vals: dict[str, float] = dict.fromkeys(FEATURE_NAMES, 0.0)
    op_types: dict[str, int] = {}
    kernels: list[dict[str, Any]] = []
    precision_int8 = False
    act_bytes = 0.0
    n_nodes = 0
    depth_of: dict[str, int] = {}
    max_depth = 0

    def numel(name: str) -> float:
        s = shapes.get(name)
        return float(np.prod(s)) if s else 0.0

    for node in g.node:
        op = node.op_type
        if op in _QUANT_OPS:
            precision_int8 = True
        if op in _IGNORED:
            if node.input and node.output:
                depth_of[node.output[0]] = depth_of.get(node.input[0], 0)
            continue
        if all(i in const_names or i == "" for i in node.input) and node.input:
            continue  # folded weight preprocessing, not run per inference
        op_types[op] = op_types.get(op, 0) + 1
        n_nodes += 1
        out = node.output[0] if node.output else ""
        out_elems = numel(out)
        for o in node.output:
            act_bytes += numel(o) * _DTYPE_BYTES.get(dtypes.get(o, 1), 4)
        d = 1 + max((depth_of.get(i, 0) for i in node.input), default=0)
        for o in node.output:
            depth_of[o] = d
        max_depth = max(max_depth, d)

        cat = "other"
        macs = 0.0
        wparams = 0.0
        if op in {"Conv", "QLinearConv", "ConvInteger", "ConvTranspose"}:
            w_name = node.input[3] if op == "QLinearConv" else node.input[1]
            w = shapes.get(w_name, ())
            group = 1
            for a in node.attribute:
                if a.name == "group":
                    group = int(a.i)
            wparams = float(np.prod(w)) if w else 0.0
            if len(w) >= 3:
                k = float(np.prod(w[2:]))
                cin_per_group = w[1]
                macs = out_elems * cin_per_group * k
                cin = cin_per_group * group
                if group > 1 and group == cin:
                    cat = "depthwise"
                elif k == 1 and group == 1:
                    cat = "pointwise"
                else:
                    cat = "conv"
                if op != "ConvTranspose" and w[0] > 0:
                    stride = max((max(a.ints) for a in node.attribute if a.name == "strides" and a.ints), default=1)
                    kernels.append(
                        add_kernel_terms(
                            vals,
                            k=int(max(w[2:])),
                            kernel_volume=k,
                            stride=int(stride),
                            depthwise=cat == "depthwise",
                            groups=group,
                            cin_per_group=float(cin_per_group),
                            cout=float(w[0]),
                            out_positions=out_elems / float(w[0]),
                            in_elems=numel(node.input[0]),
                        )
                    )
            else:
                cat = "conv"
        elif op in {"Gemm", "MatMul", "QLinearMatMul", "MatMulInteger"}:
            a_idx, b_idx = (0, 3) if op == "QLinearMatMul" else (0, 1)
            a = shapes.get(node.input[a_idx], ())
            b = shapes.get(node.input[b_idx], ())
            trans_a = any(x.name == "transA" and x.i for x in node.attribute)
            kdim = (a[-2] if trans_a and len(a) >= 2 else a[-1]) if a else (b[0] if b else 0)
            macs = out_elems * float(kdim)
            if node.input[b_idx] in const_names:
                cat = "fc"
                wparams = float(np.prod(b)) if b else 0.0
            else:
                cat = "matmul"
        elif op in _POOLS or op.startswith("QLinear") and "Pool" in op:
            cat = "pool"
            ks = [list(x.ints) for x in node.attribute if x.name == "kernel_shape"]
            if ks:
                macs = out_elems * float(np.prod(ks[0]))
            else:  # global / reduce
                macs = numel(node.input[0])
        elif op in _ELEMENTWISE or op in {"QLinearAdd", "QLinearMul"}:
            cat = "add"
            macs = out_elems
        elif op in {"Concat", "QLinearConcat"}:
            cat = "concat"
        elif op in _ACTIVATIONS or op in {"QLinearSigmoid", "QLinearLeakyRelu"}:
            cat = "activation"
            macs = out_elems
        elif op in _NORMS:
            cat = "norm"
            macs = 2.0 * out_elems
        vals[f"{cat}_count"] += 1.0
        vals[f"{cat}_macs"] += macs
        vals[f"{cat}_params"] += wparams
        vals[f"{cat}_out_elems"] += out_elems
        if cat in {"conv", "depthwise", "pointwise", "fc", "matmul"}:
            vals["macs"] += macs

    vals["params"] = params
    vals["weight_bytes"] = weight_bytes
    vals["act_bytes"] = act_bytes
    vals["n_nodes"] = float(n_nodes)
    vals["depth"] = float(max_depth)
    _set_io(vals, in_shape, sum(numel(o.name) for o in g.output))
    vals["precision_int8"] = 1.0 if precision_int8 else 0.0
    vals["precision_fp16"] = 1.0 if (any_fp16 and not precision_int8) else 0.0
    vals["precision_fp32"] = 1.0 if not (precision_int8 or any_fp16) else 0.0
    return ModelFeatures(values=vals, source=source, op_types=op_types, kernels=tuple(kernels))


def _set_io(vals: dict[str, float], in_shape: Sequence[int], output_elems: float) -> None:
    s = list(in_shape)
    vals["batch"] = float(s[0]) if s else 1.0
    if len(s) == 4:  # NCHW (or NHWC when the last dim is small)
        if s[1] > 4 and s[3] <= 4:
            c, h, w = s[3], s[1], s[2]
        else:
            c, h, w = s[1], s[2], s[3]
    elif len(s) == 3:
        c, h, w = s[1], s[2], 1
    elif len(s) == 2:
        c, h, w = s[1], 1, 1
    else:
        c = h = w = 0
    vals["input_c"], vals["input_h"], vals["input_w"] = float(c), float(h), float(w)
    vals["input_elems"] = float(np.prod(s)) if s else 0.0
    vals["output_elems"] = float(output_elems)


def combine(
    parts: Iterable[tuple[float, ModelFeatures]],
    *,
    depth: float,
    input_shape: Sequence[int],
    output_elems: float,
    precision: str = "fp32",
    source: str = "",
) -> ModelFeatures:
    """Compose features from (multiplicity, block features): additive names are summed,
    global names are given explicitly. Exact when blocks are disjoint sub-graphs."""
    vals: dict[str, float] = dict.fromkeys(FEATURE_NAMES, 0.0)
    op_types: dict[str, int] = {}
    for mult, f in parts:
        for n in ADDITIVE_NAMES:
            vals[n] += mult * f.values.get(n, 0.0)
        for k, v in f.op_types.items():
            op_types[k] = op_types.get(k, 0) + int(round(mult * v))
    vals["depth"] = float(depth)
    _set_io(vals, input_shape, output_elems)
    vals[f"precision_{precision}"] = 1.0
    return ModelFeatures(values=vals, source=source, op_types=op_types)


# ----------------------------------------------------------------------------- device features

#: Numeric device facts, in this order (declared in devices.toml or measured by `fleet check`).
FACT_NAMES: tuple[str, ...] = (
    "cores",
    "freq_mhz",
    "memory_mb",
    "arch_arm",
    "arch_x86",
    "accel_none",
    "accel_gpu",
    "accel_npu_dsp",
    "accel_tpu_asic_fpga",
    "cpu_quota",
)


def _fact_number(facts: Mapping[str, Any], key: str, fix: str) -> float:
    """A positive finite number from the facts; anything else is an error naming the fact."""
    v = facts.get(key)
    fv = math.nan
    if not isinstance(v, bool):
        try:
            fv = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError):
            pass
    if not math.isfinite(fv) or fv <= 0:
        raise EdgeatlasError(
            f"device fact {key!r} = {v!r} is not a positive number",
            code=ErrorCode.INVALID_ARGUMENT,
            hint=f"write {key} as a number > 0 without quotes {fix}",
        )
    return fv


def facts_vector(facts: Mapping[str, Any]) -> np.ndarray:
    """Fixed-order numeric vector from declared device facts (a devices.toml class, or a
    ``--device-facts`` file already checked by registry.config.validate_device_facts); a missing
    or non-numeric number is an error."""
    from registry.config import accelerator_group

    where = "in the device's facts (its --device-facts file, or its class in devices.toml)"
    out: dict[str, float] = dict.fromkeys(FACT_NAMES, 0.0)
    for key in ("cores", "freq_mhz", "memory_mb"):
        if facts.get(key) is None:
            raise EdgeatlasError(
                f"device facts lack {key!r}",
                code=ErrorCode.INVALID_ARGUMENT,
                hint=f"declare cores, freq_mhz and memory_mb {where}",
            )
        out[key] = _fact_number(facts, key, where)
    arch = str(facts.get("arch", "")).lower()
    out["arch_arm"] = 1.0 if ("arm" in arch or "aarch" in arch) else 0.0
    out["arch_x86"] = 1.0 if ("x86" in arch or "amd64" in arch) else 0.0
    # (a facts file and the API's facts are checked strictly before; a devices.toml class may name
    # another accelerator, counted as tpu/asic/fpga as it always was: registry.config.ACCELERATORS)
    out[f"accel_{accelerator_group(facts.get('accelerator'), strict=False)}"] = 1.0
    out["cpu_quota"] = _fact_number(facts, "cpu_quota", where) if facts.get("cpu_quota") is not None else out["cores"]
    return np.array([out[n] for n in FACT_NAMES], dtype=np.float64)


def probe_embedding(latencies_ms: Mapping[str, float], probe_ids: Sequence[str]) -> np.ndarray:
    """HELP-style hardware embedding: log latencies of the fixed probe set, in probe order."""
    missing = [p for p in probe_ids if p not in latencies_ms]
    if missing:
        raise EdgeatlasError(
            f"probe latencies lack {len(missing)} of {len(probe_ids)} reference models: {', '.join(missing[:5])}",
            code=ErrorCode.INVALID_ARGUMENT,
            hint="measure every probe-set model on the device (see `predictors list` for the probe ids)",
        )
    vals = np.array([float(latencies_ms[p]) for p in probe_ids], dtype=np.float64)
    if not np.all(np.isfinite(vals)) or np.any(vals <= 0):
        raise EdgeatlasError("probe latencies must be finite and > 0 ms", code=ErrorCode.BAD_DATA)
    return np.log(vals)
