"""Training throughput of the real training step, and what it means for the paper's recipe.

    python benchmarks/throughput.py [--device cuda] [--batch 128 512] [--compile 0 1] [--steps 50]

Times `Trainer._train_step` (the step every run takes: device-resident data with augmentation,
bf16 autocast on CUDA, channels_last, SGD + APG on the gates, the penalty) for VGG-16 at
`--width` on CIFAR-shaped random data, for every combination of batch size, torch.compile and
gated/plain, and prints images/s and the wall time of 160 epochs of 50,000 images at that rate.
The variants are timed in interleaved rounds, so a machine that slows down slows them alike.
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch
from omegaconf import OmegaConf

from gated_pruning.data import STATS, Loader, Split
from gated_pruning.models.vgg import build
from gated_pruning.optim import APG, split_parameters
from gated_pruning.penalty import L1
from gated_pruning.train import Trainer


def make(batch: int, compile_: bool, gated: bool, width: float, device) -> tuple:
    g = torch.Generator().manual_seed(0)
    n = batch * 4
    split = Split(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                  torch.randint(0, 100, (n,), generator=g))
    loader = Loader(split, batch, device, *STATS["cifar100"], train=True)
    torch.manual_seed(0)
    model = build(16, width, 100, gated=gated).to(device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    cfg = OmegaConf.create({"epochs": 1, "log_every": 0, "checkpoint": False, "checkpoint_every_steps": 0,
                            "progress": False, "amp": True, "channels_last": cuda, "compile": compile_})
    weights, gates = split_parameters(model)
    opt_w = torch.optim.SGD(weights, lr=0.05, momentum=0.9, weight_decay=5e-4)
    opt_g = APG(gates, lr=0.05, momentum=0.9) if gates else None
    const = lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0)  # noqa: E731
    trainer = Trainer(model, loader, loader, opt_w, const(opt_w), cfg, opt_g=opt_g,
                      sched_g=const(opt_g) if opt_g else None,
                      penalty=L1(1e-4).bind(model) if gates else None)
    batches = list(loader.epoch(0))
    return trainer, batches


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batch", type=int, nargs="+", default=[128, 512])
    p.add_argument("--compile", type=int, nargs="+", default=[0, 1], choices=[0, 1])
    p.add_argument("--steps", type=int, default=50, help="timed steps per variant and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=10)
    a = p.parse_args(argv)
    device = torch.device(a.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    variants = {}
    for batch, comp, gated in itertools.product(a.batch, a.compile, (True, False)):
        trainer, batches = make(batch, bool(comp), gated, a.width, device)
        for i in range(a.warmup):  # includes compilation
            trainer._train_step(*batches[i % len(batches)])
        sync()
        variants[(batch, comp, gated)] = (trainer, batches)
    times = {k: [] for k in variants}
    for _ in range(a.rounds):
        for k, (trainer, batches) in variants.items():
            sync()
            t = time.perf_counter()
            for i in range(a.steps):
                trainer._train_step(*batches[i % len(batches)])
            sync()
            times[k].append((time.perf_counter() - t) / a.steps)
    print(f"{'batch':>5} {'compile':>7} {'gates':>6} {'ms/step':>8} {'images/s':>9} {'160 epochs':>11}")
    for (batch, comp, gated), ts in times.items():
        step = statistics.median(ts)
        ips = batch / step
        print(f"{batch:>5} {comp:>7} {'APG' if gated else 'plain':>6} {1000 * step:>8.2f} {ips:>9.0f} "
              f"{160 * 50000 / ips / 60:>9.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
