"""Evaluate a saved compact network on its test set, with torch alone (no Hydra, no gates):

    python -m gated_pruning.evaluate RUN_DIR/compact.pt2 --data-root DIR [--test-size N]

The file is a torch.export program; its metadata names the data set and normalization.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch


def main(argv=None) -> int:
    from gated_pruning.data import Loader, load_cifar, subset
    from gated_pruning.errors import UserError

    p = argparse.ArgumentParser(prog="python -m gated_pruning.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("compact", help="a compact.pt2 written by a run or by gated_pruning.prune")
    p.add_argument("--data-root", default="data")
    p.add_argument("--test-size", type=int, help="a seeded random subset (default: the run's)")
    p.add_argument("--seed", type=int, help="subset seed (default: the run's)")
    p.add_argument("--batch-size", type=int, default=500)
    a = p.parse_args(argv)
    try:
        extra = {"meta.json": ""}
        try:
            program = torch.export.load(a.compact, extra_files=extra)
        except Exception as e:  # noqa: BLE001
            raise UserError(f"{a.compact}: not a readable compact network ({type(e).__name__})") from None
        meta = json.loads(extra["meta.json"])
        _, test = load_cifar(meta["dataset"], a.data_root, download=False)
        test = subset(test, a.test_size if a.test_size is not None else meta["test_size"],
                      a.seed if a.seed is not None else meta["subset_seed"])
        loader = Loader(test, a.batch_size, "cpu", meta["mean"], meta["std"], train=False)
        model = program.module()
        correct = 0
        with torch.no_grad():
            for x, y in loader.epoch():
                correct += (model(x).argmax(1) == y).sum().item()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    top1 = correct / loader.num_examples
    print(json.dumps({"top1": top1, "examples": loader.num_examples, "widths": meta["widths"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
