"""NAS-Bench-201 architectures built in torch, exported to ONNX, features from the graph.

Macro skeleton (HW-NAS-Bench / NB201 TinyNetwork): stem 3x3 conv (C=16) + BN, 3 stages of N=5 cells
(C = 16, 32, 64), two residual reduction blocks between the stages, BN+ReLU, global average pool and
a linear classifier. A cell is a 4-node DAG; edge ops are none, skip_connect, nor_conv_1x1,
nor_conv_3x3 and avg_pool_3x3; node j is the sum of its incoming edges.

Every edge is built as in NB201's InferCell, ``none`` included (``x * 0``, the NB201 Zero op), so every
op of the arch string is in the graph (a first version built only the edges on an input->output path;
its features ranked the measured latencies far worse, Spearman 0.69-0.82 vs 0.99 for an op encoding on
HELP's devices: the benchmarks ran the full InferCell). 341 archs have the cell output disconnected
from the input: they are excluded (:func:`is_connected`).

Features of all 15625 archs are composed from the graph features of the distinct exported blocks
((op, stage) blocks, the per-stage Add, stem, reductions, head): every feature except the global
ones is a sum over graph nodes, and the cell DAG gives the depth. ``tests/test_predictors_features.py``
checks composed == full-export features on random archs.
"""

from __future__ import annotations

import functools
import io
import json
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from predictors.features import FEATURE_NAMES, FEATURES_VERSION, ModelFeatures, combine, onnx_features
from registry.errors import EdgeatlasError, ErrorCode

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))


@dataclass(frozen=True)
class TaskSpec:
    """Input shape (C, H, W) and number of outputs of the network."""

    name: str
    in_channels: int = 3
    height: int = 32
    width: int = 32
    num_classes: int = 10


TASKS: dict[str, TaskSpec] = {
    "cifar10": TaskSpec("cifar10", 3, 32, 32, 10),
    "cifar100": TaskSpec("cifar100", 3, 32, 32, 100),
    # HW-NAS-Bench-360 tasks (scripts/utils/task_specs.py of that repo)
    "ninapro": TaskSpec("ninapro", 1, 52, 16, 18),
    "darcy": TaskSpec("darcy", 1, 88, 88, 1),
}


def parse_arch(arch_str: str) -> tuple[str, ...]:
    """'|a~0|+|b~0|c~1|+|d~0|e~1|f~2|' -> (a, b, c, d, e, f) in EDGES order."""
    try:
        nodes = arch_str.strip().split("+")
        ops: list[str] = []
        for j, node in enumerate(nodes, start=1):
            parts = [p for p in node.strip("|").split("|") if p]
            if len(parts) != j:
                raise ValueError(f"node {j} has {len(parts)} inputs")
            for i, p in enumerate(parts):
                op, src = p.split("~")
                if int(src) != i or op not in OPS:
                    raise ValueError(f"bad edge {p!r}")
                ops.append(op)
        if len(ops) != 6:
            raise ValueError("need 6 edges")
    except ValueError as exc:
        raise EdgeatlasError(
            f"not a NAS-Bench-201 arch string: {arch_str!r} ({exc})",
            code=ErrorCode.INVALID_ARGUMENT,
            hint="use the form |op~0|+|op~0|op~1|+|op~0|op~1|op~2|",
        ) from exc
    # parsed order: (0,1), (0,2), (1,2), (0,3), (1,3), (2,3) == EDGES
    return tuple(ops)


def live_edges(ops: Sequence[str]) -> list[tuple[int, int, str]]:
    edges = [(i, j, op) for (i, j), op in zip(EDGES, ops, strict=True) if op != "none"]
    fwd = {0: True, 1: False, 2: False, 3: False}
    for j in (1, 2, 3):
        fwd[j] = any(fwd[i] for i, jj, _ in edges if jj == j)
    bwd = {3: True, 2: False, 1: False, 0: False}
    for i in (2, 1, 0):
        bwd[i] = any(bwd[jj] for ii, jj, _ in edges if ii == i)
    return [(i, j, op) for i, j, op in edges if fwd[i] and bwd[j]]


def is_connected(ops: Sequence[str]) -> bool:
    return any(j == 3 for _, j, _ in live_edges(ops))


# ----------------------------------------------------------------------------- torch modules


def _torch():
    import torch
    from torch import nn

    return torch, nn


def _randomize_bn(module) -> None:
    """Random BN statistics: exported fused biases then differ, so initializers are never deduplicated."""
    torch, nn = _torch()
    gen = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


def make_op(op: str, c: int):
    torch, nn = _torch()

    class Zero(nn.Module):
        def forward(self, x):
            return x.mul(0.0)

    if op == "none":
        return Zero()
    if op == "skip_connect":
        return nn.Identity()
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    if op in ("nor_conv_1x1", "nor_conv_3x3"):
        k = 1 if op.endswith("1x1") else 3
        return nn.Sequential(
            nn.ReLU(inplace=False), nn.Conv2d(c, c, k, stride=1, padding=k // 2, bias=False), nn.BatchNorm2d(c)
        )
    raise ValueError(op)


def _build_classes():
    torch, nn = _torch()

    class Cell(nn.Module):
        def __init__(self, ops: Sequence[str], c: int):
            super().__init__()
            self.edges = [(i, j, op) for (i, j), op in zip(EDGES, ops, strict=True)]
            self.ops = nn.ModuleList([make_op(op, c) for _, _, op in self.edges])

        def forward(self, x):
            nodes = [x, None, None, None]
            for j in (1, 2, 3):
                ins = [m(nodes[i]) for (i, jj, _), m in zip(self.edges, self.ops, strict=True) if jj == j]
                if ins:
                    nodes[j] = functools.reduce(operator.add, ins)
            return nodes[3]

    class Reduction(nn.Module):
        """ResNet basic block, stride 2 (NB201 ResNetBasicblock)."""

        def __init__(self, cin: int, cout: int):
            super().__init__()
            self.a = nn.Sequential(nn.ReLU(), nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout))
            self.b = nn.Sequential(nn.ReLU(), nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
            self.down = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(cin, cout, 1, 1, 0, bias=False))

        def forward(self, x):
            return self.down(x) + self.b(self.a(x))

    class Stem(nn.Module):
        def __init__(self, cin: int, c: int):
            super().__init__()
            self.conv = nn.Conv2d(cin, c, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(c)

        def forward(self, x):
            return self.bn(self.conv(x))

    class Head(nn.Module):
        def __init__(self, c: int, n: int):
            super().__init__()
            self.bn = nn.BatchNorm2d(c)
            self.fc = nn.Linear(c, n)

        def forward(self, x):
            x = torch.relu(self.bn(x))
            x = torch.nn.functional.adaptive_avg_pool2d(x, 1)
            return self.fc(torch.flatten(x, 1))

    class Add(nn.Module):
        def forward(self, x, y):
            return x + y

    class NB201Net(nn.Module):
        def __init__(self, ops: Sequence[str], task: TaskSpec, c: int = 16, n: int = 5):
            super().__init__()
            layers: list[nn.Module] = [Stem(task.in_channels, c)]
            for s, ch in enumerate((c, 2 * c, 4 * c)):
                if s > 0:
                    layers.append(Reduction(ch // 2, ch))
                layers.extend(Cell(ops, ch) for _ in range(n))
            layers.append(Head(4 * c, task.num_classes))
            self.layers = nn.Sequential(*layers)

        def forward(self, x):
            return self.layers(x)

    return Cell, Reduction, Stem, Head, Add, NB201Net


def build_model(arch: str | Sequence[str], task: TaskSpec | str = "cifar10"):
    """The torch module (eval mode, random BN statistics) for an arch string or op tuple."""
    ops = parse_arch(arch) if isinstance(arch, str) else tuple(arch)
    spec = TASKS[task] if isinstance(task, str) else task
    if not is_connected(ops):
        raise EdgeatlasError(
            f"NB201 arch {ops} has its output disconnected from its input",
            code=ErrorCode.INVALID_ARGUMENT,
            hint="the 341 disconnected archs are excluded from every dataset",
        )
    *_, NB201Net = _build_classes()
    m = NB201Net(ops, spec)
    _randomize_bn(m)
    return m.eval()


def export_onnx(module, inputs: tuple, opset: int = 17) -> bytes:
    """torch -> ONNX bytes (TorchScript exporter, constant folding, BN fused into conv)."""
    import torch

    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            module,
            inputs,
            buf,
            dynamo=False,
            opset_version=opset,
            do_constant_folding=True,
            input_names=[f"x{i}" for i in range(len(inputs))],
            output_names=["y"],
        )
    return buf.getvalue()


def full_features(arch: str | Sequence[str], task: TaskSpec | str = "cifar10") -> ModelFeatures:
    """Features from a full export of the whole network (slow path; used to check composition)."""
    import onnx
    import torch

    spec = TASKS[task] if isinstance(task, str) else task
    m = build_model(arch, spec)
    data = export_onnx(m, (torch.randn(1, spec.in_channels, spec.height, spec.width),))
    return onnx_features(onnx.load_from_string(data), source=f"nb201:{arch}")


class BlockLibrary:
    """Graph features of every distinct NB201 block for one task, each exported once."""

    def __init__(self, task: TaskSpec | str = "cifar10", c: int = 16):
        import onnx
        import torch

        self.task = TASKS[task] if isinstance(task, str) else task
        Cell, Reduction, Stem, Head, Add, _ = _build_classes()
        _, nn = _torch()
        t = self.task
        hs, ws = [t.height], [t.width]
        for _ in range(2):  # conv 3x3 stride 2 padding 1
            hs.append((hs[-1] - 1) // 2 + 1)
            ws.append((ws[-1] - 1) // 2 + 1)
        self.shapes = [(c * 2**s, hs[s], ws[s]) for s in range(3)]

        def feats(mod, *shapes) -> ModelFeatures:
            _randomize_bn(mod)
            mod.eval()
            data = export_onnx(mod, tuple(torch.randn(1, *s) for s in shapes))
            return onnx_features(onnx.load_from_string(data))

        self.stem = feats(Stem(t.in_channels, c), (t.in_channels, t.height, t.width))
        self.reductions = [
            feats(Reduction(self.shapes[s - 1][0], self.shapes[s][0]), self.shapes[s - 1]) for s in (1, 2)
        ]
        self.head = feats(Head(4 * c, t.num_classes), self.shapes[2])
        # primitives; nor_conv = relu + conv, so a ReLU shared by several convs (the exporter's CSE) is
        # counted once, like AveragePools and Adds with identical inputs (see cell()).
        self.prims: dict[tuple[str, int], ModelFeatures] = {}
        for s, shp in enumerate(self.shapes):
            ch = shp[0]
            self.prims[("relu", s)] = feats(nn.ReLU(), shp)
            for k in (1, 3):
                self.prims[(f"conv{k}", s)] = feats(
                    nn.Sequential(nn.Conv2d(ch, ch, k, 1, k // 2, bias=False), nn.BatchNorm2d(ch)), shp
                )
            self.prims[("pool", s)] = feats(make_op("avg_pool_3x3", ch), shp)
            self.prims[("zero", s)] = feats(make_op("none", ch), shp)
            self.prims[("add", s)] = feats(Add(), shp, shp)
        # the head's BatchNormalization is fused into a conv that directly precedes it
        self.head_bn = feats(nn.BatchNorm2d(self.shapes[2][0]), self.shapes[2])

    def cell(
        self, ops: Sequence[str], stage: int, cse: bool = True, live: bool = False
    ) -> tuple[list[tuple[float, ModelFeatures]], float]:
        """(parts, depth) of one cell, by symbolic evaluation.

        ``cse=True`` merges identical sub-expressions as the ONNX exporter does (equal to a full
        export); ``cse=False`` counts every module call, as PyTorch eager runs the cell.
        ``live=True`` keeps only the edges on an input->output path and drops ``none`` edges (the
        pruned graph that HW-NAS-Bench-style builders run; isomorphic archs then share a graph)."""
        if live:
            edges = live_edges(ops)
        else:
            edges = [(i, j, op) for (i, j), op in zip(EDGES, ops, strict=True)]
        nodes: dict[int, object] = {0: ("x",)}
        for j in (1, 2, 3):
            ins = []
            for e, (i, jj, op) in enumerate(edges):
                if jj != j:
                    continue
                t = nodes[i]
                tag = () if cse else (e,)
                if op == "skip_connect":
                    ins.append(t)
                elif op == "none":
                    ins.append(("zero", *tag, t))
                elif op == "avg_pool_3x3":
                    ins.append(("pool", *tag, t))
                else:
                    ins.append((f"conv{op[-1]}", e, ("relu", *tag, t)))
            if ins:
                nodes[j] = functools.reduce(lambda a, b: ("add", a, b), ins)
        unique: dict[object, float] = {}  # expression -> depth

        def visit(expr) -> float:
            if expr in unique:
                return unique[expr]
            kind = expr[0]
            if kind == "x":
                return 0.0
            children = [c for c in expr[1:] if isinstance(c, tuple)]
            d = max(visit(c) for c in children) + self.prims[(kind, stage)].values["depth"]
            unique[expr] = d
            return d

        depth = visit(nodes[3])
        parts = [(1.0, self.prims[(expr[0], stage)]) for expr in unique]
        self._last_out_is_conv = nodes[3][0].startswith("conv")
        return parts, depth

    def features(self, arch: str | Sequence[str], n: int = 5, cse: bool = True, live: bool = False) -> ModelFeatures:
        ops = parse_arch(arch) if isinstance(arch, str) else tuple(arch)
        if not is_connected(ops):
            raise EdgeatlasError(f"NB201 arch {ops} is disconnected", code=ErrorCode.INVALID_ARGUMENT)
        parts: list[tuple[float, ModelFeatures]] = [(1.0, self.stem), (1.0, self.head)]
        depth = self.stem.values["depth"] + self.head.values["depth"]
        for s in range(3):
            if s > 0:
                parts.append((1.0, self.reductions[s - 1]))
                depth += self.reductions[s - 1].values["depth"]
            cparts, cdepth = self.cell(ops, s, cse=cse, live=live)
            parts.extend((n * m, f) for m, f in cparts)
            depth += n * cdepth
        if self._last_out_is_conv:
            parts.append((-1.0, self.head_bn))
            depth -= self.head_bn.values["depth"]
        t = self.task
        return combine(
            parts,
            depth=depth,
            input_shape=(1, t.in_channels, t.height, t.width),
            output_elems=float(t.num_classes),
            source="nb201",
        )


def all_archs() -> list[tuple[str, ...]]:
    """All 15625 op tuples in NB201's enumeration order is NOT the index order: use arch strings."""
    import itertools

    return [tuple(p) for p in itertools.product(OPS, repeat=6)]


def arch_str(ops: Sequence[str]) -> str:
    o = list(ops)
    return f"|{o[0]}~0|+|{o[1]}~0|{o[2]}~1|+|{o[3]}~0|{o[4]}~1|{o[5]}~2|"


GRAPHS: tuple[str, ...] = ("eager", "live")


def features_table(
    arch_strs: Sequence[str], task: str = "cifar10", use_cache: bool = True, graph: str = "eager"
) -> np.ndarray:
    """(n, len(FEATURE_NAMES)) graph features for arch strings; NaN rows for disconnected archs.

    ``graph="eager"``: the execution graph of NB201's InferCell without CSE (every edge, ``none``
    included): HELP's NB201 devices ran that. ``graph="live"``: only the edges on an input->output
    path (HW-NAS-Bench-360 and LatBench ran pruned cells: isomorphic archs share one measurement).
    Cached in cache_dir()/nb201_features_<task>[_live]_v3_f<FEATURES_VERSION>.json keyed by arch string.
    """
    from registry.paths import cache_dir

    if graph not in GRAPHS:
        raise EdgeatlasError(f"graph must be one of {GRAPHS}, not {graph!r}", code=ErrorCode.INVALID_ARGUMENT)
    live = graph == "live"
    path = cache_dir() / f"nb201_features_{task}{'_live' if live else ''}_v3_f{FEATURES_VERSION}.json"
    table: dict[str, list[float]] = {}
    if use_cache and path.exists():
        table = json.loads(path.read_text())
    missing = [a for a in dict.fromkeys(arch_strs) if a not in table]
    if missing:
        lib = BlockLibrary(task)
        for a in missing:
            ops = parse_arch(a)
            table[a] = (
                lib.features(ops, cse=False, live=live).vector().tolist()
                if is_connected(ops)
                else [float("nan")] * len(FEATURE_NAMES)
            )
        if use_cache:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(table))
            tmp.replace(path)
    return np.array([table[a] for a in arch_strs], dtype=np.float64)


def op_counts(arch_strs: Sequence[str], live: bool = True) -> np.ndarray:
    """(n, 4): how many of the 6 cell edges hold skip_connect, nor_conv_1x1, nor_conv_3x3 and
    avg_pool_3x3 (``none`` is the rest). The k-shot correction's features
    (:class:`predictors.kshot.CorrectedKShotCalibrator`)."""
    return cell_encoding(arch_strs, live=live).reshape(len(arch_strs), len(EDGES), len(OPS)).sum(axis=1)[:, 1:]


def cell_encoding(arch_strs: Sequence[str], live: bool = True) -> np.ndarray:
    """(n, 30) one-hot of the op on each of the 6 cell edges (dead edges as ``none`` when ``live``).

    The graph features are sums over the whole network; this keeps *where* in the cell DAG each op
    sits, which the additive features lose. Used beside the graph features for NB201-space data.
    """
    out = np.zeros((len(arch_strs), len(EDGES) * len(OPS)))
    for r, a in enumerate(arch_strs):
        ops = parse_arch(a)
        keep = {(i, j) for i, j, _ in live_edges(ops)} if live else set(EDGES)
        for e, ((i, j), op) in enumerate(zip(EDGES, ops, strict=True)):
            out[r, e * len(OPS) + OPS.index(op if (i, j) in keep else "none")] = 1.0
    return out
