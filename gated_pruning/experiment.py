"""One run, wired from the config: data, model, optimizers, tracker; fit; prune; results.json.

Wiring only: every piece lives in its own module and is named in the config by `_target_`.
"""
from __future__ import annotations

import json
import os
import sys
import time

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gated_pruning import checkpoint, distributed, prune
from gated_pruning.data import build_data
from gated_pruning.config import check_config, fingerprint, tracker_config
from gated_pruning.errors import ConfigError
from gated_pruning.models import vgg
from gated_pruning.optim import lr_lambda, split_parameters
from gated_pruning.runtime import RESULTS, environment, now, pick_device, set_threads, write_json
from gated_pruning.stats import cost, count_params
from gated_pruning.tracking import NullTracker, build_tracker
from gated_pruning.train import Trainer

def build(node, **kwargs):
    """`hydra.utils.instantiate`, with a constructor's ValueError turned into a ConfigError."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, ValueError):
            raise ConfigError(str(cause)) from None
        raise


def architecture(cfg, num_classes: int) -> dict:
    """Which network this run trains (`arch.source`), the epochs it trains for, and the dense
    reference its FLOPs are counted against:

    - config: the model group's network (reference: the same network, every channel kept);
    - uniform: uniform channel scaling, the width multiplier whose FLOPs are `target_flops` of
      the configured network's;
    - run: the kept widths of a finished run (`arch.run`), re-initialized (reference: that run's).
    `arch.epochs=flops` multiplies trainer.epochs by reference/this FLOPs (Scratch-B of Liu et
    al., ICLR 2019: the same compute as training the reference; `same` is Scratch-E).
    """
    m, a = cfg.model, cfg.arch
    ref = vgg.vgg_widths(m.depth, m.width)
    reference = vgg.VGG(ref, num_classes, gated=False)
    out = {"source": a.source, "overrides": {}, "epochs": cfg.trainer.epochs,
           "reference": {"widths": reference.widths(), "flops": int(reference.flops()),
                         "params": count_params(reference)}}
    if a.source == "uniform":  # what each source needs: config._arch_source_complete
        out["overrides"] = {"width": vgg.uniform_width(m.depth, m.width, cfg.target_flops, num_classes)}
    elif a.source == "run":
        src = source_run(a.run)
        widths = src["prune"]["compact"]["widths"]
        if len(widths) != len(reference.widths()):
            raise ConfigError(f"arch.run={a.run}: its network has {len(widths)} conv layers, "
                              f"model.depth={m.depth} has {len(reference.widths())}")
        out["overrides"] = {"widths": widths}
        out["run"] = os.path.abspath(a.run)
        out["target_flops"] = src.get("target_flops")
        out["reference"] = (src.get("cost") or {}).get("reference") or out["reference"]
    elif a.source != "config":
        raise ConfigError(f"arch.source={a.source!r} is not one of config, uniform, run")
    if a.source == "uniform" or (m.gated and cfg.budget.enabled):
        out["target_flops"] = cfg.target_flops
    if cfg.prune.get("target_flops") is not None:
        out["target_flops"] = cfg.prune.target_flops
    if a.epochs not in ("same", "flops"):
        raise ConfigError(f"arch.epochs={a.epochs!r} is not one of same, flops")
    if a.epochs == "flops":
        net = vgg.build(m.depth, **{"width": m.width, **out["overrides"]}, num_classes=num_classes, gated=False)
        out["epochs"] = int(cfg.trainer.epochs * out["reference"]["flops"] / net.flops())
    return out


def source_run(run_dir) -> dict:
    """The results.json of a finished, pruned run (for arch.source=run)."""
    path = os.path.join(str(run_dir), RESULTS) if run_dir else None
    if not path or not os.path.isfile(path):
        raise ConfigError(f"arch.run={run_dir}: no {RESULTS} there (give the directory of a finished run)")
    try:
        with open(path) as f:
            res = json.load(f)
        res["prune"]["compact"]["widths"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"arch.run={run_dir}: {RESULTS} has no pruned widths (prune.compact.widths)") from None
    return res


def bind(obj, *args):
    """`obj.bind(*args)`, a ValueError (an option that does not fit this model) as a ConfigError."""
    try:
        return obj.bind(*args)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def finalize_gates(model, opt_g) -> None:
    """Keep the gates as trained: APG's prox point, binarized values for binary gates."""
    if opt_g is not None:
        opt_g.commit_prox()
    with torch.no_grad():
        for gate in model.gates():
            gate.weight.copy_(gate.hard())


def run(cfg: DictConfig, run_dir: str, run_name: str | None = None, group: str | None = None,
        choices: dict | None = None) -> dict:
    """Train, prune and report one run into `run_dir`; returns what results.json holds."""
    check_config(cfg)
    set_threads(cfg.threads)
    device = distributed.setup(pick_device(cfg.device))
    try:
        return _run(cfg, run_dir, device, run_name, group, choices)
    finally:
        distributed.teardown()


def build_trainer(cfg, data, device, run_dir: str = ".") -> tuple[Trainer, dict]:
    """The model, its optimizers, schedules, penalty and budget, wired into a Trainer for `data`;
    returns (trainer, arch) (arch: which network, see `architecture`). `cfg.trainer.epochs`
    becomes the architecture's epochs (Scratch-B trains longer)."""
    torch.manual_seed(cfg.seed)
    binarizer = build(cfg.binarizer)
    o = cfg.optimizer
    schedule_args = dict(milestones=o.milestones, factor=o.factor, warmup_epochs=o.warmup_epochs)
    try:
        lr_lambda(o.schedule, 1, 1, **schedule_args)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    arch = architecture(cfg, data.num_classes)
    if arch["epochs"] != cfg.trainer.epochs:
        cfg.trainer.epochs = arch["epochs"]
    model = build(cfg.model, num_classes=data.num_classes, binarizer=binarizer, **arch["overrides"]).to(device)
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    weights, gates = split_parameters(model)
    opt_w = build(o.weights, params=weights)
    opt_g = build(o.gates, params=gates) if gates else None
    total = cfg.trainer.epochs * len(data.train)
    lam = lr_lambda(o.schedule, total, len(data.train), **schedule_args)
    sched_w = torch.optim.lr_scheduler.LambdaLR(opt_w, lam)
    sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, lam) if opt_g is not None else None

    penalty = bind(build(cfg.penalty), model) if gates else None
    trainer = Trainer(model, data.train, data.test, opt_w, sched_w, cfg.trainer, val_loader=data.val,
                      opt_g=opt_g, sched_g=sched_g, penalty=penalty, run_dir=run_dir,
                      fingerprint=fingerprint(cfg), eps=cfg.trainer.eps)
    if cfg.target_flops is not None and gates and cfg.budget.enabled:
        budget = build({k: v for k, v in cfg.budget.items() if k != "enabled"}, target=cfg.target_flops)
        trainer.budget = bind(budget, model, penalty, trainer.trained_gate_weights, total, cfg.prune.threshold)
    return trainer, arch


def _run(cfg, run_dir, device, run_name, group, choices) -> dict:
    main = distributed.is_main()
    started = now()
    state = checkpoint.load(cfg.resume) if cfg.resume else None
    data = build_data(cfg.dataset, device, cfg.seed)
    trainer, arch = build_trainer(cfg, data, device, run_dir)
    model, opt_g, penalty = trainer.model, trainer.opt_g, trainer.penalty
    if state is not None:
        trainer.load_state_dict(state, checkpoint.resolve(cfg.resume))
    config = OmegaConf.to_container(cfg, resolve=True)
    tracker = build_tracker(cfg.logger, tracker_config(cfg, choices), run_name, run_dir, group=group,
                            run_id=trainer.extra_state.get("wandb_id")) if main else NullTracker()
    trainer.tracker = tracker
    trainer.extra_state["wandb_id"] = tracker.run_id
    try:
        start = time.perf_counter()
        metrics = trainer.fit()
        train_seconds = time.perf_counter() - start
        history_final = trainer.gate_record()
        finalize_gates(model, opt_g)
        results = {
            "config": config,
            "target_flops": arch.get("target_flops"),  # the FLOPs target its network was made for
            "run_name": run_name,
            "choices": choices or {},
            "device": str(device),
            "env": environment(device),
            "time": {"start": started},
            "metrics": metrics,
            "curve": trainer.curve,
            "train_seconds_this_process": train_seconds,
            "gates": {
                "layers": trainer.layer_names,
                "channels": model.widths(),
                "final": history_final,
                "history": trainer.history,
                "dead_layers": sorted(trainer.dead_warned),
                "gamma_final": float(penalty.gamma) if penalty is not None else None,
            },
            "wandb": {"run_id": tracker.run_id, "dir": tracker.run_dir},
        }
        if not main:  # rank 0 writes, prunes and reports
            return results
        with checkpoint.atomic(os.path.join(run_dir, "model.pt")) as tmp:  # never half a file
            torch.save({"model": model.state_dict(), "config": config, "arch": arch}, tmp)
        final = model
        if cfg.prune.enabled:
            results["prune"], final = prune_run(model, cfg, trainer, run_dir)
        results["cost"] = cost(arch, final)
        results["time"]["end"] = now()
        write_json(results, os.path.join(run_dir, RESULTS))
        tracker.summary(summary_values(results))
        history = trainer.history
        if history:
            tracker.line_series(
                "charts/zero_gate_fraction", [h["epoch"] for h in history],
                {n: [h["zeros"][i] / c for h in history]
                 for i, (n, c) in enumerate(zip(trainer.layer_names, trainer.layer_channels))},
                "fraction of zero gates per layer", "epoch")
    finally:
        tracker.finish()
    return results


def prune_run(model, cfg, trainer: Trainer, run_dir: str) -> tuple[dict, torch.nn.Module]:
    """Cut the zero-gate channels (or cut to prune.target_flops), measure dense vs compact,
    optionally fine-tune, save; returns (the prune record, the compact network)."""
    try:
        small, result = prune.prune_and_measure(model, cfg.prune, trainer.evaluate,
                                                validate=trainer.val_loader is not None)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for name in result["dead_layers"]:
        print(f"warning: every gate of {name} is zero: the pruned network keeps one zero channel "
              "there and outputs a constant", file=sys.stderr)
    p = result["compact"]
    print(f"pruned: params {result['kept']['params']:.1%} kept, FLOPs {result['kept']['flops']:.1%} "
          f"kept, latency x{result['speedup']:.2f} faster, top1 {result['test']['dense']['top1']:.4f} "
          f"-> {result['test']['compact']['top1']:.4f}, widths {p['widths']}", file=sys.stderr)
    top1 = result["test"]["compact"]["top1"]
    if cfg.prune.finetune_epochs:
        result["finetune"] = prune.finetune(small, cfg, trainer.train_loader, trainer.test_loader,
                                            tracker=trainer.tracker, run_dir=run_dir, step_offset=trainer.step,
                                            val_loader=trainer.val_loader)
        top1 = result["finetune"]["test"]["top1"]
    meta = prune.compact_meta(cfg, result)
    meta["test_top1"] = top1
    prune.save_compact(small, os.path.join(run_dir, prune.COMPACT_FILE), meta)
    return result, small


def summary_values(results: dict) -> dict:
    """Flat scalars of results.json for a tracker's run summary."""
    out = {}
    m = results["metrics"]
    for split in ("train", "test"):
        for k, v in m.get(split, {}).items():
            out[f"final/{split}_{k}"] = v
    final = results["gates"]["final"]
    if final:
        for name, z, c in zip(results["gates"]["layers"], final["zeros"], results["gates"]["channels"]):
            out[f"final/zero_frac/{name}"] = z / c
    pr = results.get("prune")
    if pr:
        out.update({"prune/params_kept": pr["kept"]["params"], "prune/flops_kept": pr["kept"]["flops"],
                    "prune/speedup": pr["speedup"], "prune/compact_top1": pr["test"]["compact"]["top1"],
                    "prune/dense_latency_ms": pr["dense"]["latency_ms"],
                    "prune/compact_latency_ms": pr["compact"]["latency_ms"]})
        if pr["finetune"]:
            out["prune/finetuned_top1"] = pr["finetune"]["test"]["top1"]
    return out
