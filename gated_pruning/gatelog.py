"""What a training run keeps and logs of its gates: at each log step and epoch end, per layer, the
zero and one counts, the quantiles of the latent gates and the mean of the kept non-zero ones,
with the penalty's gamma and the budget's state (`history`, in results.json); their tracker keys
(`gates_zero/LAYER`, `penalty/gamma`, `budget/flops_kept`, ...); histograms for a tracker that
keeps them; and the warning when every gate of a layer has reached zero.

Gates are read as trained: APG's prox point (`view`), not its extrapolated iterate.
"""
from __future__ import annotations

import contextlib
import sys

import torch

from gated_pruning import stats


class GateLog:
    def __init__(self, model, opt_g=None, penalty=None, eps: float = 1e-3):
        units = model.units() if model.gates() else []  # a gate per unit, or none
        self.model, self.opt_g, self.penalty, self.eps = model, opt_g, penalty, eps
        self.names = [u.name for u in units]
        self.channels = [u.size for u in units]
        self.removable = {u.name for u in units if u.minimum == 0}  # a residual block: zero is its removal
        self.history: list[dict] = []  # one entry per log step and epoch end
        self.dead_warned: set = set()

    def view(self):
        """Parameters as trained: APG's prox point for evaluation, counts and pruning."""
        return self.opt_g.prox_view() if self.opt_g is not None else contextlib.nullcontext()

    def trained_weights(self) -> list[torch.Tensor]:
        """Each gate's latent weight as trained (APG's prox point), without a copy."""
        prox = self.opt_g.prox_points() if self.opt_g is not None else {}
        return [prox.get(g.weight, g.weight).detach() for g in self.model.gates()]

    def record(self, step: int, epoch: float, budget=None) -> dict | None:
        """The statistics now (None for a network without gates); warns once per layer whose every
        gate is zero (a residual block's gate is its removal, not a warning)."""
        if not self.names:
            return None
        with self.view():
            counts = stats.gate_counts(self.model, self.eps).tolist()
            quantiles = stats.gate_quantiles(self.model).tolist()
        rec = {"step": step, "epoch": epoch}
        for i, key in enumerate(stats.COUNT_KEYS[:3]):
            rec[key] = [r[i] for r in counts]
        rec["quantiles"] = [r[:-1] for r in quantiles]  # of the latent gates, stats.QUANTILES
        rec["nonzero_mean"] = [r[-1] for r in quantiles]
        if self.penalty is not None:
            rec["gamma"] = float(self.penalty.gamma)
        if budget is not None:
            rec["flops_kept"] = float(budget.kept)
            rec["flops_target"] = budget.schedule(step)
            rec["frozen"] = budget.frozen
        for name in stats.dead_layers(self.names, counts):
            if name not in self.dead_warned and name not in self.removable:
                self.dead_warned.add(name)
                print(f"warning: every gate of {name} is zero at step {step}: the layer "
                      "outputs nothing (pruning keeps one zero channel, see docs/pruning.md)", file=sys.stderr)
        return rec

    def keep(self, rec: dict | None, prefix: str, histograms: bool) -> tuple[dict, dict | None]:
        """Keep `rec` in the history; (its tracker keys under `prefix`, the histograms or None)."""
        if rec is None:
            return {}, None
        self.history.append(rec)
        return {prefix + k: v for k, v in self.keys(rec).items()}, self.histograms() if histograms else None

    def keys(self, rec: dict) -> dict:
        """{tracker key: value} of one record."""
        out = {}
        for name, z, o, c in zip(self.names, rec["zeros"], rec["ones"], self.channels):
            out[f"gates_zero/{name}"] = z
            out[f"gates_one/{name}"] = o
            out[f"gates_zero_frac/{name}"] = z / c
        out["gates_zero_frac/all"] = sum(rec["zeros"]) / sum(self.channels)
        for name, qs, m in zip(self.names, rec["quantiles"], rec["nonzero_mean"]):
            for q, v in zip(stats.QUANTILES, qs):
                out[f"gates_q{round(100 * q)}/{name}"] = v
            out[f"gates_nonzero_mean/{name}"] = m
        for key in ("gamma", "flops_kept", "flops_target"):
            if key in rec:
                out[f"budget/{key}" if key != "gamma" else "penalty/gamma"] = rec[key]
        return out

    def histograms(self) -> dict:
        """{tracker key: latent gate values} per layer, as trained (copied to the host)."""
        with self.view():
            return {f"gates_hist/{n}": g.weight.detach().float().cpu().numpy()
                    for n, g in zip(self.names, self.model.gates())}

    def state_dict(self) -> dict:
        return {"history": self.history, "dead_warned": sorted(self.dead_warned)}

    def load_state_dict(self, state: dict) -> None:
        self.history, self.dead_warned = state["history"], set(state["dead_warned"])
