"""Physical channel removal: a gated VGG and one mask per conv layer become a plain, smaller VGG.

`compact` drops each removed output channel of the conv, its batch-norm entries and the matching
input channel of the next conv (or of the classifier). The remaining gate values are folded into
the batch-norm affine parameters (gate * (w*xhat + b) = (gate*w)*xhat + gate*b), so the result
has no gate layers at all. Which channels go is `masks.py`'s question.
"""
from __future__ import annotations

import torch

from gated_pruning.masks import keep_masks, silent_layers
from gated_pruning.models.vgg import VGG


@torch.no_grad()
def compact(model: VGG, threshold: float = 0.0, round_to: int = 1,
            masks: list[torch.Tensor] | None = None) -> tuple[VGG, list[str]]:
    """(the physically smaller plain VGG, dead layers). `model` is not modified. `masks` (one
    bool tensor per conv layer) replace the zero-gate rule of `keep_masks`; its dead layers are
    then the layers whose every kept channel has a zero gate."""
    if masks is None:
        masks, dead = keep_masks(model, threshold, round_to)
    else:
        dead = silent_layers(model, masks)
    blocks = model.conv_blocks()
    layers, i = [], 0
    for v in model.layers:
        if v == "M":
            layers.append("M")
        else:
            layers.append(int(masks[i].sum()))
            i += 1
    device = next(model.parameters()).device
    small = VGG(layers, model.classifier.out_features, gated=False,
                in_channels=blocks[0][1].conv.in_channels).to(device)
    keep_in = torch.ones(blocks[0][1].conv.in_channels, dtype=torch.bool)
    for (_, old), (_, new), keep in zip(blocks, small.conv_blocks(), masks):
        out_idx, in_idx = keep.nonzero().flatten().to(device), keep_in.nonzero().flatten().to(device)
        new.conv.weight.copy_(old.conv.weight[out_idx][:, in_idx])
        g = old.gate.hard()[out_idx] if old.gate is not None else 1.0
        if old.gate is not None and old.gate_position == "relu" and bool((g < 0).any()):
            raise ValueError("a negative gate after the ReLU cannot be folded into batch norm: "
                             "gate_position=relu needs gates clamped at 0")
        new.bn.weight.copy_(old.bn.weight[out_idx] * g)
        new.bn.bias.copy_(old.bn.bias[out_idx] * g)
        new.bn.running_mean.copy_(old.bn.running_mean[out_idx])
        new.bn.running_var.copy_(old.bn.running_var[out_idx])
        new.bn.num_batches_tracked.copy_(old.bn.num_batches_tracked)
        new.bn.eps, new.bn.momentum = old.bn.eps, old.bn.momentum
        keep_in = keep
    last = keep_in.nonzero().flatten().to(device)
    small.classifier.weight.copy_(model.classifier.weight[:, last])
    small.classifier.bias.copy_(model.classifier.bias)
    return small.train(model.training), dead
