"""The loaders of a run (`build_data`), for every kind of data set that `datasets.py` declares:
CIFAR-10/100 and a synthetic set held as uint8 tensors on the training device (here), image
folders streamed by workers (`imagefolder.py`).

CIFAR sources, in order: `<root>/<name>.npz` (keys x_train y_train x_test y_test, HWC uint8, as in
shared/data/cifar100.npz), then torchvision's CIFAR10/CIFAR100 classes (which download when
`download=True` and the internet is reachable). Augmentation (pad-4 random crop, horizontal flip)
and per-channel normalization run on whole batches on the device. The order and augmentation of
epoch e depend only on (seed, e), so a run resumed mid-epoch sees the same batches.
"""
from __future__ import annotations

import contextlib
import copy
import errno
import os
import zipfile
from dataclasses import dataclass

import numpy as np
import torch

from gated_pruning import distributed
from gated_pruning.datasets import DECLARED, Described, describe
from gated_pruning.errors import ConfigError, DataError

# of the data sets held in memory, as declared (datasets.py)
STATS = {n: (d.mean, d.std) for n, d in DECLARED.items() if d.mean is not None and d.kind != "folder"}
NUM_CLASSES = {n: d.num_classes for n, d in DECLARED.items() if d.kind == "memory"}


@dataclass
class Split:
    x: torch.Tensor  # (N, 3, H, W) uint8
    y: torch.Tensor  # (N,) int64


def _check_split(source: str, what: str, dtype, shape: tuple, y: np.ndarray, name: str) -> None:
    """Images of `dtype` and `shape` and labels `y` checked for what they must be (uint8 HWC
    32x32x3 images, integer labels of this data set): a DataError names what is wrong."""
    if dtype != np.uint8:
        hint = (" (float images in [0, 1]: multiply by 255, round and cast to uint8 first)"
                if np.dtype(dtype).kind == "f" else "")
        raise DataError(f"{source}: {what} images are {dtype}, expected uint8 pixel values 0..255{hint}")
    if len(shape) != 4 or tuple(shape[1:]) != (32, 32, 3) or shape[0] == 0:
        raise DataError(f"{source}: {what} images have shape {tuple(shape)}, expected (N, 32, 32, 3) with "
                        "N >= 1 (height, width, RGB channels last)")
    if y.dtype.kind not in "iu":
        raise DataError(f"{source}: {what} labels are {y.dtype}, expected integers (class indices)")
    if y.shape != (shape[0],):
        raise DataError(f"{source}: {what} labels have shape {y.shape}, expected ({shape[0]},): one per image")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= NUM_CLASSES[name]:
        raise DataError(f"{source}: {what} labels span {lo}..{hi}, outside 0..{NUM_CLASSES[name] - 1} of {name}")


def _split(source: str, what: str, x, y, name: str) -> Split:
    """Arrays checked (`_check_split`), then held as CHW tensors. Nothing is cast: float images
    in [0, 1] would turn into pixels of 0 or 1, float labels would be truncated."""
    x, y = np.asarray(x), np.asarray(y)
    _check_split(source, what, x.dtype, x.shape, y, name)
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    return Split(x, torch.from_numpy(y.astype(np.int64)))


def _permission(path: str, e: OSError, key: str = "dataset.root") -> DataError:
    return DataError(f"{path}: permission denied ({e.strerror}); make it readable or copy the data "
                     f"to a folder you can read, and set {key}")


def locate_cifar(name: str, root: str, download: bool = False, key: str = "dataset.root") -> str | None:
    """The `<root>/<name>.npz` to read, or None for torchvision's files (present, or to be
    downloaded); refuses a root that is unreadable or holds neither when download is off. `key`
    names the setting that gave `root` in the messages."""
    root = os.path.expanduser(root)
    npz = os.path.join(root, f"{name}.npz")
    for path in (root, npz):
        try:
            os.stat(path)
        except PermissionError as e:
            raise _permission(path, e, key) from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise DataError(f"{path} is a symbolic link that leads back to itself (a loop)") from None
    if os.path.isdir(root) and not os.access(root, os.R_OK | os.X_OK):
        raise _permission(root, PermissionError(13, "Permission denied"), key)
    if os.path.isdir(npz):
        raise DataError(f"{npz} is a folder, not a file: {name}.npz must be the archive itself")
    if os.path.isfile(npz):
        if not os.access(npz, os.R_OK):
            raise _permission(npz, PermissionError(13, "Permission denied"), key)
        return npz
    if os.path.exists(root) and not os.path.isdir(root):
        raise DataError(f"{key}={root!r} is a file, not a folder: give the folder that holds {name}.npz")
    folder = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[name]
    if not download and not os.path.isdir(os.path.join(root, folder)):
        off = " and download is off (dataset.download=false)" if key == "dataset.root" else ""
        online = ", or run with internet and dataset.download=true" if key == "dataset.root" else ""
        raise DataError(f"{name} not found under {root!r}{off}: put the official python archive (extracted: "
                        f"{folder}/) or a {name}.npz there, set {key}=DIR{online}")
    return None


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


@contextlib.contextmanager
def _reading(npz: str, arrays=None):
    """Any failure to read `npz` inside the block as one DataError; `arrays`: the names it holds,
    checked for the four CIFAR arrays first."""
    try:
        missing = [k for k in NPZ_KEYS if arrays is not None and k not in arrays]
        if missing:
            raise DataError(f"{npz} has no array {missing[0]!r} (it needs x_train y_train x_test y_test; "
                            f"it holds {' '.join(sorted(arrays)) or 'nothing'})")
        yield
    except DataError:
        raise
    except PermissionError as e:
        raise _permission(npz, e) from None
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise DataError(f"{npz} is not a readable CIFAR .npz file ({type(e).__name__}: {e})") from None


def check_npz(npz: str, name: str) -> tuple[int, int]:
    """(train, test) image counts of a CIFAR .npz, checked as `load_cifar` checks it (every array
    there, image dtype and shape from the headers, every label read, the archive's checksums)
    without holding the images: `run.py` calls it before the run directory exists."""
    counts = []
    with _reading(npz), zipfile.ZipFile(npz) as z:
        names = {n[:-4]: n for n in z.namelist() if n.endswith(".npy")}
        with _reading(npz, names):
            bad = z.testzip()
            if bad is not None:
                raise DataError(f"{npz} is damaged: {bad} does not match its checksum")
            for what in ("train", "test"):
                with z.open(names[f"x_{what}"]) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(f)
                with z.open(names[f"y_{what}"]) as f:
                    y = np.lib.format.read_array(f, allow_pickle=False)
                _check_split(npz, what, dtype, shape, y, name)
                counts.append(shape[0])
    return counts[0], counts[1]


def load_cifar(name: str, root: str, download: bool = False, key: str = "dataset.root") -> tuple[Split, Split]:
    """(train, test) of CIFAR-10 or CIFAR-100 from `root`, checked for dtype, shape and labels."""
    root = os.path.expanduser(root)
    npz = locate_cifar(name, root, download, key)
    if npz is not None:
        with _reading(npz), np.load(npz) as f, _reading(npz, f.files):
            arrays = {k: f[k] for k in NPZ_KEYS}
        return (_split(npz, "train", arrays["x_train"], arrays["y_train"], name),
                _split(npz, "test", arrays["x_test"], arrays["y_test"], name))
    import torchvision

    cls = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}[name]
    try:
        train = cls(root, train=True, download=download)
        test = cls(root, train=False, download=download)
    except PermissionError as e:
        raise _permission(e.filename or root, e, key) from None
    except Exception as e:  # noqa: BLE001 - download errors come as many types
        how = ("the download failed" if download else "download is off (dataset.download=false)")
        raise DataError(
            f"{name} not found under {root!r} and {how}: put the official python archive "
            f"(extracted: {cls.base_folder}/) or a {name}.npz there, set {key}=DIR, or run "
            f"with internet and dataset.download=true [{type(e).__name__}: {str(e).strip()[:120]}]"
        ) from None
    return (_split(root, "train", train.data, train.targets, name),
            _split(root, "test", test.data, test.targets, name))


def synthetic(num_classes: int, train_size: int, test_size: int, seed: int,
              image_size: int = 32, noise: float = 0.5) -> tuple[Split, Split]:
    """Learnable random images: a smooth random template per class (4x4 colours upsampled, so
    crops and flips keep it recognisable) plus Gaussian pixel noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, 3, 4, 4, generator=g)
    templates = torch.nn.functional.interpolate(coarse, size=image_size, mode="bilinear")

    def make(n):
        y = torch.randint(0, num_classes, (n,), generator=g)
        x = templates[y] + noise * torch.randn(n, 3, image_size, image_size, generator=g)
        return Split((x.clamp(0, 1) * 255).round().to(torch.uint8), y)

    return make(train_size), make(test_size)


def subset(split: Split, n: int | None, seed: int, what: str = "") -> Split:
    """A seeded random subset of n examples (random, since a test set may be sorted by class);
    `what` names the setting in the error for an n larger than the split."""
    idx = subset_indices(len(split.y), n, seed, what)
    return split if idx is None else Split(split.x[idx], split.y[idx])


class Loader:
    """Batches of a uint8 split kept on `device`; augmentation and normalization on the device."""

    def __init__(self, split: Split, batch_size: int, device, mean, std, train: bool,
                 seed: int = 0, pad: int = 4, flip: bool = True, drop_last: bool | None = None,
                 rank: int = 0, world: int = 1):
        """Under data parallelism (`world` > 1, training only) each batch of `batch_size` is
        cut into `world` equal slices and this rank yields slice `rank`."""
        self.x = split.x.to(device)
        self.y = split.y.to(device)
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.train = train
        self.seed = int(seed)
        self.pad = pad if train else 0
        self.flip = flip and train
        self.drop_last = train if drop_last is None else drop_last
        self.rank, self.world = (rank, world) if train else (0, 1)
        if self.batch_size % self.world:
            raise ConfigError(f"dataset.batch_size={batch_size} is not divisible by the {world} "
                             "data-parallel processes")
        self.scale = (1.0 / (255.0 * torch.tensor(std))).view(1, 3, 1, 1).to(device)
        self.shift = (-torch.tensor(mean) / torch.tensor(std)).view(1, 3, 1, 1).to(device)
        if self.pad:
            self.x = torch.nn.functional.pad(self.x, (pad, pad, pad, pad))  # zero = black border

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def whole(self) -> "Loader":
        """The same loader in one process: every batch whole, not this rank's slice of it."""
        out = copy.copy(self)
        out.rank, out.world = 0, 1
        return out

    @property
    def num_examples(self) -> int:
        return len(self.y)

    def _plan(self, epoch: int):
        """Order and augmentation of one epoch, a function of (seed, epoch) only."""
        n = len(self.y)
        if not self.train:
            return torch.arange(n), None, None, None
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(n, generator=g)
        oy = torch.randint(0, 2 * self.pad + 1, (n,), generator=g)
        ox = torch.randint(0, 2 * self.pad + 1, (n,), generator=g)
        flip = torch.rand(n, generator=g) < 0.5 if self.flip else torch.zeros(n, dtype=torch.bool)
        return order, oy, ox, flip

    def epoch(self, epoch: int = 0, start_batch: int = 0):
        """Yield (x, y) batches of `epoch`, from batch index `start_batch` on."""
        order, oy, ox, flip = self._plan(epoch)
        dev = self.device
        order = order.to(dev)
        if self.train:
            oy, ox, flip = oy.to(dev), ox.to(dev), flip.to(dev)
            size = self.x.shape[-1] - 2 * self.pad
            ar = torch.arange(size, device=dev)
            ch = torch.arange(3, device=dev).view(1, 3, 1, 1)
        for b in range(start_batch, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            if self.world > 1:
                idx = idx.view(self.world, -1)[self.rank]
            if self.train:
                rows = (oy[idx, None] + ar).view(-1, 1, size, 1)
                cols = ox[idx, None] + torch.where(flip[idx, None], size - 1 - ar, ar)
                x = self.x[idx.view(-1, 1, 1, 1), ch, rows, cols.view(-1, 1, 1, size)]
            else:
                x = self.x[idx]
            yield x.float().mul_(self.scale).add_(self.shift), self.y[idx]


VAL_SEED = 20181008  # the held-out split is one fixed draw, the same for every run and seed


def hold_out(split: Split, n: int) -> tuple[Split, Split]:
    """(the rest, `n` held-out examples) of `split` (`hold_out_indices`)."""
    rest_idx, val_idx = hold_out_indices(split.y, n)
    return Split(split.x[rest_idx], split.y[rest_idx]), Split(split.x[val_idx], split.y[val_idx])


def hold_out_indices(labels: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices of the rest, indices of `n` held-out examples) of a split with these labels: a
    fixed, class-balanced draw that does not depend on the run's seed (each class gives
    n/classes examples, give or take one), so every run of every seed selects on the same images."""
    if not n:
        return torch.arange(len(labels)), torch.arange(0)
    if n >= len(labels):
        raise DataError(f"dataset.val_size={n} leaves no training images (the training set has {len(labels)})")
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(VAL_SEED))
    shuffled = labels[perm]
    rank = torch.zeros_like(shuffled)  # position of each example among the examples of its class
    for c in shuffled.unique():
        where = shuffled == c
        rank[where] = torch.arange(int(where.sum()))
    chosen = perm[torch.sort(rank, stable=True).indices[:n]]
    held = torch.zeros(len(labels), dtype=torch.bool)
    held[chosen] = True
    return (~held).nonzero().flatten(), held.nonzero().flatten()


def subset_indices(total: int, n: int | None, seed: int, what: str = "") -> torch.Tensor | None:
    """Sorted indices of a seeded random subset of n of `total` examples (None: all of them)."""
    if n is not None and n > total and what:
        raise DataError(f"{what}={n} is larger than the data set ({total} images)")
    if n is None or n >= total:
        return None
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values


@dataclass
class Data:
    """The loaders of one run: `val` is None without a held-out split (dataset.val_size=0);
    `described` the data set as the network and its measures need it (classes, image size)."""
    train: "Loader"
    val: "Loader | None"
    test: "Loader"
    described: Described

    @property
    def num_classes(self) -> int:
        return self.described.num_classes


def build_data(cfg, device, seed: int, splits: tuple[str, ...] = ("train", "val", "test"),
               root_key: str = "dataset.root") -> Data:
    """Train, validation and test loaders from the `dataset` config group (of `splits` only: a
    tool that evaluates needs no training set). The validation set is held out of the training
    set (`hold_out_indices`) before any `train_size` subset is drawn. `root_key`: the setting that
    gave the data's folder, as messages name it (a tool's `--data-root`)."""
    kind = DECLARED[cfg.name].kind if cfg.name in DECLARED else None
    if kind == "folder":
        return _folder_data(cfg, device, seed, splits, root_key)
    val_size = int(cfg.get("val_size") or 0)
    if kind == "synthetic":
        size = int(cfg.get("image_size") or 32)
        train, test = synthetic(int(cfg.num_classes), int(cfg.train_size) + val_size, int(cfg.test_size),
                                seed=cfg.seed, image_size=size)
        train, val = hold_out(train, val_size)
    elif kind == "memory":
        train, test = load_cifar(cfg.name, cfg.root, cfg.download, key=root_key)
        train, val = hold_out(train, val_size)
        train = subset(train, cfg.train_size, seed, "dataset.train_size")
        test = subset(test, cfg.test_size, seed + 1, "dataset.test_size")
    else:
        raise ValueError(f"dataset.name={cfg.name!r} is not one of {', '.join(DECLARED)}")
    described = describe(cfg)
    mean, std = described.mean, described.std
    train_loader = Loader(train, cfg.batch_size, device, mean, std, train=True, seed=seed,
                          pad=cfg.pad, flip=cfg.flip, rank=distributed.rank(),
                          world=distributed.world_size()) if "train" in splits else None
    val_loader = Loader(val, cfg.eval_batch_size, device, mean, std, train=False) if val_size and "val" in splits else None
    test_loader = Loader(test, cfg.eval_batch_size, device, mean, std, train=False)
    return Data(train_loader, val_loader, test_loader, described)


def folder_samples(cfg, seed: int, root_key: str = "dataset.root") -> tuple[list, list, list, int]:
    """(train, val, test samples, number of classes) of an image folder, as a run of `seed`
    splits it: val held out of train/, then the train and test subsets drawn."""
    from gated_pruning import imagefolder

    train, test, classes = imagefolder.scan(cfg.root, root_key)
    declared = DECLARED[cfg.name].num_classes
    if declared is not None and len(classes) != declared:
        raise DataError(f"dataset={cfg.name}: {cfg.root} has {len(classes)} class folders, {cfg.name} has {declared} "
                        "(dataset=imagefolder takes any number)")
    rest, held = hold_out_indices(torch.tensor([label for _, label in train]), int(cfg.get("val_size") or 0))
    val = [train[i] for i in held.tolist()]
    train = [train[i] for i in rest.tolist()]
    idx = subset_indices(len(train), cfg.get("train_size"), seed, "dataset.train_size")
    train = train if idx is None else [train[i] for i in idx.tolist()]
    idx = subset_indices(len(test), cfg.get("test_size"), seed + 1, "dataset.test_size")
    test = test if idx is None else [test[i] for i in idx.tolist()]
    return train, val, test, len(classes)


def _folder_data(cfg, device, seed: int, splits, root_key: str) -> Data:
    from gated_pruning.imagefolder import FolderLoader

    train, val, test, classes = folder_samples(cfg, seed, root_key)
    described = describe(cfg, classes)
    workers = cfg.get("workers")
    workers = torch.get_num_threads() if workers is None else int(workers)
    make = lambda samples, is_train: FolderLoader(samples, cfg, device, described.mean, described.std,  # noqa: E731
                                                  is_train, seed, workers=workers)
    return Data(make(train, True) if "train" in splits else None,
                make(val, False) if val and "val" in splits else None, make(test, False), described)
