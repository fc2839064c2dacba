"""The one reader of run records: every results.json below a folder becomes a `Run`, and every
label a report shows is decided here, once: the method, the gate kind, the FLOPs target and what
it meant, the gamma in effect at the end, the thread setting and the code commit.

Two kinds of record are read: a training run's (`experiment.run`) and the record that
the re-prune tool (`python -m gated_pruning.reprune`) writes for a cut of a finished run (it
carries `derived_from`). Each is read through `record.read`, which brings an older schema up to
date (its `target` and `final`); what an old record never measured (`env`, `time`, the validation
numbers) shows "-". A record that is not JSON, from a newer schema, or without a config, is skipped; a field that is present but malformed (a hand-edited type, a shortened list)
is one `warning:` line naming the file and the fields, and the rest of the run is reported.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import sys

from omegaconf import OmegaConf

from gated_pruning import kinds, record
from gated_pruning.datasets import DECLARED
from gated_pruning.models import families
from gated_pruning.record import RESULTS
from gated_pruning.toolkit import CONF_DIR, readable_dir
from gated_pruning.errors import UserError
from gated_pruning.config.rules import show
from gated_pruning.reports.fields import Fields, brief, finite
from gated_pruning.reports.tables import num

TARGET_KINDS = ("budget", "uniform", "cut", "arch_run")

STAGES = ("trained", "cut", "finetuned")  # the networks a record measures, in order


class ReportError(UserError):
    """A problem with a report's input folders: reported as one `error:` line."""


@dataclasses.dataclass
class Run:
    """One run record, read and labelled. Fractions as given in the record (0.3 = 30%)."""
    path: str  # the results.json, as found below the folder given
    name: str  # its folder relative to that folder
    method: str  # `method=` choice, a prune record's --method, else "gated" / "dense"
    gated: bool
    variant: str  # gate optimizer and gates, `apg-float`; `plain` without gates
    gates: str  # the gate kind, `binary (threshold STE)`; "-" without gates
    gamma: float | None  # as configured
    target_kind: str | None  # budget, uniform, cut, arch_run (TARGET_KINDS), None without a target
    target: float | None  # the FLOPs fraction the target asked for
    gamma_end: float | None  # the penalty's gamma when training ended (a budget moves it)
    gamma_at_freeze: float | None  # a budget that froze the architecture: its gamma just before
    seed: int | None
    epochs: int | None  # training epochs (a cut: those of the run it was cut from)
    finetune_epochs: int | None  # a prune record's fine-tuning epochs
    compute_epochs: int | None  # arch.epochs=flops (Scratch-B): the dense epochs of the same training compute
    derived: bool  # a prune record for a cut of a finished run
    test: dict  # {stage: top-1 or None} for STAGES
    val: dict  # the same on the validation split (None: no split, or an older record)
    flops_kept: float | None  # against the dense reference (`cost`), else the cut's
    params_kept: float | None
    pruned: bool  # has a complete prune section
    pruned_flops_kept: float | None  # the cut against the network it was cut from
    pruned_params_kept: float | None
    speedup: float | None
    threads: int | None  # env.threads: part of what a number depends on
    device: str | None
    commit: str | None
    dirty: bool | str | None
    layers: list
    channels: list
    history: list
    final_zeros: list | None
    nonzero_mean: list | None
    dense_widths: list | None  # prune.dense.widths: the network before the cut
    kept_widths: list | None
    reference_widths: list | None  # cost.reference.widths: the dense network FLOPs count against
    dead_layers: list
    stage: str  # the network the run delivers (STAGES): fine-tuned if it was, else as cut, else as trained
    unit_kinds: list = dataclasses.field(default_factory=list)  # prune.kinds: "channels" or "block" per unit
    recipe: str = "-"  # how it was trained: lr, warm-up, label smoothing, batch, precision (`recipe_of`)
    curve: list = dataclasses.field(default_factory=list)  # per epoch: {"epoch", "val_top1" or "test_top1", ...}
    budget_overrides: str = ""  # a budget run's controller settings unlike its method's today (`budget_overrides`)
    row: str = ""  # what names the run's row in a comparison: its method, or its folder (set by the view)
    machine: str | None = None  # env.device_name: the processor, whose kernels set the last digits too
    network: str = "-"  # what defines the network and its data (`network_of`): rows never mix two
    compute: float | None = None  # training compute in epochs of the dense network (`compute_of`)

    @property
    def final(self) -> float | None:
        return self.test[self.stage]

    @property
    def final_val(self) -> float | None:
        """Val top-1 of the same network as `final` (never of another stage)."""
        return self.val[self.stage]

    @property
    def fixed_gamma(self) -> float | None:
        """The gamma of a gated run without a FLOPs target: it is what sets the run's FLOPs."""
        return self.gamma if self.gated and self.target is None else None

    @property
    def epochs_label(self) -> str:
        e = "-" if self.epochs is None else str(self.epochs)
        return f"{e}+{self.finetune_epochs or 0}" if self.derived else e

    @property
    def thread_setting(self) -> tuple:
        """What kernels and reduction order a run's numbers come from: (threads, device, machine);
        (None, None, None) for a record without `env`, an unknown setting of its own. Two
        processors (an Intel Xeon with AMX, an AMD EPYC) run other bf16 kernels: a run of one
        seed moves by up to a point between them, as it does between thread counts."""
        return (self.threads, self.device, self.machine) if self.threads is not None else (None, None, None)

    @property
    def sparsity(self) -> list | None:
        """The fraction of each layer's channels removed (from the final gate counts when unpruned)."""
        if self.pruned:
            return [1 - k / d if d else 0.0 for k, d in zip(self.kept_widths, self.dense_widths)]
        if self.final_zeros and self.channels:
            return [z / c if c else 0.0 for z, c in zip(self.final_zeros, self.channels)]
        return None


def gate_labels(binarizer_target: str | None, optimizer_target: str | None) -> tuple[str, str]:
    """(variant, gate kind) of a gated run: `apg-threshold`, `binary (threshold STE)`, as the kinds
    are declared (`kinds.py`); a kind nobody declared by its class name."""
    gate = kinds.binarizer(binarizer_target or "gated_pruning.gates.NoBinarizer")
    short, label = (gate.short, gate.label) if gate else (kinds.short_name(binarizer_target).lower(),) * 2
    opt = kinds.gate_optimizer(optimizer_target)
    name = opt.short if opt else kinds.short_name(optimizer_target).lower() if optimizer_target else "?"
    return f"{name}-{short}", label


def target_of(f: Fields) -> tuple[str | None, float | None]:
    """(kind, FLOPs fraction) of a record's target (`record.upgrade` derives it for older records)."""
    if f.obj("target") is None:
        return None, None
    return f.text("target.kind", TARGET_KINDS), f.number("target.flops")


def _freeze_gamma(history: list) -> float | None:
    """The gamma just before a budget froze the architecture (the freeze sets it to 0)."""
    if not history or history[-1].get("frozen") is not True:
        return None
    before = [h.get("gamma") for h in history if h.get("frozen") is False and finite(h.get("gamma")) is not None]
    return float(before[-1]) if before else None


def _per_layer(xs, channels: list, row: int | None = None) -> bool:
    """A list with one number (or, with `row`, one list of `row` numbers) per layer."""
    if not isinstance(xs, list) or (channels and len(xs) != len(channels)):
        return False
    if row is None:
        return all(finite(x) is not None for x in xs)
    return all(isinstance(x, list) and len(x) == row and all(finite(q) is not None for q in x) for x in xs)


def _history(f: Fields, channels: list) -> list:
    """The gate history's entries with a step and per-layer zeros; malformed entries noted once."""
    history = f.get("gates.history")
    if history is None:
        return []
    if not isinstance(history, list):
        f.note("gates.history", f"is {brief(history)}, not a list")
        return []
    good, broken = [], []
    for i, h in enumerate(history):
        ok = isinstance(h, dict) and finite(h.get("step")) is not None and _per_layer(h.get("zeros"), channels) \
            and (h.get("quantiles") is None or _per_layer(h["quantiles"], channels, row=5))  # stats.QUANTILES
        (good if ok else broken).append(h if ok else i)
    if broken:
        f.note("gates.history", f"entries {', '.join(map(str, broken[:3]))}{' ...' if len(broken) > 3 else ''} "
                f"of {len(history)} lack a step or per-layer zeros or quantiles (left out)")
    return good


BUDGET_KEYS = ("start", "ramp", "freeze", "freeze_on_target", "reopen", "every", "kp", "ki", "min_gamma",
               "max_gamma")


@functools.cache
def budget_defaults(method: str | None = None) -> dict | None:
    """The controller settings of conf/budget/default.yaml, with `method=METHOD`'s preset `budget:`
    over them (what that method means today); None for a method with no preset."""
    base = OmegaConf.load(os.path.join(CONF_DIR, "budget", "default.yaml"))
    if method is None:
        return OmegaConf.to_container(base)
    path = os.path.join(CONF_DIR, "method", f"{method}.yaml")
    if not os.path.isfile(path):
        return None
    return OmegaConf.to_container(OmegaConf.merge(base, OmegaConf.load(path).get("budget") or {}))


def budget_overrides(f: Fields, method: str, kind: str | None) -> str:
    """A budget run's controller settings that differ from what its method means today, as the
    overrides that would make it (`budget.reopen=true`); "" for none, or for a run without a budget.
    A setting the record lacks (made before it existed) counts as the default of today's file. Two
    controllers are two rows of a comparison, never one."""
    run, preset = f.obj("config.budget"), budget_defaults(method) if kind == "budget" else None
    if run is None or preset is None:
        return ""
    run = {**budget_defaults(), **run}
    return ", ".join(f"budget.{k}={show(run[k])}" for k in BUDGET_KEYS if k in preset and run.get(k) != preset[k])


def read_run(res: dict, path: str, name: str) -> tuple[Run, list]:
    """The Run of one record (of any schema: `record.upgrade`), and the malformed fields found:
    [(field, problem)]."""
    f = Fields(record.upgrade(res))
    derived = f.get("derived_from") is not None
    gated = f.get("config.model.gated")
    if gated is not None and not isinstance(gated, bool):
        f.note("config.model.gated", f"is {brief(gated)}, not true or false")
    gated = gated is True
    variant, gates = gate_labels(f.text("config.binarizer._target_"), f.text("config.optimizer.gates._target_"))
    if f.get("config.model.gated") is False:
        variant = "plain"
    method = f.text("method") or f.text("choices.method") or ("gated" if gated else "dense")
    kind, target = target_of(f)
    layers = f.get("gates.layers")
    if layers is not None and not (isinstance(layers, list) and all(isinstance(n, str) for n in layers)):
        f.note("gates.layers", f"is {brief(layers)}, not a list of names")
        layers = None
    channels = f.numbers("gates.channels", len(layers) if layers else None, "the layers are") or []
    layers = layers or [f"conv{i}" for i in range(len(channels))]
    history = _history(f, channels)
    dense = f.numbers("prune.dense.widths")
    kept = f.numbers("prune.compact.widths", len(dense) if dense else None, "the dense widths are")
    pruned = bool(dense and kept)
    zeros = f.numbers("gates.final.zeros", len(channels) or None, "the layers are")
    dead = f.get("prune.dead_layers")
    if dead is not None and not isinstance(dead, list):
        f.note("prune.dead_layers", f"is {brief(dead)}, not a list")
        dead = None
    if dead is None:  # no cut recorded: the layers whose every gate ended at zero
        dead = [n for n, z, c in zip(layers, zeros or [], channels) if c and z == c]
    dirty = f.get("env.dirty")
    if dirty is not None and not isinstance(dirty, bool) and dirty != "unknown":
        f.note("env.dirty", f"is {brief(dirty)}, not true, false or \"unknown\"")
        dirty = None
    tuned = "prune.finetune"
    fields = {"trained": "prune.test.dense.top1" if derived else "metrics.test.top1",
              "cut": "prune.test.compact.top1", "finetuned": f"{tuned}.test.top1"}
    test = {stage: f.number(field) for stage, field in fields.items()}
    # the last stage the record measured, even where its number is malformed: never an earlier one instead
    stage = next((s for s in reversed(STAGES) if f.get(fields[s]) is not None), "trained")
    val = {"trained": f.number("prune.val.dense.top1" if derived else "metrics.val.top1"),
           "cut": f.number("prune.val.compact.top1"), "finetuned": f.number(f"{tuned}.val.top1")}
    flops, params = f.number("cost.flops_kept"), f.number("cost.params_kept")
    cut_flops, cut_params = f.number("prune.kept.flops"), f.number("prune.kept.params")
    kinds = _kinds(f, len(kept) if kept else None)
    if gated and "block" in kinds:  # SSS's block gates (residual networks): which units were gated
        gates += " on channels + blocks" if "channels" in kinds else " on blocks"
    run = Run(
        path=path, name=name, method=method, gated=gated, variant=variant, gates=gates if gated else "-",
        gamma=f.number("config.gamma"), target_kind=kind, target=target,
        gamma_end=f.number("gates.gamma_final"), gamma_at_freeze=_freeze_gamma(history),
        seed=f.number("config.seed", integer=True), epochs=f.number("config.trainer.epochs", integer=True),
        finetune_epochs=f.number(f"{tuned}.epochs", integer=True), compute_epochs=_compute_epochs(f, flops),
        derived=derived, test=test, val=val,
        flops_kept=flops if flops is not None else cut_flops, params_kept=params if params is not None else cut_params,
        pruned=pruned, pruned_flops_kept=cut_flops if pruned else None,
        pruned_params_kept=cut_params if pruned else None, speedup=f.number("prune.speedup") if pruned else None,
        threads=f.number("env.threads", integer=True), device=f.text("env.device"), commit=f.text("env.commit"),
        dirty=dirty,
        layers=layers, channels=channels, history=history, final_zeros=zeros,
        nonzero_mean=f.numbers("gates.final.nonzero_mean", len(channels) or None, "the layers are"),
        dense_widths=dense, kept_widths=kept,
        reference_widths=f.numbers("cost.reference.widths"), dead_layers=[str(n) for n in dead], stage=stage,
        recipe=recipe_of(f), curve=_curve(f), unit_kinds=kinds, budget_overrides=budget_overrides(f, method, kind),
        machine=f.text("env.device_name"), network=network_of(f),
        compute=compute_of(f, gated, derived, flops if flops is not None else cut_flops, cut_flops))
    return run, f.bad


def network_of(f: Fields) -> str:
    """What defines a run's network and data, as one label: the model (family and depth, or
    torchvision name, or the user's class), its width, the data set and its validation split."""
    m = f.obj("config.model") or {}
    target = str(m.get("_target_", ""))
    family = families.family(target)
    if family is not None and family.label:
        value = OmegaConf.select(OmegaConf.create(m), family.label)
        name = str(value if value is not None else kinds.short_name(target)).rsplit(".", 1)[-1]
    else:
        name = f"{target.split('.')[-2] if '.' in target else 'model'}{m.get('depth', '')}"
    width = m.get("width")
    d = f.obj("config.dataset") or {}
    label = f"{name} x{width:g}" if isinstance(width, (int, float)) and width != 1 else name
    data = str(d.get("name", "?"))
    declared = DECLARED.get(data)
    if d.get("image_size") and (declared is None or declared.image_size is None):  # not fixed by the data set
        data += f" {d['image_size']}px"
    return f"{label}, {data}" + (f", val {d['val_size']}" if d.get("val_size") else "")


def compute_of(f: Fields, gated: bool, derived: bool, flops: float | None, cut: float | None) -> float | None:
    """The training compute of the network a run delivers, in epochs of the dense network: its
    training epochs times the FLOPs of the network trained (a gated network computes every channel
    until its cut: 1; a uniform or Scratch network its own FLOPs kept), plus every fine-tuning's
    epochs times the FLOPs of the network tuned; a cut of another run (`derived`) adds its own to
    that run's training. None where the record lacks a term."""
    epochs = f.number("config.trainer.epochs", integer=True)
    if epochs is None:
        return None
    source = f.text("config.arch.source")
    trained = flops if source in ("uniform", "run") and not gated and not derived else 1.0
    if trained is None:
        return None
    total = epochs * trained
    for tuned in (f.get("prune.round_finetunes") or []):
        if isinstance(tuned, dict) and finite(tuned.get("epochs")) is not None:
            total += tuned["epochs"] * (finite(tuned.get("flops")) or cut or 1.0)
    tuned = f.number("prune.finetune.epochs", integer=True)
    if tuned:
        total += tuned * (cut if cut is not None else 1.0)
    return total


def _compute_epochs(f, flops: float | None) -> int | None:
    """A run trained longer for a cheaper network (`arch.epochs=flops`, Scratch-B): epochs x the
    FLOPs kept, the number of dense epochs of the same training compute (what it is compared with)."""
    epochs = f.number("config.trainer.epochs", integer=True)
    if f.get("config.arch.epochs") != "flops" or epochs is None or flops is None:
        return None
    return round(epochs * flops)


def recipe_of(f: Fields) -> str:
    """The training recipe as one label, from the config: lr (and schedule), warm-up epochs,
    label smoothing, batch size, bf16 or float32 (older records: what they hold)."""
    parts = []
    for path, label in (("config.optimizer.lr", "lr {}"), ("config.optimizer.warmup_epochs", "warm-up {}"),
                        ("config.trainer.label_smoothing", "smoothing {}"), ("config.dataset.batch_size", "batch {}")):
        v = f.number(path)
        if v is not None:
            parts.append(label.format(num(v)))
    schedule = f.text("config.optimizer.schedule")
    if schedule and schedule != "cosine":
        parts.append(schedule)
    amp = f.get("config.trainer.amp")
    if isinstance(amp, bool):
        parts.append("bf16" if amp else "float32")
    return ", ".join(parts) or "-"


def _kinds(f: Fields, n: int | None) -> list:
    kinds = f.get("prune.kinds")
    if kinds is None:
        return []
    if not (isinstance(kinds, list) and all(k in ("channels", "block") for k in kinds) and (n is None or len(kinds) == n)):
        f.note("prune.kinds", "is not a list of \"channels\" and \"block\", one per unit")
        return []
    return kinds


def _curve(f: Fields) -> list:
    curve = f.get("curve")
    if curve is None:
        return []
    if not (isinstance(curve, list) and all(isinstance(c, dict) and finite(c.get("epoch")) is not None for c in curve)):
        f.note("curve", "is not a list of per-epoch records")
        return []
    return curve


def find_results(root: str) -> list[str]:
    """Every results.json below `root`, in a stable order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if RESULTS in filenames:
            found.append(os.path.join(dirpath, RESULTS))
    return found


def load(root: str) -> list[Run]:
    """The runs below `root`: a `warning:` line for each record skipped (not JSON, no config)
    and for each record with malformed fields; a ReportError when none is left."""
    readable_dir(root)
    paths = find_results(root)
    if not paths:
        raise ReportError(f"no {RESULTS} found under {root}")
    runs = []
    for path in paths:
        try:
            res = record.read(path)
        except (OSError, ValueError) as e:  # RecordError is a ValueError too
            print(f"warning: skipping {path}: {e}", file=sys.stderr)
            continue
        if not isinstance(res.get("config"), dict):
            what = f"config is {brief(res['config'])}, not an object" if "config" in res else "no config"
            print(f"warning: skipping {path}: not the record of a run ({what})", file=sys.stderr)
            continue
        name = os.path.relpath(os.path.dirname(path), root)
        run, bad = read_run(res, path, os.path.basename(os.path.abspath(root)) if name == "." else name)
        if bad:
            print(f"warning: {path}: malformed {'; '.join(f'{p} {what}' for p, what in bad)}: shown as \"-\", "
                  "the rest of the run is reported", file=sys.stderr)
        runs.append(run)
    if not runs:
        raise ReportError(f"no readable {RESULTS} under {root}")
    return runs
