"""Rankings of channels for a cut to a FLOPs target: one small class per criterion.

A criterion scores every output channel of every conv layer (larger = more important) and says
how channels compete: `scope="global"` ranks all channels of the network together (Network
Slimming, Liu et al., ICCV 2017: the smallest scaling factors anywhere go first);
`scope="layer"` keeps the same fraction of every layer, the highest-scored within each
(L1-norm filter pruning, Li et al., ICLR 2017, at one ratio for all layers).
"""
from __future__ import annotations

import torch


class GateMagnitude:
    """|gate| as trained (the float gate; for binary gates their kept 0/1 value)."""

    name = "gate"
    scope = "global"

    @torch.no_grad()
    def scores(self, model) -> list[torch.Tensor]:
        blocks = [b for _, b in model.conv_blocks()]
        if any(b.gate is None for b in blocks):
            raise ValueError("prune criterion 'gate' needs a gated model; a plain one has no gates "
                             "(use criterion l1norm)")
        return [b.gate.hard().abs().float().cpu() for b in blocks]


class FilterL1:
    """The L1 norm of each conv filter (the output channel's weights)."""

    name = "l1norm"
    scope = "layer"

    @torch.no_grad()
    def scores(self, model) -> list[torch.Tensor]:
        return [b.conv.weight.abs().sum(dim=(1, 2, 3)).float().cpu() for _, b in model.conv_blocks()]


CRITERIA = {c.name: c for c in (GateMagnitude, FilterL1)}


def criterion(name: str):
    if name not in CRITERIA:
        raise ValueError(f"prune.criterion={name!r} is not one of {tuple(CRITERIA)}")
    return CRITERIA[name]()
