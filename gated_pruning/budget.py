"""Prune to a FLOPs budget: a controller that sets the penalty strength during training.

`FlopsBudget` reads, after every step, the FLOPs of the network that pruning would produce now
(the hard gates as trained: APG's prox point, 0/1 for binary gates; a channel counts as removed
when |gate| <= `threshold`, the same rule as `prune.threshold`), as a fraction of the dense
network's, and compares it with a schedule that goes linearly from 1 at step `start * T` to
`target` at step `(start + ramp) * T` (T: the run's steps) and then stays there.

The penalty strength follows a proportional-integral law in log space:

    e         = kept_fraction - schedule(t)          (> 0: too many FLOPs left)
    I        += ki * e                               (clamped to [log(min_gamma), log(max_gamma)])
    log gamma = I + kp * e

so gamma grows while the network is above its schedule and shrinks (letting gates reopen) when
pruning overshoots. It starts from the run's `gamma`. Everything stays on the device: no step
reads a value back to the host.

At step `freeze * T` the architecture is frozen (with `freeze_on_target`, already at the first step
after the ramp at which the network is at or below the target: the run stops selecting channels
once the budget is met, instead of letting the penalty cut further until the freeze). If the
network is still above the target, the lowest-ranked open channels of the whole network are closed
until it is not (float gates ranked by |gate|, binary gates by their latent value; every layer
keeps max(its unit's minimum, its floor): one channel of a channel group, nothing of a residual block).
With `reopen`, a network that overshot (fewer FLOPs than the target) gets back its highest-ranked
closed values, one at a time, while it stays at or under the target: binary gates ranked by their
latent value; float gates, which hold no value once closed (APG's exact zero), by the last step at
which they were open (the budget keeps that step per gate when `reopen` is set). Under a controller
that oscillates (coarse units such as residual blocks close and reopen several at a time), these are
the values the training held open until just before the freeze. A reopened float gate restarts at
0 and trains back, so only values whose zero gate still gets a gradient are reopened: residual
blocks (the ReLU after the sum sees the shortcut) and channel gates after the ReLU
(`gate_position=relu`; before it, ReLU'(0) = 0; `model.regrows()` says which).

The closed channels are masked for good (`Gate.mask`), and the penalty is switched off, so the
rest of the run trains a fixed, pruned network (`freeze=null`: the controller runs to the end).
The run thus ends at the target or just below it, by construction. `state_dict`/`load_state_dict`
keep resume exact (the masks are buffers of the model). `freeze_on_target` reads one number back
to the host per update after the ramp; `every` updates every so many steps (1: every step), for an
accelerator where the controller's kernels and that read would otherwise run every step.
"""
from __future__ import annotations

import math

import torch

from gated_pruning.config.checks import budget_problem
from gated_pruning.masks import global_cut


class FlopsBudget:
    def __init__(self, target: float, start: float = 0.0, ramp: float = 0.5, freeze: float | None = 0.6,
                 kp: float = 1.0, ki: float = 0.05, min_gamma: float = 1e-7, max_gamma: float = 10.0,
                 freeze_on_target: bool = False, reopen: bool = False, every: int = 1):
        problem = budget_problem(dict(start=start, ramp=ramp, freeze=freeze, kp=kp, ki=ki, min_gamma=min_gamma,
                                      max_gamma=max_gamma, freeze_on_target=freeze_on_target, every=every), target)
        if problem:
            raise ValueError(problem)
        self.target, self.start, self.ramp, self.kp, self.ki = float(target), start, ramp, kp, ki
        self.freeze = freeze
        self.freeze_on_target, self.reopen = bool(freeze_on_target), bool(reopen)
        self.every = int(every)
        self.frozen = False
        self.bounds = (math.log(min_gamma), math.log(max_gamma))
        self.model = self.penalty = self.trained_weights = None
        self.total_steps, self.threshold = 1, 0.0
        self.integral = torch.zeros(())
        self.error = torch.zeros(())
        self.kept = torch.ones(())

    def bind(self, model, penalty, trained_weights, total_steps: int, threshold: float = 0.0) -> "FlopsBudget":
        """`trained_weights()` -> each gate's latent weight as trained now (APG: its prox point)."""
        if not model.gates():
            raise ValueError("target_flops needs a gated model (model.gated=true)")
        if penalty.gamma0 <= 0:
            raise ValueError("target_flops needs gamma > 0: the budget starts from it")
        self.model, self.penalty, self.trained_weights = model, penalty, trained_weights
        self.total_steps, self.threshold = max(1, int(total_steps)), float(threshold)
        self.dense = float(model.flops())
        self.least = [u.minimum for u in model.units()]  # what pruning keeps of a unit with every gate at 0
        device = penalty.gamma.device
        self.integral = torch.tensor(math.log(penalty.gamma0), device=device)
        self.error = torch.zeros((), device=device)
        self.kept = torch.ones((), device=device)
        gates = model.gates()
        self.binary = all(g.binarizer.binary for g in gates)
        self.regrows = model.regrows()
        # every gate tensor at once where no gate has a floor and all share one binarizer: the open
        # count of each unit by one segment sum, the FLOPs by the table as tensors (a few kernels a step)
        self.flat = all(not g.min_keep and g.binarizer is gates[0].binarizer for g in gates)
        sizes = torch.tensor([g.weight.numel() for g in gates], device=device)
        self.unit_of = torch.repeat_interleave(torch.arange(len(gates), device=device), sizes)
        self.least_t = torch.tensor(self.least, dtype=torch.float32, device=device)
        self.flops_of = model.flops_function(device)
        # the last step at which each float gate was open (what reopening ranks them by)
        self.last_open = [torch.zeros(g.weight.shape, device=device) for g in gates] \
            if self.reopen and not self.binary else None
        return self

    def schedule(self, step: int) -> float:
        """The FLOPs fraction the network should have after `step` steps."""
        t = (step / self.total_steps - self.start) / self.ramp
        return 1.0 - (1.0 - self.target) * min(1.0, max(0.0, t))

    def open_masks(self) -> list[torch.Tensor]:
        """Per layer, the channels that pruning would keep now (|kept gate| > threshold)."""
        return [g.hard(w).abs() > self.threshold for g, w in zip(self.model.gates(), self.trained_weights())]

    def open_flat(self) -> torch.Tensor:
        """`open_masks` laid end to end, computed at once (before the freeze, every mask is open)."""
        flat = torch.cat(self.trained_weights())
        return self.model.gates()[0].binarizer.hard(flat).abs() > self.threshold

    def kept_fraction(self, masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        """FLOPs of the network that pruning would give now (or that `masks` keep) / dense FLOPs (a
        device tensor; a layer with every gate zero counts one channel, as pruning keeps one)."""
        if masks is None and self.flat:
            return self._kept_of_flat(self.open_flat())
        masks = self.open_masks() if masks is None else masks
        counts = [m.sum().clamp_min(least) for m, least in zip(masks, self.least)]
        return self.model.flops(counts) / self.dense

    def _kept_of_flat(self, open_flat: torch.Tensor) -> torch.Tensor:
        counts = torch.zeros(len(self.least), device=open_flat.device).index_add(0, self.unit_of, open_flat.float())
        return self.flops_of(torch.maximum(counts, self.least_t)) / self.dense

    @torch.no_grad()
    def freeze_architecture(self) -> None:
        """Close channels down to the target if needed, mask the closed ones, stop the penalty."""
        gates = self.model.gates()
        weights = self.trained_weights()
        scores = [(w if g.binarizer.binary else g.hard(w).abs()).float().cpu() for g, w in zip(gates, weights)]
        keep = global_cut(self.model, scores, self.target, keep=self.open_masks(),
                          minimum=[max(least, g.min_keep) for least, g in zip(self.least, gates)])
        if self.reopen and self.binary:
            keep = self._reopen(scores, keep)
        elif self.reopen:
            keep = self._reopen([s.float().cpu() for s in self.last_open], keep, self.regrows)
        for g, k in zip(gates, keep):
            g.freeze(k)
        self.penalty.gamma.zero_()
        self.frozen = True
        self.kept = self.kept_fraction([g.mask for g in gates])  # the architecture from now on
        self.error = self.kept - self.target

    def _reopen(self, scores: list[torch.Tensor], keep: list[torch.Tensor],
                allowed: list[bool] | None = None) -> list[torch.Tensor]:
        """Open the highest-ranked closed values (of the units `allowed`, default all), one at a
        time, while the network stays at or under the target (one that would take it over is
        passed over)."""
        keep = [k.clone() for k in keep]
        kept = [int(k.sum()) for k in keep]
        budget = self.target * self.dense
        allowed = allowed or [True] * len(keep)
        closed = sorted(((-float(v), layer, c) for layer, (sc, k) in enumerate(zip(scores, keep))
                         if allowed[layer] for c, v in enumerate(sc.tolist()) if not k[c]))
        for _, layer, c in closed:
            kept[layer] += 1
            if self.model.flops(kept) <= budget:
                keep[layer][c] = True
            else:
                kept[layer] -= 1
        return keep

    @torch.no_grad()
    def update(self, step: int) -> None:
        """After optimizer step number `step` (1-based): set the penalty's gamma (or freeze), at
        every `every`-th step (the integral term gains `every` times as much: the same pull per
        step); the freeze point is reached at the first update at or after it."""
        if self.frozen or step % self.every:
            return
        if self.freeze is not None and step >= self.freeze * self.total_steps:
            self.freeze_architecture()
            return
        if self.freeze_on_target and step >= (self.start + self.ramp) * self.total_steps \
                and float(self.kept) <= self.target:  # the budget is met: stop selecting (a host read)
            self.freeze_architecture()
            return
        if self.flat:
            opened = self.open_flat()
            self.kept = self._kept_of_flat(opened)
            if self.last_open is not None:
                for last, m in zip(self.last_open, opened.split([t.numel() for t in self.last_open])):
                    last.masked_fill_(m, float(step))
        else:
            masks = self.open_masks()
            self.kept = self.kept_fraction(masks)
            if self.last_open is not None:
                for last, m in zip(self.last_open, masks):
                    last.masked_fill_(m, float(step))
        self.error = self.kept - self.schedule(step)
        self.integral = (self.integral + self.ki * self.every * self.error).clamp(*self.bounds)
        self.penalty.gamma.copy_(torch.exp((self.integral + self.kp * self.error).clamp(*self.bounds)))

    def state_dict(self) -> dict:
        state = {"integral": self.integral, "error": self.error, "kept": self.kept,
                 "gamma": self.penalty.gamma, "frozen": self.frozen}
        if self.last_open is not None:
            state["last_open"] = self.last_open
        return state

    def load_state_dict(self, state: dict) -> None:
        device = self.penalty.gamma.device
        self.integral = state["integral"].to(device)
        self.error = state["error"].to(device)
        self.kept = state["kept"].to(device)
        self.penalty.gamma.copy_(state["gamma"])
        self.frozen = bool(state["frozen"])
        if self.last_open is not None:
            if "last_open" not in state:
                raise ValueError("budget.reopen=true with float gates: the checkpoint has no record of when each "
                                 "gate was last open (made without reopen); resume with the settings it was made with")
            self.last_open = [t.to(device) for t in state["last_open"]]
