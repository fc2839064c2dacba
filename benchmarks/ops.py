"""Operators a training step dispatches, per method: the CPU-measurable proxy for what a GPU step
costs on the host (each operator is a kernel launch on CUDA, 5-10 us of Python and launch overhead
whatever its size: at batch 128 a VGG-16 step is ~1.5 ms of GPU work). Counted with a
TorchDispatchMode over whole training steps (forward, backward, both optimizers, the penalty, the
budget), on the CPU, VGG-16 at width 0.25 on synthetic CIFAR-sized batches, in the middle of the
budget's ramp; "host reads" are the operators that copy a value back to the host (a sync on CUDA).

    python benchmarks/ops.py [--steps 10] [--methods dense,sss_paper,sss,binary] [--every N]

Prints a markdown table: operators per step and host reads per step, per method.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from hydra import compose, initialize_config_dir  # noqa: E402

from gated_pruning.data import build_data  # noqa: E402
from gated_pruning.experiment import build_trainer  # noqa: E402

HOST_READS = {"aten._local_scalar_dense.default", "aten.item.default", "aten.equal.default"}


class Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


def trainer_for(method: str, every: int = 1):
    overrides = ["experiment=smoke", "model=vgg16", "model.width=0.25", f"method={method}", "dataset.batch_size=128",
                 "dataset.train_size=2560", "dataset.num_classes=100", "trainer.epochs=10"]
    if method not in ("dense", "sss_paper"):
        overrides += ["target_flops=0.5", f"budget.every={every}"]
    with initialize_config_dir(config_dir=os.path.join(ROOT, "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    data = build_data(cfg.dataset, torch.device("cpu"), cfg.seed)
    trainer, _ = build_trainer(cfg, data, torch.device("cpu"), "/tmp")
    return trainer, data


def count(method: str, steps: int, every: int = 1) -> tuple[float, float]:
    trainer, data = trainer_for(method, every)
    trainer.model.train()
    batches = data.train.epoch(0)
    trainer.step = int(0.35 * 10 * len(data.train))  # mid-ramp: the budget's every branch runs
    for _ in range(2):  # warm-up steps, not counted
        trainer._train_step(*next(batches))
        trainer.step += 1
    counter = Count()
    with counter:
        for _ in range(steps):
            trainer._train_step(*next(batches))
            trainer.step += 1
    total = sum(counter.ops.values()) / steps
    reads = sum(n for op, n in counter.ops.items() if op in HOST_READS) / steps
    return total, reads


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--methods", default="dense,sss_paper,sss,binary")
    p.add_argument("--every", type=int, default=1, help="budget.every: steps between the budget's updates")
    a = p.parse_args()
    torch.set_num_threads(1)
    print(f"budget.every={a.every}\n\n| method | operators per step | host reads per step |")
    print("|---|---|---|")
    for m in a.methods.split(","):
        total, reads = count(m, a.steps, a.every)
        print(f"| {m} | {total:.0f} | {reads:.1f} |")


if __name__ == "__main__":
    main()
