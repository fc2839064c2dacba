"""Physical channel removal: a gated VGG becomes a plain, smaller VGG that computes the same.

For every gate whose kept value is zero (|value| <= threshold), `compact` drops that output
channel of the conv, its batch-norm entries and the matching input channel of the next conv (or
of the classifier). The remaining gate values are folded into the batch-norm affine parameters
(gate * (w*xhat + b) = (gate*w)*xhat + gate*b), so the result has no gate layers at all.

Rule for a layer whose every gate is zero (a dead layer): the compact network keeps that layer's
one channel with the largest float gate, with its (zero) gate folded in. It is the smallest valid
network that computes exactly what the gated network computes (a constant output); the layer is
reported in `dead_layers` so that the result is never mistaken for a working network.

Command line, to prune a finished run again at another threshold:
    python -m gated_pruning.prune RUN_DIR --threshold 0.05 [--round-to 8] [--data-root DIR]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from gated_pruning.models.vgg import VGG
from gated_pruning.stats import count_params

COMPACT_FILE = "compact.pt2"


def keep_masks(model: VGG, threshold: float = 0.0, round_to: int = 1) -> tuple[list[torch.Tensor], list[str]]:
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
def compact(model: VGG, threshold: float = 0.0, round_to: int = 1) -> tuple[VGG, list[str]]:
    """(the physically smaller plain VGG, dead layers). `model` is not modified."""
    masks, dead = keep_masks(model, threshold, round_to)
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


def count_flops(model: torch.nn.Module, input_size=(1, 3, 32, 32)) -> int:
    """FLOPs of one forward pass (torch.utils.flop_counter: convs and matmuls, 2 per MAC)."""
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(input_size, device=device))
    model.train(was)
    return int(counter.get_total_flops())


@torch.no_grad()
def latency_ms(model: torch.nn.Module, batch: int, reps: int, warmup: int,
               input_size=(3, 32, 32), channels_last: bool = False) -> float:
    """Median wall time of one forward pass of a batch (eval mode), in ms, after warm-up."""
    device = next(model.parameters()).device
    net = copy.deepcopy(model).eval()
    x = torch.randn(batch, *input_size, device=device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        net(x)
    times = []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        net(x)
        sync()
        times.append(time.perf_counter() - t)
    return 1000.0 * statistics.median(times)


def accounting(model: torch.nn.Module, cfg) -> dict:
    """Params, FLOPs, widths, and latency in the faster of the two memory layouts (which one is
    faster depends on the widths: a fair comparison gives each network its best)."""
    lat = {layout: latency_ms(model, cfg.latency_batch, cfg.latency_reps, cfg.latency_warmup,
                              channels_last=layout == "channels_last")
           for layout in ("nchw", "channels_last")}
    best = min(lat, key=lat.get)
    return {"params": count_params(model), "flops": count_flops(model), "latency_ms": lat[best],
            "layout": best, "latency_ms_by_layout": lat, "widths": model.widths()}


def prune_and_measure(model: VGG, cfg, evaluate) -> tuple[VGG, dict]:
    """Compact `model` at `cfg.threshold`; measure the dense and compact networks.

    `evaluate(net) -> {"loss", "top1", "top5"}` on the test set. The dense reference is the same
    network with every channel kept and gates folded: a plain VGG of the original widths, timed
    by the same code as the compact one.
    """
    dense, _ = compact(model, threshold=-1.0)
    small, dead = compact(model, threshold=cfg.threshold, round_to=cfg.round_to)
    d, c = accounting(dense, cfg), accounting(small, cfg)
    result = {
        "threshold": cfg.threshold,
        "dense": d, "compact": c,
        "kept": {"params": c["params"] / d["params"], "flops": c["flops"] / d["flops"]},
        "speedup": d["latency_ms"] / c["latency_ms"],
        "dead_layers": dead,
        "test": {"dense": evaluate(model), "compact": evaluate(small)},
        "finetune": None,
    }
    return small, result


def save_compact(model: VGG, path: str, meta: dict) -> None:
    """Save as a torch.export program, on the CPU: loadable with torch alone (no gated_pruning,
    no Hydra) on any machine; `.to(device)` the loaded module to run it elsewhere."""
    model = copy.deepcopy(model).cpu().eval()
    x = torch.zeros(2, model.features[0].conv.in_channels, 32, 32)
    program = torch.export.export(model, (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}})
    torch.export.save(program, path, extra_files={"meta.json": json.dumps(meta)})


def load_compact(path: str, map_location=None):
    """(callable module, meta) from a file written by `save_compact`."""
    extra = {"meta.json": ""}
    program = torch.export.load(path, extra_files=extra)
    return program.module(), json.loads(extra["meta.json"])


def main(argv=None) -> int:
    """Prune a finished run's gated network (RUN_DIR/model.pt) again, at another threshold."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from gated_pruning.data import build_data
    from gated_pruning.errors import UserError
    from gated_pruning.experiment import pick_device, write_json
    from gated_pruning.train import evaluate

    p = argparse.ArgumentParser(prog="python -m gated_pruning.prune", description=main.__doc__)
    p.add_argument("run_dir")
    p.add_argument("--threshold", type=float, required=True, help="remove gates with |gate| <= this")
    p.add_argument("--round-to", type=int, default=1, help="round kept widths up to a multiple of this")
    p.add_argument("--data-root", help="override dataset.root of the run")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="output folder (default RUN_DIR/prune-<threshold>); must not exist")
    a = p.parse_args(argv)
    try:
        path = os.path.join(a.run_dir, "model.pt")
        if not os.path.isfile(path):
            raise UserError(f"{path} not found: give the directory of a finished run")
        if a.threshold < 0:
            raise UserError(f"--threshold={a.threshold} must be >= 0")
        if a.round_to < 1:
            raise UserError(f"--round-to={a.round_to} must be >= 1")
        out = a.out or os.path.join(a.run_dir, f"prune-{a.threshold:g}")
        if os.path.exists(out):
            raise UserError(f"{out} exists already; pass another --out (nothing is overwritten)")
        saved = torch.load(path, map_location="cpu", weights_only=True)
        cfg = OmegaConf.create(saved["config"])
        if a.data_root:
            cfg.dataset.root = a.data_root
        cfg.prune = OmegaConf.merge(cfg.prune, {"threshold": a.threshold, "round_to": a.round_to})
        device = pick_device(a.device)
        _, test_loader, num_classes = build_data(cfg.dataset, device, cfg.seed)
        model = instantiate(cfg.model, num_classes=num_classes, binarizer=instantiate(cfg.binarizer))
        model.load_state_dict(saved["model"])
        model.to(device)
        small, result = prune_and_measure(model, cfg.prune, lambda m: evaluate(m, test_loader))
        os.makedirs(out)
        save_compact(small, os.path.join(out, COMPACT_FILE), compact_meta(cfg, result))
        write_json(result, os.path.join(out, "prune.json"))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: result[k] for k in ("threshold", "kept", "speedup")}))
    print(f"top1 dense {result['test']['dense']['top1']:.4f} compact {result['test']['compact']['top1']:.4f}"
          f"; written to {out}")
    return 0


def compact_meta(cfg, result: dict) -> dict:
    """What `python -m gated_pruning.evaluate` needs to evaluate a compact file on its own."""
    from gated_pruning.data import STATS

    mean, std = STATS[cfg.dataset.name]
    return {"dataset": cfg.dataset.name, "mean": mean, "std": std,
            "test_size": cfg.dataset.get("test_size"), "subset_seed": cfg.seed + 1,
            "widths": result["compact"]["widths"], "threshold": result["threshold"],
            "test_top1": result["test"]["compact"]["top1"]}


if __name__ == "__main__":
    sys.exit(main())
