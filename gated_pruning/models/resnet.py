"""CIFAR ResNets (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, section 4.2):
a 3x3 stem, three stages of n basic blocks (16, 32, 64 channels times `width`), depth 6n + 2:
`resnet20` (n = 3), `resnet56` (9), `resnet110` (18). A shortcut is the identity, or a 1x1
projection with batch norm where the shape changes (option B).

Gates, each kind optional, all folded into batch norm (`layers.GatedBatchNorm2d`):
- inner (`inner_gates`): per block, one gate per channel of its first conv, the block's own width;
- stream (`gate_stream`): per stage, one gate per channel of the residual stream, shared by every
  layer that writes into the stream (the stem's or the projection's batch norm and every block's
  second batch norm), so a stream channel is gated once and is removed from all of them together;
- block (`block_gates`): per block, one scalar on its residual branch, SSS's structure selection
  of residual blocks (Huang & Wang, ECCV 2018): a block whose gate is 0 is removed and becomes its
  shortcut (the identity, or the projection where the shape changes).

`spec()` describes the network as data: per block its input, inner and output widths and
stride, whether it has a projection and whether it exists; `build(spec=...)` builds any such
network, which is how a pruned network is rebuilt.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gated_pruning.gates import Gate
from gated_pruning.models.families import GATE_POSITIONS, RESNET_BLOCKS, RESNET_STAGES
from gated_pruning.models.layers import GatedBatchNorm2d, fold_gate
from gated_pruning.models.protocol import GatedNetwork, LayerCost, Unit



def stage_widths(width: float) -> list[int]:
    if width <= 0:
        raise ValueError(f"model.width={width} must be > 0")
    return [max(1, int(round(c * width))) for c in RESNET_STAGES]


def default_spec(depth: int, width: float = 1.0) -> dict:
    """The network as data: stem width and, per block, (in, inner, out, stride, present)."""
    if depth not in RESNET_BLOCKS:
        raise ValueError(f"model.depth={depth} is not one of {sorted(RESNET_BLOCKS)} (6n + 2)")
    n, widths = RESNET_BLOCKS[depth], stage_widths(width)
    blocks, c_in = [], widths[0]
    for s, c in enumerate(widths):
        for i in range(n):
            blocks.append({"in": c_in, "inner": c, "out": c, "stride": 2 if s > 0 and i == 0 else 1,
                           "present": True})
            c_in = c
    return {"stem": widths[0], "blocks": blocks}


class BasicBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the shortcut, then ReLU."""

    def __init__(self, c_in: int, inner: int, c_out: int, stride: int, inner_gate: Gate | None = None,
                 stream_gate: Gate | None = None, block_gate: Gate | None = None, bn_weight: bool = True,
                 gate_position: str = "bn"):
        super().__init__()
        if gate_position not in GATE_POSITIONS:
            raise ValueError(f"model.gate_position={gate_position!r} is not one of {GATE_POSITIONS}")
        self.inner_gate, self.block_gate = inner_gate, block_gate
        self.gate_position = gate_position
        self.conv1 = nn.Conv2d(c_in, inner, 3, stride, 1, bias=False)
        folded = [inner_gate] if inner_gate is not None and gate_position == "bn" else []
        self.bn1 = GatedBatchNorm2d(inner, folded, affine_weight=bn_weight or inner_gate is None)
        self.conv2 = nn.Conv2d(inner, c_out, 3, 1, 1, bias=False)
        self.bn2 = GatedBatchNorm2d(c_out, [g for g in (stream_gate, block_gate) if g is not None])
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          GatedBatchNorm2d(c_out, [stream_gate] if stream_gate is not None else []))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        if self.inner_gate is not None and self.gate_position == "relu":
            h = h * self.inner_gate.value().to(h.dtype).view(1, -1, 1, 1)
        return F.relu(self.bn2(self.conv2(h)) + self.shortcut(x))

    def fold(self) -> None:
        """Every gate's kept value into the batch norms; the block is then plain."""
        fold_gate(self.bn1, self.inner_gate, self.gate_position)
        self.bn2.fold()
        if isinstance(self.shortcut, nn.Sequential):
            self.shortcut[1].fold()
        self.inner_gate = self.block_gate = None


class Shortcut(nn.Module):
    """What a removed block becomes: its shortcut, then the ReLU that followed the addition."""

    def __init__(self, shortcut: nn.Module):
        super().__init__()
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.shortcut(x))


class ResNet(GatedNetwork):
    def __init__(self, spec: dict, num_classes: int = 100, gated: bool = True, inner_gates: bool = True,
                 gate_stream: bool = False, block_gates: bool = False, gate_init: float = 1.0,
                 binarizer=None, gate_jitter: float = 0.0, min_keep: float = 0, bn_weight: bool = True,
                 gate_position: str = "bn", in_channels: int = 3, input_size: int = 32):
        super().__init__()
        self.input_size = int(input_size)  # the image side its FLOPs are counted for
        blocks_spec = [dict(b) for b in spec["blocks"]]
        self.in_channels = in_channels
        self.kinds = {"inner": inner_gates, "stream": gate_stream, "block": block_gates}
        make = lambda n: Gate(n, gate_init, binarizer, gate_jitter, min_keep) if gated else None  # noqa: E731
        self.stage_of = stage_of(blocks_spec)
        widths = [int(spec["stem"])] + [b["out"] for i, b in enumerate(blocks_spec)
                                         if i and self.stage_of[i] != self.stage_of[i - 1]]
        streams = [make(c) if gate_stream else None for c in widths]
        self.stream_gates = nn.ModuleList([g for g in streams if g is not None])
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = GatedBatchNorm2d(widths[0], [g for g in streams[:1] if g is not None])
        blocks = []
        for i, b in enumerate(blocks_spec):
            stream = streams[self.stage_of[i]]
            if b.get("present", True):
                inner = make(b["inner"]) if inner_gates else None
                whole = make(1) if block_gates else None
                if whole is not None:
                    whole.min_keep = 0  # a block may go entirely: no floor
                blocks.append(BasicBlock(b["in"], b["inner"], b["out"], b["stride"], inner, stream, whole,
                                         bn_weight, gate_position))
            else:
                blocks.append(Shortcut(BasicBlock(b["in"], 1, b["out"], b["stride"], stream_gate=stream).shortcut))
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.blocks(x)
        if torch.are_deterministic_algorithms_enabled():  # adaptive_avg_pool2d's CUDA backward is not
            x = x.mean(dim=(2, 3))
        else:
            x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)

    # -- the network as data ----------------------------------------------------------------
    def spec(self) -> dict:
        """Stem width and, per block, its input, inner and output widths, stride, presence."""
        blocks = []
        for b in self.blocks:
            if isinstance(b, BasicBlock):
                blocks.append({"in": b.conv1.in_channels, "inner": b.conv1.out_channels,
                               "out": b.conv2.out_channels, "stride": b.conv1.stride[0], "present": True})
            else:
                conv = b.shortcut[0] if isinstance(b.shortcut, nn.Sequential) else None
                c = conv.out_channels if conv is not None else blocks[-1]["out"] if blocks else self.conv1.out_channels
                blocks.append({"in": conv.in_channels if conv is not None else c, "inner": 0, "out": c,
                               "stride": conv.stride[0] if conv is not None else 1, "present": False})
        return {"stem": self.conv1.out_channels, "blocks": blocks}

    def _layout(self):
        """Units in reading order: (unit, what it gates: ("stream", stage) | ("inner", block) |
        ("block", block))."""
        out, seen = [], set()
        spec = self.spec()
        for i, b in enumerate(spec["blocks"]):
            s = self.stage_of[i]
            if self.kinds["stream"] and s not in seen:
                seen.add(s)
                width = spec["stem"] if s == 0 else b["out"]
                out.append((Unit(f"stage{s}.stream", "channels", width, 1), ("stream", s)))
            if b["present"] and self.kinds["inner"]:
                out.append((Unit(f"block{i}.inner", "channels", b["inner"], 1), ("inner", i)))
            if b["present"] and self.kinds["block"]:
                out.append((Unit(f"block{i}", "block", 1, 0), ("block", i)))
        return out

    # -- the protocol -----------------------------------------------------------------------
    def units(self) -> list[Unit]:
        return [u for u, _ in self._layout()]

    def gates(self) -> list[Gate]:
        out = []
        for _, (kind, k) in self._layout():
            if kind == "stream":
                writer = self._stage_writer(k)
                g = writer.gates[0] if writer.gates else None
            else:
                g = getattr(self.blocks[k], "inner_gate" if kind == "inner" else "block_gate")
            if g is not None:
                out.append(g)
        return out

    def regrows(self) -> list[bool]:  # stream gates sit in batch norms before a ReLU
        return [kind == "block" or (kind == "inner" and self.blocks[k].gate_position == "relu")
                for _, (kind, k) in self._layout()]

    def unit_norms(self, unit: int) -> list[nn.Module]:
        _, (kind, k) = self._layout()[unit]
        if kind == "inner":
            return [self.blocks[k].bn1]
        if kind == "block":
            return []
        writers = [self._stage_writer(k)]
        for i, b in enumerate(self.blocks):
            if self.stage_of[i] == k and isinstance(b, BasicBlock):
                writers.append(b.bn2)
        return writers

    def unit_consumer(self, unit: int) -> nn.Module | None:
        _, (kind, k) = self._layout()[unit]
        return self.blocks[k].conv2 if kind == "inner" else None

    def _stage_writer(self, stage: int) -> GatedBatchNorm2d:
        """The batch norm that first writes stage `stage`'s stream (the stem's or a projection's)."""
        if stage == 0:
            return self.bn1
        return self.blocks[self.stage_of.index(stage)].shortcut[1]  # a block or what is left of it

    def cost_table(self) -> list[LayerCost]:
        layout = self._layout()
        index = {what: u for u, (_, what) in enumerate(layout)}
        spec = self.spec()
        size = self.input_size

        def width(kind, k, fixed):  # (factor or None, fixed width)
            u = index.get((kind, k))
            return ((u,), 1) if u is not None else ((), fixed)

        def term(area, *parts):
            factors, coef = (), area
            for f, w in parts:
                factors, coef = factors + f, coef * w
            return LayerCost(coef, factors)

        stream_w = [spec["stem"]] + [spec["blocks"][i]["out"] for i in range(len(spec["blocks"]))
                                     if i and self.stage_of[i] != self.stage_of[i - 1]]
        table = [term(2 * 9 * size * size * self.in_channels, width("stream", 0, stream_w[0]))]
        for i, b in enumerate(spec["blocks"]):
            s_in = self.stage_of[i - 1] if i else 0
            s_out = self.stage_of[i]
            size = (size - 1) // b["stride"] + 1  # a 3x3 conv, padding 1 (and the 1x1 projection)
            area = 2 * size * size
            src, dst = width("stream", s_in, stream_w[s_in]), width("stream", s_out, stream_w[s_out])
            if b["present"]:
                inner, whole = width("inner", i, b["inner"]), width("block", i, 1)
                table += [term(9 * area, src, inner, whole), term(9 * area, inner, dst, whole)]
            if b["stride"] != 1 or b["in"] != b["out"]:
                table.append(term(area, src, dst))
        last = self.stage_of[-1]
        return table + [term(2 * self.fc.out_features, width("stream", last, stream_w[last]))]

    def _fold_gates(self) -> None:
        self.bn1.fold()
        for b in self.blocks:
            if isinstance(b, BasicBlock):
                b.fold()
            elif isinstance(b.shortcut, nn.Sequential):
                b.shortcut[1].fold()
        self.stream_gates = nn.ModuleList()

    def _channel_root(self, unit: int):
        import torch_pruning as tp

        _, (kind, k) = self._layout()[unit]
        if kind == "inner":
            return self.blocks[k].conv1, tp.prune_conv_out_channels
        return self._stage_writer(k), tp.prune_batchnorm_out_channels

    def _remove_blocks(self, units: list[int]) -> None:
        layout = self._layout()
        for k in [layout[u][1][1] for u in units]:
            self.blocks[k] = Shortcut(self.blocks[k].shortcut)


def stage_of(blocks: list[dict]) -> list[int]:
    """The stage of each block: a new stage begins where the shape changes."""
    out, s = [], 0
    for i, b in enumerate(blocks):
        if i and (b["stride"] != 1 or b["out"] != blocks[i - 1]["out"]):
            s += 1
        out.append(s)
    return out


def build(depth: int = 20, width: float = 1.0, num_classes: int = 100, gated: bool = True,
          inner_gates: bool = True, gate_stream: bool = False, block_gates: bool = False,
          gate_init: float = 1.0, binarizer=None, gate_jitter: float = 0.0, min_keep: float = 0,
          bn_weight: bool = True, gate_position: str = "bn", spec: dict | None = None,
          input_size: int = 32) -> ResNet:
    """ResNet-`depth` at `width` (or as described by `spec`) for `input_size` images (32 on
    CIFAR): the `model/` target."""
    return ResNet(spec or default_spec(depth, width), num_classes, gated, inner_gates, gate_stream,
                  block_gates, gate_init, binarizer, gate_jitter, min_keep, bn_weight, gate_position,
                  input_size=input_size)
