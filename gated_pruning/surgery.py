"""Physical removal: a gated network and one mask per unit become a plain, smaller network.

The model does the surgery itself (`models.protocol.GatedNetwork.compact`: gates folded into
batch norm, blocks replaced by their shortcuts, channels removed group by group through
Torch-Pruning's dependency graph), so this works for every model of `models/`; which values go
is `masks.py`'s question.
"""
from __future__ import annotations

import torch

from gated_pruning.masks import keep_masks, silent_layers
from gated_pruning.models.protocol import kept_by_name


def compact(model, threshold: float = 0.0, round_to: int = 1,
            masks: list[torch.Tensor] | None = None) -> tuple[torch.nn.Module, list[str], list[int]]:
    """(the physically smaller plain network, dead channel groups, the kept count of every unit of
    `model`: 0 for a removed block and the inner channels that went with it).
    `model` is not modified. `masks` (one bool tensor per unit) replace the zero-gate rule of
    `keep_masks`; its dead groups are then the groups whose every kept channel has a zero gate.
    `threshold=-1` keeps everything: the dense network with its gates folded in."""
    if masks is None:
        masks, dead = keep_masks(model, threshold, round_to)
    else:
        dead = silent_layers(model, masks) if model.gates() else []
    small = model.compact(masks)
    return small, dead, kept_by_name([u.name for u in small.units()], small.sizes(), [u.name for u in model.units()])
