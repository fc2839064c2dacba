"""results.json, the record every run leaves: its file name, its schema version, the one builder
both writers use (a training run, `experiment.run`; a cut of a finished run, the re-prune tool
`python -m gated_pruning.reprune`) and the one place older records are brought up to date.
Torch-free: reports read records without torch.

Schema versions:
- 0 (no `schema` key; every record committed before 2026-12-06): `target` is absent in the
  oldest, where `target_flops` meant a budget, a uniform width or a cut depending on other keys;
  `final` (the delivered network's numbers) is absent before it existed and in every re-prune
  record. `upgrade` derives both.
- 1: `schema`; `target` ({kind, flops, ...}: what the FLOPs target meant, `arch.target`) and
  `final` (`objective.delivered`) always present. A re-prune record carries `derived_from` (the
  run it cut) and `method`.

A reader calls `read(path)` or `upgrade(record)` and sees version `SCHEMA` only; a record from a
newer version than this code knows is refused, not half-read.
"""
from __future__ import annotations

import json
import math

from gated_pruning.errors import UserError
from gated_pruning.objective import delivered

RESULTS = "results.json"
SCHEMA = 1


class RecordError(UserError, ValueError):
    """A record this code cannot read: damaged, or from a newer schema."""


def build(sections: dict) -> dict:
    """The record of a run: its `sections` (config, metrics, prune, cost, target, env, ...) with
    `schema` first and `final` computed from them (never written by hand)."""
    record = {"schema": SCHEMA, **{k: v for k, v in sections.items() if k not in ("schema", "final")}}
    record["final"] = delivered(record)
    return record


def upgrade(record: dict) -> dict:
    """`record` as version SCHEMA (a new dict where anything changes; the file is left alone)."""
    version = record.get("schema", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise RecordError(f"schema is {json.dumps(version)}, not a version number")
    if version > SCHEMA:
        raise RecordError(f"schema {version} is newer than this code reads ({SCHEMA}): update gated_pruning")
    if version == SCHEMA:
        return record
    out = dict(record)
    if out.get("target") is None:
        out["target"] = target_v0(out)
    if out.get("final") is None:
        try:
            out["final"] = delivered(out)
        except (AttributeError, KeyError, TypeError):  # a malformed section: the reader notes it
            out["final"] = None
    out["schema"] = SCHEMA
    return out


def read(path: str) -> dict:
    """The record at `path`, upgraded; OSError or ValueError for a file that is not JSON,
    RecordError for one this code cannot read."""
    with open(path) as fh:
        record = json.load(fh)
    if not isinstance(record, dict):
        raise RecordError("not the record of a run (not a JSON object)")
    return upgrade(record)


def _get(d, path: str):
    for key in path.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def _fraction(x) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def target_v0(record: dict) -> dict:
    """{kind, flops} of a version-0 record without `target`: derived from `target_flops` and the
    config, where that key meant a budget (a gated run), a uniform width (`arch.source=uniform`), a
    retrained run's widths (`arch.source=run`) or a cut (`prune.target_flops`, or the re-prune tool's
    --target-flops)."""
    top = _fraction(record.get("target_flops"))
    gated = _get(record, "config.model.gated") is True
    if record.get("derived_from") is not None:
        return {"kind": "cut" if top is not None else None, "flops": top}
    cut = _fraction(_get(record, "config.prune.target_flops"))
    if cut is not None:
        return {"kind": "cut", "flops": cut}
    configured = _fraction(_get(record, "config.target_flops"))
    source = _get(record, "config.arch.source")
    if source == "uniform":
        return {"kind": "uniform", "flops": top if top is not None else configured}
    if source == "run":
        return {"kind": "arch_run", "flops": top}
    if gated and configured is not None and _get(record, "config.budget.enabled") is not False:
        return {"kind": "budget", "flops": top if top is not None else configured}  # records before `budget`
    return {"kind": None, "flops": None}
