"""One run, wired from the config: data, model, optimizers, tracker; fit; prune; results.json.

Wiring only: every piece lives in its own module and is named in the config by `_target_`.
"""
from __future__ import annotations

import os
import sys
import time

import torch
from omegaconf import DictConfig, OmegaConf

from gated_pruning import checkpoint, distributed, pruning, record
from gated_pruning import weights as trained_weights
from gated_pruning.arch import architecture, instantiated, model_node, outcome
from gated_pruning.checkpoint import fingerprint
from gated_pruning.config.checks import budget_runs
from gated_pruning.config.keys import check_config
from gated_pruning.data import build_data
from gated_pruning.errors import ConfigError, raise_if_stopped
from gated_pruning.models.protocol import kept_by_name, rebuilt
from gated_pruning.optim import lr_lambda, split_parameters
from gated_pruning.record import RESULTS
from gated_pruning.runtime import (environment, now, pick_device, save_torch, set_deterministic,
                                   set_threads, write_json)
from gated_pruning.stats import cost
from gated_pruning.tracking import NullTracker, build_tracker, tracker_config
from gated_pruning.train import Trainer


build = instantiated  # instantiate, with what a user can fix as one line (arch.instantiated)


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
    set_deterministic(cfg.trainer.get("deterministic", False))
    if cfg.trainer.compile:  # a sweep's jobs share a process: each compiles afresh, none falls back to eager
        torch._dynamo.reset()
    device = distributed.setup(pick_device(cfg.device))
    try:
        return _run(cfg, run_dir, device, run_name, group, choices)
    finally:
        distributed.teardown()


def _schedule(o) -> dict:
    """The lr schedule's arguments, checked (a ValueError of lr_lambda as a ConfigError)."""
    args = dict(milestones=o.milestones, factor=o.factor, warmup_epochs=o.warmup_epochs)
    try:
        lr_lambda(o.schedule, 1, 1, **args)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return args


def _budget(cfg):
    """The FLOPs budget controller, unbound, or None when it does not run (`checks.budget_runs`)."""
    if not budget_runs(cfg):
        return None
    return build({k: v for k, v in cfg.budget.items() if k != "enabled"}, target=cfg.target_flops)


def network(cfg, dims: dict, binarizer, arch: dict, load: bool = True):
    """The network a run trains: the model group's (`dims`: the data set's outputs and input
    size, `datasets.Described.model_args`), rebuilt with the architecture's kept counts when it has
    them (uniform scaling, a pruned architecture from scratch), or holding the trained weights of
    `model.weights` (`load`; weights.py; recorded in `arch["weights"]`)."""
    model = build(model_node(cfg), binarizer=binarizer, **dims, **arch.get("overrides", {}))
    if arch.get("counts") is not None:
        model = rebuilt(model, arch["counts"])
    elif load and cfg.model.get("weights"):
        arch["weights"] = trained_weights.load_into(model, cfg.model.weights, cfg.model.get("weights_key"))
    return model


def check_buildable(cfg, dims: dict) -> None:
    """Build what `build_trainer` builds from the config alone (the architecture, the network, its
    gates' penalty, the budget, the lr schedule) on the meta device: no memory, no data, but every
    constructor's check, so that `run.py` refuses a run before its directory exists. A network that
    cannot be built on the meta device (one that copies tensors while it is made) is built on the
    CPU instead; one that cannot be built at all is one ConfigError line."""
    try:
        _build_all(cfg, dims, "meta")
    except ConfigError:
        raise
    except Exception:  # noqa: BLE001 - the meta device's own limits: the CPU says whether it builds
        try:
            _build_all(cfg, dims, "cpu")
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 - a network that cannot be built: one line, no traceback
            what = cfg.model.get("name") or cfg.model.get("_target_")
            cause = e.__cause__ or e
            raise ConfigError(f"model {what} cannot be built ({type(cause).__name__}: "
                              f"{' '.join(str(cause).split())[:200]})") from None


def _build_all(cfg, dims: dict, device: str) -> None:
    with torch.device(device):
        _schedule(cfg.optimizer)
        arch = architecture(cfg, dims)
        model = build(model_node(cfg), binarizer=build(cfg.binarizer), **dims)  # counts: arch checked them
        if cfg.model.get("weights") and arch.get("counts") is None:  # the file's names and shapes
            trained_weights.load_into(model, cfg.model.weights, cfg.model.get("weights_key"))
        if model.gates():
            bind(build(cfg.penalty), model)
            _budget(cfg)


def build_trainer(cfg, data, device, run_dir: str = ".") -> tuple[Trainer, dict]:
    """The model, its optimizers, schedules, penalty and budget, wired into a Trainer for `data`;
    returns (trainer, arch) (arch: which network, see `arch.architecture`). `cfg.trainer.epochs`
    becomes the architecture's epochs (Scratch-B trains longer)."""
    torch.manual_seed(cfg.seed)
    binarizer = build(cfg.binarizer)
    o = cfg.optimizer
    schedule_args = _schedule(o)
    arch = architecture(cfg, data.described.model_args)
    if arch["epochs"] != cfg.trainer.epochs:
        cfg.trainer.epochs = arch["epochs"]
    model = network(cfg, data.described.model_args, binarizer, arch).to(device)
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
    budget = _budget(cfg) if gates else None
    if budget is not None:
        trainer.budget = bind(budget, model, penalty, trainer.gates.trained_weights, total, cfg.prune.threshold)
    return trainer, arch


def _run(cfg, run_dir, device, run_name, group, choices) -> dict:
    main = distributed.is_main()
    started = now()
    env = environment(device)  # the code as it was when this run loaded it, not when it ends
    state = checkpoint.load(cfg.resume) if cfg.resume else None
    data = build_data(cfg.dataset, device, cfg.seed)
    trainer, arch = build_trainer(cfg, data, device, run_dir)
    model, opt_g, penalty = trainer.model, trainer.opt_g, trainer.penalty
    if state is not None:
        trainer.load_state_dict(state, checkpoint.resolve(cfg.resume))
    config = OmegaConf.to_container(cfg, resolve=True)
    tracker = build_tracker(cfg.logger, tracker_config(cfg, choices), run_name, run_dir, group=group,
                            run_id=trainer.extra_state.get("wandb_id"), step=trainer.step) if main else NullTracker()
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
            "target_flops": arch["target"]["flops"],  # the FLOPs target its network was made for
            "run_name": run_name,
            "choices": choices or {},
            "device": str(device),
            "env": env,
            "time": {"start": started},
            "metrics": metrics,
            "curve": trainer.curve,
            "train_seconds_this_process": train_seconds,
            "gates": {
                "layers": trainer.gates.names,
                "channels": model.sizes(),
                "kinds": [u.kind for u in model.units()],
                "final": history_final,
                "history": trainer.gates.history,
                "dead_layers": sorted(trainer.gates.dead_warned),
                "gamma_final": float(penalty.gamma) if penalty is not None else None,
            },
            "wandb": {"run_id": tracker.run_id, "dir": tracker.run_dir},
        }
        if distributed.world_size() > 1:  # training ends together; the rest is rank 0's alone, in one
            distributed.teardown()        # process: pruning, fine-tuning (no DDP, no synced batch norm), files
            if not main:
                return results
            data.train = data.train.whole()  # the whole global batch for fine-tuning, not rank 0's slice
        save_torch({"model": model.state_dict(), "config": config, "arch": arch}, os.path.join(run_dir, "model.pt"))
        final, widths = model, model.sizes()
        names = [u.name for u in model.units()]
        if cfg.prune.enabled:
            results["prune"], final = pruning.prune(model, cfg, trainer.evaluate, data, run_dir, tracker=tracker,
                                                    run_dir=run_dir, step_offset=trainer.step)
            print(pruned_line(results["prune"]), file=sys.stderr)
            widths = results["prune"]["compact"]["widths"]
        results["cost"] = cost(arch, final, kept_by_name(names, widths, arch["reference"].get("units")))
        results["target"], missed = outcome(arch["target"], reached(results, arch["target"]["kind"]))
        results["time"]["end"] = now()
        results = record.build(results)
        raise_if_stopped()
        write_json(results, os.path.join(run_dir, RESULTS))
        if missed:
            print(f"warning: {missed}", file=sys.stderr)
        tracker.summary(summary_values(results))
        history = trainer.gates.history
        if history:
            tracker.line_series(
                "charts/zero_gate_fraction", [h["epoch"] for h in history],
                {n: [h["zeros"][i] / c for h in history]
                 for i, (n, c) in enumerate(zip(trainer.gates.names, trainer.gates.channels))},
                "fraction of zero gates per layer", "epoch")
    finally:
        tracker.finish()
    return results


def pruned_line(result: dict) -> str:
    p = result["finetune"]
    return (f"pruned: params {result['kept']['params']:.1%} kept, FLOPs {result['kept']['flops']:.1%} kept, "
            f"latency x{result['speedup']:.2f} faster, top1 {result['test']['dense']['top1']:.4f} -> "
            f"{result['test']['compact']['top1']:.4f}" + (f" (fine-tuned {p['test']['top1']:.4f})" if p else "")
            + f", widths {result['compact']['widths']}")


def reached(results: dict, kind: str | None) -> float | None:
    """The FLOPs kept by the network a run delivers, as a target of `kind` counts them: a cut
    against the trained network, any other target against the dense reference; None for a gated
    network that was not pruned (its FLOPs are what pruning would cut)."""
    if kind == "cut":
        return results["prune"]["kept"]["flops"]
    if "prune" not in results and results["config"]["model"]["gated"]:
        return None
    return results["cost"]["flops_kept"]


def summary_values(results: dict) -> dict:
    """Flat scalars of results.json for a tracker's run summary: `final/` the network the run
    delivers (objective.delivered: what a W&B sweep's metric names), `trained/` the network as
    trained, before any cut, and `prune/` the cut."""
    out = {f"final/{k}": v for k, v in results["final"].items() if v is not None}
    m = results["metrics"]
    for split in ("train", "val", "test"):
        for k, v in m.get(split, {}).items():
            out[f"trained/{split}_{k}"] = v
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
