"""Checkpoints: written atomically (temp file, fsync, rename), read with weights_only=True,
refused with a one-line reason when corrupt or from a different model or config."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import torch

from gated_pruning.config import flatten
from gated_pruning.errors import CheckpointError

FORMAT = 1
FILENAME = "checkpoint.pt"


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


def save(obj: dict, path: str) -> None:
    """Write `obj` to `path` so that `path` is always either the old or the new file."""
    with atomic(path) as tmp:
        torch.save(dict(obj, format=FORMAT), tmp)


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
