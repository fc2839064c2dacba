"""Rankings of channels for a cut to a FLOPs target: one small class per criterion.

A criterion scores every gate value of every unit of the model (larger = more important) and says
how channels compete: `scope="global"` ranks all channels of the network together (Network
Slimming, Liu et al., ICCV 2017: the smallest scaling factors anywhere go first);
`scope="layer"` keeps the same fraction of every layer, the highest-scored within each
(L1-norm filter pruning, Li et al., ICLR 2017, at one ratio for all layers). A criterion that
reads the network's activations (`needs_data`) gets training batches.

The reconstruction methods (ThiNet, He et al.'s LASSO) do more than rank: they rebuild the next
layer's weights as they cut, layer by layer (`reconstruction.py`).
"""
from __future__ import annotations

import torch


class GateMagnitude:
    """|gate| as trained (the float gate; for binary gates their kept 0/1 value), every unit."""

    name = "gate"
    scope = "global"
    needs_data = False

    @torch.no_grad()
    def scores(self, model, batches=None) -> list[torch.Tensor]:
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
    needs_data = False

    @torch.no_grad()
    def scores(self, model, batches=None) -> list[torch.Tensor | None]:
        out = []
        for u in range(len(model.units())):
            w = model.unit_filters(u)
            out.append(None if w is None else w.abs().sum(dim=tuple(range(1, w.dim()))).float().cpu())
        return out


class Taylor:
    """First-order Taylor importance of each feature map (Molchanov, Tyree, Karras, Aila, Kautz,
    "Pruning Convolutional Neural Networks for Resource Efficient Inference", ICLR 2017, eq. 8):
    the loss change of zeroing channel k, |mean over its positions of z * dL/dz|, per example,
    averaged over the examples; then divided by the L2 norm of its layer's scores (their
    layer-wise normalization), and ranked over the whole network. z is the output of the batch
    norms that write the channel (summed over every writer of a residual stream). Torch-Pruning's
    `TaylorImportance` is the later weight-based variant (Molchanov et al., CVPR 2019); SSS
    compares with this one. Blocks are not scored (a cut keeps them)."""

    name = "taylor"
    scope = "global"
    needs_data = True

    def scores(self, model, batches=None) -> list[torch.Tensor]:
        units = model.units()
        sums = [torch.zeros(u.size) if u.kind == "channels" else None for u in units]
        seen = 0
        captured, hooks = {}, []
        for i, u in enumerate(units):
            for norm in model.unit_norms(i) if u.kind == "channels" else []:
                hooks.append(norm.register_forward_hook(
                    lambda m, inp, out, i=i: captured.setdefault(i, []).append(out) or out.retain_grad()))
        was = model.training
        model.eval()  # the statistics of the trained network: every batch sees the same function
        try:
            for x, y in batches or []:
                captured.clear()
                model.zero_grad(set_to_none=True)
                with torch.enable_grad():
                    torch.nn.functional.cross_entropy(model(x), y).backward()
                for i, outs in captured.items():
                    contrib = sum((z * z.grad).mean(dim=(2, 3)) for z in outs)  # (examples, channels)
                    sums[i] += contrib.abs().sum(0).detach().float().cpu()
                seen += len(y)
        finally:
            for h in hooks:
                h.remove()
            model.zero_grad(set_to_none=True)
            model.train(was)
        if not seen:
            raise ValueError("prune.criterion=taylor scores channels on training batches, and none came")
        out = []
        for s in sums:
            if s is None:
                out.append(None)
                continue
            s = s / seen
            out.append(s / s.norm().clamp_min(1e-12))
        return out


CRITERIA = {c.name: c for c in (GateMagnitude, FilterL1, Taylor)}
RECONSTRUCTING = ("thinet", "lasso")  # reconstruction.py: a cut that also rebuilds the next layer


def criterion(name: str):
    if name not in CRITERIA:
        raise ValueError(f"prune.criterion={name!r} is not one of {tuple(CRITERIA)}")
    return CRITERIA[name]()
