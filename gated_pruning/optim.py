"""Optimizers: SGD for the weights; APG (proximal, exact zeros) or L1-subgradient SGD for gates.

Both gate optimizers own the L1 penalty `gamma * sum|gate|`: the training loss is the data loss
only, and the penalty enters either through its proximal operator (APG) or its subgradient
`gamma * sign(gate)` (GateSGD). Neither applies weight decay to gates.

APG is the momentum form of the modified stochastic APG of Huang & Wang (ECCV 2018), as in
their implementation. Per gate tensor `w` with momentum buffer `v`, gradient `g`, lr `eta`:

    z = w - eta * g
    s = S_{eta*gamma}(z)          soft-thresholding: sign(z) * max(|z| - eta*gamma, 0)
    s = max(s, 0)                 only with clamp=True (the paper's code clamps gates at zero)
    v = s - w + mu * v
    w = s + mu * v                the look-ahead point

`s` is the gate "as trained" (it holds the exact zeros); `w` is where the next gradient is taken.
`forward="lookahead"` (the paper) stores `w` in the parameter, so the forward pass and its
gradient see the look-ahead point; `forward="prox"` stores `s` in the parameter and keeps `w` in
the optimizer state, so the forward pass sees exact zeros (the gradient is then taken at `s`).
Either way `prox_view()` puts `s` in the parameters for evaluation, statistics and pruning.
"""
from __future__ import annotations

import contextlib
import math
from typing import Sequence

import torch

FORWARD_POINTS = ("lookahead", "prox")


class APG(torch.optim.Optimizer):
    def __init__(self, params, lr: float, momentum: float = 0.9, gamma: float = 0.0,
                 clamp: bool = True, forward: str = "lookahead"):
        if not lr > 0:
            raise ValueError(f"optimizer.lr={lr} must be > 0")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"optimizer.momentum={momentum} must be in [0, 1)")
        if not gamma >= 0:
            raise ValueError(f"gamma={gamma} must be >= 0")
        if forward not in FORWARD_POINTS:
            raise ValueError(f"optimizer.gates.forward={forward!r} is not one of {FORWARD_POINTS}")
        super().__init__(params, dict(lr=lr, momentum=momentum, gamma=gamma, clamp=clamp,
                                      forward=forward))

    def _state(self, p: torch.Tensor) -> dict:
        state = self.state[p]
        if not state:
            state["momentum_buffer"] = torch.zeros_like(p)
            state["prox"] = p.detach().clone()       # s: the gate as trained
            state["lookahead"] = p.detach().clone()  # w: where the gradient is taken
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            lr, mu, gamma = group["lr"], group["momentum"], group["gamma"]
            states = [self._state(p) for p in params]
            v = [st["momentum_buffer"] for st in states]
            w = [st["lookahead"] for st in states]
            # one multi-tensor kernel per line over all gate tensors (the same math as the
            # per-tensor form in the module docstring, with far fewer kernel launches)
            if group["forward"] == "lookahead":
                torch._foreach_copy_(w, params)                        # the parameter is w
            z = torch._foreach_add(w, [p.grad for p in params], alpha=-lr)  # z = w - lr*g
            s = torch._foreach_abs(z)                                  # s = S_{lr*gamma}(z)
            torch._foreach_sub_(s, lr * gamma)
            torch._foreach_clamp_min_(s, 0.0)
            torch._foreach_mul_(s, torch._foreach_sign(z))
            if group["clamp"]:
                torch._foreach_clamp_min_(s, 0.0)                      # s = max(s, 0)
            torch._foreach_mul_(v, mu)                                 # v = s - w + mu*v
            torch._foreach_add_(v, s)
            torch._foreach_sub_(v, w)
            torch._foreach_copy_(w, s)                                 # w = s + mu*v
            torch._foreach_add_(w, v, alpha=mu)
            torch._foreach_copy_([st["prox"] for st in states], s)
            torch._foreach_copy_(params, w if group["forward"] == "lookahead" else s)
        return loss

    def prox_points(self) -> dict:
        """{param: s} for every parameter stepped so far (others are their own prox point)."""
        return {p: st["prox"] for p, st in self.state.items() if "prox" in st}

    @contextlib.contextmanager
    def prox_view(self):
        """Temporarily hold the prox point `s` in the parameters (evaluate, count, prune)."""
        saved = []
        with torch.no_grad():
            for p, s in self.prox_points().items():
                saved.append((p, p.detach().clone()))
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, old in saved:
                    p.copy_(old)

    def commit_prox(self) -> None:
        """Write `s` into the parameters for good (end of training)."""
        with torch.no_grad():
            for p, s in self.prox_points().items():
                p.copy_(s)
                self.state[p]["lookahead"].copy_(s)
                self.state[p]["momentum_buffer"].zero_()


class GateSGD(torch.optim.SGD):
    """SGD with momentum on `data loss + gamma * sum|gate|`, via the subgradient gamma*sign(gate).

    The baseline for APG: it never lands exactly on zero. `clamp=True` clamps gates at zero
    after each step, like APG's option.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, gamma: float = 0.0,
                 clamp: bool = False, nesterov: bool = False):
        if not lr > 0:
            raise ValueError(f"optimizer.lr={lr} must be > 0")
        if not gamma >= 0:
            raise ValueError(f"gamma={gamma} must be >= 0")
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=0.0, nesterov=nesterov)
        for group in self.param_groups:
            group.setdefault("gamma", gamma)
            group.setdefault("clamp", clamp)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if group["gamma"] and params:  # grad += gamma * sign(gate)
                torch._foreach_add_([p.grad for p in params], torch._foreach_sign(params),
                                    alpha=group["gamma"])
        loss = super().step(closure)
        for group in self.param_groups:
            if group["clamp"] and group["params"]:
                torch._foreach_clamp_min_(list(group["params"]), 0.0)
        return loss

    def prox_view(self):
        return contextlib.nullcontext()

    def commit_prox(self) -> None:
        pass


def split_parameters(model: torch.nn.Module) -> tuple[list, list]:
    """(weights, gates): gate parameters are those of `Gate` modules."""
    from gated_pruning.gates import Gate

    gate_ids = {id(m.weight) for m in model.modules() if isinstance(m, Gate)}
    weights, gates = [], []
    for p in model.parameters():
        (gates if id(p) in gate_ids else weights).append(p)
    return weights, gates


def lr_lambda(schedule: str, total_steps: int, steps_per_epoch: int,
              milestones: Sequence[float] = (0.5, 0.75), factor: float = 0.1,
              warmup_epochs: float = 0.0):
    """Multiplier of the base lr at optimizer step t (stepped every batch).

    cosine: half a cosine from 1 to 0 over the run; multistep: times `factor` at each
    milestone, given as fractions of the run (0.5, 0.75 = the paper's epochs 80 and 120 of 160);
    constant: 1. A linear warm-up over `warmup_epochs` multiplies any of them.
    """
    warmup = int(round(warmup_epochs * steps_per_epoch))
    bounds = [int(round(m * total_steps)) for m in milestones]

    def f(t: int) -> float:
        w = min(1.0, (t + 1) / warmup) if warmup else 1.0
        if schedule == "cosine":
            return w * 0.5 * (1.0 + math.cos(math.pi * min(t, total_steps) / max(1, total_steps)))
        if schedule == "multistep":
            return w * factor ** sum(t >= b for b in bounds)
        if schedule == "constant":
            return w
        raise ValueError(f"optimizer.schedule={schedule!r} is not one of cosine, multistep, constant")

    f(0)  # validate the schedule name now, not at the first step
    return f
