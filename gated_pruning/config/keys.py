"""The rules of a run's config: what each key may hold, and what several keys must agree on.

Every key a run can hold is listed in RULES with what it may hold; `check_config` refuses a run
whose config has a key without a rule, so a new key is one line here (tests/test_inputs.py fails
for a key that any group option or preset defines without a rule). Checks that involve several
keys are the small functions of `checks.py` (an error: the combination makes no sense); the
settings a run will not read are `unread.py`'s (a warning). LAUNCHER_RULES check the values of
Hydra's launchers. None of this imports torch: `run.py` runs it for every job of a
sweep before Hydra writes anything.
"""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from gated_pruning.config.checks import CROSS_CHECKS
from gated_pruning.datasets import DECLARED
from gated_pruning.errors import ConfigError
from gated_pruning.objective import METRICS
from gated_pruning import kinds
from gated_pruning.models import families
from gated_pruning.config.rules import Rule, choice, choice_of, either, flag, integer, list_of, number, show, text


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
    "objective": either(choice(*METRICS), list_of(choice(*METRICS))),  # objective.py

    "model._target_": choice_of(families.FAMILIES),
    "model.net._target_": text(null=True),  # model=custom: the user's class; its arguments are theirs (ARGUMENTS)
    "model.depth": choice_of(lambda: tuple(sorted({d for f in families.FAMILIES.values() for d in f.depths}))),
    # _depth_fits_model
    "model.name": text(),                  # torchvision's model name (models.tv checks it)
    "model.inner_gates": flag(),
    "model.gate_stream": flag(),
    "model.block_gates": flag(),
    "model.channel_gates": flag(),
    "model.width": number(0, lo_open=True),
    "model.gated": flag(),
    "model.gate_init": number(),
    "model.gate_jitter": number(0),
    "model.min_keep": either(number(0, 1, hi_open=True), integer(1)),  # a fraction, or a count
    "model.bn_weight": flag(),
    "model.gate_position": choice_of(lambda: tuple(dict.fromkeys(
        p for f in families.FAMILIES.values() for p in f.gate_positions))),
    "model.widths": list_of(integer(1), null=True),
    "model.weights": text(null=True),      # weights.py
    "model.weights_key": text(null=True),

    "arch.source": choice("config", "uniform", "run"),
    "arch.run": text(null=True),
    "arch.epochs": choice("same", "flops"),
    "arch.target_flops": number(0, 1, lo_open=True, null=True),  # source=uniform: the width's FLOPs

    "penalty._target_": choice_of(kinds.PENALTIES),
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
    "budget.every": integer(1),
    "budget.kp": number(0),
    "budget.ki": number(0),
    "budget.min_gamma": number(0, lo_open=True),
    "budget.max_gamma": number(0, lo_open=True),

    "binarizer._target_": choice_of(kinds.BINARIZERS),
    "binarizer.threshold": number(0, 1, hi_open=True),
    "binarizer.estimator": choice_of(lambda: tuple(dict.fromkeys(e for b in kinds.BINARIZERS.values()
                                                                 for e in b.estimators))),
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
    "optimizer.weights.foreach": flag(null=True),
    "optimizer.weights.fused": flag(null=True),
    "optimizer.gates._target_": choice_of(kinds.GATE_OPTIMIZERS),
    "optimizer.gates.lr": LR,
    "optimizer.gates.momentum": MOMENTUM,
    "optimizer.gates.clamp": either(choice_of(lambda: tuple(dict.fromkeys(
        c for o in kinds.GATE_OPTIMIZERS.values() for c in o.clamps if isinstance(c, str)))), flag()),  # _clamp_fits_optimizer
    "optimizer.gates.upper": number(0, lo_open=True, null=True),
    "optimizer.gates.forward": choice("lookahead", "prox"),

    "dataset.name": choice_of(DECLARED),
    "dataset.root": text(null=True),       # null: dataset=imagefolder's, which needs one (_dataset_keys_match_name)
    "dataset.download": flag(),
    "dataset.batch_size": integer(1),
    "dataset.eval_batch_size": integer(1),
    "dataset.train_size": integer(1, null=True),
    "dataset.test_size": integer(1, null=True),
    "dataset.val_size": integer(0),
    "dataset.pad": integer(0, 64),
    "dataset.image_size": integer(8, 4096),
    "dataset.resize": number(1, 4),
    "dataset.train_crop": choice("resized", "padded"),
    "dataset.crop_scale": list_of(number(0, 1, lo_open=True)),  # _dataset_keys_match_name: two, ordered
    "dataset.mean": list_of(number(0, 1)),
    "dataset.std": list_of(number(0, lo_open=True)),
    "dataset.workers": integer(0, 256, null=True),
    "dataset.flip": flag(),
    "dataset.num_classes": integer(2, 100_000),
    "dataset.seed": SEED,

    "trainer.epochs": integer(0),           # 0: nothing trained (model.weights: a trained network cut and fine-tuned)
    "trainer.log_every": integer(0),
    "trainer.eps": number(0),
    "trainer.checkpoint": flag(),
    "trainer.checkpoint_every_steps": integer(0),
    "trainer.checkpoint_every_epochs": integer(1),
    "trainer.eval_every": integer(1),
    "trainer.progress": flag(),
    "trainer.amp": flag(),
    "trainer.channels_last": flag(),
    "trainer.compile": flag(),
    "trainer.deterministic": flag(),
    "trainer.label_smoothing": number(0, 1, hi_open=True),

    "prune.enabled": flag(),
    "prune.threshold": number(0),
    "prune.finetune_epochs": integer(0),
    "prune.finetune_lr": LR,
    "prune.latency_batch": integer(1),
    "prune.latency_reps": integer(1),
    "prune.latency_warmup": integer(0),
    "prune.round_to": integer(1),
    "prune.onnx": either(choice("auto"), flag()),
    "prune.target_flops": number(0, 1, lo_open=True, null=True),
    "prune.criterion": choice("gate", "l1norm", "taylor", "thinet", "lasso", null=True),
    "prune.samples": integer(1),
    "prune.rounds": integer(1, 100),
    "prune.round_epochs": integer(1),

    "logger.name": choice("wandb", "tensorboard", "none"),
    "logger.subdir": text(),
    "logger.project": text(),
    "logger.entity": text(null=True),
    "logger.group": text(null=True),
    "logger.tags": list_of(text()),
    "logger.mode": choice("online", "offline", "disabled", null=True),
    "logger.init_timeout": number(0, lo_open=True),
}


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


# sections that hold a user's constructor arguments: no rule of ours, their constructor checks them
ARGUMENTS = ("model.net.",)


def problems(cfg: DictConfig | dict) -> list[str]:
    """Every key without a rule, every value its rule refuses, then the cross-key checks."""
    c = cfg if isinstance(cfg, dict) else resolved(cfg)
    out = []
    flat = flatten(c)  # shallow keys first: gamma before optimizer.gates.gamma that copies it
    for key, value in sorted(flat.items(), key=lambda kv: kv[0].count(".")):
        if key.startswith(ARGUMENTS) and key not in RULES:
            continue
        rule = RULES.get(key)
        if rule is None:
            out.append(f"{key}={show(value)}: no validation rule for this key (add one to RULES "
                       "in gated_pruning/config/keys.py)")
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
