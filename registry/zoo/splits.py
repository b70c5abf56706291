"""Split points of an ONNX model: cuts where exactly one tensor crosses from head to tail.

Nodes are taken in topological order. A cut after node ``i`` puts nodes ``0..i`` on the device
(head) and the rest on the edge (tail). Only tensors that depend on the graph input count as
crossing (constants and initializers exist on both sides). A cut is a split point when exactly
one such tensor crosses and it is neither the graph input nor a graph output; the two ends,
``input`` (all on the edge: the input is the payload) and ``output`` (all on the device: the
outputs are the result) are always listed.

Limiting the candidates (documented, deterministic):
1. runs of consecutive split points linked by shape-preserving elementwise ops (Conv -> Relu,
   QuantizeLinear -> DequantizeLinear, ...) keep one point: a floating-point tensor if the run
   has one, then the fewest payload bytes, then the latest (the activation after the conv; in a
   QDQ int8 model the DequantizeLinear output, whose 256 levels the int8 codec carries in a byte
   each, rather than the uint8 tensor that the float codecs cannot feed back exactly);
2. then at most ``max_points`` points remain *including the two ends* (default
   :data:`MAX_POINTS`): the interior candidates are cut into ``max_points - 2`` contiguous
   windows of (nearly) equal length and each window keeps its smallest payload (the latest on
   ties). The points are spread evenly over the graph and prefer small payloads; the globally
   smallest payload is always kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from registry.errors import EdgeatlasError, ErrorCode

MAX_POINTS = 16  # split points per model, the two ends included
ELEMENTWISE = {
    "Relu",
    "Clip",
    "HardSwish",
    "HardSigmoid",
    "Sigmoid",
    "Tanh",
    "LeakyRelu",
    "BatchNormalization",
    "QuantizeLinear",
    "DequantizeLinear",
    "Cast",
    "Identity",
    "Add",
    "Mul",
    "Div",
    "Sub",
}
_ITEMSIZE = {
    TensorProto.FLOAT: 4,
    TensorProto.FLOAT16: 2,
    TensorProto.UINT8: 1,
    TensorProto.INT8: 1,
    TensorProto.INT32: 4,
    TensorProto.INT64: 8,
    TensorProto.DOUBLE: 8,
    TensorProto.BOOL: 1,
}


@dataclass(frozen=True)
class SplitPoint:
    """A cut: ``name`` is ``input``, ``output`` or the crossing tensor's name; ``position`` is
    the number of graph nodes in the head (0 = all on the edge, ``n_nodes`` = all on device)."""

    name: str
    position: int
    tensor: str | None
    shape: tuple[int, ...]
    dtype: str
    payload_bytes: int
    n_nodes: int

    @property
    def is_end(self) -> bool:
        return self.name in ("input", "output")


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception as exc:
        raise EdgeatlasError(f"ONNX shape inference failed: {exc}", code=ErrorCode.BAD_DATA) from exc


def _value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    g = model.graph
    return {vi.name: vi for vi in list(g.input) + list(g.value_info) + list(g.output)}


def _shape_dtype(vi: onnx.ValueInfoProto | None) -> tuple[tuple[int, ...], int] | None:
    if vi is None or not vi.type.HasField("tensor_type"):
        return None
    tt = vi.type.tensor_type
    dims = []
    for d in tt.shape.dim:
        if not d.HasField("dim_value"):
            return None
        dims.append(int(d.dim_value))
    return tuple(dims), tt.elem_type


def _nbytes(shape: tuple[int, ...], elem: int) -> int:
    return int(np.prod(shape)) * _ITEMSIZE.get(elem, 4) if shape else _ITEMSIZE.get(elem, 4)


def _dtype_name(elem: int) -> str:
    return helper.tensor_dtype_to_np_dtype(elem).name


def all_single_tensor_cuts(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[SplitPoint]]:
    """Every interior cut with exactly one crossing tensor (no de-duplication, no cap)."""
    inferred = _infer(model)
    g = inferred.graph
    inits = {i.name for i in g.initializer}
    inputs = [i.name for i in g.input if i.name not in inits]
    outputs = {o.name for o in g.output}
    nodes = list(g.node)
    n = len(nodes)
    dynamic: set[str] = set(inputs)
    producer: dict[str, int] = {name: -1 for name in inputs}
    node_dynamic = [False] * n
    for i, node in enumerate(nodes):
        if any(x in dynamic for x in node.input if x):
            node_dynamic[i] = True
            for o in node.output:
                if o:
                    dynamic.add(o)
                    producer[o] = i
    last_use: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for x in node.input:
            if x in dynamic:
                last_use[x] = i
    # tensor t crosses the cut after node c for producer[t] <= c < end[t]
    count = np.zeros(n + 2, np.int64)
    ids = np.zeros(n + 2, np.int64)
    names = sorted(dynamic)
    for tid, t in enumerate(names, start=1):
        start = producer[t]
        end = n if t in outputs else last_use.get(t, start)
        if end <= start:
            continue
        count[start + 1] += 1  # cut index c stored at c + 1 (c = -1 is the input end)
        count[end + 1] -= 1
        ids[start + 1] += tid
        ids[end + 1] -= tid
    count = np.cumsum(count)
    ids = np.cumsum(ids)
    vis = _value_infos(inferred)
    points = []
    for c in range(0, n - 1):
        if not node_dynamic[c] or count[c + 1] != 1:
            continue
        t = names[int(ids[c + 1]) - 1]
        if t in outputs or t in inputs:
            continue
        sd = _shape_dtype(vis.get(t))
        if sd is None:
            continue
        shape, elem = sd
        points.append(SplitPoint(t, c + 1, t, shape, _dtype_name(elem), _nbytes(shape, elem), n))
    return inferred, points


def _ends(model: onnx.ModelProto, n: int) -> tuple[SplitPoint, SplitPoint]:
    g = model.graph
    inits = {i.name for i in g.initializer}
    vis = _value_infos(model)
    inp = next(i for i in g.input if i.name not in inits)
    sd = _shape_dtype(vis.get(inp.name)) or ((), TensorProto.FLOAT)
    first = SplitPoint("input", 0, inp.name, sd[0], _dtype_name(sd[1]), _nbytes(*sd), n)
    out_bytes = 0
    out_shape: tuple[int, ...] = ()
    out_elem = TensorProto.FLOAT
    for o in g.output:
        osd = _shape_dtype(vis.get(o.name))
        if osd is not None:
            out_bytes += _nbytes(*osd)
            if not out_shape:
                out_shape, out_elem = osd
    last = SplitPoint("output", n, None, out_shape, _dtype_name(out_elem), out_bytes, n)
    return first, last


def _dedupe(model: onnx.ModelProto, points: list[SplitPoint]) -> list[SplitPoint]:
    nodes = list(model.graph.node)
    kept: list[SplitPoint] = []
    run: list[SplitPoint] = []

    def flush() -> None:
        if run:
            best = min(run, key=lambda p: (not p.dtype.startswith("float"), p.payload_bytes, -p.position))
            kept.append(best)
            run.clear()

    for p in points:
        if run:
            prev = run[-1]
            between = nodes[prev.position : p.position]
            linked = (
                p.shape == prev.shape
                and all(nd.op_type in ELEMENTWISE for nd in between)
                and any(prev.tensor in nd.input for nd in between)
            )
            if not linked:
                flush()
        run.append(p)
    flush()
    return kept


def select_points(points: list[SplitPoint], interior: int) -> list[SplitPoint]:
    """At most ``interior`` points: one per contiguous window, the smallest payload in each."""
    if interior <= 0:
        return []
    if len(points) <= interior:
        return list(points)
    bounds = np.linspace(0, len(points), interior + 1)
    kept = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        window = points[int(round(a)) : int(round(b))]
        if window:
            kept.append(min(reversed(window), key=lambda p: p.payload_bytes))
    return kept


def list_split_points(model: onnx.ModelProto | str | Path, max_points: int = MAX_POINTS) -> list[SplitPoint]:
    """The split points of ``model``: the two ends and at most ``max_points - 2`` interior cuts,
    de-duplicated and spread over the graph (see the module doc)."""
    if int(max_points) < 2:
        raise EdgeatlasError(
            f"max_points={max_points} leaves no room for the two ends",
            code=ErrorCode.INVALID_ARGUMENT,
            hint="use max_points >= 2 (2 = only all-on-device and all-on-edge)",
        )
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    inferred, points = all_single_tensor_cuts(model)
    points = select_points(_dedupe(inferred, points), int(max_points) - 2)
    first, last = _ends(inferred, len(inferred.graph.node))
    return [first, *points, last]


class SplitExtractor:
    """Extracts head/tail pairs of one model (shape inference and indexing done once)."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.inferred = _infer(model)
        g = self.inferred.graph
        inits = {i.name for i in g.initializer}
        self.inputs = [i.name for i in g.input if i.name not in inits]
        self.outputs = [o.name for o in g.output]
        self._ex = onnx.utils.Extractor(self.inferred)
        self._inits = {i.name: i for i in g.initializer}
        self._producer = {out: n for n in g.node for out in n.output}

    def extract(self, point: SplitPoint) -> tuple[onnx.ModelProto, onnx.ModelProto]:
        """Head (input -> payload) and tail (payload -> outputs) models of an interior point."""
        if point.is_end or point.tensor is None:
            raise EdgeatlasError(
                f"split {point.name!r} is an end; it has no head/tail pair", code=ErrorCode.INVALID_ARGUMENT
            )
        try:
            head = self._ex.extract_model(self.inputs, [point.tensor])
            tail = self._ex.extract_model([point.tensor], self.outputs)
        except Exception as exc:
            raise EdgeatlasError(f"cannot extract split {point.name!r}: {exc}", code=ErrorCode.BUILD_ERROR) from exc
        tail = self._requantize_input(tail, point.tensor)
        for part in (head, tail):
            del part.opset_import[:]
            part.opset_import.extend(self.model.opset_import)
            part.ir_version = self.model.ir_version
            part.producer_name = "edgeatlas-zoo-split"
        return head, tail

    def _requantize_input(self, tail: onnx.ModelProto, tensor: str) -> onnx.ModelProto:
        """A QDQ cut (the payload is a DequantizeLinear output) starts the tail with the same
        QuantizeLinear -> DequantizeLinear pair. The payload lies on that grid, so the pair gives the
        tail its int8 values back exactly, and onnxruntime fuses the tail's first ops to the same
        int8 kernels as in the whole model (a bare float input runs them in float instead, so
        head + tail would not reproduce the model's outputs)."""
        dq = self._producer.get(tensor)
        inits = self._inits
        # only the zoo's QDQ form: scale and zero point as initializers (a Q without a zero point
        # would output uint8 and clamp int8 data; a scale from a Constant node is not copied)
        if (
            dq is None
            or dq.op_type != "DequantizeLinear"
            or len(dq.input) != 3
            or not all(name in inits for name in dq.input[1:])
        ):
            return tail
        g = tail.graph
        q_out, dq_out = f"{tensor}__edgeatlas_requant_q", f"{tensor}__edgeatlas_requant"
        for n in g.node:
            for i, name in enumerate(n.input):
                if name == tensor:
                    n.input[i] = dq_out
        have = {i.name for i in g.initializer}
        g.initializer.extend(inits[name] for name in dict.fromkeys(dq.input[1:]) if name not in have)
        qdq_inputs = list(dq.input[1:])
        # the quantisation axis (per-channel) and block size apply to both; DQ's output_dtype does not
        attrs = {a.name: helper.get_attribute_value(a) for a in dq.attribute if a.name in ("axis", "block_size")}
        new = [
            helper.make_node("QuantizeLinear", [tensor, *qdq_inputs], [q_out], name=f"{tensor}__requant_q", **attrs),
            helper.make_node("DequantizeLinear", [q_out, *qdq_inputs], [dq_out], name=f"{tensor}__requant_dq", **attrs),
        ]
        nodes = new + list(g.node)
        del g.node[:]
        g.node.extend(nodes)
        return tail


def extract(model: onnx.ModelProto, point: SplitPoint) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """Head and tail of one point (use :class:`SplitExtractor` for many)."""
    return SplitExtractor(model).extract(point)


def session(model: onnx.ModelProto | bytes | str, threads: int = 1, optimize: bool = True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) + 1e-12))


def full_reference(full: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs of the full model on ``x`` (onnxruntime, graph optimisations off)."""
    s_full = session(full, optimize=False)
    ref = s_full.run(None, {s_full.get_inputs()[0].name: x})
    return dict(zip([o.name for o in s_full.get_outputs()], ref, strict=True))


def verify_split(
    full: onnx.ModelProto | dict[str, np.ndarray],
    head: onnx.ModelProto,
    tail: onnx.ModelProto,
    x: np.ndarray,
    tolerance: float = 1e-5,
    atol: float = 0.0,
) -> float:
    """Run the full model and head then tail on ``x`` in onnxruntime; returns the largest
    relative output error and raises BUILD_ERROR above ``tolerance``. Graph optimisations are
    off, so both paths run the same kernels and the check is about the cut itself (fusions
    across the cut would otherwise differ by rounding). ``full`` may be a precomputed
    :func:`full_reference`. ``atol`` (relative to the largest reference output) forgives
    absolute differences below a resolution, e.g. float16's for an fp16 payload."""
    ref_by_name = full if isinstance(full, dict) else full_reference(full, x)
    s_head, s_tail = session(head, optimize=False), session(tail, optimize=False)
    payload = s_head.run(None, {s_head.get_inputs()[0].name: x})[0]
    got = s_tail.run(None, {s_tail.get_inputs()[0].name: payload})
    err = 0.0
    for o, y in zip(s_tail.get_outputs(), got, strict=True):
        ref = np.asarray(ref_by_name[o.name], np.float64)
        diff = np.abs(ref - np.asarray(y, np.float64)) - atol
        err = max(
            err, float(np.max(np.maximum(diff, 0.0), initial=0.0)) / (float(np.max(np.abs(ref), initial=0.0)) + 1e-12)
        )
    if not err <= tolerance:
        raise EdgeatlasError(
            f"head∘tail differs from the full model by {err:.3g} (relative) > {tolerance}",
            code=ErrorCode.BUILD_ERROR,
        )
    return err
