"""Config checks and views: value ranges, the part a checkpoint must match, flat keys."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from gated_pruning.errors import ConfigError

# keys that may differ between a run and its resumption
RESUMABLE_KEYS = ("resume", "logger", "trainer.progress", "device", "prune")


def check_config(cfg: DictConfig) -> None:
    """Ranges the constructors do not check themselves."""
    checks = [
        ("gamma", cfg.gamma >= 0, ">= 0"),
        ("optimizer.lr", cfg.optimizer.lr > 0, "> 0"),
        ("optimizer.weight_decay", cfg.optimizer.weight_decay >= 0, ">= 0"),
        ("optimizer.momentum", 0 <= cfg.optimizer.momentum < 1, "in [0, 1)"),
        ("trainer.epochs", cfg.trainer.epochs >= 1, ">= 1"),
        ("dataset.batch_size", cfg.dataset.batch_size >= 1, ">= 1"),
        ("dataset.eval_batch_size", cfg.dataset.eval_batch_size >= 1, ">= 1"),
        ("prune.threshold", cfg.prune.threshold >= 0, ">= 0"),
        ("prune.finetune_epochs", cfg.prune.finetune_epochs >= 0, ">= 0"),
    ]
    for key, ok, allowed in checks:
        if not ok:
            raise ConfigError(f"{key}={OmegaConf.select(cfg, key)} must be {allowed}")
    float_gates = str(cfg.binarizer.get("_target_", "")).endswith("NoBinarizer")
    clamped = cfg.optimizer.gates.get("clamp") in ("prox", True)
    if cfg.model.get("gated", True) and cfg.model.get("gate_position") == "relu" and float_gates \
            and not clamped:
        raise ConfigError("model.gate_position=relu with float gates needs them clamped at 0 "
                          "(optimizer.gates.clamp=prox for apg, =true for sgd): a negative gate after "
                          "the ReLU cannot be folded into batch norm when pruning")


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def fingerprint(cfg: DictConfig) -> dict:
    """The config a checkpoint must match to be resumed: everything but RESUMABLE_KEYS."""
    c = OmegaConf.to_container(cfg, resolve=True)
    for key in RESUMABLE_KEYS:
        parent, _, leaf = key.rpartition(".")
        node = c
        for part in filter(None, parent.split(".")):
            node = node.get(part, {})
        node.pop(leaf, None)
    return c


def tracker_config(cfg: DictConfig, choices: dict | None = None) -> dict:
    """The run config as a tracker sees it: flat dotted keys (`optimizer.lr`, as a W&B sweep
    names its parameters) plus each config group's chosen option (`optimizer: apg`, as a sweep
    over group options sets it), so sweep values and logged config never collide."""
    out = flatten(OmegaConf.to_container(cfg, resolve=True))
    out.update({k: v for k, v in (choices or {}).items() if v is not None and not k.startswith("hydra")})
    return out
