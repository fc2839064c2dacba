"""`python -m gated_pruning.reprune`: prune a finished run's network again, at another threshold or
cut to a FLOPs target, optionally fine-tuned, into a folder of its own:

    python -m gated_pruning.reprune RUN_DIR --threshold 0.05 [--round-to 8] [--data-root DIR]
    python -m gated_pruning.reprune RUN_DIR --target-flops 0.5 [--criterion gate|l1norm] [--finetune-epochs N]

The step itself (cut, measure, fine-tune, save) is `pruning.py`'s, the same a run takes.
"""
from __future__ import annotations

import json
import os
import sys

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gated_pruning.arch import outcome
from gated_pruning.config.keys import RULES
from gated_pruning.data import build_data, locate_cifar
from gated_pruning.datasets import DECLARED
from gated_pruning.imagefolder import scan
from gated_pruning.errors import UserError
from gated_pruning.experiment import network
from gated_pruning.pruning import prune
from gated_pruning import record
from gated_pruning.record import RESULTS
from gated_pruning.runtime import check_device, environment, pick_device, set_threads, write_json
from gated_pruning.stats import cost
from gated_pruning.toolkit import ArgumentParser, arg, intact, one_line, readable_dir, readable_file, run_tool, staged, warn
from gated_pruning.train import evaluate


def main(argv=None) -> int:
    """Prune a finished run's network (RUN_DIR/model.pt) again: at another threshold, or cut to a
    FLOPs target by a ranking criterion, optionally fine-tuned. Writes OUT/results.json (a run
    record like a training run's, with `derived_from`), OUT/prune.json and OUT/compact.pt2."""
    p = ArgumentParser(prog="python -m gated_pruning.reprune", description=main.__doc__)
    p.add_argument("run_dir")
    p.add_argument("--threshold", type=arg(RULES["prune.threshold"], "--threshold"),
                   help="remove gates with |gate| <= this (default 0)")
    p.add_argument("--target-flops", type=arg(RULES["prune.target_flops"], "--target-flops"),
                   help="cut to this fraction of the network's FLOPs")
    p.add_argument("--criterion", choices=("gate", "l1norm", "taylor", "thinet", "lasso"),
                   help="how --target-flops cuts: gate (global, Network Slimming; default for gated runs), "
                        "l1norm (per layer, Li et al. 2017; default for plain runs), taylor (Molchanov et al. "
                        "2017), thinet (Luo et al. 2017), lasso (He et al. 2017)")
    p.add_argument("--rounds", type=arg(RULES["prune.rounds"], "--rounds"),
                   help="cut in this many rounds, fine-tuning --round-epochs between them (default 1)")
    p.add_argument("--round-epochs", type=arg(RULES["prune.round_epochs"], "--round-epochs"),
                   help="fine-tuning epochs after each round but the last (default 1)")
    p.add_argument("--round-to", type=arg(RULES["prune.round_to"], "--round-to"),
                   help="round kept widths of a threshold cut up to a multiple of this (default 1)")
    p.add_argument("--finetune-epochs", type=arg(RULES["prune.finetune_epochs"], "--finetune-epochs"),
                   default=0, help="fine-tune the compact network (default 0)")
    p.add_argument("--finetune-lr", type=arg(RULES["prune.finetune_lr"], "--finetune-lr"),
                   help="default: the run's prune.finetune_lr")
    p.add_argument("--data-root", help="override dataset.root of the run")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=arg(RULES["threads"], "--threads"),
                   help="CPU threads (default: one per core); the record says which, reports pair by it")
    p.add_argument("--out", help="output folder (default RUN_DIR/prune-<what>); must not exist")
    p.add_argument("--method", help="label of the result in reports (e.g. l1norm, slimming)")
    return run_tool(_prune_again, p.parse_args(argv))


def _check_flags(a) -> None:
    """Flags that make no sense together: each one line, before any work."""
    if a.target_flops is None and a.criterion is not None:
        raise UserError("--criterion ranks channels for --target-flops: give --target-flops too")
    if a.target_flops is not None:
        for flag, value in (("--threshold", a.threshold), ("--round-to", a.round_to)):
            if value is not None:
                raise UserError(f"{flag} shapes a cut of the zero gates; --target-flops sets the widths itself: "
                                "give one of them")
    if a.finetune_lr is not None and not a.finetune_epochs:
        raise UserError("--finetune-lr is the learning rate of fine-tuning: give --finetune-epochs N too")
    if (a.rounds or a.round_epochs) and a.target_flops is None:
        raise UserError("--rounds and --round-epochs shape a cut to --target-flops: give --target-flops too")
    if a.round_epochs and (a.rounds or 1) == 1:
        raise UserError("--round-epochs is the fine-tuning between rounds: give --rounds N (N > 1) too")


def _load_run(run_dir: str) -> tuple[dict, str]:
    readable_dir(run_dir, "run directory")
    path = intact(readable_file(os.path.join(run_dir, "model.pt"), ": give the directory of a finished run"))
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, foreign or pickled code: all refused
        raise UserError(f"{path} is not a readable model.pt ({type(e).__name__}: {one_line(e, 160)})") from None
    if not isinstance(saved, dict) or not {"model", "config"} <= saved.keys():
        raise UserError(f"{path} is not a model.pt written by a run (no 'model' and 'config' in it)")
    return saved, path


def _prune_again(a) -> int:
    _check_flags(a)
    saved, path = _load_run(a.run_dir)
    check_device(a.device)
    cfg = OmegaConf.create(saved["config"])
    if a.data_root:
        readable_dir(a.data_root, "--data-root")
        kind = DECLARED[cfg.dataset.name].kind
        if kind == "synthetic":
            warn(f"--data-root {a.data_root} does nothing here: the run trained on synthetic data, made from its "
                 "seed, not read from files")
        else:
            if kind == "memory":
                locate_cifar(cfg.dataset.name, a.data_root, False, key="--data-root")
            else:
                scan(a.data_root, key="--data-root")
            cfg.dataset.root = a.data_root
    crit = a.criterion or ("gate" if cfg.model.get("gated", True) else "l1norm")
    what = (f"flops{a.target_flops:g}-{crit}" if a.target_flops is not None else f"{a.threshold or 0:g}") + \
        (f"-r{a.rounds}" if (a.rounds or 1) > 1 else "") + (f"-ft{a.finetune_epochs}" if a.finetune_epochs else "")
    out = a.out or os.path.join(a.run_dir, f"prune-{what}")
    with staged(out) as tmp:  # made now: an unwritable --out fails before any work
        cfg.prune = OmegaConf.merge(cfg.prune, {
            "enabled": True, "threshold": a.threshold or 0.0, "round_to": a.round_to or 1,
            "target_flops": a.target_flops, "criterion": crit if a.target_flops is not None else None,
            "rounds": a.rounds or 1, "round_epochs": a.round_epochs or 1,
            "finetune_epochs": a.finetune_epochs,
            "finetune_lr": a.finetune_lr if a.finetune_lr is not None else cfg.prune.finetune_lr})
        set_threads(a.threads)
        device = pick_device(a.device)
        model, data, arch = _rebuild(cfg, saved, path, device)
        result, small = prune(model, cfg, lambda m, split="test": evaluate(m, data.val if split == "val" else data.test),
                              data, tmp)
        test = result["finetune"]["test"] if result["finetune"] else result["test"]["compact"]
        goal, missed = outcome({"kind": "cut" if a.target_flops is not None else None, "flops": a.target_flops},
                               result["kept"]["flops"])
        if missed:
            warn(missed)
        write_json(result, os.path.join(tmp, "prune.json"))
        sections = {"config": OmegaConf.to_container(cfg, resolve=True), "derived_from": os.path.abspath(a.run_dir),
                    "method": a.method, "target_flops": a.target_flops, "target": goal, "env": environment(device),
                    "metrics": {"test": result["test"]["dense"]}, "prune": result, "gates": {}}
        if "reference" in arch:
            sections["cost"] = cost(arch, small, result["compact"]["widths"])
        write_json(record.build(sections), os.path.join(tmp, RESULTS))
    print(json.dumps({k: result[k] for k in ("threshold", "target_flops", "criterion", "kept", "speedup")}))
    print(f"top1 dense {result['test']['dense']['top1']:.4f} compact {result['test']['compact']['top1']:.4f}"
          + (f" fine-tuned {test['top1']:.4f}" if a.finetune_epochs else "") + f"; written to {out}")
    return 0


def _rebuild(cfg, saved: dict, path: str, device):
    """(the trained network on `device`, the run's data, its architecture record) from a model.pt."""
    try:
        data = build_data(cfg.dataset, device, cfg.seed)
        arch = saved.get("arch") or {}
        model = network(cfg, data.described.model_args, instantiate(cfg.binarizer), arch, load=False)  # model.pt has them
        model.load_state_dict(saved["model"])
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - a config or state this code cannot rebuild
        raise UserError(f"cannot rebuild the network of {path} from its config ({type(e).__name__}: "
                        f"{one_line(e, 200)})") from None
    return model.to(device), data, arch


if __name__ == "__main__":
    sys.exit(main())
