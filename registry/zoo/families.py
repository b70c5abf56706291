"""Model families: torchvision definitions (``weights=None``, nothing downloaded) and a
multi-task model, built in torch with a width multiplier and a class count.

Width: mobilenet_v2 / mobilenet_v3_* / efficientnet_b0 / multitask take any width > 0 (channels
are rounded to multiples of 8 as torchvision does); shufflenet_v2 exists at 0.5, 1.0, 1.5, 2.0;
resnet18 and squeezenet (SqueezeNet 1.1) only at 1.0 (use structured pruning to slim them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from registry.errors import EdgeatlasError, ErrorCode


class MultiTaskNet(nn.Module):
    """One shared backbone (MobileNetV2 inverted residual blocks) and three task heads.

    The heads read the same backbone feature map, so every single-tensor cut lies in the shared
    backbone (as in Chimera and MTL-Split): the device runs the shared part, the edge the heads.
    Outputs, in order: ``shape`` (8), ``colour`` (6), ``position`` (4) logits.
    """

    HEADS: tuple[tuple[str, int], ...] = (("shape", 8), ("colour", 6), ("position", 4))

    def __init__(self, width: float = 1.0, heads: tuple[tuple[str, int], ...] | None = None):
        super().__init__()
        from torchvision.models.mobilenetv2 import InvertedResidual
        from torchvision.ops.misc import Conv2dNormActivation

        def c(n: int) -> int:
            return _make_divisible(n * width, 8)

        # (expand ratio, out channels, stride)
        cfg = [(1, 16, 1), (4, 24, 2), (4, 24, 1), (4, 32, 2), (4, 32, 1), (4, 64, 2), (4, 64, 1), (4, 96, 1)]
        layers: list[nn.Module] = [
            Conv2dNormActivation(3, c(32), stride=2, norm_layer=nn.BatchNorm2d, activation_layer=nn.ReLU6)
        ]
        in_ch = c(32)
        for t, out, s in cfg:
            layers.append(InvertedResidual(in_ch, c(out), s, t))
            in_ch = c(out)
        self.backbone = nn.Sequential(*layers)
        self.heads = nn.ModuleDict()
        for name, n_cls in heads or self.HEADS:
            self.heads[name] = nn.Sequential(
                Conv2dNormActivation(
                    in_ch, c(128), kernel_size=1, norm_layer=nn.BatchNorm2d, activation_layer=nn.ReLU6
                ),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(1),
                nn.Linear(c(128), n_cls),
            )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.backbone(x)
        return tuple(head(feats) for head in self.heads.values())


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _mobilenet_v2(width: float, num_classes: int) -> nn.Module:
    from torchvision.models import mobilenet_v2

    return mobilenet_v2(weights=None, width_mult=width, num_classes=num_classes)


def _mobilenet_v3(arch: str) -> Callable[[float, int], nn.Module]:
    def build(width: float, num_classes: int) -> nn.Module:
        from torchvision.models.mobilenetv3 import MobileNetV3, _mobilenet_v3_conf

        setting, last_channel = _mobilenet_v3_conf(arch, width_mult=width)
        return MobileNetV3(setting, last_channel, num_classes=num_classes)

    return build


def _efficientnet_b0(width: float, num_classes: int) -> nn.Module:
    from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf

    setting, last_channel = _efficientnet_conf("efficientnet_b0", width_mult=width, depth_mult=1.0)
    return EfficientNet(setting, dropout=0.2, last_channel=last_channel, num_classes=num_classes)


def _resnet18(width: float, num_classes: int) -> nn.Module:
    from torchvision.models import resnet18

    return resnet18(weights=None, num_classes=num_classes)


_SHUFFLE_STAGES = {
    0.5: [24, 48, 96, 192, 1024],
    1.0: [24, 116, 232, 464, 1024],
    1.5: [24, 176, 352, 704, 1024],
    2.0: [24, 244, 488, 976, 2048],
}


def _shufflenet_v2(width: float, num_classes: int) -> nn.Module:
    from torchvision.models.shufflenetv2 import ShuffleNetV2

    return ShuffleNetV2([4, 8, 4], _SHUFFLE_STAGES[width], num_classes=num_classes)


def _squeezenet(width: float, num_classes: int) -> nn.Module:
    from torchvision.models import squeezenet1_1

    return squeezenet1_1(weights=None, num_classes=num_classes)


def _multitask(width: float, num_classes: int) -> nn.Module:
    return MultiTaskNet(width)


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable[[float, int], nn.Module]
    widths: tuple[float, ...] | None  # None: any width > 0
    torchvision_name: str | None  # the torchvision builder for the width-1.0 model
    min_resolution: int = 32


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("mobilenet_v2", _mobilenet_v2, None, "mobilenet_v2"),
        Family("mobilenet_v3_small", _mobilenet_v3("mobilenet_v3_small"), None, "mobilenet_v3_small"),
        Family("mobilenet_v3_large", _mobilenet_v3("mobilenet_v3_large"), None, "mobilenet_v3_large"),
        Family("resnet18", _resnet18, (1.0,), "resnet18"),
        Family("efficientnet_b0", _efficientnet_b0, None, "efficientnet_b0"),
        Family("shufflenet_v2", _shufflenet_v2, tuple(_SHUFFLE_STAGES), "shufflenet_v2_x{width}"),
        Family("squeezenet", _squeezenet, (1.0,), "squeezenet1_1"),
        Family("multitask", _multitask, None, None),
    )
}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise EdgeatlasError(
            f"unknown model family {name!r}",
            code=ErrorCode.INVALID_ARGUMENT,
            hint=f"use one of: {', '.join(FAMILIES)}",
        ) from None


def check_width(family: Family, width: float) -> None:
    if not isinstance(width, int | float) or not width > 0 or width > 4:
        raise EdgeatlasError(
            f"width {width!r} for {family.name} is out of range",
            code=ErrorCode.INVALID_ARGUMENT,
            hint="use 0 < width <= 4",
        )
    if family.widths is not None and float(width) not in family.widths:
        raise EdgeatlasError(
            f"{family.name} has no width {width}",
            code=ErrorCode.UNSUPPORTED,
            hint=f"its widths are {list(family.widths)}; slim it with --prune instead",
        )


def build_model(family: str, width: float = 1.0, num_classes: int = 1000) -> nn.Module:
    """A freshly initialised torch model (eval mode; seeded by the caller)."""
    fam = get_family(family)
    check_width(fam, width)
    model = fam.build(float(width), int(num_classes))
    return model.eval()


def output_names(family: str) -> list[str]:
    if family == "multitask":
        return [name for name, _ in MultiTaskNet.HEADS]
    return ["logits"]
