"""What every command needs around its work: the device and threads to run on, what a record says
made it (code version, torch, device), the name of a run's record, and files written whole."""
from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
from datetime import datetime, timezone

import torch

from gated_pruning.errors import ConfigError



def check_device(name: str, need_available: bool = True) -> None:
    """`device` names a device this code can use (`auto`, `cpu`, `cuda`, `cuda:N`, `mps`) and, if
    asked, one that exists here; a one-line ConfigError otherwise."""
    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device={name!r} is not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device={name!r} is not supported (auto, cpu, cuda, cuda:N)")
    if need_available and device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={name!r} but MPS is not available here (use device=auto or cpu)")
    if need_available and device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name!r} but CUDA is not available here (use device=auto or cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device={name!r} but this machine has {torch.cuda.device_count()} GPU(s)")


def pick_device(name: str) -> torch.device:
    """The device `name` gives here (`auto`: CUDA when present, else the CPU), checked."""
    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def set_threads(threads: int | None) -> None:
    """Intra-op threads of this process (None: torch's default, one per core)."""
    if threads:
        torch.set_num_threads(int(threads))


def set_deterministic(on: bool) -> None:
    """`trainer.deterministic`: deterministic kernels where torch has them (cuDNN's, cuBLAS's with a
    fixed workspace), benchmark mode off; an op without one warns once (docs/reliability.md, "What is
    exact where"). Off: torch's defaults (on a CPU the runs are exact either way)."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(bool(on), warn_only=True)
    torch.backends.cudnn.benchmark = False if on else torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic = bool(on)


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


@contextlib.contextmanager
def atomic(path: str):
    """Yield a temporary path of the same name, in a temporary folder next to `path`; on success
    it replaces `path` (fsynced), on any failure or stop signal it is removed: `path` is always
    either absent, the old or the new file. (The same name: torch's zip archives name their
    root folder after the file.)"""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmpdir = tempfile.mkdtemp(prefix=".tmp-", dir=directory)
    tmp = os.path.join(tmpdir, os.path.basename(path))
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def write_bytes(data: bytes, path: str) -> None:
    """Write `data` to `path` whole (see `atomic`); a full disk is an OSError, nothing is left."""
    with atomic(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def save_torch(obj, path: str) -> None:
    """`torch.save` whole (see `atomic`), through a Python file: a full disk is an OSError
    (ENOSPC), where torch's own file writer raises a RuntimeError that does not say so."""
    with atomic(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def write_json(obj: dict, path: str) -> None:
    """Write `obj` as JSON so that `path` is always either absent, the old or the new file."""
    write_bytes(json.dumps(obj, indent=1).encode(), path)
