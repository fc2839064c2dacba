"""Evaluate a saved compact network on its test set, with torch alone (no Hydra, no gates):

    python -m gated_pruning.evaluate RUN_DIR/compact.pt2 [--data-root DIR] [--test-size N]

The file is a torch.export program; its metadata holds the run's data set section and seed, from
which the run's own test set is made again by the code that made it (`data.build_data`: the same
subset, the same images held out, a synthetic set's draw, an image folder's transforms), at the
files' folder of the run unless `--data-root` says where they are now. A run directory may be
given for its compact.pt2.
"""
from __future__ import annotations

import json
import os
import sys

import torch
from omegaconf import OmegaConf

from gated_pruning.config.keys import RULES
from gated_pruning.config.rules import integer
from gated_pruning.data import NUM_CLASSES, Loader, Split, build_data, load_cifar, subset, synthetic
from gated_pruning.errors import UserError
from gated_pruning.export import COMPACT_FILE, load_compact
from gated_pruning.toolkit import ArgumentParser, arg, one_line, readable_file, run_tool


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m gated_pruning.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("compact", help="a compact.pt2 written by a run or by gated_pruning.reprune (or its folder)")
    p.add_argument("--data-root", help="where the data set's files are now (default: where the run read them)")
    p.add_argument("--test-size", type=arg(integer(1), "--test-size"),
                   help="a seeded random subset (default: the run's)")
    p.add_argument("--seed", type=arg(RULES["seed"], "--seed"), help="the run's seed, which draws the test subset "
                   "(default: the run's own)")
    p.add_argument("--batch-size", type=arg(integer(1), "--batch-size"), default=500)
    return run_tool(_evaluate, p.parse_args(argv))


def _evaluate(a) -> int:
    path = a.compact
    if os.path.isdir(path):
        path = os.path.join(path, COMPACT_FILE)
    readable_file(path, ": give a compact.pt2 written by a run or by gated_pruning.reprune")
    model, meta = load_compact(path)
    loader, name, num_classes = _test_set(a, path, meta) if "data" in meta else _older_test_set(a, path, meta)
    correct = 0
    with torch.no_grad():
        for x, y in loader.epoch():
            try:
                out = model(x)
            except Exception as e:  # noqa: BLE001 - a program for other inputs
                raise UserError(f"{path} cannot run on {name} images ({type(e).__name__}: "
                                f"{one_line(e, 160)})") from None
            if out.dim() != 2 or out.shape[1] != num_classes:
                raise UserError(f"{path} outputs shape {tuple(out.shape)} per batch, but {name} has "
                                f"{num_classes} classes")
            correct += (out.argmax(1) == y).sum().item()
    top1 = correct / loader.num_examples
    print(json.dumps({"top1": top1, "examples": loader.num_examples, "widths": meta.get("widths")}))
    return 0


def _test_set(a, path: str, meta: dict):
    """(loader, data set name, classes) of the run's own test set, from the file's metadata."""
    d = OmegaConf.create(meta["data"])
    if a.data_root is not None:
        d.root = a.data_root
    synthetic_set = d.name == "synthetic"  # its test_size is the size of the set it draws
    if a.test_size is not None and not synthetic_set:
        d.test_size = a.test_size  # a seeded subset of the test split, as the run draws one
    d.eval_batch_size = a.batch_size
    seed = a.seed if a.seed is not None else meta["seed"]
    data = build_data(d, "cpu", seed, splits=("test",), root_key="--data-root")
    test = data.test
    if a.test_size is not None and synthetic_set:
        small = subset(Split(test.x, test.y), a.test_size, seed + 1, "--test-size")
        test = Loader(small, a.batch_size, "cpu", data.described.mean, data.described.std, train=False)
    return test, d.name, data.num_classes


def _older_test_set(a, path: str, meta: dict):
    """The same, from the metadata of a file written before the data set section was kept."""
    name, mean, std = meta["dataset"], meta["mean"], meta["std"]
    if name == "synthetic":
        gen = meta.get("synthetic")
        if not isinstance(gen, dict):
            raise UserError(f"{path} was trained on synthetic data by an older version that did not record "
                            "how to re-create it; prune the run again (python -m gated_pruning.reprune RUN_DIR "
                            "--threshold T) for a file that can be evaluated")
        try:
            _, test = synthetic(gen["num_classes"], gen["train_size"], gen["test_size"], seed=gen["seed"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise UserError(f"{path}: its synthetic-data metadata is damaged ({type(e).__name__}: {e})") from None
        num_classes = gen["num_classes"]
    elif name in NUM_CLASSES:
        _, test = load_cifar(name, a.data_root or "data", download=False, key="--data-root")
        num_classes = NUM_CLASSES[name]
    else:
        raise UserError(f"{path}: unknown data set {name!r} in its metadata")
    test_size = a.test_size if a.test_size is not None else meta.get("test_size")
    test = subset(test, test_size, a.seed if a.seed is not None else meta.get("subset_seed", 0),
                  "--test-size" if a.test_size is not None else "the run's dataset.test_size")
    return Loader(test, a.batch_size, "cpu", mean, std, train=False), name, num_classes


if __name__ == "__main__":
    sys.exit(main())
