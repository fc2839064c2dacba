"""VGG for 32x32 inputs, defined by a list of widths; every conv is conv -> BN -> gate -> ReLU.

`vgg_widths(depth, width)` gives the layer list ("M" is a 2x2 max-pool). The same `VGG` class
builds the gated network that is trained and, with `gated=False` and the kept widths, the
physically smaller network that pruning returns.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from gated_pruning import distributed
from gated_pruning.gates import Gate

CONFIGS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
         512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}

Layers = Sequence[Union[int, str]]


def vgg_widths(depth: int, width: float = 1.0) -> list:
    """The layer list of VGG-`depth` with every conv width scaled by `width` (at least 1)."""
    if depth not in CONFIGS:
        raise ValueError(f"model.depth={depth} is not one of {sorted(CONFIGS)}")
    if width <= 0:
        raise ValueError(f"model.width={width} must be > 0")
    return [v if v == "M" else max(1, int(round(v * width))) for v in CONFIGS[depth]]


class ConvBlock(nn.Module):
    """conv3x3 -> BatchNorm -> Gate -> ReLU.

    The gate multiplies the batch-norm output, so it is applied by scaling the BN affine
    parameters (gate*(w*xhat + b) == (gate*w)*xhat + gate*b): the same function as a separate
    multiply, without another pass over the activation. Under torchrun, training-mode batch
    norm uses the statistics of the global batch (`distributed.sync_batch_norm`).
    """

    def __init__(self, in_channels: int, out_channels: int, gate: Gate | None = None):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        bn = self.bn
        weight, bias = bn.weight, bn.bias
        if self.gate is not None:
            g = self.gate.value()
            weight, bias = weight * g, bias * g
        if bn.training and distributed.world_size() > 1:
            x = distributed.sync_batch_norm(x, bn, weight, bias)
        else:
            if bn.training:
                bn.num_batches_tracked.add_(1)
            x = F.batch_norm(x, bn.running_mean, bn.running_var, weight, bias,
                             bn.training, bn.momentum, bn.eps)
        return F.relu(x, inplace=True)


class VGG(nn.Module):
    def __init__(self, layers: Layers, num_classes: int = 100, gated: bool = True,
                 gate_init: float = 1.0, binarizer=None, in_channels: int = 3):
        super().__init__()
        self.layers = list(layers)
        self.gated = gated
        blocks: list[nn.Module] = []
        c = in_channels
        for v in self.layers:
            if v == "M":
                blocks.append(nn.MaxPool2d(2))
            else:
                gate = Gate(v, gate_init, binarizer) if gated else None
                blocks.append(ConvBlock(c, v, gate))
                c = v
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(F.adaptive_max_pool2d(x, 1), 1)
        return self.classifier(x)

    def conv_blocks(self) -> list[tuple[str, ConvBlock]]:
        """(name, block) for every conv block, in order; names are stable `conv{i}` labels."""
        blocks = [m for m in self.features if isinstance(m, ConvBlock)]
        return [(f"conv{i}", b) for i, b in enumerate(blocks)]

    def gates(self) -> list[Gate]:
        return [b.gate for _, b in self.conv_blocks() if b.gate is not None]

    def widths(self) -> list[int]:
        return [b.conv.out_channels for _, b in self.conv_blocks()]


def build(depth: int = 16, width: float = 1.0, num_classes: int = 100, gated: bool = True,
          gate_init: float = 1.0, binarizer=None) -> VGG:
    """VGG-`depth` at `width`: the `model/` config group's target."""
    return VGG(vgg_widths(depth, width), num_classes, gated, gate_init, binarizer)
