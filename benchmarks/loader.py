"""How fast the image-folder path (gated_pruning/imagefolder.py) feeds a network, per CPU core:
JPEG files of ImageNet's typical size (500x375) decoded by Pillow and transformed as the training
recipe does (RandomResizedCrop to 224 and a flip) and as evaluation does (resize 256, centre crop
224), in the training process (workers=0: one core's rate) and by 1 and 2 DataLoader workers.

    python benchmarks/loader.py [--data DIR] [--images 800] [--size 224]

DIR/cifar100.npz, where present, gives the pictures (real photographs upscaled, so that the JPEGs
hold natural content, as ImageNet's do); else smooth random images. Run it alone: every number is
a rate of this machine's cores. It prints, from the measured per-core rate, how many cores a GPU
that trains ResNet-50 at 2,600 images/s needs (an A100 with AMP and channels_last, timm's
benchmark as reported in huggingface/pytorch-image-models issue #1491; the lent H200 is faster).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
from omegaconf import OmegaConf
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gated_pruning.imagefolder import FolderLoader  # noqa: E402

GPU_RESNET50_IMAGES_PER_S = 2600  # A100, AMP, channels_last (pytorch-image-models issue #1491)
IMAGENET_TRAIN = 1_281_167


def write_jpegs(root: str, n: int, data: str | None) -> list:
    """n JPEG files of 500x375 (quality 90, as ImageNet's are roughly), 10 classes; samples as
    imagefolder.scan gives them."""
    rng = np.random.default_rng(0)
    pictures = None
    npz = os.path.join(data, "cifar100.npz") if data else None
    if npz and os.path.isfile(npz):
        with np.load(npz) as f:
            pictures = f["x_train"][:n]
    samples = []
    for i in range(n):
        d = os.path.join(root, "train", f"class{i % 10}")
        os.makedirs(d, exist_ok=True)
        if pictures is not None:
            im = Image.fromarray(pictures[i]).resize((500, 375), Image.BICUBIC)
        else:
            coarse = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
            im = Image.fromarray(coarse).resize((500, 375), Image.BICUBIC)
        path = os.path.join(d, f"{i:06d}.jpg")
        im.save(path, quality=90)
        samples.append((path, i % 10))
    return samples


def rate(samples: list, train: bool, workers: int, size: int, batch: int = 64) -> float:
    """Images per second the loader gives (decoded, transformed, normalized), after one warm-up
    batch (worker start-up)."""
    d = OmegaConf.create({"image_size": size, "resize": 256 / 224, "train_crop": "resized", "crop_scale": [0.08, 1.0],
                          "pad": 4, "flip": True, "batch_size": batch, "eval_batch_size": batch})
    loader = FolderLoader(samples, d, "cpu", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), train, seed=0,
                          workers=workers)
    it = loader.epoch(0)
    next(it)
    t, seen = time.perf_counter(), 0
    for x, _ in it:
        seen += len(x)
    return seen / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    p.add_argument("--images", type=int, default=800)
    p.add_argument("--size", type=int, default=224)
    a = p.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as root:
        samples = write_jpegs(root, a.images, a.data)
        print(f"{a.images} JPEGs of 500x375, {a.size} px out, {os.cpu_count()} cores here")
        print("| transform | workers | images/s | images/s per process |")
        print("|---|---|---|---|")
        per_core = {}
        for train in (True, False):
            for workers in (0, 1, 2):
                r = rate(samples, train, workers, a.size)
                name = "train (RandomResizedCrop + flip)" if train else "eval (resize + centre crop)"
                print(f"| {name} | {workers} | {r:.0f} | {r / max(1, workers):.0f} |")
                if workers == 0:
                    per_core[train] = r
    need = GPU_RESNET50_IMAGES_PER_S / per_core[True]
    print(f"\none core decodes and augments {per_core[True]:.0f} training images/s: a GPU training ResNet-50 at "
          f"{GPU_RESNET50_IMAGES_PER_S} images/s needs about {need:.0f} such cores (dataset.workers={int(need + 0.999)}); "
          f"an ImageNet epoch ({IMAGENET_TRAIN:,} images) is {IMAGENET_TRAIN / per_core[True] / 3600:.1f} core-hours "
          "of decoding")


if __name__ == "__main__":
    main()
