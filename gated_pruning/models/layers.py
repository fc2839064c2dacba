"""Gates folded into batch norm: `GatedBatchNorm2d` multiplies its output by the values of one or
more gates (a gate per channel, or a scalar block gate), through the affine parameters:
g * (w * xhat + b) = (g*w) * xhat + g*b, so a gate costs no extra pass over the activation.

With `scale_only`, the gates multiply the weight alone: g * w * xhat + b. The gate is then batch
norm's scale (the weight stays 1, frozen) and a closed channel outputs its bias, a constant: the
cut moves it into the next layer (`vgg.VGG._absorb_constants`). `take_scale()` moves a trained
weight into the gate, so a dense network's gamma becomes the gate that L1 shrinks (Ye et al.).

The gates are referenced, not owned (a residual-stream gate is shared by every batch norm that
writes into the stream; the model owns its gates once). Without gates, or once `fold()` has
turned the gates into the affine parameters, it is a plain `nn.BatchNorm2d` (called as one, so
that tracing tools such as Torch-Pruning's dependency graph see it). Under torchrun,
training-mode statistics are those of the global batch (`distributed.sync_batch_norm`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gated_pruning import distributed


class GatedBatchNorm2d(nn.BatchNorm2d):
    def __init__(self, num_features: int, gates=(), affine_weight: bool = True, scale_only: bool = False):
        super().__init__(num_features)
        self.gates = list(gates)  # a plain list: referenced, not registered as submodules
        self.scale_only = scale_only
        if not affine_weight:  # the gate is the channel's only scale (batch norm's weight stays 1)
            self.weight.requires_grad_(False)

    def gate_value(self) -> torch.Tensor | None:
        """The product of the gates' values this forward pass (None without gates)."""
        value = None
        for gate in self.gates:
            v = gate.value()
            value = v if value is None else value * v
        return value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gate_value()
        if g is None and not (self.training and distributed.world_size() > 1):
            return super().forward(x)
        weight, bias = (self.weight, self.bias) if g is None else \
            (self.weight * g, self.bias if self.scale_only else self.bias * g)
        if self.training and distributed.world_size() > 1:
            return distributed.sync_batch_norm(x, self, weight, bias)
        if self.training:
            self.num_batches_tracked.add_(1)
        return F.batch_norm(x, self.running_mean, self.running_var, weight, bias, self.training,
                            self.momentum, self.eps)

    @torch.no_grad()
    def fold(self, value: torch.Tensor | None = None) -> None:
        """Multiply the affine parameters by `value` (default: the gates' kept values) and forget
        the gates: the layer then computes, as a plain batch norm, what it computed gated."""
        if value is None:
            value = None
            for gate in self.gates:
                v = gate.hard()
                value = v if value is None else value * v
        if value is not None:
            self.weight.copy_(self.weight * value)
            if not self.scale_only:
                self.bias.copy_(self.bias * value)
        self.gates = []
        self.weight.requires_grad_(True)

    @torch.no_grad()
    def take_scale(self) -> None:
        """For a scale-only norm with its one gate: the weight (a trained gamma) becomes the gate's
        value and the weight 1, so the layer computes the same and the gate is its scale."""
        if self.scale_only and len(self.gates) == 1:
            gate = self.gates[0]
            gate.weight.copy_(gate.weight * self.weight)
            self.weight.fill_(1.0)


@torch.no_grad()
def fold_gate(bn: GatedBatchNorm2d, gate, position: str) -> None:
    """Fold a channel gate into the batch norm before it: at `position="bn"` it is one of the
    norm's own gates already; after the ReLU ("relu") its kept value g >= 0 moves in front of it
    (g * relu(z) = relu(g * z)), which a negative gate would not allow."""
    if gate is not None and position == "relu":
        g = gate.hard()
        if bool((g < 0).any()):
            raise ValueError("a negative gate after the ReLU cannot be folded into batch norm: "
                             "gate_position=relu needs gates clamped at 0")
        bn.fold(g)
    else:
        bn.fold()
