"""Image files in torchvision's ImageFolder layout, streamed: `dataset=imagefolder` (any such folder)
and `dataset=imagenet` (ILSVRC-2012 laid out the same way).

    ROOT/train/CLASS/*.jpg   the training images (dataset.val_size of them held out for validation)
    ROOT/val/CLASS/*.jpg     the images a run is tested on (ImageNet calls its test split "val")

Files are found by torchvision's own ImageFolder rules (`datasets.folder.make_dataset`: class
folders sorted by name, the image extensions it knows); images are decoded by Pillow (any mode ->
RGB, as torchvision's ImageFolder loader does) in DataLoader workers and augmented by `torchvision.transforms.v2`, the
standard ImageNet recipe (He et al., CVPR 2016; torchvision's reference scripts): to train,
RandomResizedCrop to `image_size` (scale `crop_scale`) and a horizontal flip; to evaluate, the
shorter side resized to `image_size * resize` (256 for 224) and the centre `image_size` crop.
`train_crop=padded` trains as CIFAR does instead (resize, centre crop, then a random crop after
`pad` pixels of zero padding): the same images then train as the in-memory path trains them.

The batches are uint8 until they reach the device, where they are normalized. The order of epoch
e and every image's augmentation are functions of (seed, e, position) only, whichever worker
decodes it, so a run resumed mid-epoch sees the same batches (bit-identical on the CPU).
"""
from __future__ import annotations

import copy
import os
import random

import torch

from gated_pruning import distributed
from gated_pruning.errors import DataError

TRAIN, TEST = "train", "val"
VERIFY_ALL_UP_TO = 20_000  # images whose headers preflight opens one by one; above it, a sample of so many


def scan(root: str, key: str = "dataset.root") -> tuple[list, list, list[str]]:
    """(train samples, test samples, class names) of an ImageFolder root: samples are (path,
    class index); a DataError names what is missing or does not match."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    root = os.path.expanduser(str(root))
    if not os.path.isdir(root):
        raise DataError(f"{key}={root}: no such folder (it must hold {TRAIN}/CLASS/*.jpg and {TEST}/CLASS/*.jpg)")
    found = {}
    for split in (TRAIN, TEST):
        path = os.path.join(root, split)
        if not os.path.isdir(path):
            raise DataError(f"{key}={root} has no {split}/ folder (ImageFolder layout: {TRAIN}/CLASS/*.jpg for "
                            f"training, {TEST}/CLASS/*.jpg for testing)")
        try:
            classes, _ = find_classes(path)
        except (FileNotFoundError, OSError) as e:
            raise DataError(f"{path}: no class folders in it ({' '.join(str(e).split())[:120]})") from None
        found[split] = classes
    if found[TRAIN] != found[TEST]:
        only_train = sorted(set(found[TRAIN]) - set(found[TEST]))
        only_test = sorted(set(found[TEST]) - set(found[TRAIN]))
        which = (f"{TRAIN}/ has {', '.join(only_train[:3])} that {TEST}/ lacks" if only_train else
                 f"{TEST}/ has {', '.join(only_test[:3])} that {TRAIN}/ lacks")
        raise DataError(f"{key}={root}: the class folders of {TRAIN}/ and {TEST}/ differ ({which}): "
                        "both must hold the same classes")
    classes = found[TRAIN]
    if len(classes) < 2:
        raise DataError(f"{key}={root}: {len(classes)} class folder(s) in {TRAIN}/; a classifier needs two or more")
    index = {c: i for i, c in enumerate(classes)}
    samples = {}
    for split in (TRAIN, TEST):
        try:
            samples[split] = make_dataset(os.path.join(root, split), index, extensions=IMG_EXTENSIONS)
        except FileNotFoundError as e:
            raise DataError(f"{os.path.join(root, split)}: {' '.join(str(e).split())[:240]}") from None
    return samples[TRAIN], samples[TEST], classes


def verify(samples: list, limit: int = VERIFY_ALL_UP_TO, seed: int = 0) -> int:
    """Open every image's header (a random `limit` of them in a larger set): a DataError names
    the first that is not an image. Returns how many were opened."""
    from PIL import Image

    picked = samples if len(samples) <= limit else random.Random(seed).sample(samples, limit)
    for path, _ in picked:
        try:
            with Image.open(path) as im:
                im.verify()
        except Exception as e:  # noqa: BLE001 - any unreadable file: one line naming it
            raise DataError(f"{path} is not a readable image ({type(e).__name__}: "
                            f"{' '.join(str(e).split())[:120]}); remove it or replace it") from None
    return len(picked)


def transform(d, train: bool):
    """The per-image transform of the `dataset` section `d` (see the module docstring)."""
    from torchvision.transforms import v2

    size = int(d.image_size)
    if train and d.get("train_crop", "resized") == "resized":
        steps = [v2.RandomResizedCrop(size, scale=tuple(d.crop_scale), antialias=True)]
    else:
        steps = [v2.Resize(int(round(size * (d.resize if not train else 1.0))), antialias=True), v2.CenterCrop(size)]
        if train and d.pad:
            steps.append(v2.RandomCrop(size, padding=int(d.pad)))
    if train and d.flip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps)


class ImageFiles(torch.utils.data.Dataset):
    """Decoded, transformed images; an item is (index, seed): the seed fixes its augmentation."""

    def __init__(self, samples: list, transform):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item):
        from PIL import Image
        from torchvision.transforms.v2.functional import pil_to_tensor

        index, seed = item
        path, label = self.samples[index]
        try:
            with Image.open(path) as im:
                image = pil_to_tensor(im.convert("RGB"))
        except Exception as e:  # noqa: BLE001 - named in the one line the run stops with
            raise DataError(f"{path} is not a readable image ({type(e).__name__}: "
                            f"{' '.join(str(e).split())[:120]}); remove it or replace it") from None
        if seed is not None:
            torch.manual_seed(seed)  # the worker's own generator: the same draw, whichever worker
        return self.transform(image), label


class Batches(torch.utils.data.Sampler):
    """The batches of one epoch as lists of (index, seed), in the order `Loader._plan` would give
    the in-memory path: a permutation seeded by (seed, epoch); each image's seed from its place."""

    def __init__(self, n: int, batch_size: int, train: bool, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.train, self.seed = n, batch_size, train, seed
        self.rank, self.world = rank, world
        self.epoch, self.start = 0, 0

    def __len__(self) -> int:
        return self.n // self.batch_size if self.train else -(-self.n // self.batch_size)

    def __iter__(self):
        if self.train:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        else:
            order = torch.arange(self.n)
        for b in range(self.start, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            pos = torch.arange(b * self.batch_size, b * self.batch_size + len(idx))
            if self.world > 1:
                idx, pos = idx.view(self.world, -1)[self.rank], pos.view(self.world, -1)[self.rank]
            seeds = ((self.seed * 1_000_003 + self.epoch) * 10_000_019 + pos).tolist() if self.train else [None] * len(idx)
            yield list(zip(idx.tolist(), seeds))


def _one_thread(_):
    torch.set_num_threads(1)  # a worker decodes one image at a time; the workers are the parallelism


class FolderLoader:
    """Batches of image files, as `data.Loader` gives them: (x normalized on `device`, y)."""

    def __init__(self, samples: list, d, device, mean, std, train: bool, seed: int = 0, batch_size: int | None = None,
                 workers: int = 0):
        self.device = torch.device(device)
        self.train = train
        self.batch_size = int(batch_size or (d.batch_size if train else d.eval_batch_size))
        rank, world = (distributed.rank(), distributed.world_size()) if train else (0, 1)
        self.batches = Batches(len(samples), self.batch_size, train, seed, rank, world)
        self.files = ImageFiles(samples, transform(d, train))
        self.workers = workers
        self._loader = None
        self.scale = (1.0 / (255.0 * torch.tensor(std))).view(1, 3, 1, 1).to(self.device)
        self.shift = (-torch.tensor(mean) / torch.tensor(std)).view(1, 3, 1, 1).to(self.device)
        self.labels = torch.tensor([label for _, label in samples])

    def __len__(self) -> int:
        return len(self.batches)

    def whole(self) -> "FolderLoader":
        """The same loader in one process: every batch whole, not this rank's slice of it."""
        out = copy.copy(self)
        out.batches = copy.copy(self.batches)
        out.batches.rank, out.batches.world = 0, 1
        out._loader = None
        return out

    @property
    def num_examples(self) -> int:
        return self.batches.n

    def _dataloader(self):
        if self._loader is None:
            self._loader = torch.utils.data.DataLoader(
                self.files, batch_sampler=self.batches, num_workers=self.workers,
                persistent_workers=self.workers > 0, pin_memory=self.device.type == "cuda",
                worker_init_fn=_one_thread if self.workers else None,
                generator=torch.Generator())  # its base seed is not drawn from the run's generator (gates sample from it)
        return self._loader

    def epoch(self, epoch: int = 0, start_batch: int = 0):
        """Yield (x, y) batches of `epoch`, from batch index `start_batch` on."""
        self.batches.epoch, self.batches.start = epoch, start_batch
        try:
            for x, y in self._dataloader():
                x = x.to(self.device, non_blocking=True)
                yield x.float().mul_(self.scale).add_(self.shift), y.to(self.device, non_blocking=True)
        except DataError as e:  # from a worker, with its traceback: the one line it was raised with
            raise DataError(str(e).strip().splitlines()[-1].split("DataError: ", 1)[-1]) from None
