"""Optimizers: SGD for the weights; APG (proximal, exact zeros) or L1-subgradient SGD for gates.

The gate optimizers hold only their update math. The L1 part of the penalty reaches them at
every step as per-gate coefficients, `opt.step(l1=...)` (see `penalty.py`: `gamma`, or `gamma`
times a per-channel FLOPs cost, or zero for channels a layer floor protects); APG applies it
through its proximal operator, GateSGD through the subgradient `l1 * sign(gate)`. Neither
applies weight decay to gates.

APG is the momentum form of the modified stochastic APG of Huang & Wang (ECCV 2018), as in
their implementation. Per gate tensor `w` with momentum buffer `v`, gradient `g`, lr `eta`,
L1 coefficient `c` (a scalar or one per gate):

    z = w - eta * g
    s = S_{eta*c}(z)              soft-thresholding: sign(z) * max(|z| - eta*c, 0)
    s = min(max(s, 0), upper)     clamp="prox" (the projection onto [0, upper]: prox of L1 + box)
    v = s - w + mu * v
    w = s + mu * v                the look-ahead point
    w = max(w, 0)                 clamp="lookahead": the authors' MXNet code (`APGNAG`) clamps the
                                  stored look-ahead point after the update, momentum as computed

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

from gated_pruning import kinds
from gated_pruning.gates import Gate

FORWARD_POINTS = ("lookahead", "prox")
CLAMPS = kinds.GATE_OPTIMIZERS["gated_pruning.optim.APG"].clamps  # as declared in kinds.py


def _clamp_mode(clamp) -> str:
    """`clamp` as one of CLAMPS (True/False are accepted as "prox"/"none")."""
    if clamp is True:
        return "prox"
    if clamp is False or clamp is None:
        return "none"
    if clamp not in CLAMPS:
        raise ValueError(f"optimizer.gates.clamp={clamp!r} is not one of {CLAMPS}")
    return clamp


def _check_upper(upper) -> None:
    if upper is not None and not upper > 0:
        raise ValueError(f"optimizer.gates.upper={upper} must be > 0 (or null: no upper bound)")


def _coefficients(l1, params: list) -> list | None:
    """The L1 coefficient of each parameter of `params`: `l1` is None (no L1 term), a number
    (the same for every gate), {parameter: number or tensor of its shape}, or `penalty.L1Terms`
    (per-parameter tensors times one scale: multiplied in one multi-tensor kernel)."""
    if l1 is None:
        return None
    scale = getattr(l1, "scale", None)
    if scale is not None:
        return torch._foreach_mul([l1[p] if p in l1 else torch.zeros_like(p) for p in params], scale)
    if isinstance(l1, dict):  # tensors throughout (a number becomes a 0-dim tensor)
        return [torch.as_tensor(l1.get(p, 0.0), dtype=p.dtype, device=p.device) for p in params]
    return [float(l1)] * len(params)


class APG(torch.optim.Optimizer):
    def __init__(self, params, lr: float, momentum: float = 0.9, clamp="prox",
                 forward: str = "lookahead", upper: float | None = None):
        if not lr > 0:
            raise ValueError(f"optimizer.lr={lr} must be > 0")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"optimizer.momentum={momentum} must be in [0, 1)")
        if forward not in FORWARD_POINTS:
            raise ValueError(f"optimizer.gates.forward={forward!r} is not one of {FORWARD_POINTS}")
        _check_upper(upper)
        super().__init__(params, dict(lr=lr, momentum=momentum, clamp=_clamp_mode(clamp),
                                      forward=forward, upper=upper))

    def _state(self, p: torch.Tensor) -> dict:
        state = self.state[p]
        if not state:
            state["momentum_buffer"] = torch.zeros_like(p)
            state["prox"] = p.detach().clone()       # s: the gate as trained
            state["lookahead"] = p.detach().clone()  # w: where the gradient is taken
        return state

    @torch.no_grad()
    def step(self, closure=None, l1=None):
        """One step; `l1`: the L1 coefficients (None, a number, or {param: tensor})."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            lr, mu = group["lr"], group["momentum"]
            states = [self._state(p) for p in params]
            v = [st["momentum_buffer"] for st in states]
            w = [st["lookahead"] for st in states]
            # one multi-tensor kernel per line over all gate tensors (the same math as the
            # per-tensor form in the module docstring, with far fewer kernel launches)
            if group["forward"] == "lookahead":
                torch._foreach_copy_(w, params)                        # the parameter is w
            z = torch._foreach_add(w, [p.grad for p in params], alpha=-lr)  # z = w - lr*g
            coeffs = _coefficients(l1, params)
            s = torch._foreach_abs(z)                                  # s = S_{lr*c}(z)
            if coeffs is not None:
                torch._foreach_sub_(s, torch._foreach_mul(coeffs, lr) if torch.is_tensor(coeffs[0])
                                    else [lr * c for c in coeffs])
            torch._foreach_clamp_min_(s, 0.0)
            torch._foreach_mul_(s, torch._foreach_sign(z))
            if group["clamp"] == "prox":
                torch._foreach_clamp_min_(s, 0.0)                      # s = max(s, 0)
            if group["upper"] is not None:
                torch._foreach_clamp_max_(s, group["upper"])           # s = min(s, upper)
            torch._foreach_mul_(v, mu)                                 # v = s - w + mu*v
            torch._foreach_add_(v, s)
            torch._foreach_sub_(v, w)
            torch._foreach_copy_(w, s)                                 # w = s + mu*v
            torch._foreach_add_(w, v, alpha=mu)
            if group["clamp"] == "lookahead":
                torch._foreach_clamp_min_(w, 0.0)                      # w = max(w, 0)
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
    """SGD with momentum on `data loss + sum_i c_i |gate_i|`, via the subgradient c_i*sign(gate_i).

    The baseline for APG (and Network Slimming's optimizer): it never lands exactly on zero.
    `clamp=True` projects gates onto [0, upper] after each step (exact zeros from below).
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, clamp: bool = False,
                 nesterov: bool = False, upper: float | None = None):
        if not lr > 0:
            raise ValueError(f"optimizer.lr={lr} must be > 0")
        _check_upper(upper)
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=0.0, nesterov=nesterov)
        for group in self.param_groups:
            group.setdefault("clamp", bool(clamp))
            group.setdefault("upper", upper)

    @torch.no_grad()
    def step(self, closure=None, l1=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            coeffs = _coefficients(l1, params)
            if coeffs is not None and params:  # grad += c * sign(gate)
                signs = torch._foreach_sign(params)
                torch._foreach_mul_(signs, coeffs)
                torch._foreach_add_([p.grad for p in params], signs)
        loss = super().step(closure)
        for group in self.param_groups:
            if group["clamp"] and group["params"]:
                torch._foreach_clamp_min_(list(group["params"]), 0.0)
            if group["upper"] is not None and group["params"]:
                torch._foreach_clamp_max_(list(group["params"]), group["upper"])
        return loss

    def prox_points(self) -> dict:
        return {}  # the parameters are the gates as trained

    def prox_view(self):
        return contextlib.nullcontext()

    def commit_prox(self) -> None:
        pass


def split_parameters(model: torch.nn.Module) -> tuple[list, list]:
    """(weights, gates): gate parameters are those of `Gate` modules."""
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
