"""What every command needs around its work: the device and threads to run on, what a record says
made it (code version, torch, device), the name of a run's record, and files written whole."""
from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone

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


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def set_threads(threads: int | None) -> None:
    """Intra-op threads of this process (None: torch's default, one per core)."""
    if threads:
        torch.set_num_threads(int(threads))


def code_version(root: str = ROOT) -> dict:
    """{"commit", "dirty"} of the checkout this code runs from ("unknown" outside a git checkout):
    dirty means tracked files differ from the commit, or files git does not ignore were added."""
    def git(*args):
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=20)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": "unknown", "dirty": "unknown"}
        status = git("status", "--porcelain")
        return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip()) if status.returncode == 0
                else "unknown"}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": "unknown"}


def device_name(device: torch.device) -> str:
    """The accelerator's or the CPU's model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def environment(device: torch.device) -> dict:
    """What made a run's numbers, besides its config: code version, torch, device, threads (the
    reduction order, and so the last digits of every result, depends on the thread count)."""
    return {**code_version(), "torch": torch.__version__, "python": platform.python_version(),
            "device": str(device), "device_name": device_name(device), "threads": torch.get_num_threads(),
            "pid": os.getpid()}


def now() -> str:
    """The time, UTC, ISO 8601 to the millisecond (sortable as text)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def write_json(obj: dict, path: str) -> None:
    """Write `obj` as JSON so that `path` is always either absent, the old or the new file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)
