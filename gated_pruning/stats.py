"""Gate statistics per conv layer, computed on the device and read back only when logged."""
from __future__ import annotations

import torch

COUNT_KEYS = ("zeros", "ones", "small", "channels")
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


@torch.no_grad()
def gate_counts(model, eps: float = 1e-3) -> torch.Tensor:
    """(layers, 4) tensor on the gates' device: per layer the number of gates whose kept value
    (binarized for binary gates) is exactly 0, exactly 1, whose float value is below `eps` in
    magnitude, and the number of channels. No host synchronisation."""
    rows = []
    for gate in model.gates():
        hard, w = gate.hard(), gate.weight
        rows.append(torch.stack([(hard == 0).sum(), (hard == 1).sum(), (w.abs() < eps).sum(),
                                 torch.full((), w.numel(), device=w.device)]))
    if not rows:
        return torch.zeros(0, len(COUNT_KEYS), dtype=torch.long)
    return torch.stack(rows)


@torch.no_grad()
def gate_quantiles(model, qs=QUANTILES) -> torch.Tensor:
    """(layers, len(qs) + 1) tensor on the device: per layer the quantiles `qs` of the latent
    float gates (for binary gates: the value before binarization), then the mean of the kept
    gates that are not zero (for binary gates 1; for float gates the scale a layer keeps: a
    uniform shrink shows as every layer's value falling together)."""
    rows = []
    for gate in model.gates():
        w = gate.weight.detach().float()
        hard = gate.hard().float()
        nonzero = hard != 0
        mean = (hard * nonzero).sum() / nonzero.sum().clamp_min(1)
        rows.append(torch.cat([torch.quantile(w, torch.tensor(qs, device=w.device)), mean[None]]))
    if not rows:
        return torch.zeros(0, len(qs) + 1)
    return torch.stack(rows)


def counts_to_dict(names: list[str], counts) -> dict:
    """{layer: {zeros, ones, small, channels}} from a `gate_counts` tensor or nested list."""
    rows = counts.tolist() if torch.is_tensor(counts) else counts
    return {n: dict(zip(COUNT_KEYS, map(int, r))) for n, r in zip(names, rows)}


def dead_layers(names: list[str], counts) -> list[str]:
    """Layers whose every gate is zero: such a layer outputs nothing and kills the network."""
    rows = counts.tolist() if torch.is_tensor(counts) else counts
    return [n for n, r in zip(names, rows) if r[0] == r[3]]


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def cost(arch: dict, final, widths: list[int]) -> dict:
    """FLOPs and params of the network a run delivers against its dense reference; `widths`: its
    kept count of every unit (as the reference lists its units)."""
    ref = arch["reference"]
    flops, params = int(final.flops()), count_params(final)
    return {"reference": ref, "final": {"widths": list(widths), "flops": flops, "params": params},
            "flops_kept": flops / ref["flops"], "params_kept": params / ref["params"],
            "architecture": {k: v for k, v in arch.items() if k not in ("reference",)}}
