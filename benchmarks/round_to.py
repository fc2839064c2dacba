"""Which `prune.round_to` makes a pruned network fastest where it is deployed: the kept widths of
committed 50%-FLOPs runs of the CPU study (VGG-16 x0.25 on CIFAR-100), rounded up to multiples of
1, 2, 4, 8 and 16, timed against the dense network in PyTorch (NCHW and channels_last, each
network's faster layout, as the run records it) and in onnxruntime, all in one process, in turns.

    python benchmarks/round_to.py [--threads 1] [--batch 64] [--reps 30]

Run it alone (nothing else on the cores): the ratios are measured side by side, but a busy machine
moves every number. Prints a markdown table: FLOPs kept and the speed-up over the dense network.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from gated_pruning.export import exported, onnx_bytes  # noqa: E402
from gated_pruning.measure import count_flops  # noqa: E402
from gated_pruning.models.vgg import build  # noqa: E402

# the study's 50%-FLOPs networks of seed 0, one per method
RECORDS = [f"docs/runs/converged/{n}_s0/results.json" for n in
           ("binary_f0.5_budgetTrue", "sss_f0.5", "sss_paper_f0.5", "l1norm_f0.5", "uniform_f0.5")]
DENSE = [int(round(w * 0.25)) for w in (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)]


def rounded(widths, r):
    return [min(d, -(-w // r) * r) for w, d in zip(widths, DENSE)]


def torch_ms(net, x, reps, channels_last):
    net = net.eval()
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        for _ in range(3):
            net(x)
        t = []
        for _ in range(reps):
            s = time.perf_counter()
            net(x)
            t.append(time.perf_counter() - s)
    return 1000 * statistics.median(t)


def ort_ms(net, x, reps, threads):
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads, o.inter_op_num_threads = threads, 1
    s = ort.InferenceSession(onnx_bytes(exported(net)), o, providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy()}
    for _ in range(3):
        s.run(None, feed)
    t = []
    for _ in range(reps):
        a = time.perf_counter()
        s.run(None, feed)
        t.append(time.perf_counter() - a)
    return 1000 * statistics.median(t)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--reps", type=int, default=30)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    x = torch.randn(a.batch, 3, 32, 32)
    nets = {"dense": DENSE}
    for path in [os.path.join(ROOT, r) for r in RECORDS if os.path.isfile(os.path.join(ROOT, r))]:
        rec = json.load(open(path))
        if rec.get("prune") and len(rec["prune"]["compact"]["widths"]) == len(DENSE):
            name = os.path.basename(os.path.dirname(path))
            for r in (1, 2, 4, 8, 16):
                nets[f"{name} round_to={r}"] = rounded(rec["prune"]["compact"]["widths"], r)
    built = {k: build(16, widths=w, num_classes=100, gated=False) for k, w in nets.items()}
    flops = {k: count_flops(n) for k, n in built.items()}
    times = {k: {"nchw": [], "channels_last": [], "onnxruntime": []} for k in built}
    for _ in range(3):  # in turns: a slow spell of the machine hits every network alike
        for k, n in built.items():
            times[k]["nchw"].append(torch_ms(n, x, a.reps, False))
            times[k]["channels_last"].append(torch_ms(n, x, a.reps, True))
            times[k]["onnxruntime"].append(ort_ms(n, x, a.reps, a.threads))
    med = {k: {b: statistics.median(v) for b, v in t.items()} for k, t in times.items()}
    print(f"batch {a.batch}, {a.threads} thread(s); speed-up = dense latency / this network's, per backend "
          "(PyTorch: each network in its faster layout)\n")
    print("| network | FLOPs kept % | PyTorch speed-up | onnxruntime speed-up | PyTorch ms | onnxruntime ms |")
    print("|---|---|---|---|---|---|")
    d_pt = min(med["dense"]["nchw"], med["dense"]["channels_last"])
    d_ort = med["dense"]["onnxruntime"]
    for k in built:
        pt = min(med[k]["nchw"], med[k]["channels_last"])
        print(f"| {k} | {100 * flops[k] / flops['dense']:.1f} | x{d_pt / pt:.2f} | x{d_ort / med[k]['onnxruntime']:.2f} "
              f"| {pt:.2f} | {med[k]['onnxruntime']:.2f} |")


if __name__ == "__main__":
    main()
