"""Which channels a pruned network keeps: one boolean mask per conv layer.

- `keep_masks`: every gate whose kept value is zero (|value| <= threshold) goes. The compact
  network then computes exactly what the gated one computes.
- `target_masks`: a cut to a FLOPs target, by a ranking criterion (`importance.py`): the
  smallest gates of the whole network (Network Slimming) or the filters of smallest L1 norm of
  each layer at one ratio (Li et al., ICLR 2017). Channels that matter are cut: fine-tune after.
- `silent_layers`: the layers of a cut whose every kept channel has a zero gate (the network
  then outputs a constant, whatever channels a cut keeps there).

Rule for a layer whose every gate is zero (a dead layer): its mask keeps the one channel with the
largest float gate, so the compact network is the smallest valid network that computes what the
gated network computes (a constant output); the layer is reported as dead so that the result is
never mistaken for a working network.
"""
from __future__ import annotations

import torch

from gated_pruning.importance import criterion as make_criterion


def keep_masks(model, threshold: float = 0.0, round_to: int = 1) -> tuple[list[torch.Tensor], list[str]]:
    """Per conv layer, the boolean mask of channels kept; and the dead layers.

    `round_to` > 1 keeps a few more channels (those with the largest float gates) so that every
    kept width is a multiple of it, as vectorized conv kernels prefer; a kept channel whose gate
    is zero outputs zero, so the compact network still computes the same function.
    """
    masks, dead = [], []
    for name, block in model.conv_blocks():
        n = block.conv.out_channels
        if block.gate is None:
            masks.append(torch.ones(n, dtype=torch.bool))
            continue
        keep = (block.gate.hard().abs() > threshold).cpu()
        if not keep.any():
            dead.append(name)
        want = min(n, max(1, -(-int(keep.sum()) // round_to) * round_to))
        extra = want - int(keep.sum())
        if extra:
            strength = block.gate.weight.detach().abs().cpu().masked_fill(keep, -1.0)
            keep[strength.topk(extra).indices] = True
        masks.append(keep)
    return masks, dead


@torch.no_grad()
def silent_layers(model, masks: list[torch.Tensor]) -> list[str]:
    """The gated layers in which every channel `masks` keeps has a zero gate: whatever a cut keeps
    there, the layer outputs nothing and the network a constant."""
    out = []
    for (name, block), keep in zip(model.conv_blocks(), masks):
        if block.gate is not None and not (block.gate.hard().cpu() != 0)[keep.cpu()].any():
            out.append(name)
    return out


def target_masks(model, target: float, criterion: str = "gate") -> list[torch.Tensor]:
    """Per conv layer, the channels kept by a cut to `target` times the model's FLOPs: by the
    criterion's ranking, globally (the lowest-scored channel of the network goes first, until
    the FLOPs are at most the target) or per layer (the same kept fraction in every layer, the
    largest fraction whose FLOPs are at most the target). Every layer keeps at least one channel,
    so a target below one channel per layer ends above it."""
    crit = make_criterion(criterion)
    scores = crit.scores(model)
    widths = model.widths()
    if crit.scope == "global":
        return global_cut(model, scores, target)
    budget = target * model.flops(widths)
    keep = [torch.ones(w, dtype=torch.bool) for w in widths]
    lo, hi = 0.0, 1.0
    counts = lambda f: [max(1, int(round(f * w))) for w in widths]  # noqa: E731
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if model.flops(counts(mid)) <= budget else (lo, mid)
    for layer, (k, sc) in enumerate(zip(counts(lo), scores)):
        keep[layer][:] = False
        keep[layer][sc.topk(k).indices] = True
    return keep


def global_cut(model, scores: list[torch.Tensor], target: float, keep=None,
               minimum: list[int] | None = None) -> list[torch.Tensor]:
    """Close the lowest-scored open channels of the whole network, one at a time, until its FLOPs
    are at most `target` times the dense network's. `keep`: the channels open now (default all);
    `minimum`: channels each layer keeps at least (default 1)."""
    widths = model.widths()
    keep = [torch.ones(w, dtype=torch.bool) for w in widths] if keep is None else [k.clone().cpu() for k in keep]
    minimum = minimum or [1] * len(widths)
    budget = target * model.flops(widths)
    kept = [int(k.sum()) for k in keep]
    order = sorted((float(v), layer, c) for layer, (sc, k) in enumerate(zip(scores, keep))
                   for c, v in enumerate(sc.tolist()) if k[c])
    for _, layer, c in order:
        if model.flops(kept) <= budget:
            break
        if kept[layer] > minimum[layer]:
            keep[layer][c] = False
            kept[layer] -= 1
    return keep
