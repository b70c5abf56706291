"""FBNet architectures of HELP's FBNet space (from HW-NAS-Bench), built in torch, features from ONNX.

Macro skeleton (FBNetV1 CIFAR-100 setting as described by HW-NAS-Bench): 32x32 input, stem 3x3 conv
(16 ch, stride 1) + BN + ReLU; 22 searchable blocks in 7 stages of [1, 4, 4, 4, 4, 4, 1] blocks with
[16, 24, 32, 64, 112, 184, 352] channels and strides [1, 1, 2, 2, 1, 2, 1]; a 1x1 header conv to 1504
channels + BN + ReLU, global average pooling and a linear classifier (100 classes).
A block k{3,5}_e{1,3,6}[_g2] is an inverted residual: 1x1 conv (groups g) -> BN -> ReLU
[-> channel shuffle] -> kxk depthwise (stride) -> BN -> ReLU -> 1x1 conv (groups g) -> BN
(+ identity when shapes match). ``skip`` is the identity, or 1x1 conv + BN + ReLU when the shape changes.

The network is a chain of blocks, so its graph features are the sum of the block features and its
depth the sum of block depths; each distinct (position config, op) block is exported once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from predictors.features import FEATURE_NAMES, FEATURES_VERSION, ModelFeatures, combine, onnx_features
from predictors.nb201 import _randomize_bn, export_onnx
from registry.errors import EdgeatlasError, ErrorCode

PRIMITIVES: tuple[str, ...] = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
NUM_LAYERS = (1, 4, 4, 4, 4, 4, 1)
CHANNELS = (16, 24, 32, 64, 112, 184, 352)
STRIDES = (1, 1, 2, 2, 1, 2, 1)
STEM, HEADER, NUM_CLASSES, RES = 16, 1504, 100, 32


def positions() -> list[tuple[int, int, int, int]]:
    """(c_in, c_out, stride, input_hw) of the 22 block positions."""
    out = []
    c_prev, hw = STEM, RES
    for s, n in enumerate(NUM_LAYERS):
        for i in range(n):
            stride = STRIDES[s] if i == 0 else 1
            out.append((c_prev, CHANNELS[s], stride, hw))
            c_prev = CHANNELS[s]
            hw = (hw - 1) // stride + 1
    return out


def parse_ops(ops: Sequence[str] | str) -> tuple[str, ...]:
    items = ops.split(",") if isinstance(ops, str) else list(ops)
    items = [o.strip() for o in items]
    if len(items) != 22 or any(o not in PRIMITIVES for o in items):
        raise EdgeatlasError(
            f"not an FBNet arch (22 blocks from {', '.join(PRIMITIVES)}): {ops!r}",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    return tuple(items)


def _modules():
    import torch
    from torch import nn

    class Shuffle(nn.Module):
        def __init__(self, c: int, g: int, hw: int):
            super().__init__()
            self.c, self.g, self.hw = c, g, hw

        def forward(self, x):
            c, g, hw = self.c, self.g, self.hw
            return x.reshape(1, g, c // g, hw, hw).transpose(1, 2).reshape(1, c, hw, hw)

    class Block(nn.Module):
        def __init__(self, op: str, cin: int, cout: int, stride: int, hw: int):
            super().__init__()
            self.residual = False
            if op == "skip":
                self.body = (
                    nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout), nn.ReLU())
                    if (stride != 1 or cin != cout)
                    else nn.Identity()
                )
                return
            k = int(op[1])
            e = int(op.split("_")[1][1:])
            g = 2 if op.endswith("_g2") else 1
            mid = cin * e
            layers: list[nn.Module] = [
                nn.Conv2d(cin, mid, 1, 1, 0, groups=g, bias=False),
                nn.BatchNorm2d(mid),
                nn.ReLU(),
            ]
            if g > 1:
                layers.append(Shuffle(mid, g, hw))
            layers += [
                nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False),
                nn.BatchNorm2d(mid),
                nn.ReLU(),
                nn.Conv2d(mid, cout, 1, 1, 0, groups=g, bias=False),
                nn.BatchNorm2d(cout),
            ]
            self.body = nn.Sequential(*layers)
            self.residual = cin == cout and stride == 1

        def forward(self, x):
            y = self.body(x)
            return y + x if self.residual else y

    class Stem(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, STEM, 3, 1, 1, bias=False), nn.BatchNorm2d(STEM), nn.ReLU())

        def forward(self, x):
            return self.body(x)

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(CHANNELS[-1], HEADER, 1, bias=False), nn.BatchNorm2d(HEADER), nn.ReLU())
            self.fc = nn.Linear(HEADER, NUM_CLASSES)

        def forward(self, x):
            x = torch.nn.functional.adaptive_avg_pool2d(self.body(x), 1)
            return self.fc(torch.flatten(x, 1))

    class FBNet(nn.Module):
        def __init__(self, ops: Sequence[str]):
            super().__init__()
            blocks = [Block(op, *pos) for op, pos in zip(ops, positions(), strict=True)]
            self.body = nn.Sequential(Stem(), *blocks, Head())

        def forward(self, x):
            return self.body(x)

    return Block, Stem, Head, FBNet


def build_model(ops: Sequence[str] | str):
    *_, FBNet = _modules()
    m = FBNet(parse_ops(ops))
    _randomize_bn(m)
    return m.eval()


def full_features(ops: Sequence[str] | str) -> ModelFeatures:
    import onnx
    import torch

    data = export_onnx(build_model(ops), (torch.randn(1, 3, RES, RES),))
    return onnx_features(onnx.load_from_string(data), source="fbnet")


class BlockLibrary:
    def __init__(self) -> None:
        import onnx
        import torch

        Block, Stem, Head, _ = _modules()

        def feats(mod, shape) -> ModelFeatures:
            _randomize_bn(mod)
            mod.eval()
            return onnx_features(onnx.load_from_string(export_onnx(mod, (torch.randn(1, *shape),))))

        self.stem = feats(Stem(), (3, RES, RES))
        last_hw = positions()[-1][3]
        self.head = feats(Head(), (CHANNELS[-1], last_hw, last_hw))
        self.blocks: dict[tuple[str, tuple[int, int, int, int]], ModelFeatures] = {}
        for pos in dict.fromkeys(positions()):
            cin, cout, stride, hw = pos
            for op in PRIMITIVES:
                if op == "skip" and stride == 1 and cin == cout:
                    self.blocks[(op, pos)] = ModelFeatures(values=dict.fromkeys(FEATURE_NAMES, 0.0))
                else:
                    self.blocks[(op, pos)] = feats(Block(op, cin, cout, stride, hw), (cin, hw, hw))

    def features(self, ops: Sequence[str] | str) -> ModelFeatures:
        ops = parse_ops(ops)
        parts = [(1.0, self.stem), (1.0, self.head)] + [
            (1.0, self.blocks[(op, pos)]) for op, pos in zip(ops, positions(), strict=True)
        ]
        depth = sum(f.values["depth"] for _, f in parts)
        return combine(
            parts, depth=depth, input_shape=(1, 3, RES, RES), output_elems=float(NUM_CLASSES), source="fbnet"
        )


def features_table(archs: Sequence[Sequence[str]], use_cache: bool = True) -> np.ndarray:
    """(n, d) features for FBNet op lists, cached in cache_dir()/fbnet_features_v1_f<FEATURES_VERSION>.json."""
    from registry.paths import cache_dir

    path = cache_dir() / f"fbnet_features_v1_f{FEATURES_VERSION}.json"
    keys = [",".join(parse_ops(a)) for a in archs]
    table: dict[str, list[float]] = json.loads(path.read_text()) if (use_cache and path.exists()) else {}
    missing = [k for k in dict.fromkeys(keys) if k not in table]
    if missing:
        lib = BlockLibrary()
        for k in missing:
            table[k] = lib.features(k).vector().tolist()
        if use_cache:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(table))
            tmp.replace(path)
    return np.array([table[k] for k in keys], dtype=np.float64)
