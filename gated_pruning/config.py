"""Config checks and views: one rule per key, cross-key checks, the part a checkpoint must match,
flat keys.

Every key a run can hold is listed in RULES with what it may hold; `check_config` refuses a run
whose config has a key without a rule, so a new key is one line here (tests/test_inputs.py fails
for a key that any group option or preset defines without a rule). Checks that involve several
keys are the small functions in CROSS_CHECKS. None of this imports torch: `run.py` runs it for
every job of a sweep before Hydra writes anything.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from gated_pruning.errors import ConfigError

# keys that may differ between a run and its resumption
RESUMABLE_KEYS = ("resume", "logger", "trainer.progress", "device", "threads", "prune")

# images per split of the real data sets (a subset larger than these cannot be drawn)
SPLIT_SIZES = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000)}


def _num(x) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def show(value) -> str:
    """A value as a command line would write it: 0.5, 'abc', null, true."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    return repr(value)


@dataclass(frozen=True)
class Rule:
    """What one value may be. `problem(value)` says what is wrong with it, or returns None.

    kind: "number" (int or float; `integer` for int only), "flag" (true/false), "text"
    (a non-empty string), "choice" (one of `choices`), "list" (of values that each pass `item`).
    """
    kind: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    null: bool = False
    choices: tuple = ()
    item: Rule | None = None

    def allowed(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(map(str, self.choices))
        if self.kind == "flag":
            return "true or false"
        if self.kind == "text":
            return "a non-empty string"
        if self.kind == "list":
            return f"a list of {self.item.allowed()}"
        if self.kind == "either":
            return " or ".join(o.allowed() for o in self.choices)
        what = "an integer" if self.integer else "a finite number"
        return what + (" " + self._range() if self._range() else "")

    def _range(self) -> str:
        if self.lo is not None and self.hi is not None:
            return (f"in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}"
                    f"{')' if self.hi_open else ']'}")
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {_num(self.hi)}"
        return ""

    def problem(self, value) -> str | None:
        if value is None:
            return None if self.null else f"must be {self.allowed()}, not null"
        if self.kind == "either":
            return None if any(o.problem(value) is None for o in self.choices) else f"must be {self.allowed()}"
        if self.kind == "choice":
            if isinstance(value, bool) or value not in self.choices:
                return f"is not one of {', '.join(map(str, self.choices))}"
            return None
        if self.kind == "flag":
            return None if isinstance(value, bool) else "must be true or false"
        if self.kind == "text":
            if not isinstance(value, str):
                return "must be a string (quote it: key='...')"
            return None if value.strip() else "must not be empty"
        if self.kind == "list":
            if not isinstance(value, (list, tuple)):
                return f"must be {self.allowed()} ([a, b, ...])"
            for v in value:
                p = self.item.problem(v)
                if p:
                    return f"holds {show(v)}, which {p}"
            return None
        # numbers
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "is not an integer" if self.integer else "is not a number"
        if self.integer and not isinstance(value, int):
            return "is not an integer"
        if not math.isfinite(value):
            return "must be a finite number"
        too_low = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        too_high = self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)
        if too_low or too_high:
            if self.lo is not None and self.hi is not None:
                return f"is outside {self._range()[3:]}"
            return f"must be {self._range()}"
        return None


def number(lo=None, hi=None, *, lo_open=False, hi_open=False, null=False) -> Rule:
    return Rule("number", lo, hi, lo_open, hi_open, null=null)


def integer(lo=None, hi=None, *, null=False) -> Rule:
    return Rule("number", lo, hi, integer=True, null=null)


def flag() -> Rule:
    return Rule("flag")


def text(*, null=False) -> Rule:
    return Rule("text", null=null)


def choice(*values, null=False) -> Rule:
    return Rule("choice", choices=tuple(values), null=null)


def list_of(item: Rule, *, null=False) -> Rule:
    return Rule("list", item=item, null=null)


def either(*options: Rule) -> Rule:
    """A value that passes any one of `options` (a key whose type depends on another key)."""
    return Rule("either", choices=tuple(options))


LR = number(0, lo_open=True)
MOMENTUM = number(0, 1, hi_open=True)
SEED = integer(0, 2**32 - 1)

# Every key of every group option and preset, with what it may hold. A new key: one line here.
RULES: dict[str, Rule] = {
    "gamma": number(0),
    "target_flops": number(0, 1, lo_open=True, null=True),
    "seed": SEED,
    "device": text(),                      # auto, cpu, cuda, cuda:N (check_device)
    "threads": integer(1, null=True),      # intra-op threads; null: one per core, or the launcher's share
    "resume": text(null=True),             # a run directory or checkpoint file

    "model._target_": choice("gated_pruning.models.vgg.build"),
    "model.depth": choice(11, 13, 16, 19),
    "model.width": number(0, lo_open=True),
    "model.gated": flag(),
    "model.gate_init": number(),
    "model.gate_jitter": number(0),
    "model.min_keep": integer(0),
    "model.bn_weight": flag(),
    "model.gate_position": choice("bn", "relu"),
    "model.widths": list_of(integer(1), null=True),

    "arch.source": choice("config", "uniform", "run"),
    "arch.run": text(null=True),
    "arch.epochs": choice("same", "flops"),

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


def _subsets_fit(c: dict) -> str | None:
    d = c.get("dataset", {})
    sizes = SPLIT_SIZES.get(d.get("name"))
    train, val = d.get("train_size"), d.get("val_size") or 0
    if sizes is not None:
        if val >= sizes[0]:
            return (f"dataset.val_size={val} leaves no training images (the {d['name']} train set has "
                    f"{sizes[0]})")
        for key, n, full in (("train_size", train, sizes[0] - val), ("test_size", d.get("test_size"), sizes[1])):
            if n is not None and n > full:
                held = f" once dataset.val_size={val} is held out" if key == "train_size" and val else ""
                return (f"dataset.{key}={n} is larger than the {d['name']} {key.split('_')[0]} set "
                        f"({full} images{held})")
        train = train or sizes[0] - val
    if train is not None and d.get("batch_size", 0) > train:
        return (f"dataset.batch_size={d['batch_size']} is larger than the training set ({train} images): "
                "no full batch, no training step")
    return None


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


def _budget_bounds(c: dict) -> str | None:
    b = c.get("budget", {})
    if b.get("min_gamma") is not None and b.get("max_gamma") is not None and b["min_gamma"] > b["max_gamma"]:
        return f"budget.min_gamma={show(b['min_gamma'])} is above budget.max_gamma={show(b['max_gamma'])}"
    return None


def _arch_source_complete(c: dict) -> str | None:
    a = c.get("arch", {})
    gated = c.get("model", {}).get("gated", False)
    if a.get("source") == "run":
        if not a.get("run"):
            return "arch.source=run needs arch.run=<a finished run's directory>"
        if not os.path.isfile(os.path.join(a["run"], "results.json")):
            return f"arch.run={a['run']}: no results.json there (give the directory of a finished, pruned run)"
        if gated:
            return ("arch.source=run trains the pruned architecture from scratch as a plain network: "
                    "set model.gated=false (method=scratch_e or scratch_b)")
    if a.get("source") == "uniform":
        if c.get("target_flops") is None:
            return "arch.source=uniform needs target_flops=<fraction of the dense FLOPs>"
        if gated:
            return "arch.source=uniform trains a plain network: set model.gated=false (method=uniform)"
    if a.get("epochs") == "flops" and a.get("source") == "config":
        return "arch.epochs=flops scales the epochs by a reference network: it needs arch.source=run or uniform"
    return None


CROSS_CHECKS = (_warmup_within_run, _dataset_keys_match_name, _subsets_fit,
                _finetune_needs_pruning, _binarizer_keys, _clamp_fits_optimizer, _relu_gates_clamped,
                _budget_bounds, _arch_source_complete)


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


def check_device(name: str, need_available: bool = True) -> None:
    """`device` names a device this code can use (and, if asked, that exists here)."""
    if name == "auto":
        return
    import torch

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


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def fingerprint(cfg: DictConfig) -> dict:
    """The config a checkpoint must match to be resumed: everything but RESUMABLE_KEYS."""
    c = OmegaConf.to_container(cfg, resolve=True)
    for key in RESUMABLE_KEYS:
        parent, _, leaf = key.rpartition(".")
        node = c
        for part in filter(None, parent.split(".")):
            node = node.get(part, {})
        node.pop(leaf, None)
    return c


def tracker_config(cfg: DictConfig, choices: dict | None = None) -> dict:
    """The run config as a tracker sees it: flat dotted keys (`optimizer.lr`, as a W&B sweep
    names its parameters) plus each config group's chosen option (`optimizer: apg`, as a sweep
    over group options sets it), so sweep values and logged config never collide."""
    out = flatten(OmegaConf.to_container(cfg, resolve=True))
    out.update({k: v for k, v in (choices or {}).items() if v is not None and not k.startswith("hydra")})
    return out
