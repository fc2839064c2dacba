"""Channel gates and the binarizers that turn a float gate into the value the forward pass uses.

A `Gate` holds one float parameter per channel and multiplies channel c of its input by
`binarizer(gate)[c]`. Binarizers are small autograd Functions behind one interface:

    binarizer(weight, training) -> the per-channel multiplier used in the forward pass
    binarizer.hard(weight)      -> the deterministic value kept after training (and pruned on)

`NoBinarizer` keeps float gates (the SSS paper). `ThresholdBinarizer` and `StochasticBinarizer`
give 0/1 gates trained with a straight-through estimator (STE): the backward pass sends the
gradient to the float gate as if binarization were the identity (`estimator="identity"`), or as
if it were clamp(gate, 0, 1) (`estimator="clipped"`: zero gradient outside [0, 1]).
"""
from __future__ import annotations

import torch
from torch import nn

ESTIMATORS = ("identity", "clipped")


class _BinarizeSTE(torch.autograd.Function):
    """Forward: the given 0/1 tensor. Backward: straight-through to the float gate."""

    @staticmethod
    def forward(ctx, weight, binary, clipped: bool):
        ctx.clipped = clipped
        if clipped:
            ctx.save_for_backward(weight)
        return binary

    @staticmethod
    def backward(ctx, grad):
        if ctx.clipped:
            (weight,) = ctx.saved_tensors
            grad = grad * ((weight >= 0) & (weight <= 1)).to(grad.dtype)
        return grad, None, None


class NoBinarizer:
    """Float gates: the forward pass multiplies by the gate itself."""

    binary = False

    def __call__(self, weight: torch.Tensor, training: bool) -> torch.Tensor:
        return weight

    def hard(self, weight: torch.Tensor) -> torch.Tensor:
        return weight

    def __repr__(self) -> str:
        return "NoBinarizer()"


class ThresholdBinarizer:
    """Deterministic 0/1 gates: 1 where gate > threshold, else 0; STE backward."""

    binary = True

    def __init__(self, threshold: float = 0.5, estimator: str = "identity"):
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"binarizer.threshold={threshold} is outside [0, 1): gates start at "
                             "gate_init (1.0 by default) and must be able to fall below it")
        if estimator not in ESTIMATORS:
            raise ValueError(f"binarizer.estimator={estimator!r} is not one of {ESTIMATORS}")
        self.threshold = float(threshold)
        self.estimator = estimator

    def hard(self, weight: torch.Tensor) -> torch.Tensor:
        return (weight > self.threshold).to(weight.dtype)

    def __call__(self, weight: torch.Tensor, training: bool) -> torch.Tensor:
        return _BinarizeSTE.apply(weight, self.hard(weight.detach()), self.estimator == "clipped")

    def __repr__(self) -> str:
        return f"ThresholdBinarizer(threshold={self.threshold}, estimator={self.estimator!r})"


class StochasticBinarizer(ThresholdBinarizer):
    """Training: gate ~ Bernoulli(clamp(gate, 0, 1)), STE backward. Evaluation: threshold."""

    def __call__(self, weight: torch.Tensor, training: bool) -> torch.Tensor:
        if not training:
            return super().__call__(weight, training)
        binary = torch.bernoulli(weight.detach().clamp(0.0, 1.0))
        return _BinarizeSTE.apply(weight, binary, self.estimator == "clipped")

    def __repr__(self) -> str:
        return f"StochasticBinarizer(threshold={self.threshold}, estimator={self.estimator!r})"


class Gate(nn.Module):
    """One learnable scalar per channel; `forward(x)` returns x * binarizer(gate) channel-wise."""

    def __init__(self, num_channels: int, init: float = 1.0, binarizer=None):
        super().__init__()
        self.weight = nn.Parameter(torch.full((num_channels,), float(init)))
        self.binarizer = binarizer if binarizer is not None else NoBinarizer()

    def value(self) -> torch.Tensor:
        """The per-channel multiplier of this forward pass (differentiable, STE for binary)."""
        return self.binarizer(self.weight, self.training)

    def hard(self) -> torch.Tensor:
        """The deterministic gate value kept after training: 0/1 for binary gates."""
        return self.binarizer.hard(self.weight.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.value().view(1, -1, *([1] * (x.dim() - 2)))

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, binarizer={self.binarizer!r}"
