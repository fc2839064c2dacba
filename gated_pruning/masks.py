"""Which gate values a pruned network keeps: one boolean mask per unit of the model (a channel
group: a mask over its channels; a residual block: one value, kept or not; `models/protocol.py`).

- `keep_masks`: every gate whose kept value is zero (|value| <= threshold) goes. The compact
  network then computes exactly what the gated one computes.
- `target_masks`: a cut to a FLOPs target, by a ranking criterion (`importance.py`): the
  smallest gates of the whole network (Network Slimming) or the filters of smallest L1 norm of
  each channel group at one ratio (Li et al., ICLR 2017). Channels that matter are cut: fine-tune
  after.
- `silent_layers`: the channel groups of a cut whose every kept channel has a zero gate (the
  network then outputs a constant, whatever channels a cut keeps there).

Rule for a channel group whose every gate is zero (a dead layer): its mask keeps the one channel
with the largest float gate, so the compact network is the smallest valid network that computes
what the gated network computes (a constant output); the group is reported as dead so that the
result is never mistaken for a working network. A block whose gate is zero simply goes: its
shortcut carries the signal.
"""
from __future__ import annotations

import torch

from gated_pruning.importance import criterion as make_criterion


def keep_masks(model, threshold: float = 0.0, round_to: int = 1) -> tuple[list[torch.Tensor], list[str]]:
    """Per unit, the boolean mask of gate values kept; and the dead channel groups.

    `round_to` > 1 keeps a few more channels (those with the largest float gates) so that every
    kept width is a multiple of it, as vectorized conv kernels prefer; a kept channel whose gate
    is zero outputs zero, so the compact network still computes the same function.
    """
    units, gates = model.units(), model.gates()
    if not gates:
        return [torch.ones(u.size, dtype=torch.bool) for u in units], []
    masks, dead = [], []
    for unit, gate in zip(units, gates):
        keep = (gate.hard().abs() > threshold).cpu()
        if unit.kind == "channels":
            if not keep.any():
                dead.append(unit.name)
            want = min(unit.size, max(1, -(-int(keep.sum()) // round_to) * round_to))
            extra = want - int(keep.sum())
            if extra:
                strength = gate.weight.detach().abs().cpu().masked_fill(keep, -1.0)
                keep[strength.topk(extra).indices] = True
        masks.append(keep)
    return masks, dead


@torch.no_grad()
def silent_layers(model, masks: list[torch.Tensor]) -> list[str]:
    """The gated channel groups in which every channel `masks` keeps has a zero gate: whatever a
    cut keeps there, the group outputs nothing and the network a constant."""
    out = []
    for unit, gate, keep in zip(model.units(), model.gates(), masks):
        if unit.kind == "channels" and not (gate.hard().cpu() != 0)[keep.cpu()].any():
            out.append(unit.name)
    return out


def target_masks(model, target: float, criterion: str = "gate", batches=None) -> list[torch.Tensor]:
    """Per unit, the values kept by a cut to `target` times the model's FLOPs: by the criterion's
    ranking, globally (the lowest-scored value of the network goes first, until the FLOPs are at
    most the target) or per channel group (the same kept fraction in every group that has
    scores, the largest fraction whose FLOPs are at most the target; blocks stay). Every channel
    group keeps at least one channel, so a target below one channel per group ends above it.
    `batches`: training batches, for a criterion that reads activations (Taylor)."""
    crit = make_criterion(criterion)
    scores = crit.scores(model, batches)
    units = model.units()
    if crit.scope == "global":
        return global_cut(model, scores, target)
    keep = []
    for u, k, sc in zip(units, layer_counts(model, target, [sc is not None for sc in scores]), scores):
        m = torch.ones(u.size, dtype=torch.bool)
        if sc is not None:
            m[:] = False
            m[sc.topk(k).indices] = True
        keep.append(m)
    return keep


def layer_counts(model, target: float, cut: list[bool]) -> list[int]:
    """Kept counts per unit at one fraction of every unit in `cut` (the others whole): the largest
    fraction whose FLOPs are at most `target` times the model's (at least one channel each)."""
    units, budget = model.units(), target * model.flops()

    def counts(f):
        return [max(1, int(round(f * u.size))) if c else u.size for u, c in zip(units, cut)]

    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if model.flops(counts(mid)) <= budget else (lo, mid)
    return counts(lo)


def global_cut(model, scores: list[torch.Tensor], target: float, keep=None,
               minimum: list[int] | None = None) -> list[torch.Tensor]:
    """Close the lowest-scored open values of the whole network, one at a time, until its FLOPs
    are at most `target` times the dense network's. `keep`: the values open now (default all);
    `minimum`: values each unit keeps at least (default: the unit's own minimum, 1 for a
    channel group, 0 for a block)."""
    units = model.units()
    sizes = [u.size for u in units]
    keep = [torch.ones(n, dtype=torch.bool) for n in sizes] if keep is None else [k.clone().cpu() for k in keep]
    minimum = minimum or [u.minimum for u in units]
    budget = target * model.flops(sizes)
    kept = [int(k.sum()) for k in keep]
    order = sorted((float(v), layer, c) for layer, (sc, k) in enumerate(zip(scores, keep)) if sc is not None
                   for c, v in enumerate(sc.tolist()) if k[c])
    for _, layer, c in order:
        if model.flops(kept) <= budget:
            break
        if kept[layer] > minimum[layer]:
            keep[layer][c] = False
            kept[layer] -= 1
    return keep
