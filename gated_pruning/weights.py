"""Trained weights into a network before it trains (`model.weights=PATH`): a run's `model.pt` or
`checkpoint.pt`, a torchvision state dict, a timm-style file (`{"state_dict": ...}`), or any file
whose nested dict holds one (`model.weights_key=a.b`). Read with `weights_only=True` (no pickled
code runs); the prefixes that wrappers add (`module.` of DataParallel, `_orig_mod.` of
torch.compile) are dropped.

The gates are the network's own: a plain state dict fills every other parameter and buffer, and
each gate keeps its initial value, so with `model.gate_init=1` (and no jitter) the gated network
computes the trained network's function at its first step; a gated run's file fills its gates
too. A gate that is batch norm's scale (`model.gate_position=scale`) takes the file's gamma as its
value and the norm's weight becomes 1 (`GatedBatchNorm2d.take_scale`): the same function, with
the gamma the penalty shrinks in the gate. Anything else that does not match (a key missing on
either side, a shape that differs) is one `ConfigError` naming the first few, before any work.
"""
from __future__ import annotations

import os

import torch

from gated_pruning.errors import ConfigError, UserError
from gated_pruning.gates import Gate
from gated_pruning.models.layers import GatedBatchNorm2d
from gated_pruning.toolkit import intact

WRAPPER_PREFIXES = ("module.", "_orig_mod.")
NESTED_KEYS = ("model", "state_dict", "model_state_dict", "net")  # where known files keep the weights


def read(path: str, key: str | None = None) -> dict:
    """The state dict (name -> tensor) that `path` holds, at `key` (dotted) if given."""
    where = f"model.weights={path}"
    if not os.path.isfile(path):
        raise ConfigError(f"{where}: no such file (a state dict saved by torch.save, a run's model.pt, "
                          "or a torchvision or timm weights file)")
    try:
        intact(path)
    except UserError as e:
        raise ConfigError(f"model.weights={e}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except Exception as e:  # noqa: BLE001 - truncated, foreign or pickled code: all refused
        raise ConfigError(f"{where}: not a readable weights file ({type(e).__name__}: "
                          f"{' '.join(str(e).split())[:160]})") from None
    if key:
        for part in key.split("."):
            if not isinstance(obj, dict) or part not in obj:
                held = ", ".join(map(str, list(obj)[:6])) if isinstance(obj, dict) else type(obj).__name__
                raise ConfigError(f"{where}: no {part!r} in it for model.weights_key={key} (it holds {held})")
            obj = obj[part]
    elif isinstance(obj, dict) and not _is_state_dict(obj):
        found = [k for k in NESTED_KEYS if isinstance(obj.get(k), dict) and _is_state_dict(obj[k])]
        if not found:
            held = ", ".join(map(str, list(obj)[:6]))
            raise ConfigError(f"{where}: no state dict at its top level or under {', '.join(NESTED_KEYS)} (it "
                              f"holds {held}): name the key that holds it with model.weights_key=KEY")
        obj = obj[found[0]]
    if not isinstance(obj, dict) or not _is_state_dict(obj):
        raise ConfigError(f"{where}: {'model.weights_key=' + key if key else 'the file'} does not hold a state "
                          "dict (names mapped to tensors)")
    return {_unwrapped(k): v for k, v in obj.items()}


def load_into(model: torch.nn.Module, path: str, key: str | None = None) -> dict:
    """Copy the weights of `path` into `model` (see the module docstring); returns what was
    loaded: {"path", "key", "tensors", "gates"} (gates: whether the file held the gates too)."""
    state = read(path, key)
    own = model.state_dict()
    gate_keys = {f"{n}.{k}" for n, m in model.named_modules() if isinstance(m, Gate) for k in m.state_dict()}
    state = _matched_prefix(state, own)
    has_gates = bool(gate_keys & state.keys())
    needed = set(own) - (set() if has_gates else gate_keys)
    missing = sorted(needed - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    where = f"model.weights={path}"
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of the network's tensors missing from the file ({_few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} in the file the network does not have ({_few(unexpected)})")
        raise ConfigError(f"{where} does not fit this network: {'; '.join(parts)}: weights of another "
                          "architecture, width or number of classes?")
    shapes = [f"{k} {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} here" for k in sorted(state)
              if tuple(state[k].shape) != tuple(own[k].shape)]
    if shapes:
        raise ConfigError(f"{where} does not fit this network: {len(shapes)} tensor(s) of another shape "
                          f"({'; '.join(shapes[:3])}{' ...' if len(shapes) > 3 else ''})")
    if own and next(iter(own.values())).device.type != "meta":  # on the meta device: checked, nothing to copy
        with torch.no_grad():
            for k, v in state.items():
                own[k].copy_(v)
            if not has_gates:  # a gate that is batch norm's scale starts at the file's gamma
                for m in model.modules():
                    if isinstance(m, GatedBatchNorm2d):
                        m.take_scale()
    return {"path": os.path.abspath(path), "key": key, "tensors": len(state), "gates": has_gates}


def _is_zip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _is_state_dict(d: dict) -> bool:
    return bool(d) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in d.items())


def _unwrapped(k: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in WRAPPER_PREFIXES:
            if k.startswith(p):
                k, changed = k[len(p):], True
    return k


def _matched_prefix(state: dict, own: dict) -> dict:
    """`state` with a prefix added or removed so that its names meet the network's (a
    torchvision file for `model=torchvision`, whose network lives under `net.`)."""
    best, hits = state, len(state.keys() & own.keys())
    prefixes = {k.split(".", 1)[0] + "." for k in own if "." in k}
    for p in prefixes:
        added = {p + k: v for k, v in state.items()}
        if len(added.keys() & own.keys()) > hits:
            best, hits = added, len(added.keys() & own.keys())
        removed = {k[len(p):] if k.startswith(p) else k: v for k, v in state.items()}
        if len(removed.keys() & own.keys()) > hits:
            best, hits = removed, len(removed.keys() & own.keys())
    return best


def _few(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")
