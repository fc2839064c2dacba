"""Checkpoints: written whole (temp file, fsync, rename), read with weights_only=True, refused
with a one-line reason when corrupt or from a different model or config (`fingerprint`); the
random generators they save (`rng_state`), and `Preempted`, the stop that leaves one behind."""
from __future__ import annotations

import copy
import os

import torch
from omegaconf import DictConfig, OmegaConf

from gated_pruning.config.keys import flatten
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


class Preempted(RuntimeError):
    """A stop signal (SIGTERM, or Ctrl-C's SIGINT) arrived; the step was finished and a
    checkpoint saved. Carries its path and the signal's name."""

    def __init__(self, path: str, signame: str = "SIGTERM"):
        super().__init__(path)
        self.path, self.signame = path, signame


def rng_state(device) -> dict:
    """The generators a run draws from: the CPU's, and the training device's own where it is a GPU.
    Under torchrun every rank draws the same sequence on its own GPU (seeded alike: stochastic gates
    sample the same masks everywhere), so rank 0's state, saved, is every rank's to restore."""
    state = {"torch": torch.get_rng_state()}
    if torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return state


def set_rng_state(state: dict, device) -> None:
    """Restore `rng_state`'s generators on this process's device (one GPU's state, whichever GPU
    this rank has; a checkpoint of an older version holds every GPU's: the first one is taken, as
    every rank drew alike)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.device(device).type == "cuda":
        if isinstance(cuda, (list, tuple)):
            cuda = cuda[0]
        torch.cuda.set_rng_state(cuda, torch.device(device))
