"""ImageFolder trees for the tests: real CIFAR-100 images (../shared/data/cifar100.npz) written as PNG
files, optionally resized, in ROOT/train/CLASS/ and ROOT/val/CLASS/."""
import os

import numpy as np
from PIL import Image


def write(npz: str, root, classes: int = 10, size: int = 32, train_per_class: int | None = None,
          test_per_class: int | None = None) -> str:
    """The first `classes` classes of CIFAR-100 (named by their label names), each image resized to
    `size` (bicubic) when it is not 32; `*_per_class`: the first so many of each class."""
    with np.load(npz) as f:
        arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test", "fine_label_names")}
    names = [str(n) for n in arrays["fine_label_names"][:classes]]
    for split, x, y, limit in (("train", arrays["x_train"], arrays["y_train"], train_per_class),
                               ("val", arrays["x_test"], arrays["y_test"], test_per_class)):
        for c, name in enumerate(names):
            d = os.path.join(root, split, name)
            os.makedirs(d, exist_ok=True)
            idx = np.flatnonzero(y == c)[:limit]
            for i in idx:
                im = Image.fromarray(x[i])
                if size != 32:
                    im = im.resize((size, size), Image.BICUBIC)
                im.save(os.path.join(d, f"{i:05d}.png"))
    return str(root)


def arrays_of(npz: str, classes: int = 10) -> dict:
    """The same images as in-memory arrays, for the in-memory path: an npz of these classes only."""
    with np.load(npz) as f:
        out = {}
        for split in ("train", "test"):
            x, y = f[f"x_{split}"], f[f"y_{split}"]
            keep = y < classes
            out[f"x_{split}"], out[f"y_{split}"] = x[keep], y[keep]
    return out
