"""Every extensible kind declared once, torch-free: the binarizers (gate kinds), the gate
optimizers and the penalties here; model families in `models/families.py`, data sets in
`datasets.py`. The config rules (`config/keys.py`), the cross-key checks (`config/checks.py`), the
report labels (`reports/records.py`) and the modules themselves read these declarations; nothing
matches a class name as a string.

A kind is named by its class's import path, the `_target_` of its config file. Adding one is its
declaration, its class, and its `conf/GROUP/NAME.yaml`. A package outside the project adds its
own the same way: in a torch-free module that the entry-point group `gated_pruning.kinds` names
(`[project.entry-points."gated_pruning.kinds"] mine = "pkg.kinds"`), a `KINDS` list of
declarations (`Binarizer`, `GateOptimizer`, `Penalty`, `models.families.Family`,
`datasets.Declared`), registered when this module is imported, so that preflight, the rules and
the reports know them before a run starts (docs/architecture.md, "Add a gate kind").
"""
from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass

from gated_pruning.datasets import DECLARED, Declared
from gated_pruning.models.families import FAMILIES, Family


@dataclass(frozen=True)
class Binarizer:
    """A gate kind: `option` is its config file (`binarizer=OPTION`), `short` names it in a variant
    (`apg-threshold`), `label` in a comparison."""
    target: str
    option: str
    short: str
    label: str
    binary: bool  # the kept gate is 0 or 1 (else a float scale)
    estimators: tuple = ()  # the values `binarizer.estimator` may take
    penalty: str | None = None  # the penalty (its target) this gate kind needs, if any
    why: str = ""  # what the message says when another penalty is given


@dataclass(frozen=True)
class GateOptimizer:
    target: str
    short: str
    clamps: tuple  # the values `optimizer.gates.clamp` may take
    zero_clamps: tuple  # those that keep gates >= 0 (gates after the ReLU need one)


@dataclass(frozen=True)
class Penalty:
    target: str
    option: str
    binarizer: str | None = None  # the gate kind (its target) this penalty needs, if any
    why: str = ""


BINARIZERS: dict[str, Binarizer] = {}
GATE_OPTIMIZERS: dict[str, GateOptimizer] = {}
PENALTIES: dict[str, Penalty] = {}
_REGISTRIES = {Binarizer: BINARIZERS, GateOptimizer: GATE_OPTIMIZERS, Penalty: PENALTIES, Family: FAMILIES,
               Declared: DECLARED}


def register(*kinds) -> None:
    """Add declarations (`Binarizer`, `GateOptimizer`, `Penalty`, a model `Family`, a data set's
    `datasets.Declared`) to their registries: by their class's import path, a data set by its name."""
    for kind in kinds:
        _REGISTRIES[type(kind)][getattr(kind, "target", None) or kind.name] = kind


register(
    Binarizer("gated_pruning.gates.NoBinarizer", "none", "float", "float", binary=False),
    Binarizer("gated_pruning.gates.ThresholdBinarizer", "threshold", "threshold", "binary (threshold STE)",
              binary=True, estimators=("identity", "clipped")),
    Binarizer("gated_pruning.gates.StochasticBinarizer", "stochastic", "stochastic", "binary (stochastic STE)",
              binary=True, estimators=("identity", "clipped")),
    Binarizer("gated_pruning.gates.HardConcreteBinarizer", "hard_concrete", "hardconcrete", "binary (hard concrete)",
              binary=True,
              estimators=("relaxed", "straight_through"), penalty="gated_pruning.penalty.ExpectedL0",
              why="its latent weight is log(alpha), not a gate value that an L1 or polarization term could shrink"),
    GateOptimizer("gated_pruning.optim.APG", "apg", clamps=("prox", "lookahead", "none"), zero_clamps=("prox",)),
    GateOptimizer("gated_pruning.optim.GateSGD", "sgd", clamps=(True, False), zero_clamps=(True,)),
    Penalty("gated_pruning.penalty.L1", "l1"),
    Penalty("gated_pruning.penalty.Polarization", "polarization"),
    Penalty("gated_pruning.penalty.ExpectedL0", "l0", binarizer="gated_pruning.gates.HardConcreteBinarizer",
            why="it penalizes the probability that a gate is open"),
)


def _load_plugins() -> None:
    """The declarations of installed packages (entry-point group `gated_pruning.kinds`)."""
    try:
        points = importlib.metadata.entry_points(group="gated_pruning.kinds")
    except Exception:  # noqa: BLE001 - broken metadata elsewhere must not stop a run
        return
    for point in points:
        module = importlib.import_module(point.value)
        register(*getattr(module, "KINDS", ()))


_load_plugins()


def binarizer(target) -> Binarizer | None:
    return BINARIZERS.get(str(target))


def gate_optimizer(target) -> GateOptimizer | None:
    return GATE_OPTIMIZERS.get(str(target))


def penalty(target) -> Penalty | None:
    return PENALTIES.get(str(target))


def short_name(target) -> str:
    """The last part of an import path, `NoBinarizer` of `gated_pruning.gates.NoBinarizer`."""
    return str(target).rsplit(".", 1)[-1]
