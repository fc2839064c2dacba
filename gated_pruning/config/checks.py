"""What several keys of a run's config must agree on: each check a small function of the resolved
config (a plain dict) that returns what is wrong, or None; `CROSS_CHECKS` lists them in the order
`config.problems` runs them (an error: the combination makes no sense). No torch here."""
from __future__ import annotations

import os

from gated_pruning import kinds
from gated_pruning.models import families
from gated_pruning.datasets import DECLARED
from gated_pruning.record import RESULTS
from gated_pruning.config.rules import show

SYNTHETIC_BYTES = 8 * 2**30  # the memory a synthetic set may take to make

# Each takes the resolved config as a plain dict and returns what is wrong, or None.

def _warmup_within_run(c: dict) -> str | None:
    w, e = c.get("optimizer", {}).get("warmup_epochs"), c.get("trainer", {}).get("epochs")
    if w is not None and e is not None and w > e:
        return f"optimizer.warmup_epochs={show(w)} is longer than the run (trainer.epochs={e})"
    return None


def _dataset_keys_match_name(c: dict) -> str | None:
    d = c.get("dataset", {})
    if d.get("name") not in DECLARED:
        return None
    kind = DECLARED[d["name"]].kind
    need = {"synthetic": ("num_classes", "seed", "train_size", "test_size"), "memory": ("root", "download"),
            "folder": ("root", "image_size", "resize", "train_crop", "crop_scale", "mean", "std")}[kind]
    missing = [k for k in need if k not in d]
    if missing:
        return (f"dataset.name={show(d['name'])} needs dataset.{missing[0]}: pick the data set with "
                f"dataset={d['name']} instead of setting dataset.name")
    if kind == "synthetic":
        for k in ("train_size", "test_size"):
            if d[k] is None:
                return f"dataset.{k}=null: a synthetic data set needs a size (an integer >= 1)"
        images = d["train_size"] + (d.get("val_size") or 0) + d["test_size"]
        made = images * 3 * (d.get("image_size") or 32) ** 2 * 8  # float32 twice while it is drawn
        if made > SYNTHETIC_BYTES:
            return (f"dataset.train_size + val_size + test_size = {images:,} synthetic images of "
                    f"{d.get('image_size') or 32} px take about {made / 2**30:,.0f} GiB to make; at most "
                    f"{SYNTHETIC_BYTES / 2**30:.0f} GiB (a real data set: dataset=cifar100 or imagefolder)")
    if kind != "synthetic" and not d.get("root"):
        return f"dataset={d['name']} needs dataset.root=DIR (the folder that holds it)"
    if kind == "folder":
        for k in ("mean", "std"):
            if len(d[k]) != 3:
                return f"dataset.{k}={show(d[k])} must have 3 values, one per RGB channel"
        lo_hi = d["crop_scale"]
        if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
            return f"dataset.crop_scale={show(lo_hi)} must be [smallest, largest] fractions of the image area"
    return None


def subsets_problem(d: dict, sizes: tuple[int, int] | None, where: str = "") -> str | None:
    """What is wrong with the subsets the `dataset` section `d` asks of splits of `sizes`
    (train, test images; None: a synthetic set, drawn at the asked sizes); `where` names the
    files when they are not the official ones."""
    train, val = d.get("train_size"), d.get("val_size") or 0
    name = f"{d['name']}{where}"
    if sizes is not None:
        if val >= sizes[0]:
            return f"dataset.val_size={val} leaves no training images (the {name} train set has {sizes[0]})"
        for key, n, full in (("train_size", train, sizes[0] - val), ("test_size", d.get("test_size"), sizes[1])):
            if n is not None and n > full:
                held = f" once dataset.val_size={val} is held out" if key == "train_size" and val else ""
                return (f"dataset.{key}={n} is larger than the {name} {key.split('_')[0]} set "
                        f"({full} images{held})")
        train = train or sizes[0] - val
    if train is not None and d.get("batch_size", 0) > train:
        return (f"dataset.batch_size={d['batch_size']} is larger than the training set ({train} images): "
                "no full batch, no training step")
    return None


def _subsets_fit(c: dict) -> str | None:
    d = c.get("dataset", {})
    if "name" not in d:
        return None
    declared = DECLARED.get(d["name"])  # a memory set's split sizes bound its subsets; a folder's are counted in preflight
    return subsets_problem(d, declared.splits if declared is not None and declared.kind == "memory" else None)


def _finetune_needs_pruning(c: dict) -> str | None:
    p = c.get("prune", {})
    if p.get("finetune_epochs") and not p.get("enabled", True):
        return (f"prune.finetune_epochs={p['finetune_epochs']} has no effect with prune.enabled=false "
                "(fine-tuning is of the pruned network)")
    return None


def _binarizer_keys(c: dict) -> str | None:
    b = c.get("binarizer", {})
    kind = kinds.binarizer(b.get("_target_"))
    if kind is not None and "estimator" in b and b["estimator"] not in kind.estimators:
        return (f"binarizer.estimator={show(b['estimator'])} is not one of {', '.join(kind.estimators)} "
                "for this binarizer")
    stretch = b.get("stretch")
    if stretch is not None and not (len(stretch) == 2 and stretch[0] < 0 and stretch[1] > 1):
        return f"binarizer.stretch={show(b['stretch'])} must be [gamma, zeta] with gamma < 0 and zeta > 1"
    return None


def _clamp_fits_optimizer(c: dict) -> str | None:
    g = c.get("optimizer", {}).get("gates", {})
    kind = kinds.gate_optimizer(g.get("_target_"))
    if "clamp" not in g or kind is None:
        return None
    if g["clamp"] not in kind.clamps or isinstance(g["clamp"], bool) != isinstance(kind.clamps[0], bool):
        shown = [show(x) if isinstance(x, bool) else str(x) for x in kind.clamps]
        allowed = ", ".join(shown[:-1]) + " or " + shown[-1]
        return f"optimizer.gates.clamp={show(g['clamp'])}: with this gate optimizer it is {allowed}"
    return None


def _one_sgd_kernel(c: dict) -> str | None:
    w = c.get("optimizer", {}).get("weights", {})
    if w.get("fused") and w.get("foreach"):
        return "optimizer.weights.fused=true and optimizer.weights.foreach=true: give one (fused takes foreach=null)"
    return None


def _relu_gates_clamped(c: dict) -> str | None:
    m, g = c.get("model", {}), c.get("optimizer", {}).get("gates", {})
    gate, opt = kinds.binarizer(c.get("binarizer", {}).get("_target_")), kinds.gate_optimizer(g.get("_target_"))
    if m.get("gated", True) and m.get("gate_position") == "relu" and gate is not None and not gate.binary \
            and opt is not None and g.get("clamp") not in opt.zero_clamps:
        return ("model.gate_position=relu with float gates needs them clamped at 0 "
                "(optimizer.gates.clamp=prox for apg, =true for sgd): a negative gate after "
                "the ReLU cannot be folded into batch norm when pruning")
    return None


def _gated(c: dict) -> bool:
    return bool(c.get("model", {}).get("gated", False))


def budget_runs(c) -> bool:
    """Whether the FLOPs budget controller trains this run (budget.py): the one home of this rule,
    for the checks, the unread-key warnings, `arch.target` and `experiment` (a dict or a DictConfig)."""
    return _gated(c) and bool(c.get("budget", {}).get("enabled", False)) and c.get("target_flops") is not None


def _gamma_range(b) -> str | None:
    lo, hi = b.get("min_gamma"), b.get("max_gamma")
    if lo is not None and hi is not None and lo >= hi:
        return f"budget.min_gamma={show(lo)} {'is above' if lo > hi else 'equals'} budget.max_gamma={show(hi)}"
    return None


def budget_problem(b, target) -> str | None:
    """What is wrong with the budget settings `b` (the `budget` section, or FlopsBudget's
    arguments) for a run steered to `target` of the FLOPs; None when they are sound. The one home
    of the controller's bounds: preflight and `FlopsBudget` both ask it."""
    if target is None or isinstance(target, bool) or not 0 < target <= 1:
        return f"target_flops={show(target)} must be in (0, 1] (a fraction of the dense FLOPs)"
    start, ramp, freeze = b.get("start", 0), b.get("ramp", 0), b.get("freeze")
    if start < 0 or ramp <= 0 or start + ramp > 1:
        return (f"budget.start={show(start)} and budget.ramp={show(ramp)}: the ramp must be > 0 and end "
                "within the run (start + ramp <= 1)")
    if freeze is not None and not start + ramp <= freeze <= 1:
        return f"budget.freeze={show(freeze)} comes before the ramp ends (budget.start + budget.ramp = {start + ramp:g})"
    if b.get("freeze_on_target") and freeze is None:
        return "budget.freeze_on_target=true needs budget.freeze (the latest point of the freeze)"
    if b.get("kp", 0) < 0:
        return f"budget.kp={show(b['kp'])} must be >= 0"
    if b.get("ki", 1) <= 0:
        return f"budget.ki={show(b['ki'])} must be > 0: the budget's integral term moves gamma"
    if b.get("min_gamma", 1) <= 0:
        return f"budget.min_gamma={show(b['min_gamma'])} must be > 0"
    if not b.get("every", 1) >= 1 or b.get("every", 1) != int(b.get("every", 1)):
        return f"budget.every={show(b['every'])} must be a whole number of steps >= 1"
    return _gamma_range(b)


def _budget_bounds(c: dict) -> str | None:
    b = c.get("budget", {})
    if _gamma_range(b) or not budget_runs(c):
        return _gamma_range(b)
    problem = budget_problem(b, c.get("target_flops"))
    if problem is None and c.get("gamma", 1) <= 0:
        return f"gamma={show(c['gamma'])} with target_flops={show(c['target_flops'])}: the budget starts from gamma, it must be > 0"
    return problem


def _depth_fits_model(c: dict) -> str | None:
    m = c.get("model", {})
    fam = families.family(m.get("_target_"))
    depths = fam.depths if fam else ()
    if depths and "depth" in m and m["depth"] not in depths:
        family = m["_target_"].split(".")[-2]
        return f"model.depth={show(m['depth'])} is not a depth of {family} (one of {', '.join(map(str, depths))})"
    if fam and "gate_position" in m and m["gate_position"] not in fam.gate_positions:
        return (f"model.gate_position={show(m['gate_position'])} is not a gate position of {m['_target_']} "
                f"(one of {', '.join(fam.gate_positions)})")
    if m.get("gated") and m.get("gate_position") == "scale" and m.get("bn_weight", True):
        return ("model.gate_position=scale makes the gate batch norm's scale: set model.bn_weight=false "
                "(a second, trained scale would leave the gate's L1 nothing to shrink)")
    if m.get("gated") and "inner_gates" in m and not (m["inner_gates"] or m.get("gate_stream") or m.get("block_gates")):
        return ("model.inner_gates, model.gate_stream and model.block_gates are all false: a gated ResNet needs "
                "at least one kind of gate (or model.gated=false)")
    if m.get("gated") and "channel_gates" in m and not (m["channel_gates"] or m.get("block_gates")):
        return ("model.channel_gates and model.block_gates are both false: a gated network needs at least one kind "
                "of gate (or model.gated=false)")
    return None


def _gate_kind_fits_penalty(c: dict) -> str | None:
    if not _gated(c):
        return None
    gate = kinds.binarizer(c.get("binarizer", {}).get("_target_"))
    pen = kinds.penalty(c.get("penalty", {}).get("_target_"))
    if gate is None or pen is None:
        return None
    if gate.penalty is not None and pen.target != gate.penalty:
        return f"binarizer={gate.option} needs penalty={kinds.PENALTIES[gate.penalty].option} ({gate.why})"
    if pen.binarizer is not None and gate.target != pen.binarizer:
        return f"penalty={pen.option} needs binarizer={kinds.BINARIZERS[pen.binarizer].option} ({pen.why})"
    return None


def _arch_source_complete(c: dict) -> str | None:
    a = c.get("arch", {})
    m = c.get("model", {})
    gated = m.get("gated", False)
    if a.get("source") == "run":
        if not a.get("run"):
            return "arch.source=run needs arch.run=<a finished run's directory>"
        if not os.path.isfile(os.path.join(a["run"], RESULTS)):
            return f"arch.run={a['run']}: no {RESULTS} there (give the directory of a finished, pruned run)"
        if gated:
            return ("arch.source=run trains the pruned architecture from scratch as a plain network: "
                    "set model.gated=false (method=scratch_e or scratch_b)")
    if a.get("source") == "uniform":
        if a.get("target_flops") is None:
            return ("arch.source=uniform needs arch.target_flops=<fraction of the dense FLOPs> "
                    "(method=uniform takes it from target_flops=F)")
        if gated:
            return "arch.source=uniform trains a plain network: set model.gated=false (method=uniform)"
    if a.get("source") in ("run", "uniform") and m.get("widths") is not None:
        what = "the kept widths of arch.run" if a["source"] == "run" else "model.width scaled to arch.target_flops"
        return (f"model.widths={show(m['widths'])} and arch.source={a['source']} both set the widths "
                f"(arch.source={a['source']} trains {what}): give one")
    if a.get("epochs") == "flops" and a.get("source") == "config":
        return "arch.epochs=flops scales the epochs by a reference network: it needs arch.source=run or uniform"
    return None


def _cut_settings(c: dict) -> str | None:
    """A cut to prune.target_flops sets the widths itself; the criterion ranks for it alone."""
    p = c.get("prune", {})
    target = p.get("target_flops")
    if target is None:
        if p.get("finetune_epochs") and p.get("enabled", True) and not _gated(c):
            return (f"prune.finetune_epochs={p['finetune_epochs']} fine-tunes the pruned network, but a plain "
                    "network (model.gated=false) is pruned only by a cut to prune.target_flops, which is null "
                    "(method=l1norm cuts to target_flops=F: set it)")
        return None
    for key, default in (("threshold", 0.0), ("round_to", 1)):
        if p.get(key, default) != default:
            return (f"prune.{key}={show(p[key])} shapes a cut of the zero gates; prune.target_flops={show(target)} "
                    "sets the widths itself: give one")
    crit = p.get("criterion") or ("gate" if _gated(c) else "l1norm")
    if (p.get("rounds") or 1) > 1 and crit == "gate":
        return (f"prune.rounds={p['rounds']} with prune.criterion=gate: after the first round the network has no "
                "gates to rank (a round folds them); use l1norm or taylor for an iterative cut")
    return None


def _custom_net_named(c: dict) -> str | None:
    net = c.get("model", {}).get("net")
    if isinstance(net, dict) and not net.get("_target_"):
        return ("model=custom needs model.net._target_=pkg.module.Class (your network; its arguments as "
                "+model.net.ARG=VALUE)")
    return None


def _weights_fit(c: dict) -> str | None:
    """Trained weights fill the configured network; nothing trained needs trained weights."""
    m, a, t = c.get("model", {}), c.get("arch", {}), c.get("trainer", {})
    if m.get("weights") and a.get("source") in ("uniform", "run"):
        return (f"model.weights={show(m['weights'])} fills the configured network, but arch.source={a['source']} "
                "trains another one from scratch: give one")
    if t.get("epochs") == 0:
        if not m.get("weights"):
            return ("trainer.epochs=0 trains nothing: it needs model.weights=PATH (a trained network to "
                    "evaluate, cut and fine-tune)")
        if budget_runs(c):
            return (f"trainer.epochs=0 with target_flops={show(c['target_flops'])}: the FLOPs budget steers training, "
                    "and there is none: cut the trained network with prune.target_flops (method=l1norm or taylor)")
    return None


CROSS_CHECKS = (_one_sgd_kernel, _warmup_within_run, _dataset_keys_match_name, _subsets_fit,
                _finetune_needs_pruning, _binarizer_keys, _clamp_fits_optimizer, _relu_gates_clamped,
                _budget_bounds, _depth_fits_model, _gate_kind_fits_penalty, _arch_source_complete, _cut_settings, _weights_fit, _custom_net_named)
