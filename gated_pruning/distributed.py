"""Data parallel training under `torchrun` (DistributedDataParallel; nccl on CUDA, gloo on CPU).

Every rank holds the whole model and takes an equal slice of every global batch
(`dataset.batch_size` is the global batch). Gradients are averaged by DDP, so every rank runs the
same optimizer steps on the same gradients: gates and APG state stay identical everywhere.
Batch norm uses the statistics of the whole global batch (`sync_batch_norm`), so a run on W
processes computes what the one-process run computes, up to float rounding. torch's own
SyncBatchNorm only runs on GPUs, and it could not take the gate folded into its affine
parameters; this one is written with differentiable all-reduce and runs on any backend.
Only rank 0 writes files and logs.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Join the process group that torchrun describes (WORLD_SIZE > 1); return this rank's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    return device


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (a no-op in one process); not differentiable."""
    if world_size() > 1:
        t = t.clone()
        dist.all_reduce(t)
    return t


def sync_batch_norm(x: torch.Tensor, bn: torch.nn.BatchNorm2d, weight: torch.Tensor,
                    bias: torch.Tensor) -> torch.Tensor:
    """Training-mode batch norm over the union of every rank's batch (differentiable)."""
    from torch.distributed.nn.functional import all_reduce

    dtype, x = x.dtype, x.float()  # statistics in float32 also under bf16 autocast
    c = x.shape[1]
    count = x.new_full((1,), x.numel() // c)
    stats = all_reduce(torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count]))
    n = stats[-1]
    mean = stats[:c] / n
    var = (stats[c:2 * c] / n - mean * mean).clamp(min=0)
    with torch.no_grad():
        bn.running_mean.lerp_(mean, bn.momentum)
        bn.running_var.lerp_(var * n / (n - 1), bn.momentum)
        bn.num_batches_tracked.add_(1)
    scale = weight * torch.rsqrt(var + bn.eps)
    return (x * scale.view(1, c, 1, 1) + (bias - mean * scale).view(1, c, 1, 1)).to(dtype)
