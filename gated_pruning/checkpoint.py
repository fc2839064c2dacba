"""Checkpoints: written whole (temp file, fsync, rename), read with weights_only=True, refused
with a one-line reason when corrupt or from a different model or config (`fingerprint`)."""
from __future__ import annotations

import copy
import os

import torch
from omegaconf import DictConfig, OmegaConf

from gated_pruning.config import flatten
from gated_pruning.errors import CheckpointError, UserError
from gated_pruning.runtime import save_torch
from gated_pruning.toolkit import intact

FORMAT = 1
FILENAME = "checkpoint.pt"

# keys that may differ between a run and its resumption
RESUMABLE_KEYS = ("resume", "logger", "trainer.progress", "device", "threads", "prune")


def fingerprint(cfg: DictConfig | dict) -> dict:
    """The config a checkpoint must match to be resumed: everything but RESUMABLE_KEYS."""
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else copy.deepcopy(cfg)
    for key in RESUMABLE_KEYS:
        parent, _, leaf = key.rpartition(".")
        node = c
        for part in filter(None, parent.split(".")):
            node = node.get(part, {})
        node.pop(leaf, None)
    return c


def save(obj: dict, path: str) -> None:
    """Write `obj` to `path` so that `path` is always either the old or the new file."""
    save_torch(dict(obj, format=FORMAT), path)


def resolve(path: str) -> str:
    """A checkpoint file from a file path or a run directory holding one."""
    path = os.path.expanduser(str(path))
    if os.path.isdir(path):
        path = os.path.join(path, FILENAME)
    if not os.path.isfile(path):
        raise CheckpointError(f"resume={path}: no such checkpoint file (give a run directory "
                              f"holding {FILENAME}, or the file itself)")
    return path


def load(path: str, map_location="cpu") -> dict:
    path = resolve(path)
    try:
        intact(path, "; resume from another checkpoint, or run again")
    except UserError as e:
        raise CheckpointError(f"resume={e}") from None
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, garbage or pickled code: all refused
        raise CheckpointError(f"resume={path}: corrupt or unreadable checkpoint "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"resume={path}: not a gated_pruning checkpoint (format "
                              f"{obj.get('format') if isinstance(obj, dict) else type(obj).__name__})")
    return obj


def check_compatible(saved: dict, current: dict, path: str) -> None:
    """Refuse a checkpoint whose run config differs from this run's (keys named in the error)."""
    a, b = flatten(saved), flatten(current)
    diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    if diff:
        shown = ", ".join(f"{k}: {a.get(k)!r} in checkpoint vs {b.get(k)!r} now" for k in diff[:4])
        more = f" and {len(diff) - 4} more" if len(diff) > 4 else ""
        raise CheckpointError(f"resume={path}: checkpoint is from a different config ({shown}{more})")
