"""Penalties on the gates: `gamma * R(gates)`, kept apart from the gate optimizer.

A penalty has two parts, either of which may be empty:

- an L1 part `sum_i c_i |g_i|`: its per-gate coefficients (`gamma * c_i`) go to the gate
  optimizer at every step (`opt.step(l1=penalty.l1())`), which applies them through its
  proximal operator (APG: exact zeros) or as the subgradient (GateSGD);
- a smooth part, added to the training loss (`penalty.loss()`), differentiated by autograd.

`c_i` is 1, or with `flops_weighted` the FLOPs that removing channel i saves in the dense network
(`models.protocol.GatedNetwork.unit_costs`: for a residual block, its whole branch), divided by the mean over all gates so that gamma keeps the meaning it
has without weighting. Channels that a layer floor holds open (`model.min_keep`) get c_i = 0.

- `L1`: R = sum c_i |g_i|, the SSS paper (Huang & Wang, ECCV 2018) and Network Slimming.
- `Polarization`: R = t * sum c_i |g_i| - sum c_i |g_i - mean(g)| (Zhuang et al., NeurIPS 2020),
  the mean over each layer (`scope="layer"`) or over all gates (`scope="global"`, as their code);
  pair it with gates bounded to [0, 1] (`optimizer.gates.upper=1`).
- `ExpectedL0`: R = sum c_i P(g_i != 0) for hard-concrete gates (Louizos et al., ICLR 2018).

`gamma` is a 0-dim tensor on the gates' device: the budget controller (`budget.py`) rewrites it
during training without a host synchronisation.
"""
from __future__ import annotations

import torch

SCOPES = ("layer", "global")


class L1Terms(dict):
    """{gate parameter: c_i}, every one times `scale` (gamma, a 0-dim tensor that the budget moves):
    the gate optimizer multiplies them in one multi-tensor kernel (`optim._coefficients`)."""

    def __init__(self, scale: torch.Tensor, weights: dict):
        super().__init__(weights)
        self.scale = scale

    def scaled(self) -> dict:
        """{gate parameter: scale * c_i} (for the log, and tests)."""
        return {p: self.scale * c for p, c in self.items()}


class Penalty:
    def __init__(self, gamma: float, flops_weighted: bool = False):
        if not gamma >= 0:
            raise ValueError(f"gamma={gamma} must be >= 0")
        self.gamma0 = float(gamma)
        self.flops_weighted = bool(flops_weighted)
        self.gates: list = []
        self.costs: list[torch.Tensor] = []
        self.gamma = torch.tensor(self.gamma0)

    def bind(self, model) -> "Penalty":
        """Attach to `model`'s gates (call after the model is on its device)."""
        self.gates = model.gates()
        if not self.gates:
            return self
        if not isinstance(self, ExpectedL0) and hasattr(self.gates[0].binarizer, "prob_open"):
            raise ValueError("binarizer=hard_concrete needs penalty=l0 (its latent weight is "
                             "log(alpha), not a gate value that an L1 term could shrink)")
        device = self.gates[0].weight.device
        per_layer = model.unit_costs() if self.flops_weighted else [1.0] * len(self.gates)
        n = sum(g.weight.numel() for g in self.gates)
        mean = sum(c * g.weight.numel() for c, g in zip(per_layer, self.gates)) / n
        self.costs = [torch.full_like(g.weight, c / mean, requires_grad=False).detach()
                      for c, g in zip(per_layer, self.gates)]
        self.gamma = torch.tensor(self.gamma0, device=device)
        return self

    def weights(self) -> list[torch.Tensor]:
        """c_i per gate tensor, zero where a layer floor holds the channel open."""
        out = []
        for g, c in zip(self.gates, self.costs):
            keep = g.floor()
            out.append(c if keep is None else c.masked_fill(keep, 0.0))
        return out

    def l1(self) -> dict | None:
        """{gate parameter: gamma * (L1 coefficient) * c_i} for the gate optimizer, or None."""
        return None

    def loss(self) -> torch.Tensor | None:
        """The smooth part, times gamma, for the training loss (None: no smooth part)."""
        return None

    def value(self) -> torch.Tensor:
        """gamma * R(gates) at the current parameters, a 0-dim tensor (for the log)."""
        with torch.no_grad():
            total = torch.zeros((), device=self.gamma.device)
            smooth = self.loss()
            if smooth is not None:
                total = total + smooth
            l1 = self.l1()
            for p, c in (l1.scaled() if isinstance(l1, L1Terms) else l1 or {}).items():
                total = total + (c * p.abs()).sum()
            return total


class L1(Penalty):
    """gamma * sum_i c_i |g_i|, all of it in the gate optimizer (APG: prox; SGD: subgradient)."""

    def l1(self) -> dict | None:
        if not self.gates:
            return None
        return L1Terms(self.gamma, {g.weight: w for g, w in zip(self.gates, self.weights())})


class Polarization(Penalty):
    """gamma * (t * sum c_i |g_i| - sum c_i |g_i - mean(g)|): the first term in the gate
    optimizer, the second (which pushes gates away from their mean) in the loss."""

    def __init__(self, gamma: float, t: float = 1.2, scope: str = "layer", flops_weighted: bool = False):
        super().__init__(gamma, flops_weighted)
        if not t > 0:
            raise ValueError(f"penalty.t={t} must be > 0")
        if scope not in SCOPES:
            raise ValueError(f"penalty.scope={scope!r} is not one of {SCOPES}")
        self.t, self.scope = float(t), scope

    def l1(self) -> dict | None:
        if not self.gates:
            return None
        return L1Terms(self.gamma * self.t, {g.weight: w for g, w in zip(self.gates, self.weights())})

    def loss(self) -> torch.Tensor | None:
        """-gamma * sum c_i |g_i - mean(g)|, every gate tensor at once: the gates laid end to end,
        the means of their layers (or one mean) by a segment sum, a handful of kernels whatever the
        number of layers."""
        if not self.gates:
            return None
        flat = torch.cat([g.weight for g in self.gates])
        if self.scope == "global":
            mean = flat.mean()
        else:
            if getattr(self, "_segments", None) is None or self._segments.device != flat.device:
                sizes = torch.tensor([g.weight.numel() for g in self.gates], device=flat.device)
                self._segments = torch.repeat_interleave(torch.arange(len(self.gates), device=flat.device), sizes)
                self._sizes = sizes.to(flat.dtype)
            sums = torch.zeros(len(self.gates), dtype=flat.dtype, device=flat.device).index_add(0, self._segments, flat)
            mean = (sums / self._sizes)[self._segments]
        weights = self.weights()
        costs = self._flat_costs if all(w is c for w, c in zip(weights, self.costs)) else torch.cat(weights)
        return -self.gamma * (costs * (flat - mean).abs()).sum()

    def bind(self, model) -> "Polarization":
        super().bind(model)
        self._segments = None
        self._flat_costs = torch.cat(self.costs) if self.costs else None
        return self


class ExpectedL0(Penalty):
    """gamma * sum_i c_i P(g_i != 0) for hard-concrete gates: all of it in the loss."""

    def bind(self, model) -> "ExpectedL0":
        super().bind(model)
        for g in self.gates:
            if not hasattr(g.binarizer, "prob_open"):
                raise ValueError(f"penalty=l0 needs binarizer=hard_concrete (it penalizes the "
                                 f"probability that a gate is open), not {g.binarizer!r}")
        return self

    def loss(self) -> torch.Tensor | None:
        if not self.gates:
            return None
        return self.gamma * sum((c * g.binarizer.prob_open(g.weight)).sum()
                                for g, c in zip(self.gates, self.weights()))
