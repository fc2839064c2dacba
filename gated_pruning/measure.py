"""What a network costs: FLOPs counted by torch's own counter, parameters, and the median wall
time of a forward pass in both memory layouts (the faster one counts)."""
from __future__ import annotations

import copy
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from gated_pruning.stats import count_params


def count_flops(model: torch.nn.Module, input_size=(1, 3, 32, 32)) -> int:
    """FLOPs of one forward pass (torch.utils.flop_counter: convs and matmuls, 2 per MAC)."""
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(input_size, device=device))
    model.train(was)
    return int(counter.get_total_flops())


@torch.no_grad()
def latency_ms(model: torch.nn.Module, batch: int, reps: int, warmup: int,
               input_size=(3, 32, 32), channels_last: bool = False) -> float:
    """Median wall time of one forward pass of a batch (eval mode), in ms, after warm-up."""
    device = next(model.parameters()).device
    net = copy.deepcopy(model).eval()
    x = torch.randn(batch, *input_size, device=device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        net(x)
    times = []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        net(x)
        sync()
        times.append(time.perf_counter() - t)
    return 1000.0 * statistics.median(times)


def onnxruntime_latency_ms(onnx: bytes, batch: int, reps: int, warmup: int, input_size=(3, 32, 32)) -> float:
    """Median wall time of one batch through onnxruntime's CPU provider, with as many threads as
    torch uses here, in ms."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
    feed = {"x": np.random.default_rng(0).standard_normal((batch, *input_size), dtype=np.float32)}
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t)
    return 1000.0 * statistics.median(times)


def accounting(model: torch.nn.Module, cfg, onnx: bytes | None = None) -> dict:
    """Params, FLOPs and latency in the faster of the two memory layouts (which one is
    faster depends on the widths: a fair comparison gives each network its best); given the
    network as ONNX (`onnx`), also its latency in onnxruntime (`latency_ms_onnxruntime`), what a
    deployment sees. `cfg`: the `prune` config section (latency_batch, latency_reps, latency_warmup)."""
    image = (model.in_channels, model.input_size, model.input_size)
    lat = {layout: latency_ms(model, cfg.latency_batch, cfg.latency_reps, cfg.latency_warmup, image,
                              channels_last=layout == "channels_last")
           for layout in ("nchw", "channels_last")}
    best = min(lat, key=lat.get)
    out = {"params": count_params(model), "flops": count_flops(model, (1, *image)), "latency_ms": lat[best],
           "layout": best, "latency_ms_by_layout": lat}
    if onnx is not None:
        out["latency_ms_onnxruntime"] = onnxruntime_latency_ms(onnx, cfg.latency_batch, cfg.latency_reps,
                                                               cfg.latency_warmup, image)
    return out
