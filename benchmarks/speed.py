"""Speed targets of gated_pruning, each a ratio of two things measured side by side in this run.

    python benchmarks/speed.py [--width 1.0] [--batch 128] [--reps 10] [--device cpu]

1. training step of the gated VGG-16 / the plain VGG-16 (same widths, same batch): float gates
   (target <= 1.03) and binary gates (<= 1.05); the APG step over all gates / a whole step (<= 5%)
2. device-resident data pipeline images/s / torchvision DataLoader + PIL transforms doing the
   same augmentation (pad-4 random crop, flip, normalize) (>= 5x)
3. compact-network latency / dense latency, divided by the compact FLOP ratio, for a network
   with about half of its channels removed (<= 1.15)

Variants are timed in interleaved rounds (A B A B ...) and compared by their medians, so a
machine that slows down during the run slows every variant alike.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from omegaconf import OmegaConf

from gated_pruning.data import STATS, Loader, Split
from gated_pruning.gates import NoBinarizer, ThresholdBinarizer
from gated_pruning.models.vgg import build
from gated_pruning.optim import APG, split_parameters
from gated_pruning.penalty import L1
from gated_pruning.measure import count_flops, latency_ms
from gated_pruning.pruning import compact
from gated_pruning.train import Trainer


def timed(fn, sync) -> float:
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def interleaved(fns: dict, reps: int, warmup: int, sync) -> dict:
    """Median seconds of each callable, timed in interleaved rounds after warm-up."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            times[k].append(timed(fn, sync))
    return {k: statistics.median(v) for k, v in times.items()}


def make_trainer(model, loader, device):
    cfg = OmegaConf.create({"epochs": 1, "log_every": 0, "checkpoint": False, "checkpoint_every_steps": 0,
                            "progress": False, "amp": True, "channels_last": False})
    weights, gates = split_parameters(model)
    opt_w = torch.optim.SGD(weights, lr=0.01, momentum=0.9, weight_decay=5e-4)
    opt_g = APG(gates, lr=0.01, momentum=0.9) if gates else None
    const = lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0)  # noqa: E731
    return Trainer(model, loader, loader, opt_w, const(opt_w), cfg, opt_g=opt_g,
                   sched_g=const(opt_g) if opt_g else None,
                   penalty=L1(1e-4).bind(model) if gates else None)


def bench_step(args, device, sync) -> list:
    g = torch.Generator().manual_seed(0)
    n = args.batch * 4
    split = Split(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                  torch.randint(0, 100, (n,), generator=g))
    loader = Loader(split, args.batch, device, *STATS["cifar100"], train=True)
    x, y = next(loader.epoch(0))
    variants = {"plain": dict(gated=False), "float gates": dict(binarizer=NoBinarizer()),
                "binary gates": dict(binarizer=ThresholdBinarizer(0.5))}
    trainers = {}
    for name, kw in variants.items():
        torch.manual_seed(0)
        model = build(16, args.width, 100, **kw).to(device)
        trainers[name] = make_trainer(model, loader, device)
    med = interleaved({k: (lambda t=t: t._train_step(x, y)) for k, t in trainers.items()},
                      args.reps, 2, sync)
    apg, penalty = trainers["float gates"].opt_g, trainers["float gates"].penalty
    apg_med = interleaved({"apg": lambda: apg.step(l1=penalty.l1())}, args.reps * 20, 5, sync)["apg"]
    return [
        ("step: float gates / plain", med["float gates"] / med["plain"], "<= 1.03",
         med["float gates"] / med["plain"] <= 1.03, f"{1000 * med['plain']:.1f} ms plain"),
        ("step: binary gates / plain", med["binary gates"] / med["plain"], "<= 1.05",
         med["binary gates"] / med["plain"] <= 1.05, f"{1000 * med['binary gates']:.1f} ms binary"),
        ("APG step (with its L1 coefficients) / whole step", apg_med / med["float gates"], "<= 0.05",
         apg_med / med["float gates"] <= 0.05, f"{1e6 * apg_med:.0f} us APG, 13 gate tensors"),
    ]


class PILDataset(torch.utils.data.Dataset):
    def __init__(self, x_hwc: np.ndarray, y: np.ndarray, transform):
        self.x, self.y, self.transform = x_hwc, y, transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def bench_data(args, device, sync) -> list:
    import torchvision.transforms as T

    n = args.data_images
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 100, n)
    mean, std = STATS["cifar100"]
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    ours = Loader(Split(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y)),
                  args.batch, device, mean, std, train=True)

    def run_ours():
        for xb, _ in ours.epoch(0):
            pass

    rows, best = [], None
    for workers in (0, 2):
        dl = torch.utils.data.DataLoader(PILDataset(x, y, tf), batch_size=args.batch, shuffle=True,
                                         drop_last=True, num_workers=workers,
                                         persistent_workers=workers > 0)

        def run_tv(dl=dl):
            for xb, _ in dl:
                xb.to(device, non_blocking=True)

        med = interleaved({"ours": run_ours, "torchvision": run_tv}, args.data_reps, 1, sync)
        ratio = med["torchvision"] / med["ours"]
        best = ratio if best is None else min(best, ratio)
        rows.append((f"data: ours / DataLoader+PIL ({workers} workers)", ratio, ">= 5",
                     ratio >= 5, f"{n / med['ours']:.0f} vs {n / med['torchvision']:.0f} images/s"))
    return rows


def bench_prune(args, device, sync) -> list:
    torch.manual_seed(0)
    model = build(16, args.width, 100).to(device).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for gate in model.gates():  # remove about half of every layer's channels
            gate.weight.copy_((torch.rand(gate.weight.shape, generator=g) < 0.5).float())
    dense = compact(model, threshold=-1.0)[0]
    nets = {"exact": compact(model)[0], "round_to=8": compact(model, round_to=8)[0]}
    dense_flops = count_flops(dense)
    names = ("dense", *nets)
    lat = {(k, cl): [] for k in names for cl in (False, True)}
    for _ in range(args.reps):  # interleaved rounds
        for cl in (False, True):
            for k, m in (("dense", dense), *nets.items()):
                lat[k, cl].append(latency_ms(m, args.batch, 1, 1, channels_last=cl))
    med = {key: statistics.median(v) for key, v in lat.items()}
    rows = []
    for layout in ("NCHW", "channels_last", "best layout each"):
        pick = {"NCHW": lambda k: med[k, False], "channels_last": lambda k: med[k, True],
                "best layout each": lambda k: min(med[k, False], med[k, True])}[layout]
        d = pick("dense")
        for k, m in nets.items():
            flop_ratio = count_flops(m) / dense_flops
            lat_ratio = pick(k) / d
            kept = sum(m.widths()) / sum(dense.widths())
            rows.append((f"compact latency / FLOP ratio ({k}, {layout})", lat_ratio / flop_ratio,
                         "<= 1.15", lat_ratio / flop_ratio <= 1.15,
                         f"{kept:.0%} channels kept, FLOPs x{flop_ratio:.3f}, latency x{lat_ratio:.3f} "
                         f"({d:.0f} ms dense)"))
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--width", type=float, default=1.0, help="VGG-16 width multiplier")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--data-images", type=int, default=5120)
    p.add_argument("--data-reps", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--only", choices=["step", "data", "prune"], action="append")
    a = p.parse_args()
    device = torch.device(a.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"# torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, "
          f"VGG-16 width {a.width}, batch {a.batch}")
    rows = []
    for name, fn in (("step", bench_step), ("data", bench_data), ("prune", bench_prune)):
        if not a.only or name in a.only:
            rows += fn(a, device, sync)
    print("| measure | ratio | target | met | detail |\n|---|---|---|---|---|")
    for name, ratio, target, ok, detail in rows:
        print(f"| {name} | {ratio:.3f} | {target} | {'yes' if ok else 'NO'} | {detail} |")


if __name__ == "__main__":
    main()
