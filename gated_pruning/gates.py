"""Channel gates and the binarizers that turn a latent float gate into the value the forward uses.

A `Gate` holds one float parameter per channel and multiplies channel c of its input by
`binarizer(gate)[c]`. Binarizers are small objects behind one interface:

    binarizer(weight, training, keep) -> the per-channel multiplier used in the forward pass
    binarizer.hard(weight, keep)      -> the deterministic value kept after training (pruned on)

`keep` (a bool mask or None) marks channels that a layer floor (`Gate.min_keep`) holds open:
binary gates are 1 there whatever their latent value.

- `NoBinarizer`: float gates (the SSS paper).
- `ThresholdBinarizer`, `StochasticBinarizer`: 0/1 gates trained with a straight-through
  estimator (STE): the backward pass sends the gradient to the float gate as if binarization
  were the identity (`estimator="identity"`), or as if it were clamp(gate, 0, 1)
  (`estimator="clipped"`: zero gradient outside [0, 1]).
- `HardConcreteBinarizer`: L0 gates of Louizos, Welling & Kingma (ICLR 2018). The latent weight
  is log(alpha); training samples a stretched, clipped concrete variable in [0, 1] (exact 0 and
  1 with positive probability), and the penalty (`penalty=l0`) is the probability that a gate is
  non-zero. After training the gate is the exact 0/1 mask `log(alpha) > 0`.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from gated_pruning import kinds

# the estimators each kind takes, as declared in kinds.py
ESTIMATORS = kinds.BINARIZERS["gated_pruning.gates.ThresholdBinarizer"].estimators
HC_ESTIMATORS = kinds.BINARIZERS["gated_pruning.gates.HardConcreteBinarizer"].estimators


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


def _open(binary: torch.Tensor, keep) -> torch.Tensor:
    return binary if keep is None else torch.where(keep, torch.ones_like(binary), binary)


class NoBinarizer:
    """Float gates: the forward pass multiplies by the gate itself (a floor changes nothing:
    it only exempts the channels from the penalty)."""

    binary = False

    def __call__(self, weight: torch.Tensor, training: bool, keep=None) -> torch.Tensor:
        return weight

    def hard(self, weight: torch.Tensor, keep=None) -> torch.Tensor:
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

    def hard(self, weight: torch.Tensor, keep=None) -> torch.Tensor:
        return _open((weight > self.threshold).to(weight.dtype), keep)

    def __call__(self, weight: torch.Tensor, training: bool, keep=None) -> torch.Tensor:
        return _BinarizeSTE.apply(weight, self.hard(weight.detach(), keep), self.estimator == "clipped")

    def __repr__(self) -> str:
        return f"ThresholdBinarizer(threshold={self.threshold}, estimator={self.estimator!r})"


class StochasticBinarizer(ThresholdBinarizer):
    """Training: gate ~ Bernoulli(clamp(gate, 0, 1)), STE backward. Evaluation: threshold."""

    def __call__(self, weight: torch.Tensor, training: bool, keep=None) -> torch.Tensor:
        if not training:
            return super().__call__(weight, training, keep)
        binary = _open(torch.bernoulli(weight.detach().clamp(0.0, 1.0)), keep)
        return _BinarizeSTE.apply(weight, binary, self.estimator == "clipped")

    def __repr__(self) -> str:
        return f"StochasticBinarizer(threshold={self.threshold}, estimator={self.estimator!r})"


class HardConcreteBinarizer:
    """Hard-concrete gates on log(alpha) = the latent weight (Louizos, Welling & Kingma, ICLR 2018).

    Training: u ~ U(0, 1), s = sigmoid((log u - log(1-u) + log_alpha) / beta),
    z = clamp(s * (zeta - gamma) + gamma, 0, 1), with beta = `temperature`, (gamma, zeta) =
    `stretch`. `estimator="relaxed"` multiplies by z itself (the paper); "straight_through"
    multiplies by 1[z > 0.5] and passes the gradient of z (0/1 in training as well).
    Evaluation and the kept gate: 1[log_alpha > 0] (the paper's test-time gate
    clamp(sigmoid(log_alpha)*(zeta-gamma)+gamma, 0, 1), rounded at 1/2: exactly 0 or 1).
    `prob_open` is P(z != 0) = sigmoid(log_alpha - beta*log(-gamma/zeta)), the expected-L0 term.
    """

    binary = True

    def __init__(self, temperature: float = 2.0 / 3.0, stretch=(-0.1, 1.1), estimator: str = "relaxed"):
        lo, hi = (float(v) for v in stretch)
        if not temperature > 0:
            raise ValueError(f"binarizer.temperature={temperature} must be > 0")
        if not (lo < 0.0 and hi > 1.0):
            raise ValueError(f"binarizer.stretch={[lo, hi]} must be [gamma < 0, zeta > 1]")
        if estimator not in HC_ESTIMATORS:
            raise ValueError(f"binarizer.estimator={estimator!r} is not one of {HC_ESTIMATORS}")
        self.temperature, self.lo, self.hi, self.estimator = float(temperature), lo, hi, estimator

    def sample(self, weight: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        """z for uniform noise `u` (default: drawn now)."""
        u = (torch.rand_like(weight) if u is None else u).clamp(1e-6, 1.0 - 1e-6)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + weight) / self.temperature)
        return (s * (self.hi - self.lo) + self.lo).clamp(0.0, 1.0)

    def hard(self, weight: torch.Tensor, keep=None) -> torch.Tensor:
        return _open((weight > 0).to(weight.dtype), keep)

    def __call__(self, weight: torch.Tensor, training: bool, keep=None) -> torch.Tensor:
        if not training:
            return self.hard(weight.detach(), keep)
        z = self.sample(weight)
        if self.estimator == "straight_through":
            z = z + ((z > 0.5).to(z.dtype) - z).detach()
        return z if keep is None else torch.where(keep, torch.ones_like(z), z)

    def prob_open(self, weight: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(weight - self.temperature * math.log(-self.lo / self.hi))

    def __repr__(self) -> str:
        return (f"HardConcreteBinarizer(temperature={self.temperature:g}, stretch=[{self.lo:g}, "
                f"{self.hi:g}], estimator={self.estimator!r})")


def floor_count(min_keep: float, channels: int) -> int:
    """Channels a layer floor holds open: `min_keep` < 1 is a fraction (rounded up), >= 1 a count."""
    if min_keep < 0 or (min_keep >= 1 and min_keep != int(min_keep)):
        raise ValueError(f"model.min_keep={min_keep} must be 0 (off), a fraction in (0, 1) or a "
                         "whole number of channels")
    if min_keep == 0:
        return 0
    k = math.ceil(min_keep * channels) if min_keep < 1 else int(min_keep)
    return max(1, min(channels, k))


class Gate(nn.Module):
    """One learnable scalar per channel; `forward(x)` returns x * binarizer(gate) channel-wise.

    `init` (+ Gaussian `jitter` of that std) is the initial latent value; `min_keep` is a layer
    floor: the `floor_count(min_keep)` channels with the largest latent gates are held open
    (binary gates) and exempt from the penalty, so no layer can die. `freeze(mask)` (a FLOPs
    budget's end) fixes the architecture: channels outside `mask` are closed for good (gate 0);
    binary gates inside it stay 1 whatever their latent value, float gates keep training as
    per-channel scales. The mask and the frozen flag are buffers (saved, resumed).
    """

    def __init__(self, num_channels: int, init: float = 1.0, binarizer=None, jitter: float = 0.0,
                 min_keep: float = 0):
        super().__init__()
        weight = torch.full((num_channels,), float(init))
        if jitter:
            weight += float(jitter) * torch.randn(num_channels)
        self.weight = nn.Parameter(weight)
        self.binarizer = binarizer if binarizer is not None else NoBinarizer()
        self.min_keep = floor_count(min_keep, num_channels)
        self.register_buffer("mask", torch.ones(num_channels, dtype=torch.bool))
        self.register_buffer("frozen", torch.zeros((), dtype=torch.bool))

    def floor(self) -> torch.Tensor | None:
        """Bool mask of the channels the layer floor holds open (None without a floor)."""
        if not self.min_keep:
            return None
        w = self.weight.detach()
        keep = torch.zeros(w.shape, dtype=torch.bool, device=w.device)
        return keep.index_fill_(0, w.topk(self.min_keep).indices, True)

    def freeze(self, mask: torch.Tensor) -> None:
        """Fix the architecture: keep only the channels in `mask` (see the class docstring)."""
        self.mask &= mask.to(self.mask.device)
        self.frozen.fill_(True)

    def _fix(self, value: torch.Tensor) -> torch.Tensor:
        """Frozen binary gates are their mask (without a branch on the buffer's value, which
        would read it back to the host and break a compiled graph)."""
        if not self.binarizer.binary:
            return value
        return torch.where(self.frozen, self.mask.to(value.dtype), value)

    def value(self) -> torch.Tensor:
        """The per-channel multiplier of this forward pass (differentiable, STE for binary)."""
        return self._fix(self.binarizer(self.weight, self.training, self.floor()) * self.mask)

    def hard(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The deterministic gate value kept after training (0/1 for binary gates), of the
        parameter or of `weight` (e.g. APG's prox point)."""
        w = self.weight.detach() if weight is None else weight.detach()
        return self._fix(self.binarizer.hard(w, self.floor()) * self.mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.value().view(1, -1, *([1] * (x.dim() - 2)))

    def extra_repr(self) -> str:
        floor = f", min_keep={self.min_keep}" if self.min_keep else ""
        return f"{self.weight.numel()}, binarizer={self.binarizer!r}{floor}"
