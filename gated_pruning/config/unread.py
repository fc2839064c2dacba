"""Settings a run will not read: a command line that sets a key the run ignores under the other
keys' values gets one `warning:` line per key (the run goes on; it does not do what was asked).
`ignored(config, keys given)` lists them. No torch here."""
from __future__ import annotations

from gated_pruning.config.checks import _gated, budget_runs
from gated_pruning.config.rules import show

# (key or section, whether the run reads it, why not): a command line that sets one of these
# where the run does not read it gets a warning (the run goes on; it does not do what was asked).
NOT_GATED = "model.gated=false trains a plain network, without gates"
CONDITIONAL_KEYS = [
    *[(k, _gated, NOT_GATED) for k in ("gamma", "penalty", "binarizer", "optimizer.gates", "model.gate_init",
                                       "model.gate_jitter", "model.min_keep", "model.bn_weight",
                                       "model.gate_position", "model.inner_gates", "model.gate_stream",
                                       "model.block_gates", "model.channel_gates")],
    ("budget", budget_runs, "the budget trains only a gated network with target_flops set and "
                             "budget.enabled=true"),
    ("model.width", lambda c: c["model"].get("widths") is None and c["arch"]["source"] != "run",
     "model.widths or arch.run sets every width"),
    ("model.min_keep", lambda c: _channel_gates(c["model"]), "it is a floor per channel group, and only residual "
     "blocks are gated (a block gate has no floor: a removed block leaves its shortcut)"),
    ("arch.run", lambda c: c["arch"]["source"] == "run", "only arch.source=run reads it"),
    ("model.weights_key", lambda c: bool(c["model"].get("weights")), "it says where model.weights holds its state dict, and model.weights is null"),
    ("arch.target_flops", lambda c: c["arch"]["source"] == "uniform", "only arch.source=uniform reads it"),
    ("optimizer.milestones", lambda c: c["optimizer"]["schedule"] == "multistep", "only schedule=multistep reads it"),
    ("optimizer.factor", lambda c: c["optimizer"]["schedule"] == "multistep", "only schedule=multistep reads it"),
    ("prune.finetune_lr", lambda c: bool(c["prune"]["finetune_epochs"]), "prune.finetune_epochs=0: no fine-tuning"),
    ("prune.rounds", lambda c: c["prune"].get("target_flops") is not None, "only a cut to prune.target_flops has rounds"),
    ("prune.round_epochs", lambda c: (c["prune"].get("rounds") or 1) > 1, "prune.rounds=1: no round to fine-tune after"),
    ("prune.samples", lambda c: c["prune"].get("target_flops") is not None and c["prune"].get("criterion") in
     ("taylor", "thinet", "lasso"), "only prune.criterion=taylor, thinet and lasso read training images"),
    ("prune", lambda c: c["prune"]["enabled"], "prune.enabled=false: the run is not pruned"),
]


def _channel_gates(m: dict) -> bool:
    """Whether the model gates any channel group (not only residual blocks)."""
    if "inner_gates" in m:
        return bool(m["inner_gates"] or m.get("gate_stream"))
    return bool(m.get("channel_gates", True))


SWITCHES = ("prune.enabled", "budget.enabled")  # a section's own on/off key is always read


def _sets(given: str, key: str) -> bool:
    """Whether the command-line key `given` sets `key` or a key of section `key`, or the section
    that holds `key`."""
    return given == key or given.startswith(key + ".") or key.startswith(given + ".")


def ignored(c: dict, given: list[str] | set[str]) -> list[str]:
    """Warnings for the keys in `given` (the keys a command line sets) that this run does not read,
    and, whoever set them, for a cut's criterion without a cut and a top-level target_flops that
    nothing reads."""
    out = []
    for key in sorted(set(given)):
        for section, reads, why in CONDITIONAL_KEYS:
            if _sets(key, section) and key not in SWITCHES and not reads(c):
                out.append(f"{key}={show(_select(c, key))} does nothing here: {why}")
                break
    p = c.get("prune", {})
    if p.get("criterion") is not None and p.get("target_flops") is None and p.get("enabled", True):
        out.append(f"prune.criterion={show(p['criterion'])} does nothing here: it ranks channels for a cut to "
                   "prune.target_flops, which is null (method=slimming and l1norm cut to target_flops=F)")
    target = c.get("target_flops")
    if target is not None and not budget_runs(c) and target not in (
            c.get("arch", {}).get("target_flops"), c.get("prune", {}).get("target_flops")):
        why = NOT_GATED if not _gated(c) else "budget.enabled=false"
        out.append(f"target_flops={show(target)} does nothing here: it is the FLOPs budget of a gated run, and "
                   f"{why} (method=uniform scales a plain network to it, method=l1norm cuts one)")
    return out


def _select(c: dict, key: str):
    for part in key.split("."):
        if not isinstance(c, dict) or part not in c:
            return None
        c = c[part]
    return c
