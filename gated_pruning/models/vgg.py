"""VGG for any input size (32x32 for CIFAR), defined by a list of widths; every conv is conv -> BN -> gate -> ReLU.

`vgg_widths(depth, width)` gives the layer list ("M" is a 2x2 max-pool). The same `VGG` class
builds the gated network that is trained and, with `gated=False`, the plain network. Its units
(`protocol.py`) are the conv layers, one gate per output channel.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from gated_pruning.gates import Gate
from gated_pruning.models.families import VGG_GATE_POSITIONS, VGG_LAYERS
from gated_pruning.models.layers import GatedBatchNorm2d, fold_gate
from gated_pruning.models.protocol import GatedNetwork, LayerCost, Unit

Layers = Sequence[Union[int, str]]


def vgg_widths(depth: int, width: float = 1.0) -> list:
    """The layer list of VGG-`depth` with every conv width scaled by `width` (at least 1)."""
    if depth not in VGG_LAYERS:
        raise ValueError(f"model.depth={depth} is not one of {sorted(VGG_LAYERS)}")
    if width <= 0:
        raise ValueError(f"model.width={width} must be > 0")
    return [v if v == "M" else max(1, int(round(v * width))) for v in VGG_LAYERS[depth]]


class ConvBlock(nn.Module):
    """conv3x3 -> BatchNorm -> ReLU, with the gate multiplying each channel.

    `gate_position="bn"`: the gate multiplies the batch-norm output before the ReLU, folded into
    the BN affine parameters (`layers.GatedBatchNorm2d`): no extra pass over the activation. But a
    gate at exactly 0 then gets no gradient (ReLU's derivative at 0 is 0), so a channel once
    pruned can never come back. `gate_position="relu"`: the gate multiplies the block's output
    after the ReLU (the structure's output, as SSS puts it): the same function for gates >= 0,
    one more multiply, and a closed gate still sees d(loss)/d(gate) = the gradient of reopening
    its channel. `gate_position="scale"`: the gate is batch norm's scale alone (gamma; the bias
    stays), as Ye et al. (ICLR 2018) shrink it: a closed channel outputs the constant relu(beta),
    which the cut moves into the next layer (`VGG._absorb_constants`).
    """

    def __init__(self, in_channels: int, out_channels: int, gate: Gate | None = None,
                 bn_weight: bool = True, gate_position: str = "bn"):
        super().__init__()
        if gate_position not in VGG_GATE_POSITIONS:
            raise ValueError(f"model.gate_position={gate_position!r} is not one of {VGG_GATE_POSITIONS}")
        if gate is not None and gate_position == "scale" and bn_weight:
            raise ValueError("model.gate_position=scale makes the gate batch norm's scale: set model.bn_weight=false")
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        folded = [gate] if gate is not None and gate_position in ("bn", "scale") else []
        self.bn = GatedBatchNorm2d(out_channels, folded, affine_weight=bn_weight or gate is None,
                                   scale_only=gate_position == "scale")
        self.gate = gate
        self.gate_position = gate_position

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)), inplace=True)
        if self.gate is not None and self.gate_position == "relu":
            x = x * self.gate.value().to(x.dtype).view(1, -1, 1, 1)  # in the activation's precision (bf16 under amp)
        return x

    def fold(self) -> None:
        """The gate's kept value into the batch norm; the block is then plain."""
        fold_gate(self.bn, self.gate, self.gate_position)
        self.gate = None


class VGG(GatedNetwork):
    """`layers`: conv widths and "M" (max-pool). With `gated`, every conv output channel has a
    gate (`gate_init` + `gate_jitter` noise, a `min_keep` floor per layer, see `gates.Gate`);
    `bn_weight=False` freezes batch norm's weight at 1 so the gate is the channel's only scale;
    `gate_position` puts the gate before ("bn") or after ("relu") the ReLU (see `ConvBlock`)."""

    def __init__(self, layers: Layers, num_classes: int = 100, gated: bool = True,
                 gate_init: float = 1.0, binarizer=None, in_channels: int = 3,
                 gate_jitter: float = 0.0, min_keep: float = 0, bn_weight: bool = True,
                 gate_position: str = "bn", input_size: int = 32):
        super().__init__()
        self.input_size = int(input_size)  # the image side its FLOPs are counted for
        self.layers = list(layers)
        self.gated = gated
        self.in_channels = in_channels
        blocks: list[nn.Module] = []
        c = in_channels
        for v in self.layers:
            if v == "M":
                blocks.append(nn.MaxPool2d(2))
            else:
                gate = Gate(v, gate_init, binarizer, gate_jitter, min_keep) if gated else None
                blocks.append(ConvBlock(c, v, gate, bn_weight, gate_position))
                c = v
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        # global max pooling: a 1x1 map (32 px inputs) is passed as it is; a larger one by amax, whose
        # backward is deterministic on CUDA, where adaptive_max_pool2d's is not
        x = x.flatten(1) if x.shape[-1] == x.shape[-2] == 1 else x.amax(dim=(2, 3))
        return self.classifier(x)

    def conv_blocks(self) -> list[tuple[str, ConvBlock]]:
        """(name, block) for every conv block, in order; names are stable `conv{i}` labels."""
        blocks = [m for m in self.features if isinstance(m, ConvBlock)]
        return [(f"conv{i}", b) for i, b in enumerate(blocks)]

    def widths(self) -> list[int]:
        return [b.conv.out_channels for _, b in self.conv_blocks()]

    # -- the protocol -----------------------------------------------------------------------
    def units(self) -> list[Unit]:
        return [Unit(name, "channels", b.conv.out_channels, 1) for name, b in self.conv_blocks()]

    def gates(self) -> list[Gate]:
        return [b.gate for _, b in self.conv_blocks() if b.gate is not None]

    def regrows(self) -> list[bool]:
        # after the ReLU a closed gate sees its channel's gradient; as batch norm's scale alone it
        # does while relu(beta) is open (beta > 0: the usual case of a trained network, not a rule)
        return [b.gate_position in ("relu", "scale") for _, b in self.conv_blocks()]

    def cost_table(self) -> list[LayerCost]:
        table, size, i = [], self.input_size, 0
        for v in self.layers:
            if v == "M":
                size //= 2
                continue
            area = 2 * 9 * size * size
            table.append(LayerCost(area * self.in_channels, (i,)) if i == 0 else LayerCost(area, (i - 1, i)))
            i += 1
        return table + [LayerCost(2 * self.classifier.out_features, (i - 1,))]

    def unit_norms(self, unit: int) -> list[nn.Module]:
        return [self.conv_blocks()[unit][1].bn]

    def unit_consumer(self, unit: int) -> nn.Module:
        blocks = self.conv_blocks()
        return blocks[unit + 1][1].conv if unit + 1 < len(blocks) else self.classifier

    def _fold_gates(self) -> None:
        for _, b in self.conv_blocks():
            b.fold()
        self.gated = False

    def _absorb_constants(self, masks) -> None:
        """A removed channel whose folded batch norm has weight 0 outputs relu(bias) everywhere
        (gate_position=scale; elsewhere the bias went with the gate and this adds nothing). Max
        pools keep a constant, so the next conv adds sum over its kernel of W[:, c] * relu(bias_c)
        to each output, which its batch norm's running mean absorbs; the classifier (after the
        global max pool) adds W[:, c] * relu(bias_c) to its bias, exactly. The conv's share is
        exact inside the map only: at its zero-padded border the kernel reads part of the
        constant (as in Ye et al.'s cut)."""
        blocks = self.conv_blocks()
        for unit, (_, block) in enumerate(blocks):
            if bool(masks[unit].all()):  # nothing goes (a cut in layers may pass the done ones so)
                continue
            gone = ~masks[unit].to(block.bn.weight.device)
            value = torch.where(gone & (block.bn.weight == 0), F.relu(block.bn.bias), torch.zeros_like(block.bn.bias))
            if not bool(value.any()):
                continue
            if unit + 1 < len(blocks):
                nxt = blocks[unit + 1][1]
                nxt.bn.running_mean -= torch.einsum("ochw,c->o", nxt.conv.weight, value)
            else:
                self.classifier.bias += self.classifier.weight @ value

    def _channel_root(self, unit: int):
        import torch_pruning as tp

        return self.conv_blocks()[unit][1].conv, tp.prune_conv_out_channels

    def _after_compact(self, masks) -> None:
        widths = iter(self.widths())
        self.layers = [v if v == "M" else next(widths) for v in self.layers]

    def channel_costs(self, size: int = 32) -> list[float]:
        """Per conv layer, the FLOPs that removing one of its output channels saves."""
        return self.unit_costs()


def flops(layers: Layers, widths, in_channels: int, num_classes: int, size: int = 32):
    """FLOPs of a VGG whose conv widths are `widths` (numbers or tensors), for `size`x`size` input."""
    total, c_in, i = 0, in_channels, 0
    for v in layers:
        if v == "M":
            size //= 2
            continue
        c_out = widths[i]
        total = total + 2 * 9 * c_in * c_out * size * size
        c_in, i = c_out, i + 1
    return total + 2 * c_in * num_classes


def with_widths(depth: int, widths) -> list:
    """The layer list of VGG-`depth` with its conv widths replaced by `widths` (e.g. the kept
    widths of a pruned network)."""
    layers = list(VGG_LAYERS[depth]) if depth in VGG_LAYERS else vgg_widths(depth)
    convs = sum(v != "M" for v in layers)
    widths = [int(w) for w in widths]
    if len(widths) != convs or min(widths) < 1:
        raise ValueError(f"model.widths={widths}: VGG-{depth} needs {convs} conv widths, each >= 1")
    it = iter(widths)
    return [v if v == "M" else next(it) for v in layers]


def uniform_width(depth: int, width: float, target: float, num_classes: int = 100) -> float:
    """The width multiplier whose VGG-`depth` has `target` times the FLOPs of VGG-`depth` at
    `width` (uniform channel scaling; widths are rounded per layer, so the closest is taken)."""
    def ratio(w):
        layers = vgg_widths(depth, w)
        return flops(layers, [v for v in layers if v != "M"], 3, num_classes) / dense

    ref = vgg_widths(depth, width)
    dense = flops(ref, [v for v in ref if v != "M"], 3, num_classes)
    lo, hi = 1e-3, width
    for _ in range(60):  # FLOPs grow with the multiplier: bisect, then pick the closest rounding
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ratio(mid) < target else (lo, mid)
    return min((lo, hi), key=lambda w: abs(ratio(w) - target))


def build(depth: int = 16, width: float = 1.0, num_classes: int = 100, gated: bool = True,
          gate_init: float = 1.0, binarizer=None, gate_jitter: float = 0.0, min_keep: float = 0,
          bn_weight: bool = True, gate_position: str = "bn", widths=None, input_size: int = 32) -> VGG:
    """VGG-`depth` at `width` (or with explicit conv `widths`) for `input_size` images: the
    `model/` config group's target."""
    layers = with_widths(depth, widths) if widths is not None else vgg_widths(depth, width)
    return VGG(layers, num_classes, gated, gate_init, binarizer, gate_jitter=gate_jitter,
               min_keep=min_keep, bn_weight=bn_weight, gate_position=gate_position, input_size=input_size)
