"""Every data set, declared once: its name, how its batches are made, its classes, image size,
normalization and official split sizes. The rest of the code asks a declaration (through
`describe`) instead of branching on names: models get their input size and number of outputs from
it, FLOPs, latency and the exported network their image size, preflight its split sizes, the
exported metadata and `evaluate` how to make its test set again. Torch-free (preflight reads it
before torch is imported).

Kinds of batches (`kind`):
- memory: uint8 images held on the training device, augmented per batch there (CIFAR: fast);
- folder: image files streamed by DataLoader workers, decoded and augmented per image
  (`imagefolder.py`: torchvision's ImageFolder layout, ImageNet);
- synthetic: random class templates, made from a seed (tests and smoke runs).

Adding a data set: a declaration here, a `conf/dataset/NAME.yaml` (its `name`), and, for a new
kind of batches, its loader in `data.build_data` (docs/architecture.md, "Add a data set").
"""
from __future__ import annotations

from dataclasses import dataclass

@dataclass(frozen=True)
class Declared:
    """What is known of a data set before its files are read; None: the config says it
    (`dataset.image_size`, `dataset.mean`/`std`) or its files do (the class folders)."""
    name: str
    kind: str  # memory | folder | synthetic
    num_classes: int | None
    image_size: int | None
    mean: tuple | None
    std: tuple | None
    splits: tuple[int, int] | None  # (train, test) images of the official data


DECLARED = {d.name: d for d in (
    Declared("cifar10", "memory", 10, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), (50_000, 10_000)),
    Declared("cifar100", "memory", 100, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), (50_000, 10_000)),
    Declared("synthetic", "synthetic", None, None, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), None),
    Declared("imagefolder", "folder", None, None, None, None, None),
    Declared("imagenet", "folder", 1000, None, None, None, (1_281_167, 50_000)),
)}
KINDS = ("memory", "folder", "synthetic")


@dataclass(frozen=True)
class Described:
    """One run's data set, as far as the network and its measures need it."""
    name: str
    kind: str
    num_classes: int
    image_size: int
    mean: tuple
    std: tuple
    splits: tuple[int, int] | None

    @property
    def model_args(self) -> dict:
        """What a model's constructor takes from the data: its outputs and its input size."""
        return {"num_classes": self.num_classes, "input_size": self.image_size}


def declared(name: str) -> Declared:
    if name not in DECLARED:
        raise ValueError(f"dataset.name={name!r} is not one of {', '.join(DECLARED)}")
    return DECLARED[name]


def describe(d: dict, num_classes: int | None = None) -> Described:
    """The data set of the `dataset` config section `d`; `num_classes`: what its files hold, for a
    kind whose declaration leaves the classes to them (a folder's class folders)."""
    dec = declared(d["name"])
    classes = dec.num_classes or d.get("num_classes") or num_classes
    if classes is None:
        raise ValueError(f"dataset={dec.name}: its number of classes comes from its files; read them first")
    return Described(dec.name, dec.kind, int(classes), int(dec.image_size or d.get("image_size") or 32),
                     tuple(dec.mean or d["mean"]), tuple(dec.std or d["std"]), dec.splits)
