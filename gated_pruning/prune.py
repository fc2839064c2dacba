"""Physical channel removal: a VGG becomes a plain, smaller VGG.

Which channels go is a list of masks, one per conv layer:
- `keep_masks`: every gate whose kept value is zero (|value| <= threshold). The compact network
  then computes exactly what the gated one computes.
- `target_masks`: a cut to a FLOPs target, by a ranking criterion (`importance.py`): the
  smallest gates of the whole network (Network Slimming) or the filters of smallest L1 norm of
  each layer at one ratio (Li et al., ICLR 2017). Channels that matter are cut: fine-tune after.

`compact` drops each removed output channel of the conv, its batch-norm entries and the matching
input channel of the next conv (or of the classifier). The remaining gate values are folded into
the batch-norm affine parameters (gate * (w*xhat + b) = (gate*w)*xhat + gate*b), so the result
has no gate layers at all.

Rule for a layer whose every gate is zero (a dead layer): the compact network keeps that layer's
one channel with the largest float gate, with its (zero) gate folded in. It is the smallest valid
network that computes exactly what the gated network computes (a constant output); the layer is
reported in `dead_layers` so that the result is never mistaken for a working network.

Command line, to prune a finished run again (at another threshold, or to a FLOPs target, with
optional fine-tuning):
    python -m gated_pruning.prune RUN_DIR --threshold 0.05 [--round-to 8] [--data-root DIR]
    python -m gated_pruning.prune RUN_DIR --target-flops 0.5 [--criterion gate|l1norm] [--finetune-epochs N]
"""
from __future__ import annotations

import copy
import json
import os
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from gated_pruning.importance import criterion as make_criterion
from gated_pruning.models.vgg import VGG
from gated_pruning.stats import cost, count_params

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


def target_masks(model: VGG, target: float, criterion: str = "gate") -> list[torch.Tensor]:
    """Per conv layer, the channels kept by a cut to `target` times the model's FLOPs: by the
    criterion's ranking, globally (the lowest-scored channel of the network goes first, until
    the FLOPs are at most the target) or per layer (the same kept fraction in every layer, the
    largest fraction whose FLOPs are at most the target). Every layer keeps at least one channel."""
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


def global_cut(model: VGG, scores: list[torch.Tensor], target: float, keep=None,
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


@torch.no_grad()
def compact(model: VGG, threshold: float = 0.0, round_to: int = 1,
            masks: list[torch.Tensor] | None = None) -> tuple[VGG, list[str]]:
    """(the physically smaller plain VGG, dead layers). `model` is not modified. `masks` (one
    bool tensor per conv layer) replace the zero-gate rule of `keep_masks`."""
    if masks is None:
        masks, dead = keep_masks(model, threshold, round_to)
    else:
        dead = []
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


def prune_and_measure(model: VGG, cfg, evaluate, validate: bool = False) -> tuple[VGG, dict]:
    """Compact `model` at `cfg.threshold`, or cut it to `cfg.target_flops` by `cfg.criterion`;
    measure the dense and compact networks.

    `evaluate(net, split="test") -> {"loss", "top1", "top5"}`; `validate`: also on "val".
     The dense reference is the same
    network with every channel kept and gates folded: a plain VGG of the original widths, timed
    by the same code as the compact one.
    """
    dense, _ = compact(model, threshold=-1.0)
    target = cfg.get("target_flops")
    crit = cfg.get("criterion") or ("gate" if model.gates() else "l1norm")
    masks = target_masks(model, target, crit) if target is not None else None
    small, dead = compact(model, threshold=cfg.threshold, round_to=cfg.round_to, masks=masks)
    d, c = accounting(dense, cfg), accounting(small, cfg)
    result = {
        "threshold": cfg.threshold,
        "target_flops": target, "criterion": crit if target is not None else None,
        "dense": d, "compact": c,
        "kept": {"params": c["params"] / d["params"], "flops": c["flops"] / d["flops"]},
        "speedup": d["latency_ms"] / c["latency_ms"],
        "dead_layers": dead,
        "test": {"dense": evaluate(model), "compact": evaluate(small)},
        "finetune": None,
    }
    if validate:
        result["val"] = {"dense": evaluate(model, split="val"), "compact": evaluate(small, split="val")}
    return small, result


def finetune(small: VGG, cfg, train_loader, test_loader, tracker=None, run_dir=".", step_offset=0,
             val_loader=None) -> dict:
    """Train the compact network for `cfg.prune.finetune_epochs` (SGD, the run's momentum and
    weight decay, cosine from `cfg.prune.finetune_lr`) with the same loop as training; returns
    {"epochs", "lr", "test"}."""
    from omegaconf import OmegaConf

    from gated_pruning.optim import lr_lambda
    from gated_pruning.train import Trainer

    p = cfg.prune
    small.train()
    opt = torch.optim.SGD(small.parameters(), lr=p.finetune_lr, momentum=cfg.optimizer.momentum,
                          weight_decay=cfg.optimizer.weight_decay)
    steps = len(train_loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda("cosine", p.finetune_epochs * steps, steps))
    tcfg = OmegaConf.merge(cfg.trainer, {"epochs": p.finetune_epochs, "checkpoint": False,
                                         "checkpoint_every_steps": 0})
    tuner = Trainer(small, train_loader, test_loader, opt, sched, tcfg, val_loader=val_loader,
                    tracker=tracker, run_dir=run_dir, log_prefix="finetune/", step_offset=step_offset)
    metrics = tuner.fit()
    out = {"epochs": p.finetune_epochs, "lr": p.finetune_lr, "test": metrics["test"]}
    if "val" in metrics:
        out["val"] = metrics["val"]
    return out


def save_compact(model: VGG, path: str, meta: dict) -> None:
    """Save as a torch.export program, on the CPU: loadable with torch alone (no gated_pruning,
    no Hydra) on any machine; `.to(device)` the loaded module to run it elsewhere."""
    model = copy.deepcopy(model).cpu().eval()
    x = torch.zeros(2, model.features[0].conv.in_channels, 32, 32)
    program = torch.export.export(model, (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}})
    from gated_pruning.checkpoint import atomic

    with atomic(path) as tmp:  # never half a file, also when stopped
        torch.export.save(program, tmp, extra_files={"meta.json": json.dumps(meta)})


def load_compact(path: str, map_location=None):
    """(callable module, meta) from a file written by `save_compact`."""
    extra = {"meta.json": ""}
    program = torch.export.load(path, extra_files=extra)
    return program.module(), json.loads(extra["meta.json"])


def main(argv=None) -> int:
    """Prune a finished run's network (RUN_DIR/model.pt) again: at another threshold, or cut to a
    FLOPs target by a ranking criterion, optionally fine-tuned. Writes OUT/results.json (a run
    record like a training run's, with `derived_from`), OUT/prune.json and OUT/compact.pt2."""
    from gated_pruning.cli import ArgumentParser, arg, run_tool
    from gated_pruning.config import RULES

    p = ArgumentParser(prog="python -m gated_pruning.prune", description=main.__doc__)
    p.add_argument("run_dir")
    p.add_argument("--threshold", type=arg(RULES["prune.threshold"], "--threshold"), default=0.0,
                   help="remove gates with |gate| <= this (default 0)")
    p.add_argument("--target-flops", type=arg(RULES["prune.target_flops"], "--target-flops"),
                   help="cut to this fraction of the network's FLOPs")
    p.add_argument("--criterion", choices=("gate", "l1norm"),
                   help="ranking for --target-flops: gate (global, Network Slimming; default for gated "
                        "runs) or l1norm (per layer, Li et al. 2017; default for plain runs)")
    p.add_argument("--round-to", type=arg(RULES["prune.round_to"], "--round-to"), default=1,
                   help="round kept widths up to a multiple of this")
    p.add_argument("--finetune-epochs", type=arg(RULES["prune.finetune_epochs"], "--finetune-epochs"),
                   default=0, help="fine-tune the compact network (default 0)")
    p.add_argument("--finetune-lr", type=arg(RULES["prune.finetune_lr"], "--finetune-lr"),
                   help="default: the run's prune.finetune_lr")
    p.add_argument("--data-root", help="override dataset.root of the run")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="output folder (default RUN_DIR/prune-<what>); must not exist")
    p.add_argument("--method", help="label of the result in reports (e.g. l1norm, slimming)")
    return run_tool(_prune_again, p.parse_args(argv))


def _prune_again(a) -> int:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from gated_pruning.cli import one_line, readable_dir, readable_file, staged
    from gated_pruning.config import check_device
    from gated_pruning.data import build_data
    from gated_pruning.errors import UserError
    from gated_pruning.runtime import RESULTS, pick_device, write_json
    from gated_pruning.train import evaluate

    readable_dir(a.run_dir, "run directory")
    path = readable_file(os.path.join(a.run_dir, "model.pt"), ": give the directory of a finished run")
    check_device(a.device)
    if a.data_root:
        readable_dir(a.data_root, "--data-root")
    if a.target_flops is None and a.criterion is not None:
        raise UserError("--criterion ranks channels for --target-flops: give --target-flops too")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, foreign or pickled code: all refused
        raise UserError(f"{path} is not a readable model.pt ({type(e).__name__}: {one_line(e, 160)})") from None
    if not isinstance(saved, dict) or not {"model", "config"} <= saved.keys():
        raise UserError(f"{path} is not a model.pt written by a run (no 'model' and 'config' in it)")
    cfg = OmegaConf.create(saved["config"])
    crit = a.criterion or ("gate" if cfg.model.get("gated", True) else "l1norm")
    what = (f"flops{a.target_flops:g}-{crit}" if a.target_flops is not None else f"{a.threshold:g}") + \
        (f"-ft{a.finetune_epochs}" if a.finetune_epochs else "")
    out = a.out or os.path.join(a.run_dir, f"prune-{what}")
    with staged(out) as tmp:  # made now: an unwritable --out fails before any work
        try:
            if a.data_root:
                cfg.dataset.root = a.data_root
            cfg.prune = OmegaConf.merge(cfg.prune, {
                "threshold": a.threshold, "round_to": a.round_to, "target_flops": a.target_flops,
                "criterion": crit, "finetune_epochs": a.finetune_epochs,
                "finetune_lr": a.finetune_lr if a.finetune_lr is not None else cfg.prune.finetune_lr})
            device = pick_device(a.device)
            data = build_data(cfg.dataset, device, cfg.seed)
            train_loader, test_loader, num_classes = data.train, data.test, data.num_classes
            arch = saved.get("arch") or {"overrides": {}}
            model = instantiate(cfg.model, num_classes=num_classes, binarizer=instantiate(cfg.binarizer),
                                **arch["overrides"])
            model.load_state_dict(saved["model"])
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - a config or state this code cannot rebuild
            raise UserError(f"cannot rebuild the network of {path} from its config ({type(e).__name__}: "
                            f"{one_line(e, 200)})") from None
        model.to(device)
        try:
            small, result = prune_and_measure(
                model, cfg.prune, lambda m, split="test": evaluate(m, data.val if split == "val" else test_loader),
                validate=data.val is not None)
        except ValueError as e:
            raise UserError(str(e)) from None
        test = result["test"]["compact"]
        if a.finetune_epochs:
            result["finetune"] = finetune(small, cfg, train_loader, test_loader, val_loader=data.val)
            test = result["finetune"]["test"]
        meta = compact_meta(cfg, result)
        meta["test_top1"] = test["top1"]
        save_compact(small, os.path.join(tmp, COMPACT_FILE), meta)
        write_json(result, os.path.join(tmp, "prune.json"))
        record = {"config": OmegaConf.to_container(cfg, resolve=True), "derived_from": os.path.abspath(a.run_dir),
                  "method": a.method, "target_flops": a.target_flops,
                  "metrics": {"test": result["test"]["dense"]}, "prune": result, "gates": {}}
        if "reference" in arch:
            record["cost"] = cost(arch, small)
        write_json(record, os.path.join(tmp, RESULTS))
    print(json.dumps({k: result[k] for k in ("threshold", "target_flops", "criterion", "kept", "speedup")}))
    print(f"top1 dense {result['test']['dense']['top1']:.4f} compact {result['test']['compact']['top1']:.4f}"
          + (f" fine-tuned {test['top1']:.4f}" if a.finetune_epochs else "") + f"; written to {out}")
    return 0


def compact_meta(cfg, result: dict) -> dict:
    """What `python -m gated_pruning.evaluate` needs to evaluate a compact file on its own."""
    from gated_pruning.data import STATS

    mean, std = STATS[cfg.dataset.name]
    meta = {"dataset": cfg.dataset.name, "mean": mean, "std": std,
            "test_size": cfg.dataset.get("test_size"), "subset_seed": cfg.seed + 1,
            "widths": result["compact"]["widths"], "threshold": result["threshold"],
            "test_top1": result["test"]["compact"]["top1"]}
    if cfg.dataset.name == "synthetic":  # what re-creates its test set (no subset is drawn)
        meta["synthetic"] = {k: cfg.dataset[k] for k in ("num_classes", "train_size", "test_size", "seed")}
        meta["test_size"] = None
    return meta


if __name__ == "__main__":
    sys.exit(main())
