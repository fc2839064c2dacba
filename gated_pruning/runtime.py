"""What every command needs around its work: the device to run on, the name of a run's record, and
files written whole."""
from __future__ import annotations

import json
import os

import torch

from gated_pruning.errors import ConfigError

RESULTS = "results.json"  # the record every run leaves in its directory


def pick_device(name: str) -> torch.device:
    """`auto` (CUDA when present), `cpu`, `cuda`, `cuda:N`; a one-line error for anything else."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r} is not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available here (use device=auto or cpu)")
    return device


def write_json(obj: dict, path: str) -> None:
    """Write `obj` as JSON so that `path` is always either absent, the old or the new file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)
