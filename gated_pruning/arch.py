"""Which network a run trains (the `arch` config node), and the one FLOPs target it is made for.

`architecture(cfg, num_classes)`: the network (`arch.source`), the epochs it trains for and the
dense reference its FLOPs are counted against:
- config: the model group's network (reference: the same network, every channel kept);
- uniform: uniform channel scaling, the width multiplier whose FLOPs are `arch.target_flops` of
  the configured network's (method=uniform sets it to the top-level target_flops);
- run: the kept widths of a finished run (`arch.run`), re-initialized (reference: that run's).
`arch.epochs=flops` multiplies trainer.epochs by reference/this FLOPs (Scratch-B of Liu et al.,
ICLR 2019: the same compute as training the reference; `same` is Scratch-E).

`target(cfg, arch)`: what a run's FLOPs target means, said once (results.json's "target"):
- cut: `prune.target_flops`, a cut of the trained network after training;
- uniform: `arch.target_flops`, the FLOPs of the uniformly scaled network;
- arch_run: the target the source run (`arch.run`) of a Scratch-E/B baseline was made for;
- budget: the top-level `target_flops`, the FLOPs budget of a gated run;
- None: no target.
`outcome(target, kept)` says whether the delivered network holds it.
"""
from __future__ import annotations

import json
import os

from gated_pruning.errors import ConfigError
from gated_pruning.models import vgg
from gated_pruning.runtime import RESULTS
from gated_pruning.stats import count_params

TOLERANCE = 0.03  # how far (fraction of the dense FLOPs) a budget or a uniform width may end from its target
HOLDING_PRESETS = "method=sss and method=binary"  # the presets whose budgets end within TOLERANCE (README)


def architecture(cfg, num_classes: int) -> dict:
    """{"source", "overrides" (of the model's build), "epochs", "reference", "target", ["run"]}."""
    m, a = cfg.model, cfg.arch
    ref = vgg.vgg_widths(m.depth, m.width)
    reference = vgg.VGG(ref, num_classes, gated=False)
    out = {"source": a.source, "overrides": {}, "epochs": cfg.trainer.epochs,
           "reference": {"widths": reference.widths(), "flops": int(reference.flops()),
                         "params": count_params(reference)}}
    source_target = None
    if a.source == "uniform":  # what each source needs: config._arch_source_complete
        out["overrides"] = {"width": vgg.uniform_width(m.depth, m.width, a.target_flops, num_classes)}
    elif a.source == "run":
        src = source_run(a.run, m.depth)
        out["overrides"] = {"widths": src["prune"]["compact"]["widths"]}
        out["run"] = os.path.abspath(a.run)
        source_target = (src.get("target") or {}).get("flops", src.get("target_flops"))
        out["reference"] = (src.get("cost") or {}).get("reference") or out["reference"]
    elif a.source != "config":
        raise ConfigError(f"arch.source={a.source!r} is not one of config, uniform, run")
    if m.get("widths") is not None:
        try:
            vgg.with_widths(m.depth, m.widths)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if a.epochs not in ("same", "flops"):
        raise ConfigError(f"arch.epochs={a.epochs!r} is not one of same, flops")
    if a.epochs == "flops":
        net = vgg.build(m.depth, **{"width": m.width, **out["overrides"]}, num_classes=num_classes, gated=False)
        out["epochs"] = int(cfg.trainer.epochs * out["reference"]["flops"] / net.flops())
    out["target"] = target(cfg, source_target)
    return out


def source_run(run_dir, depth: int) -> dict:
    """The results.json of a finished, pruned run (for arch.source=run) whose network a VGG-`depth`
    can take, and that is a learned architecture (no dead layer)."""
    path = os.path.join(str(run_dir), RESULTS) if run_dir else None
    if not path or not os.path.isfile(path):
        raise ConfigError(f"arch.run={run_dir}: no {RESULTS} there (give the directory of a finished run)")
    try:
        with open(path) as f:
            res = json.load(f)
        widths = res["prune"]["compact"]["widths"]
        assert isinstance(widths, list) and all(isinstance(w, int) for w in widths)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        raise ConfigError(f"arch.run={run_dir}: {RESULTS} has no pruned widths (prune.compact.widths)") from None
    convs = sum(v != "M" for v in vgg.CONFIGS[depth])
    if len(widths) != convs:
        raise ConfigError(f"arch.run={run_dir}: its network has {len(widths)} conv layers, model.depth={depth} "
                          f"has {convs}")
    dead = (res.get("prune") or {}).get("dead_layers") or (res.get("gates") or {}).get("dead_layers") or []
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
    if cfg.model.gated and cfg.budget.enabled and cfg.get("target_flops") is not None:
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
