"""Cuts that rebuild the next layer: channels chosen so that the layer reading them still computes
what it computed, and its weights refitted by least squares. Two methods SSS was measured against:

- ThiNet (Luo, Wu, Lin, ICCV 2017): greedily remove the channels whose summed contribution to the
  next layer's output is smallest, min_T ||sum_{c in T} xhat_c||^2 (their eq. 5), then rescale each
  kept channel by least squares, min_w ||y - sum_c w_c xhat_c||^2 (eq. 6);
- LASSO channel selection (He, Zhang, Sun, "Channel Pruning for Accelerating Very Deep Neural
  Networks", ICCV 2017): min_beta ||Y - sum_c beta_c xhat_c||^2 + lambda |beta|_1, lambda raised
  until at most the kept count of beta is non-zero (their eq. 2, solved by coordinate descent),
  then the kept channels' weights refitted whole, min_W' ||Y - X_S W'||^2 (eq. 3).

xhat_c is channel c's contribution to the next layer's output at sampled positions (a conv's k x k
patch of that channel times its slice of the kernel; a linear layer's column). Everything is
computed from Gram matrices of the unfolded inputs and the kernel (G[c, d] = <xhat_c, xhat_d>
summed over positions and output channels), so no tensor of all contributions is ever held.

As both papers do, the network is cut one layer at a time, in order: the inputs X come from the
network as cut so far, the targets Y from the original network, so that each refit also absorbs the
error of the cuts before it. Every layer keeps the same fraction of its channels, the largest whose
FLOPs meet the target (as the L1-norm cut does). A channel group must feed exactly one conv or
linear layer (`unit_consumer`: VGG's layers, a CIFAR ResNet's inner channels); others are kept.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gated_pruning.masks import layer_counts

METHODS = ("thinet", "lasso")


@torch.no_grad()
def cut(model, target: float, method: str, batches, positions: int = 10, seed: int = 0) -> nn.Module:
    """A compact copy of `model` keeping at most `target` of its FLOPs, cut and refitted by
    `method` (see the module docstring) on `batches` (x, y) of training images, sampling
    `positions` output positions per image for each conv."""
    if method not in METHODS:
        raise ValueError(f"prune.criterion={method!r} is not one of {METHODS}")
    units = model.units()
    cuttable = [u.kind == "channels" and _consumer(model, i) is not None for i, u in enumerate(units)]
    if not any(cuttable):
        raise ValueError(f"prune.criterion={method} rebuilds the one layer that reads each channel group, and no "
                         "group of this model feeds a single conv or linear layer (VGG and the CIFAR ResNets' "
                         "inner channels do)")
    batches = list(batches)
    if not batches:
        raise ValueError(f"prune.criterion={method} fits the next layers on training batches, and none came")
    counts = layer_counts(model, target, cuttable)
    original = model.compact([torch.ones(u.size, dtype=torch.bool) for u in units]).eval()  # gates folded
    current = model.compact([torch.ones(u.size, dtype=torch.bool) for u in units]).eval()
    g = torch.Generator().manual_seed(seed)
    for i, unit in enumerate(units):
        if not cuttable[i] or counts[i] >= unit.size:
            continue
        x, y = _samples(current, original, i, batches, positions, g)
        layer = _consumer(current, i)
        keep, weight = (_thinet if method == "thinet" else _lasso)(layer, x, y, counts[i])
        masks = [torch.ones(u.size, dtype=torch.bool) for u in units]
        masks[i] = keep
        current = current.compact(masks).eval()
        _consumer(current, i).weight.copy_(weight.to(_consumer(current, i).weight))
    return current


def _consumer(model, unit: int):
    layer = model.unit_consumer(unit)
    if isinstance(layer, nn.Conv2d) and layer.groups == 1 or isinstance(layer, nn.Linear):
        return layer
    return None


def _samples(current, original, unit: int, batches, positions: int, g) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows of the unfolded input of `current`'s consumer of `unit`, the output of `original`'s at
    the same rows, without bias): for a conv, `positions` random output positions per image."""
    grab = {}
    mine, theirs = _consumer(current, unit), _consumer(original, unit)
    h1 = mine.register_forward_pre_hook(lambda m, inp: grab.__setitem__("x", inp[0]))
    h2 = theirs.register_forward_hook(lambda m, inp, out: grab.__setitem__("y", out))
    xs, ys = [], []
    try:
        for x, _ in batches:
            current(x)
            original(x)
            xi, yi = grab["x"].float(), grab["y"].float()
            if theirs.bias is not None:
                yi = yi - theirs.bias.view(1, -1, *([1] * (yi.dim() - 2)))
            if isinstance(mine, nn.Conv2d):
                cols = F.unfold(xi, mine.kernel_size, mine.dilation, mine.padding, mine.stride)  # (B, C*k*k, L)
                yi = yi.flatten(2)  # (B, out, L)
                pick = torch.randint(0, cols.shape[-1], (len(xi), positions), generator=g).to(cols.device)
                cols = torch.gather(cols, 2, pick[:, None, :].expand(-1, cols.shape[1], -1))
                yi = torch.gather(yi, 2, pick[:, None, :].expand(-1, yi.shape[1], -1))
                xi, yi = cols.transpose(1, 2).reshape(-1, cols.shape[1]), yi.transpose(1, 2).reshape(-1, yi.shape[1])
            xs.append(xi.double().cpu())
            ys.append(yi.double().cpu())
    finally:
        h1.remove()
        h2.remove()
    return torch.cat(xs), torch.cat(ys)


def grams(layer, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(G, b, k*k): G[c, d] = <xhat_c, xhat_d>, b[c] = <xhat_c, y>, summed over rows and outputs,
    for `layer`'s weight and the unfolded inputs `x` (rows, C*k*k) and outputs `y` (rows, out)."""
    w = layer.weight.detach().double().cpu().reshape(layer.weight.shape[0], -1)  # (out, C*kk)
    kk = _patch(layer)
    channels = w.shape[1] // kk
    h = (x.T @ x) * (w.T @ w)  # (C*kk, C*kk): sum_r sum_o xhat terms, patch element by patch element
    gram = h.view(channels, kk, channels, kk).sum(dim=(1, 3))
    b = ((x.T @ y) * w.T).view(channels, kk, -1).sum(dim=(1, 2))
    return gram, b, kk


def _patch(layer) -> int:
    return layer.kernel_size[0] * layer.kernel_size[1] if isinstance(layer, nn.Conv2d) else 1


def _ridge(a: torch.Tensor) -> torch.Tensor:
    """A tiny multiple of the identity that keeps a Gram matrix solvable."""
    return 1e-8 * a.diagonal().mean().clamp_min(1e-12) * torch.eye(len(a), dtype=a.dtype)


def thinet_keep(gram: torch.Tensor, keep: int) -> torch.Tensor:
    """ThiNet's greedy selection: remove, one at a time, the channel that adds least to the energy
    of the removed channels' summed contribution; the bool mask of the `keep` that remain."""
    n = len(gram)
    removed = torch.zeros(n, dtype=torch.bool)
    cross = torch.zeros(n, dtype=gram.dtype)  # sum over removed j of G[c, j]
    for _ in range(n - keep):
        cost = (2 * cross + gram.diagonal()).masked_fill(removed, float("inf"))
        c = int(cost.argmin())
        removed[c] = True
        cross += gram[:, c]
    return ~removed


def thinet_scales(gram: torch.Tensor, b: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """ThiNet's least squares: the scale of each kept channel's contribution, min ||y - sum w_c xhat_c||^2."""
    g = gram[keep][:, keep]
    return torch.linalg.solve(g + _ridge(g), b[keep])


def _thinet(layer, x, y, count):
    gram, b, kk = grams(layer, x, y)
    keep = thinet_keep(gram, count)
    w = layer.weight.detach().double().cpu()[:, keep]
    scale = thinet_scales(gram, b, keep)
    return keep, w * scale.view(1, -1, *([1] * (w.dim() - 2)))


def lasso_keep(gram: torch.Tensor, b: torch.Tensor, keep: int, iterations: int = 300) -> torch.Tensor:
    """He et al.'s selection: the beta of min 1/2 beta'G beta - b'beta + lam |beta|_1 (the LASSO
    on the contributions, solved by accelerated proximal gradient from beta = 1), lam raised by
    bisection until at most `keep` betas are non-zero; the `keep` channels of largest |beta|."""
    n = len(gram)
    step = 1.0 / float(torch.linalg.eigvalsh(gram)[-1].clamp_min(1e-30))

    def solve(lam):
        beta = prev = torch.ones(n, dtype=gram.dtype)
        for t in range(1, iterations + 1):
            z = beta + (t - 2) / (t + 1) * (beta - prev) if t > 1 else beta
            prev, beta = beta, z - step * (gram @ z - b)
            beta = torch.sign(beta) * torch.clamp(beta.abs() - step * lam, min=0)  # soft-threshold
        return beta

    lo, hi = 0.0, float(b.abs().max()) + float(gram.abs().sum(1).max()) + 1e-12
    beta = solve(hi)
    for _ in range(30):
        mid = (lo + hi) / 2
        trial = solve(mid)
        if int((trial != 0).sum()) <= keep:
            hi, beta = mid, trial
        else:
            lo = mid
    mask = torch.zeros(n, dtype=torch.bool)
    mask[(beta.abs() + 1e-12 * gram.diagonal() / gram.diagonal().max()).topk(keep).indices] = True
    return mask


def _lasso(layer, x, y, count):
    gram, b, kk = grams(layer, x, y)
    keep = lasso_keep(gram, b, count)
    channels = len(keep)
    cols = keep.repeat_interleave(kk)  # the unfolded inputs of the kept channels
    xs = x[:, cols]
    a = xs.T @ xs
    w = torch.linalg.solve(a + _ridge(a), xs.T @ y).T  # (out, kept*kk): He et al.'s eq. 3
    shape = (layer.weight.shape[0], int(keep.sum())) + tuple(layer.weight.shape[2:])
    assert channels * kk == x.shape[1]
    return keep, w.reshape(shape)
