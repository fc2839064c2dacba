"""The pruning step after training, shared by a run and by `python -m gated_pruning.reprune`: cut the
trained network (masks.py decides which channels go, `compact` removes them; reconstruction.py
for the cuts that rebuild the next layer),
in one round or several with fine-tuning between (`prune.rounds`), measure the dense and the
compact network (measure.py), say what is wrong with the cut (dead layers, a target it cannot
meet), fine-tune, and save the compact network (export.py)."""
from __future__ import annotations

import importlib.util
import itertools
import os
import sys

import torch
from omegaconf import OmegaConf

from gated_pruning.errors import ConfigError, raise_if_stopped
from gated_pruning.export import COMPACT_FILE, ONNX_FILE, compact_meta, exported, onnx_bytes, onnx_missing, save_compact
from gated_pruning import reconstruction
from gated_pruning.importance import RECONSTRUCTING
from gated_pruning.masks import keep_masks, silent_layers, target_masks
from gated_pruning.models.protocol import kept_by_name
from gated_pruning.measure import accounting
from gated_pruning.optim import lr_lambda
from gated_pruning.train import Trainer


def compact(model, threshold: float = 0.0, round_to: int = 1,
            masks: list[torch.Tensor] | None = None) -> tuple[torch.nn.Module, list[str], list[int]]:
    """Physical removal: (the physically smaller plain network, dead channel groups, the kept count
    of every unit of `model`: 0 for a removed block and the inner channels that went with it).

    The model does the surgery itself (`models.protocol.GatedNetwork.compact`: gates folded into
    batch norm, blocks replaced by their shortcuts, channels removed group by group through
    Torch-Pruning's dependency graph), so this works for every model of `models/`; which channels
    go is `masks.py`'s question. `model` is not modified. `masks` (one bool tensor per unit)
    replace the zero-gate rule of `keep_masks`; its dead groups are then the groups whose every
    kept channel has a zero gate. `threshold=-1` keeps everything: the dense network with its
    gates folded in."""
    if masks is None:
        masks, dead = keep_masks(model, threshold, round_to)
    else:
        dead = silent_layers(model, masks) if model.gates() else []
    small = model.compact(masks)
    return small, dead, kept_by_name([u.name for u in small.units()], small.sizes(), [u.name for u in model.units()])


def prune_and_measure(model, cfg, evaluate, validate: bool = False, batches=None, tune=None):
    """(the compact network, the prune record): `model` compacted at `cfg.threshold`, or cut to
    `cfg.target_flops` by `cfg.criterion`; the dense and compact networks measured. `cfg`: the
    `prune` config section.

    `evaluate(net, split="test") -> {"loss", "top1", "top5"}`; `validate`: also on "val".
    `batches()`: training batches for the criteria that read the network (taylor, thinet, lasso);
    `tune(net, epochs)`: fine-tuning between the rounds of a cut in `cfg.rounds` rounds (each
    round cuts to a point on the line from the full FLOPs to the target, the last to the target).
    The dense reference is the same network with every channel kept and gates folded: a plain
    network of the original widths, timed by the same code as the compact one. `widths` of both
    are the kept counts of each unit of `model` (`units`). A cut to a target has
    no threshold (the record says null).
    """
    dense, _, sizes = compact(model, threshold=-1.0)
    target = cfg.get("target_flops")
    crit = cfg.get("criterion") or ("gate" if model.gates() else "l1norm")
    rounds = int(cfg.get("rounds") or 1) if target is not None else 1
    net, full, tuned = model, float(model.flops()), []
    for k in range(1, rounds + 1):
        goal = None if target is None else 1 - (1 - target) * k / rounds  # of the trained network's FLOPs
        small, dead = _cut(net, cfg, crit, None if goal is None else goal * full / float(net.flops()), batches)
        if k < rounds:
            tuned.append({**tune(small, int(cfg.get("round_epochs") or 1)), "flops": float(small.flops()) / full})
            net = small
    counts = kept_by_name([u.name for u in small.units()], small.sizes(), [u.name for u in model.units()])
    timed = bool(cfg.get("onnx", "auto")) and onnx_missing() is None \
        and importlib.util.find_spec("onnxruntime") is not None  # what a deployment runs
    d = accounting(dense, cfg, onnx_bytes(exported(dense)) if timed else None)
    c = accounting(small, cfg, onnx_bytes(exported(small)) if timed else None)
    d["widths"], c["widths"] = sizes, counts  # per unit of the trained network (0: a block removed)
    result = {
        "units": [u.name for u in model.units()], "kinds": [u.kind for u in model.units()],
        "threshold": cfg.threshold if target is None else None,
        "target_flops": target, "criterion": crit if target is not None else None,
        "dense": d, "compact": c,
        "kept": {"params": c["params"] / d["params"], "flops": c["flops"] / d["flops"]},
        "speedup": d["latency_ms"] / c["latency_ms"],
        "speedup_onnxruntime": d["latency_ms_onnxruntime"] / c["latency_ms_onnxruntime"] if timed else None,
        "rounds": rounds, "round_finetunes": tuned,
        "dead_layers": dead,
        "test": {"dense": evaluate(model), "compact": evaluate(small)},
        "finetune": None,
    }
    if validate:
        result["val"] = {"dense": evaluate(model, split="val"), "compact": evaluate(small, split="val")}
    return small, result


def _cut(net, cfg, crit: str, target: float | None, batches):
    """(the compact network, its dead layers): `net` cut to `target` of its own FLOPs by `crit`,
    or at `cfg.threshold` without a target."""
    if target is None:
        small, dead, _ = compact(net, threshold=cfg.threshold, round_to=cfg.round_to)
        return small, dead
    if crit in RECONSTRUCTING:
        return reconstruction.cut(net, target, crit, batches() if batches else []), []
    masks = target_masks(net, target, crit, batches() if batches else None)
    small, dead, _ = compact(net, threshold=cfg.threshold, round_to=cfg.round_to, masks=masks)
    return small, dead


def finetune(small, cfg, train_loader, test_loader, tracker=None, run_dir=".", step_offset=0,
             val_loader=None, epochs: int | None = None, prefix: str = "finetune/") -> dict:
    """Train the compact network for `epochs` (default `cfg.prune.finetune_epochs`; SGD, the run's
    momentum and weight decay, cosine from `cfg.prune.finetune_lr`) with the same loop as
    training; returns {"epochs", "lr", "test"} (and "val")."""
    p = cfg.prune
    epochs = p.finetune_epochs if epochs is None else epochs
    small.train()
    opt = torch.optim.SGD(small.parameters(), lr=p.finetune_lr, momentum=cfg.optimizer.momentum,
                          weight_decay=cfg.optimizer.weight_decay)
    steps = len(train_loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda("cosine", epochs * steps, steps))
    tcfg = OmegaConf.merge(cfg.trainer, {"epochs": epochs, "checkpoint": False, "checkpoint_every_steps": 0})
    tuner = Trainer(small, train_loader, test_loader, opt, sched, tcfg, val_loader=val_loader,
                    tracker=tracker, run_dir=run_dir, log_prefix=prefix, step_offset=step_offset)
    metrics = tuner.fit()
    out = {"epochs": epochs, "lr": p.finetune_lr, "test": metrics["test"]}
    if "val" in metrics:
        out["val"] = metrics["val"]
    return out


def prune(model, cfg, evaluate, data, out_dir: str, tracker=None, run_dir: str = ".", step_offset: int = 0):
    """(the prune record, the compact network): `model` pruned by `cfg.prune`, each problem of the
    cut in one `warning:` line (a target it misses: `arch.outcome`, by the caller), fine-tuned if asked, saved to `out_dir`/compact.pt2. `data`: the
    run's loaders (`data.Data`); `evaluate` as in `prune_and_measure`."""
    samples = int(cfg.prune.get("samples") or 512)

    def batches():  # the first training batches of epoch 0: the images the data-driven criteria read
        return itertools.islice(data.train.epoch(0), max(1, -(-samples // data.train.batch_size)))

    def tune(net, epochs):  # between the rounds of an iterative cut
        return finetune(net, cfg, data.train, data.test, tracker=tracker, run_dir=run_dir, step_offset=step_offset,
                        val_loader=data.val, epochs=epochs, prefix="round/")

    try:
        small, result = prune_and_measure(model, cfg.prune, evaluate, validate=data.val is not None,
                                          batches=batches, tune=tune)
    except ValueError as e:  # a cut this network cannot take (a gate criterion without gates, ...)
        raise ConfigError(str(e)) from None
    if result["dead_layers"]:
        print(f"warning: every gate of {', '.join(result['dead_layers'])} is zero: the pruned network keeps one "
              "zero channel there and outputs a constant (prune.dead_layers)", file=sys.stderr)
    top1 = result["test"]["compact"]["top1"]
    if cfg.prune.finetune_epochs:
        result["finetune"] = finetune(small, cfg, data.train, data.test, tracker=tracker, run_dir=run_dir,
                                      step_offset=step_offset, val_loader=data.val)
        top1 = result["finetune"]["test"]["top1"]
    onnx = os.path.join(out_dir, ONNX_FILE) if onnx_wanted(cfg.prune) else None
    raise_if_stopped()
    save_compact(small, os.path.join(out_dir, COMPACT_FILE), compact_meta(cfg, result, top1, data.described), onnx)
    result["onnx"] = ONNX_FILE if onnx else None
    return result, small


def onnx_wanted(p) -> bool:
    """Whether `compact.onnx` is written (`prune.onnx`: true, false, or auto: where torch's ONNX
    exporter has its packages); true without them is one warning, and no file."""
    setting = p.get("onnx", "auto")
    missing = onnx_missing() if setting else None
    if setting is True and missing:
        print(f"warning: prune.onnx=true but {missing} is not installed: no {ONNX_FILE} "
              "(pip install -e '.[deploy]', or prune.onnx=false)", file=sys.stderr)
    return bool(setting) and missing is None
