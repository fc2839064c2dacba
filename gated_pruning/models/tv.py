"""Any torchvision classification CNN by name (`model=torchvision model.name=NAME`), randomly
initialized (weights are never downloaded; `model.weights` loads a file), gated through the
dependency graph (`graph.py`)."""
from __future__ import annotations

from gated_pruning.models.graph import GraphNet


def build(name: str = "resnet18", num_classes: int = 100, gated: bool = True, gate_init: float = 1.0,
          binarizer=None, gate_jitter: float = 0.0, min_keep: float = 0, bn_weight: bool = True,
          width: float = 1.0, gate_position: str = "bn", input_size: int = 32, channel_gates: bool = True,
          block_gates: bool = False) -> GraphNet:
    """torchvision's `name` with gates on its channel groups (each at `width` of its channels),
    and, with `block_gates`, on its residual blocks: the `model=torchvision` target."""
    import torchvision

    if gate_position != "bn":
        raise ValueError(f"model.gate_position={gate_position}: model=torchvision folds each gate into every batch "
                         "norm of its channel group (a residual stream has no single activation to gate after); "
                         "set model.gate_position=bn (method=sss and method=binary set relu)")
    classification = torchvision.models.list_models(module=torchvision.models)  # not detection, video, ...
    if name not in classification:
        raise ValueError(f"model.name={name} is not a torchvision classification model "
                         f"({', '.join(classification[:12])}, ...)")
    net = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    return GraphNet(net, f"model.name={name}", gated, gate_init, binarizer, gate_jitter, min_keep, bn_weight,
                    input_size, width=width, channel_gates=channel_gates, block_gates=block_gates)
