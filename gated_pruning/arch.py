"""Which network a run trains (the `arch` config node), and the one FLOPs target it is made for.

`architecture(cfg, dims)`: the network (`arch.source`), the epochs it trains for and the
dense reference its FLOPs are counted against, for any model of `models/` (through its units):
- config: the model group's network (reference: the same network, every channel kept);
- uniform: uniform channel scaling, every channel group kept at one fraction of its width, the
  fraction whose FLOPs are `arch.target_flops` of the configured network's (method=uniform sets
  it to the top-level target_flops);
- run: the kept counts of a finished run (`arch.run`), re-initialized (reference: that run's).
Both other sources give `counts`, one per unit of the model, which `models.protocol.rebuilt`
turns into the network. `arch.epochs=flops` multiplies trainer.epochs by reference/this FLOPs
(Scratch-B of Liu et al., ICLR 2019: the same compute as training the reference; `same` is
Scratch-E).

`target(cfg, arch)`: what a run's FLOPs target means, said once (results.json's "target"):
- cut: `prune.target_flops`, a cut of the trained network after training;
- uniform: `arch.target_flops`, the FLOPs of the uniformly scaled network;
- arch_run: the target the source run (`arch.run`) of a Scratch-E/B baseline was made for;
- budget: the top-level `target_flops`, the FLOPs budget of a gated run;
- None: no target.
`outcome(target, kept)` says whether the delivered network holds it.
"""
from __future__ import annotations

import os

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gated_pruning.config.checks import budget_runs
from gated_pruning.errors import ConfigError
from gated_pruning.record import RESULTS, read
from gated_pruning.stats import count_params

LOAD_KEYS = ("weights", "weights_key")  # model keys that say what to load, not what to build (weights.py)
TOLERANCE = 0.03  # how far (fraction of the dense FLOPs) a budget or a uniform width may end from its target
HOLDING_PRESETS = "method=sss and method=binary"  # the presets whose budgets end within TOLERANCE (docs/methods.md)


def instantiated(node, **kwargs):
    """`hydra.utils.instantiate`, with what a user can fix as a one-line ConfigError: a
    constructor's ValueError (an option that does not fit), and a user's own network
    (`model.net`) that cannot be imported or built with the arguments given."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, ValueError):
            raise ConfigError(str(cause)) from None
        full_key = str(e).rsplit("full_key: ", 1)[-1].strip() if "full_key: " in str(e) else ""
        if full_key == "net" or full_key.startswith("net."):
            target = OmegaConf.select(node, "net._target_")
            why = " ".join(str(cause or e).split()).replace("Are you sure that module", "").strip()
            raise ConfigError(f"model.net._target_={target}: cannot build it ({why[:240]})") from None
        raise


def model_node(cfg):
    """The `model` config node that builds the network: what its constructor takes."""
    return OmegaConf.masked_copy(cfg.model, [k for k in cfg.model if k not in LOAD_KEYS])


def plain_network(cfg, dims: dict):
    """The configured network without gates (the dense reference); `dims`: what the data set
    gives its constructor (`datasets.Described.model_args`: outputs, input size)."""
    return instantiated(model_node(cfg), gated=False, **dims)


def architecture(cfg, dims: dict) -> dict:
    """{"source", "counts" (None: the model as configured), "epochs", "reference", "target", ["run"]}."""
    a = cfg.arch
    dense = plain_network(cfg, dims)
    units = dense.units()
    out = {"source": a.source, "counts": None, "epochs": cfg.trainer.epochs,
           "reference": {"widths": dense.sizes(), "units": [u.name for u in units],
                         "flops": int(dense.flops()), "params": count_params(dense)}}
    source_target = None
    if a.source == "uniform":  # what each source needs: config._arch_source_complete
        out["counts"] = uniform_counts(dense, a.target_flops)
    elif a.source == "run":
        src = source_run(a.run, units)
        out["counts"] = src["prune"]["compact"]["widths"]
        out["run"] = os.path.abspath(a.run)
        source_target = (src.get("target") or {}).get("flops")
        if source_target is None:  # a record that does not say what its target meant: its number
            source_target = src.get("target_flops")
        out["reference"] = dict((src.get("cost") or {}).get("reference") or out["reference"])
        out["reference"]["units"] = [u.name for u in units]  # the source's, as source_run checked
    elif a.source != "config":
        raise ConfigError(f"arch.source={a.source!r} is not one of config, uniform, run")
    if a.epochs not in ("same", "flops"):
        raise ConfigError(f"arch.epochs={a.epochs!r} is not one of same, flops")
    if a.epochs == "flops":
        flops = dense.flops(out["counts"]) if out["counts"] is not None else dense.flops()
        out["epochs"] = int(cfg.trainer.epochs * out["reference"]["flops"] / flops)
    out["target"] = target(cfg, source_target)
    return out


def uniform_counts(dense, target: float) -> list[int]:
    """Uniform channel scaling: every channel group at one fraction f of its width (at least one
    channel; blocks kept), the f whose FLOPs are closest to `target` times the dense network's."""
    units, full = dense.units(), dense.flops()

    def counts(f):
        return [max(1, int(round(f * u.size))) if u.kind == "channels" else u.size for u in units]

    lo, hi = 0.0, 1.0
    for _ in range(60):  # FLOPs grow with the fraction: bisect, then pick the closest rounding
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if dense.flops(counts(mid)) < target * full else (lo, mid)
    return min((counts(lo), counts(hi)), key=lambda c: abs(dense.flops(c) / full - target))


def source_run(run_dir, units) -> dict:
    """The results.json of a finished, pruned run (for arch.source=run) whose kept counts fit the
    units of this model, and that is a learned architecture (no dead layer)."""
    path = os.path.join(str(run_dir), RESULTS) if run_dir else None
    if not path or not os.path.isfile(path):
        raise ConfigError(f"arch.run={run_dir}: no {RESULTS} there (give the directory of a finished run)")
    try:
        res = read(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"arch.run={run_dir}: its {RESULTS} cannot be read ({type(e).__name__}: "
                          f"{' '.join(str(e).split())[:120]}): a truncated or damaged record") from None
    try:
        widths = res["prune"]["compact"]["widths"]
        assert isinstance(widths, list) and all(isinstance(w, int) for w in widths)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        raise ConfigError(f"arch.run={run_dir}: {RESULTS} has no pruned widths (prune.compact.widths)") from None
    names = (res.get("prune") or {}).get("units") or (res.get("gates") or {}).get("layers")
    if len(widths) != len(units) or (names and list(names) != [u.name for u in units]):
        raise ConfigError(f"arch.run={run_dir}: its network has {len(widths)} prunable units, this model has "
                          f"{len(units)} ({units[0].name} ... {units[-1].name}): give a run of the same model")
    if any(w > u.size for w, u in zip(widths, units)):
        raise ConfigError(f"arch.run={run_dir}: its kept widths {widths} do not fit this model's {[u.size for u in units]}")
    # the cut's list of dead layers (a removed residual block is not one); older records: the training's
    pruned = res.get("prune") or {}
    dead = pruned["dead_layers"] if "dead_layers" in pruned else (res.get("gates") or {}).get("dead_layers")
    if dead:
        raise ConfigError(f"arch.run={run_dir}: every gate of {', '.join(dead)} is zero in that run, so its "
                          "widths are one-channel layers the run killed, not a learned architecture: "
                          "pick a run without dead layers")
    return res


def target(cfg, source_target: float | None = None) -> dict:
    """{"kind", "flops"}: the one FLOPs target of this run (see the module docstring). A cut
    after training decides the delivered network, so it comes first."""
    p = cfg.prune
    if p.enabled and p.get("target_flops") is not None:
        return {"kind": "cut", "flops": p.target_flops}
    if cfg.arch.source == "uniform":
        return {"kind": "uniform", "flops": cfg.arch.target_flops}
    if cfg.arch.source == "run":
        return {"kind": "arch_run", "flops": source_target}
    if budget_runs(cfg):
        return {"kind": "budget", "flops": cfg.target_flops}
    return {"kind": None, "flops": None}


def outcome(goal: dict, kept: float | None) -> tuple[dict, str | None]:
    """(the target with "reached" (the FLOPs kept; None: not measured, the network was not
    pruned) and "missed" added, a warning or None).

    A cut ends at its target or under it, unless one channel per layer is already more; a
    budget and a uniform width end within TOLERANCE of it; a Scratch-E/B network has the source
    run's widths, whatever they reached."""
    flops, kind = goal["flops"], goal["kind"]
    out = dict(goal, reached=kept, missed=False)
    if flops is None or kept is None or kind == "arch_run":
        return out, None
    points = 100 * (kept - flops)
    where = f"{abs(points):.1f} points {'over' if points > 0 else 'under'}"
    if kind == "cut" and kept > flops + 1e-9:
        out["missed"] = True
        return out, (f"prune.target_flops={flops:g} cannot be met: the cut keeps {kept:.1%} of the FLOPs "
                     f"({where}); a layer keeps one channel at least")
    if kind in ("budget", "uniform") and abs(kept - flops) > TOLERANCE:
        out["missed"] = True
        if kind == "uniform":
            return out, (f"arch.target_flops={flops:g}: the closest uniform width keeps {kept:.1%} of the "
                         f"FLOPs ({where})")
        return out, (f"the FLOPs budget missed its target: the network keeps {kept:.1%} of the FLOPs, {where} "
                     f"target_flops={flops:g}; the budgets of {HOLDING_PRESETS} hold their target")
    return out, None
