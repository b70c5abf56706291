"""Structured channel pruning that really shrinks the model (L1-norm filter pruning).

A *prune group* is a set of channels that no residual connection or concatenation touches:
the output channels of a producer conv (and its BatchNorm), carried through depthwise convs,
squeeze-excitation blocks and activations, and consumed by the input channels of the next
conv or linear layer. Inside such a group we keep the producer filters with the largest L1
norm and physically slice every weight, so params and MACs drop for real.

Groups found per family: MobileNetV2 / multi-task inverted residual expansions; MobileNetV3 /
EfficientNet expansions (with SE); ResNet BasicBlock inner channels; ShuffleNetV2 branch2 inner
channels; SqueezeNet Fire squeeze channels; and the last conv before the classifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from registry.errors import EdgeatlasError, ErrorCode


@dataclass
class PruneGroup:
    producer: nn.Conv2d
    producer_bn: nn.BatchNorm2d | None = None
    depthwise: list[tuple[nn.Conv2d, nn.BatchNorm2d | None]] = field(default_factory=list)
    se: list[nn.Module] = field(default_factory=list)  # modules with fc1 / fc2 convs
    consumers: list[nn.Module] = field(default_factory=list)  # Conv2d (groups=1) or Linear


def _cna(seq: nn.Module) -> tuple[nn.Conv2d, nn.BatchNorm2d | None]:
    """(conv, bn) of a Conv2dNormActivation-like Sequential."""
    conv = seq[0]
    bn = seq[1] if len(seq) > 1 and isinstance(seq[1], nn.BatchNorm2d) else None
    return conv, bn


def find_groups(model: nn.Module) -> list[PruneGroup]:
    from torchvision.models import mobilenetv2, mobilenetv3, resnet, shufflenetv2, squeezenet
    from torchvision.models.efficientnet import MBConv
    from torchvision.ops.misc import SqueezeExcitation

    groups: list[PruneGroup] = []
    for mod in model.modules():
        if isinstance(mod, mobilenetv2.InvertedResidual):
            layers = list(mod.conv)
            if len(layers) == 4:  # expand, depthwise, project conv, project bn
                p, pbn = _cna(layers[0])
                groups.append(PruneGroup(p, pbn, [_cna(layers[1])], [], [layers[2]]))
        elif isinstance(mod, mobilenetv3.InvertedResidual | MBConv):
            layers = list(mod.block)
            convs = [m for m in layers if not isinstance(m, SqueezeExcitation)]
            ses = [m for m in layers if isinstance(m, SqueezeExcitation)]
            if len(convs) == 3:
                p, pbn = _cna(convs[0])
                groups.append(PruneGroup(p, pbn, [_cna(convs[1])], ses, [convs[2][0]]))
        elif isinstance(mod, resnet.BasicBlock):
            groups.append(PruneGroup(mod.conv1, mod.bn1, [], [], [mod.conv2]))
        elif isinstance(mod, shufflenetv2.InvertedResidual):
            b = mod.branch2
            groups.append(PruneGroup(b[0], b[1], [(b[3], b[4])], [], [b[5]]))
        elif isinstance(mod, squeezenet.Fire):
            groups.append(PruneGroup(mod.squeeze, None, [], [], [mod.expand1x1, mod.expand3x3]))
    # the last conv feeding the classifier through global pooling
    if isinstance(model, mobilenetv2.MobileNetV2):
        p, pbn = _cna(model.features[-1])
        groups.append(PruneGroup(p, pbn, [], [], [model.classifier[-1]]))
    elif isinstance(model, mobilenetv3.MobileNetV3):
        p, pbn = _cna(model.features[-1])
        groups.append(PruneGroup(p, pbn, [], [], [model.classifier[0]]))
    elif type(model).__name__ == "EfficientNet":
        p, pbn = _cna(model.features[-1])
        groups.append(PruneGroup(p, pbn, [], [], [model.classifier[-1]]))
    elif isinstance(model, shufflenetv2.ShuffleNetV2):
        p, pbn = _cna(model.conv5)
        groups.append(PruneGroup(p, pbn, [], [], [model.fc]))
    elif type(model).__name__ == "MultiTaskNet":
        for head in model.heads.values():
            p, pbn = _cna(head[0])
            groups.append(PruneGroup(p, pbn, [], [], [head[-1]]))
    return groups


def _slice_param(mod: nn.Module, name: str, idx: torch.Tensor, dim: int) -> None:
    p = getattr(mod, name, None)
    if p is None:
        return
    setattr(mod, name, nn.Parameter(p.data.index_select(dim, idx).clone(), requires_grad=p.requires_grad))


def _slice_bn(bn: nn.BatchNorm2d | None, idx: torch.Tensor) -> None:
    if bn is None:
        return
    _slice_param(bn, "weight", idx, 0)
    _slice_param(bn, "bias", idx, 0)
    bn.running_mean = bn.running_mean.index_select(0, idx).clone()
    bn.running_var = bn.running_var.index_select(0, idx).clone()
    bn.num_features = len(idx)


def prune_group(group: PruneGroup, ratio: float) -> None:
    conv = group.producer
    channels = conv.out_channels
    keep = max(1, int(round(channels * (1.0 - ratio))))
    if keep >= channels:
        return
    scores = conv.weight.detach().abs().sum(dim=(1, 2, 3))
    idx = torch.sort(torch.topk(scores, keep).indices).values
    _slice_param(conv, "weight", idx, 0)
    _slice_param(conv, "bias", idx, 0)
    conv.out_channels = keep
    _slice_bn(group.producer_bn, idx)
    for dw, bn in group.depthwise:
        _slice_param(dw, "weight", idx, 0)
        _slice_param(dw, "bias", idx, 0)
        dw.in_channels = dw.out_channels = dw.groups = keep
        _slice_bn(bn, idx)
    for se in group.se:
        _slice_param(se.fc1, "weight", idx, 1)
        se.fc1.in_channels = keep
        _slice_param(se.fc2, "weight", idx, 0)
        _slice_param(se.fc2, "bias", idx, 0)
        se.fc2.out_channels = keep
    for c in group.consumers:
        _slice_param(c, "weight", idx, 1)
        if isinstance(c, nn.Linear):
            c.in_features = keep
        else:
            c.in_channels = keep


def prune_model(model: nn.Module, ratio: float) -> nn.Module:
    """Prune ``ratio`` of the channels of every prune group, in place; returns the model."""
    if not 0.0 <= ratio < 1.0:
        raise EdgeatlasError(
            f"prune ratio {ratio} out of range", code=ErrorCode.INVALID_ARGUMENT, hint="use 0 <= prune < 1 (e.g. 0.3)"
        )
    if ratio == 0.0:
        return model
    groups = find_groups(model)
    if not groups:
        raise EdgeatlasError(
            f"no prunable channel group in {type(model).__name__}", code=ErrorCode.UNSUPPORTED, hint="use --prune 0"
        )
    with torch.no_grad():
        for g in groups:
            prune_group(g, ratio)
    return model


def count_params(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))
