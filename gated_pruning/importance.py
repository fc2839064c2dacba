"""Rankings of channels for a cut to a FLOPs target: one small class per criterion.

A criterion scores every gate value of every unit of the model (larger = more important) and says
how channels compete: `scope="global"` ranks all channels of the network together (Network
Slimming, Liu et al., ICCV 2017: the smallest scaling factors anywhere go first);
`scope="layer"` keeps the same fraction of every layer, the highest-scored within each
(L1-norm filter pruning, Li et al., ICLR 2017, at one ratio for all layers).
"""
from __future__ import annotations

import torch


class GateMagnitude:
    """|gate| as trained (the float gate; for binary gates their kept 0/1 value), every unit."""

    name = "gate"
    scope = "global"

    @torch.no_grad()
    def scores(self, model) -> list[torch.Tensor]:
        gates = model.gates()
        if not gates:
            raise ValueError("prune criterion 'gate' needs a gated model; a plain one has no gates "
                             "(use criterion l1norm)")
        return [g.hard().abs().float().cpu() for g in gates]


class FilterL1:
    """The L1 norm of each conv filter (the output channel's weights) of a channel group; None
    for a block (it has no filters: an L1-norm cut keeps it)."""

    name = "l1norm"
    scope = "layer"

    @torch.no_grad()
    def scores(self, model) -> list[torch.Tensor | None]:
        out = []
        for u in range(len(model.units())):
            w = model.unit_filters(u)
            out.append(None if w is None else w.abs().sum(dim=tuple(range(1, w.dim()))).float().cpu())
        return out


CRITERIA = {c.name: c for c in (GateMagnitude, FilterL1)}


def criterion(name: str):
    if name not in CRITERIA:
        raise ValueError(f"prune.criterion={name!r} is not one of {tuple(CRITERIA)}")
    return CRITERIA[name]()
