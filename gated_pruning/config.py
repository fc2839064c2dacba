"""The rules of a run's config: what each key may hold, and what several keys must agree on.

Every key a run can hold is listed in RULES with what it may hold; `check_config` refuses a run
whose config has a key without a rule, so a new key is one line here (tests/test_inputs.py fails
for a key that any group option or preset defines without a rule). Checks that involve several
keys are the small functions in CROSS_CHECKS (an error: the combination makes no sense);
`ignored` names the settings a command line gives that the run will not read under the other
keys' values (a warning: the run goes on, but does not do what was asked). LAUNCHER_RULES check
the values of Hydra's launchers. None of this imports torch: `run.py` runs it for every job of a
sweep before Hydra writes anything.
"""
from __future__ import annotations

import os

from omegaconf import DictConfig, OmegaConf

from gated_pruning.errors import ConfigError
from gated_pruning.rules import Rule, choice, either, flag, integer, list_of, number, show, text

# images per split of the real data sets (a subset larger than these cannot be drawn)
SPLIT_SIZES = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000)}

LR = number(0, lo_open=True)
MOMENTUM = number(0, 1, hi_open=True)
SEED = integer(0, 2**32 - 1)

# the depths each model family builds (models/vgg.py CONFIGS, models/resnet.py DEPTHS)
MODEL_DEPTHS = {"gated_pruning.models.vgg.build": (11, 13, 16, 19),
                "gated_pruning.models.resnet.build": (20, 32, 44, 56, 110)}

# Every key of every group option and preset, with what it may hold. A new key: one line here.
RULES: dict[str, Rule] = {
    "gamma": number(0),
    "target_flops": number(0, 1, lo_open=True, null=True),
    "seed": SEED,
    "device": text(),                      # auto, cpu, cuda, cuda:N (check_device)
    "threads": integer(1, null=True),      # intra-op threads; null: one per core, or the launcher's share
    "resume": text(null=True),             # a run directory or checkpoint file

    "model._target_": choice(*MODEL_DEPTHS, "gated_pruning.models.tv.build"),
    "model.depth": choice(*sorted({d for ds in MODEL_DEPTHS.values() for d in ds})),  # _depth_fits_model
    "model.name": text(),                  # torchvision's model name (models.tv checks it)
    "model.inner_gates": flag(),
    "model.gate_stream": flag(),
    "model.block_gates": flag(),
    "model.width": number(0, lo_open=True),
    "model.gated": flag(),
    "model.gate_init": number(),
    "model.gate_jitter": number(0),
    "model.min_keep": either(number(0, 1, hi_open=True), integer(1)),  # a fraction, or a count
    "model.bn_weight": flag(),
    "model.gate_position": choice("bn", "relu"),
    "model.widths": list_of(integer(1), null=True),

    "arch.source": choice("config", "uniform", "run"),
    "arch.run": text(null=True),
    "arch.epochs": choice("same", "flops"),
    "arch.target_flops": number(0, 1, lo_open=True, null=True),  # source=uniform: the width's FLOPs

    "penalty._target_": choice("gated_pruning.penalty.L1", "gated_pruning.penalty.Polarization",
                               "gated_pruning.penalty.ExpectedL0"),
    "penalty.gamma": number(0),
    "penalty.flops_weighted": flag(),
    "penalty.t": number(0, lo_open=True),
    "penalty.scope": choice("layer", "global"),

    "budget._target_": choice("gated_pruning.budget.FlopsBudget"),
    "budget.enabled": flag(),
    "budget.start": number(0, 1),
    "budget.ramp": number(0, 1),
    "budget.freeze": number(0, 1, lo_open=True, null=True),
    "budget.freeze_on_target": flag(),
    "budget.reopen": flag(),
    "budget.kp": number(0),
    "budget.ki": number(0),
    "budget.min_gamma": number(0, lo_open=True),
    "budget.max_gamma": number(0, lo_open=True),

    "binarizer._target_": choice("gated_pruning.gates.NoBinarizer", "gated_pruning.gates.ThresholdBinarizer",
                                 "gated_pruning.gates.StochasticBinarizer",
                                 "gated_pruning.gates.HardConcreteBinarizer"),
    "binarizer.threshold": number(0, 1, hi_open=True),
    "binarizer.estimator": choice("identity", "clipped", "relaxed", "straight_through"),  # _binarizer_keys
    "binarizer.temperature": number(0, lo_open=True),
    "binarizer.stretch": list_of(number()),

    "optimizer.lr": LR,
    "optimizer.momentum": MOMENTUM,
    "optimizer.weight_decay": number(0),
    "optimizer.schedule": choice("cosine", "multistep", "constant"),
    "optimizer.milestones": list_of(number(0, 1)),
    "optimizer.factor": number(0, lo_open=True),
    "optimizer.warmup_epochs": number(0),
    "optimizer.weights._target_": choice("torch.optim.SGD"),
    "optimizer.weights.lr": LR,
    "optimizer.weights.momentum": MOMENTUM,
    "optimizer.weights.weight_decay": number(0),
    "optimizer.weights.nesterov": flag(),
    "optimizer.gates._target_": choice("gated_pruning.optim.APG", "gated_pruning.optim.GateSGD"),
    "optimizer.gates.lr": LR,
    "optimizer.gates.momentum": MOMENTUM,
    "optimizer.gates.clamp": either(choice("prox", "lookahead", "none"), flag()),  # _clamp_fits_optimizer
    "optimizer.gates.upper": number(0, lo_open=True, null=True),
    "optimizer.gates.forward": choice("lookahead", "prox"),

    "dataset.name": choice("cifar10", "cifar100", "synthetic"),
    "dataset.root": text(),
    "dataset.download": flag(),
    "dataset.batch_size": integer(1),
    "dataset.eval_batch_size": integer(1),
    "dataset.train_size": integer(1, null=True),
    "dataset.test_size": integer(1, null=True),
    "dataset.val_size": integer(0),
    "dataset.pad": integer(0, 32),
    "dataset.flip": flag(),
    "dataset.num_classes": integer(2, 100_000),
    "dataset.seed": SEED,

    "trainer.epochs": integer(1),
    "trainer.log_every": integer(0),
    "trainer.eps": number(0),
    "trainer.checkpoint": flag(),
    "trainer.checkpoint_every_steps": integer(0),
    "trainer.progress": flag(),
    "trainer.amp": flag(),
    "trainer.channels_last": flag(),
    "trainer.compile": flag(),
    "trainer.label_smoothing": number(0, 1, hi_open=True),

    "prune.enabled": flag(),
    "prune.threshold": number(0),
    "prune.finetune_epochs": integer(0),
    "prune.finetune_lr": LR,
    "prune.latency_batch": integer(1),
    "prune.latency_reps": integer(1),
    "prune.latency_warmup": integer(0),
    "prune.round_to": integer(1),
    "prune.target_flops": number(0, 1, lo_open=True, null=True),
    "prune.criterion": choice("gate", "l1norm", null=True),

    "logger.name": choice("wandb", "none"),
    "logger.project": text(),
    "logger.entity": text(null=True),
    "logger.group": text(null=True),
    "logger.tags": list_of(text()),
    "logger.mode": choice("online", "offline", "disabled", null=True),
    "logger.init_timeout": number(0, lo_open=True),
}


# ------------------------------------------------------------------ cross-key checks
# Each takes the resolved config as a plain dict and returns what is wrong, or None.

def _warmup_within_run(c: dict) -> str | None:
    w, e = c.get("optimizer", {}).get("warmup_epochs"), c.get("trainer", {}).get("epochs")
    if w is not None and e is not None and w > e:
        return f"optimizer.warmup_epochs={show(w)} is longer than the run (trainer.epochs={e})"
    return None


def _dataset_keys_match_name(c: dict) -> str | None:
    d = c.get("dataset", {})
    if "name" not in d:
        return None
    need = ("num_classes", "seed", "train_size", "test_size") if d["name"] == "synthetic" else ("root", "download")
    missing = [k for k in need if k not in d]
    if missing:
        return (f"dataset.name={show(d['name'])} needs dataset.{missing[0]}: pick the data set with "
                f"dataset={d['name']} instead of setting dataset.name")
    if d["name"] == "synthetic":
        for k in ("train_size", "test_size"):
            if d[k] is None:
                return f"dataset.{k}=null: a synthetic data set needs a size (an integer >= 1)"
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
    return subsets_problem(d, SPLIT_SIZES.get(d.get("name"))) if "name" in d else None


def _finetune_needs_pruning(c: dict) -> str | None:
    p = c.get("prune", {})
    if p.get("finetune_epochs") and not p.get("enabled", True):
        return (f"prune.finetune_epochs={p['finetune_epochs']} has no effect with prune.enabled=false "
                "(fine-tuning is of the pruned network)")
    return None


def _binarizer_keys(c: dict) -> str | None:
    b = c.get("binarizer", {})
    hc = str(b.get("_target_", "")).endswith("HardConcreteBinarizer")
    allowed = ("relaxed", "straight_through") if hc else ("identity", "clipped")
    if "estimator" in b and b["estimator"] not in allowed:
        return f"binarizer.estimator={show(b['estimator'])} is not one of {', '.join(allowed)} for this binarizer"
    stretch = b.get("stretch")
    if stretch is not None and not (len(stretch) == 2 and stretch[0] < 0 and stretch[1] > 1):
        return f"binarizer.stretch={show(b['stretch'])} must be [gamma, zeta] with gamma < 0 and zeta > 1"
    return None


def _clamp_fits_optimizer(c: dict) -> str | None:
    g = c.get("optimizer", {}).get("gates", {})
    if "clamp" not in g:
        return None
    apg = str(g.get("_target_", "")).endswith("APG")
    if apg != isinstance(g["clamp"], str):
        allowed = "prox, lookahead or none" if apg else "true or false"
        return f"optimizer.gates.clamp={show(g['clamp'])}: with this gate optimizer it is {allowed}"
    return None


def _relu_gates_clamped(c: dict) -> str | None:
    m, g = c.get("model", {}), c.get("optimizer", {}).get("gates", {})
    float_gates = str(c.get("binarizer", {}).get("_target_", "")).endswith("NoBinarizer")
    if m.get("gated", True) and m.get("gate_position") == "relu" and float_gates \
            and g.get("clamp") not in ("prox", True):
        return ("model.gate_position=relu with float gates needs them clamped at 0 "
                "(optimizer.gates.clamp=prox for apg, =true for sgd): a negative gate after "
                "the ReLU cannot be folded into batch norm when pruning")
    return None


def _gated(c: dict) -> bool:
    return bool(c.get("model", {}).get("gated", False))


def _budget_runs(c: dict) -> bool:
    """Whether the FLOPs budget controller trains this run (budget.py)."""
    return _gated(c) and c.get("budget", {}).get("enabled", False) and c.get("target_flops") is not None


def _budget_bounds(c: dict) -> str | None:
    b = c.get("budget", {})
    if b.get("min_gamma") is not None and b.get("max_gamma") is not None and b["min_gamma"] >= b["max_gamma"]:
        how = "is above" if b["min_gamma"] > b["max_gamma"] else "equals"
        return f"budget.min_gamma={show(b['min_gamma'])} {how} budget.max_gamma={show(b['max_gamma'])}"
    if not _budget_runs(c):
        return None
    start, ramp, freeze = b.get("start", 0), b.get("ramp", 0), b.get("freeze")
    if ramp <= 0 or start + ramp > 1:
        return (f"budget.start={show(start)} and budget.ramp={show(ramp)}: the ramp must be > 0 and end "
                "within the run (start + ramp <= 1)")
    if freeze is not None and freeze < start + ramp:
        return f"budget.freeze={show(freeze)} comes before the ramp ends (budget.start + budget.ramp = {start + ramp:g})"
    if b.get("ki", 1) <= 0:
        return f"budget.ki={show(b['ki'])} must be > 0: the budget's integral term moves gamma"
    if c.get("gamma", 1) <= 0:
        return f"gamma={show(c['gamma'])} with target_flops={show(c['target_flops'])}: the budget starts from gamma, it must be > 0"
    return None


def _depth_fits_model(c: dict) -> str | None:
    m = c.get("model", {})
    depths = MODEL_DEPTHS.get(m.get("_target_"))
    if depths and "depth" in m and m["depth"] not in depths:
        family = m["_target_"].split(".")[-2]
        return f"model.depth={show(m['depth'])} is not a depth of {family} (one of {', '.join(map(str, depths))})"
    if m.get("gated") and "inner_gates" in m and not (m["inner_gates"] or m.get("gate_stream") or m.get("block_gates")):
        return ("model.inner_gates, model.gate_stream and model.block_gates are all false: a gated ResNet needs "
                "at least one kind of gate (or model.gated=false)")
    return None


def _gate_kind_fits_penalty(c: dict) -> str | None:
    if not _gated(c):
        return None
    hard_concrete = str(c.get("binarizer", {}).get("_target_", "")).endswith("HardConcreteBinarizer")
    l0 = str(c.get("penalty", {}).get("_target_", "")).endswith("ExpectedL0")
    if hard_concrete and not l0:
        return ("binarizer=hard_concrete needs penalty=l0 (its latent weight is log(alpha), not a gate "
                "value that an L1 or polarization term could shrink)")
    if l0 and not hard_concrete:
        return "penalty=l0 needs binarizer=hard_concrete (it penalizes the probability that a gate is open)"
    return None


def _arch_source_complete(c: dict) -> str | None:
    a = c.get("arch", {})
    m = c.get("model", {})
    gated = m.get("gated", False)
    if a.get("source") == "run":
        if not a.get("run"):
            return "arch.source=run needs arch.run=<a finished run's directory>"
        if not os.path.isfile(os.path.join(a["run"], "results.json")):
            return f"arch.run={a['run']}: no results.json there (give the directory of a finished, pruned run)"
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
    return None


CROSS_CHECKS = (_warmup_within_run, _dataset_keys_match_name, _subsets_fit,
                _finetune_needs_pruning, _binarizer_keys, _clamp_fits_optimizer, _relu_gates_clamped,
                _budget_bounds, _depth_fits_model, _gate_kind_fits_penalty, _arch_source_complete, _cut_settings)


# ------------------------------------------------------------------ settings a run will not read
# (key or section, whether the run reads it, why not): a command line that sets one of these
# where the run does not read it gets a warning (the run goes on; it does not do what was asked).
NOT_GATED = "model.gated=false trains a plain network, without gates"
CONDITIONAL_KEYS = [
    *[(k, _gated, NOT_GATED) for k in ("gamma", "penalty", "binarizer", "optimizer.gates", "model.gate_init",
                                       "model.gate_jitter", "model.min_keep", "model.bn_weight",
                                       "model.gate_position", "model.inner_gates", "model.gate_stream",
                                       "model.block_gates")],
    ("budget", _budget_runs, "the budget trains only a gated network with target_flops set and "
                             "budget.enabled=true"),
    ("model.width", lambda c: c["model"].get("widths") is None and c["arch"]["source"] != "run",
     "model.widths or arch.run sets every width"),
    ("arch.run", lambda c: c["arch"]["source"] == "run", "only arch.source=run reads it"),
    ("arch.target_flops", lambda c: c["arch"]["source"] == "uniform", "only arch.source=uniform reads it"),
    ("optimizer.milestones", lambda c: c["optimizer"]["schedule"] == "multistep", "only schedule=multistep reads it"),
    ("optimizer.factor", lambda c: c["optimizer"]["schedule"] == "multistep", "only schedule=multistep reads it"),
    ("prune.finetune_lr", lambda c: bool(c["prune"]["finetune_epochs"]), "prune.finetune_epochs=0: no fine-tuning"),
    ("prune", lambda c: c["prune"]["enabled"], "prune.enabled=false: the run is not pruned"),
]


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
    if target is not None and not _budget_runs(c) and target not in (
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


# ------------------------------------------------------------------ Hydra's launchers
# the numbers of hydra/launcher=joblib, submitit_local, submitit_slurm (slurm) that Hydra takes
# as typed and never checks; a key a launcher does not have is not looked at
LAUNCHER_RULES: dict[str, Rule] = {
    "timeout_min": integer(1),
    "cpus_per_task": integer(1, null=True),
    "gpus_per_node": integer(0, null=True),
    "gpus_per_task": integer(0, null=True),
    "cpus_per_gpu": integer(1, null=True),
    "mem_gb": number(0, lo_open=True, null=True),
    "nodes": integer(1),
    "tasks_per_node": integer(1),
    "array_parallelism": integer(1),
    "max_num_timeout": integer(0),
    "signal_delay_s": integer(0),
    "n_jobs": integer(null=True),
    "timeout": number(0, lo_open=True, null=True),
    "verbose": integer(0),
}


def launcher_problem(launcher: dict) -> str | None:
    """What is wrong with the `hydra.launcher` values, or None."""
    for key, rule in LAUNCHER_RULES.items():
        if key in launcher:
            p = rule.problem(launcher[key])
            if p:
                return f"hydra.launcher.{key}={show(launcher[key])} {p}"
    if launcher.get("n_jobs") == 0:
        return "hydra.launcher.n_jobs=0 runs no job (a count, or -1 for one job per core)"
    tasks = launcher.get("tasks_per_node", 1) * launcher.get("nodes", 1)
    if tasks > 1:
        return (f"hydra.launcher.nodes={launcher.get('nodes', 1)} tasks_per_node={launcher.get('tasks_per_node', 1)} "
                f"would start {tasks} processes that each train the same job into one folder; a job here is one "
                "process (data parallel training is torchrun's, see docs/scaling.md): keep nodes=1 tasks_per_node=1")
    return None


def resolved(cfg: DictConfig) -> dict:
    """The config as plain data, interpolations resolved; a failing interpolation is a ConfigError."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:  # noqa: BLE001 - omegaconf raises many kinds for a bad ${...}
        raise ConfigError(f"cannot resolve the config ({' '.join(str(e).split())[:300]})") from None


def problems(cfg: DictConfig | dict) -> list[str]:
    """Every key without a rule, every value its rule refuses, then the cross-key checks."""
    c = cfg if isinstance(cfg, dict) else resolved(cfg)
    out = []
    flat = flatten(c)  # shallow keys first: gamma before optimizer.gates.gamma that copies it
    for key, value in sorted(flat.items(), key=lambda kv: kv[0].count(".")):
        rule = RULES.get(key)
        if rule is None:
            out.append(f"{key}={show(value)}: no validation rule for this key (add one to RULES "
                       "in gated_pruning/config.py)")
            continue
        p = rule.problem(value)
        if p:
            out.append(f"{key}={show(value)} {p}")
    if not out:
        for check in CROSS_CHECKS:
            p = check(c)
            if p:
                out.append(p)
    return out


def check_config(cfg: DictConfig | dict) -> None:
    """Refuse the config with a one-line ConfigError naming the first bad key."""
    found = problems(cfg)
    if found:
        raise ConfigError(found[0])


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
