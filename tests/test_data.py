"""Data: device-side augmentation against a per-image reference, reproducible epoch plans, the
npz and torchvision CIFAR sources, and a clear error for missing data."""
import os

import numpy as np
import pytest
import torch

from gated_pruning.data import STATS, Loader, Split, load_cifar, subset, synthetic
from gated_pruning.errors import DataError


def tiny_split(n=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                 torch.arange(n) % 3)


def test_train_batches_are_padded_crops_and_flips_of_the_images():
    split = tiny_split()
    mean, std = STATS["cifar100"]
    loader = Loader(split, 4, "cpu", mean, std, train=True, seed=3)
    order, oy, ox, flip = loader._plan(epoch=2)
    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    seen = 0
    for b, (x, y) in enumerate(loader.epoch(2)):
        for j in range(len(y)):
            i = order[b * 4 + j]
            img = torch.nn.functional.pad(split.x[i], (4, 4, 4, 4))[:, oy[i]:oy[i] + 32, ox[i]:ox[i] + 32]
            if flip[i]:
                img = img.flip(-1)
            torch.testing.assert_close(x[j], (img.float() / 255 - m) / s)
            assert y[j] == split.y[i]
            seen += 1
    assert seen == 8  # drop_last in training: 10 // 4 batches
    assert flip.any() and (~flip).any() and (oy != 4).any()


def test_epoch_plan_depends_only_on_seed_and_epoch_and_resumes_mid_epoch():
    split = tiny_split(20)
    a = Loader(split, 4, "cpu", (0.5,) * 3, (0.2,) * 3, train=True, seed=1)
    b = Loader(split, 4, "cpu", (0.5,) * 3, (0.2,) * 3, train=True, seed=1)
    full = list(a.epoch(5))
    tail = list(b.epoch(5, start_batch=2))
    for (x1, y1), (x2, y2) in zip(full[2:], tail):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    other = list(a.epoch(6))
    assert not torch.equal(full[0][0], other[0][0])


def test_eval_batches_are_the_normalised_images_in_order():
    split = tiny_split(7)
    loader = Loader(split, 3, "cpu", (0.5,) * 3, (0.25,) * 3, train=False)
    xs = torch.cat([x for x, _ in loader.epoch()])
    torch.testing.assert_close(xs, (split.x.float() / 255 - 0.5) / 0.25)
    assert len(loader) == 3


def test_subset_is_random_not_the_first_rows():
    split = Split(torch.zeros(100, 3, 2, 2, dtype=torch.uint8), torch.arange(100) // 10)  # sorted
    sub = subset(split, 30, seed=0)
    assert len(sub.y) == 30 and len(sub.y.unique()) > 5


def test_synthetic_is_deterministic():
    a, _ = synthetic(5, 16, 8, seed=0)
    b, _ = synthetic(5, 16, 8, seed=0)
    assert torch.equal(a.x, b.x) and a.x.dtype == torch.uint8


def test_torchvision_cifar100_files_load_pixel_exact(cifar100_files):
    root, arrays = cifar100_files
    train, test = load_cifar("cifar100", root, download=False)
    assert torch.equal(train.x, torch.from_numpy(arrays["train"][0]))
    assert train.y.tolist() == arrays["train"][1] and len(test.y) == 30


def test_npz_source_is_preferred_and_read(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "cifar100.npz", x_train=x, y_train=np.arange(6), x_test=x[:2], y_test=np.arange(2))
    train, test = load_cifar("cifar100", str(tmp_path))
    assert torch.equal(train.x, torch.from_numpy(x).permute(0, 3, 1, 2))
    assert test.y.tolist() == [0, 1]


def test_missing_data_says_how_to_supply_it(tmp_path):
    with pytest.raises(DataError, match="not found under .*cifar100.npz.*dataset.download=true") as e:
        load_cifar("cifar100", str(tmp_path / "nothing"), download=False)
    assert "\n" not in str(e.value)


def test_corrupt_npz_is_refused(tmp_path):
    (tmp_path / "cifar100.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable"):
        load_cifar("cifar100", str(tmp_path))


def good_arrays(n=6):
    x = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return dict(x_train=x, y_train=np.arange(n), x_test=x[:2], y_test=np.arange(2))


def f32(x):
    return x.astype(np.float32) / 255  # images as many loaders hold them: float in [0, 1]


# every array is checked for what it must be; nothing is cast (float pixels in [0, 1] cast to
# uint8 would all be 0 or 1, and the run would train on black images with exit 0)
BAD_ARRAYS = [
    (lambda a: dict(a, x_train=f32(a["x_train"])), "train images are float32, expected uint8"),
    (lambda a: dict(a, x_test=f32(a["x_test"])), "test images are float32, expected uint8"),
    (lambda a: dict(a, x_train=a["x_train"].astype(np.float64)), "train images are float64"),
    (lambda a: dict(a, x_train=a["x_train"].astype(np.int64)), "train images are int64"),
    (lambda a: dict(a, x_train=a["x_train"].transpose(0, 3, 1, 2)), "shape (6, 3, 32, 32), expected (N, 32, 32, 3)"),
    (lambda a: dict(a, x_train=a["x_train"][:, :28, :28]), "shape (6, 28, 28, 3)"),
    (lambda a: dict(a, x_train=a["x_train"][..., 0]), "shape (6, 32, 32)"),
    (lambda a: dict(a, x_train=a["x_train"][:0], y_train=a["y_train"][:0]), "shape (0, 32, 32, 3)"),
    (lambda a: dict(a, y_train=a["y_train"].astype(np.float64)), "train labels are float64, expected integers"),
    (lambda a: dict(a, y_test=a["y_test"] + 0.5), "test labels are float64, expected integers"),
    (lambda a: dict(a, y_train=a["y_train"] % 2 == 0), "train labels are bool"),
    (lambda a: dict(a, y_train=np.array(list("abcdef"))), "train labels are <U1"),
    (lambda a: dict(a, y_train=np.eye(100, dtype=np.int64)[a["y_train"]]), "labels have shape (6, 100), expected (6,)"),
    (lambda a: dict(a, y_train=a["y_train"][:5]), "labels have shape (5,), expected (6,)"),
    (lambda a: dict(a, y_train=np.array([0, 1, 2, 3, 4, 100])), "labels span 0..100, outside 0..99"),
    (lambda a: dict(a, y_test=np.array([-1, 0])), "test labels span -1..0"),
    (lambda a: {k: v for k, v in a.items() if k != "x_test"}, "has no array 'x_test'"),
    (lambda a: dict(a, y_train=np.array([0, 1, 2, 3, 4, None], dtype=object)), "not a readable CIFAR .npz"),
]


@pytest.mark.parametrize("make,needle", BAD_ARRAYS)
def test_npz_arrays_are_checked_for_what_they_are(tmp_path, make, needle):
    np.savez(tmp_path / "cifar100.npz", **make(good_arrays()))
    with pytest.raises(DataError, match="cifar100.npz") as e:
        load_cifar("cifar100", str(tmp_path))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_unreadable_data_is_reported_as_permission_denied(tmp_path, monkeypatch):
    np.savez(tmp_path / "cifar100.npz", **good_arrays())

    def denied(path, *a, **k):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(np, "load", denied)
    with pytest.raises(DataError, match="permission denied") as e:
        load_cifar("cifar100", str(tmp_path))
    assert "not found" not in str(e.value)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_data_folder_is_not_reported_as_missing(tmp_path):
    np.savez(tmp_path / "cifar100.npz", **good_arrays())
    os.chmod(tmp_path, 0o000)
    try:
        with pytest.raises(DataError, match="permission denied"):
            load_cifar("cifar100", str(tmp_path))
    finally:
        os.chmod(tmp_path, 0o755)


def test_data_root_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        load_cifar("cifar100", str(tmp_path / "f"))


def test_subset_larger_than_the_data_is_refused(tmp_path):
    np.savez(tmp_path / "cifar100.npz", **good_arrays())
    from omegaconf import OmegaConf

    from gated_pruning.data import build_data

    cfg = OmegaConf.create({"name": "cifar100", "root": str(tmp_path), "download": False, "batch_size": 2,
                            "eval_batch_size": 2, "train_size": 7, "test_size": None, "pad": 4, "flip": True})
    with pytest.raises(DataError, match=r"dataset.train_size=7 is larger than the data set \(6 images\)"):
        build_data(cfg, "cpu", 0)
