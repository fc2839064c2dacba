"""The model families declared once, torch-free: what each builds (its depths, where the gate may
sit). The config rules (`model._target_`, `model.depth`, `model.gate_position`), the cross-key
checks and the models themselves (`vgg.py` its layer lists, `resnet.py` its blocks per stage)
read these; no other module keeps a copy.

A family is named by its build function's import path, the `_target_` of its `conf/model/*.yaml`.
Adding one is its declaration here (or, from another package, in the `KINDS` list of the module
its `gated_pruning.kinds` entry point names: see `kinds.py`), its build function and its yaml.
"""
from __future__ import annotations

from dataclasses import dataclass

# VGG-depth: conv widths, "M" a max pool (Simonyan & Zisserman, ICLR 2015)
VGG_LAYERS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}
# CIFAR ResNet-depth (6n + 2): n basic blocks per stage, stages of 16, 32, 64 channels (He et al., CVPR 2016)
RESNET_BLOCKS = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18}
RESNET_STAGES = (16, 32, 64)
GATE_POSITIONS = ("bn", "relu")  # the gate on the batch-norm output, or after the ReLU
# VGG's gate may also be batch norm's scale alone (its bias untouched: a closed channel outputs the
# constant relu(beta), which the cut moves into the next layer), as Ye et al. (ICLR 2018) shrink gamma
VGG_GATE_POSITIONS = GATE_POSITIONS + ("scale",)


@dataclass(frozen=True)
class Family:
    """A model family: `depths` the values `model.depth` may take (empty: the family has no depth
    key), `gate_positions` those of `model.gate_position` (empty: no such key)."""
    target: str
    depths: tuple = ()
    gate_positions: tuple = GATE_POSITIONS
    label: str = ""  # how a report names its networks: "" the family and depth (vgg16), else the
    # config key (dotted, under `model`) whose value is the network's name, its last dotted part kept


FAMILIES: dict[str, Family] = {}


def register(*families: Family) -> None:
    for f in families:
        FAMILIES[f.target] = f


register(
    Family("gated_pruning.models.vgg.build", depths=tuple(VGG_LAYERS), gate_positions=VGG_GATE_POSITIONS),
    Family("gated_pruning.models.resnet.build", depths=tuple(RESNET_BLOCKS)),
    Family("gated_pruning.models.tv.build", label="name"),
    Family("gated_pruning.models.graph.build", label="net._target_"),
)


def family(target) -> Family | None:
    return FAMILIES.get(str(target))
