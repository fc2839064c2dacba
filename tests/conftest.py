import errno
import hashlib
import json
import os
import pickle
import re
import struct
import subprocess
import sys

if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # pytest -n: each worker (and its subprocesses)
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))  # takes its share of the cores

import numpy as np
import pytest
import torchvision
from hydra import compose, initialize_config_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONF = os.path.join(ROOT, "conf")
SHARED_CIFAR100 = os.path.join(ROOT, "..", "shared", "data", "cifar100.npz")


def make_cfg(*overrides):
    """The composed run config, as `python run.py <overrides>` would see it."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def run_py(*args, cwd=None, env=None, timeout=3000):
    """`python run.py args` in a subprocess; returns the CompletedProcess (never raises)."""
    e = dict(os.environ, WANDB_MODE="disabled", HYDRA_FULL_ERROR="0")
    for k, v in (env or {}).items():  # None removes a variable
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    return subprocess.run([sys.executable, os.path.join(ROOT, "run.py"), *args], cwd=cwd or ROOT,
                          env=e, capture_output=True, text=True, timeout=timeout)


EPOCH_LINE = re.compile(r"(\S+/)?epoch \d+: train loss ")


def one_error_line(err: str, kind: str = "error") -> str:
    """The single `error:` (or `warning:`) line of a command's stderr, which holds nothing else
    but `warning:` lines and the epoch summaries of a run that trained (no traceback, no log line)."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"{kind}:")]
    assert len(lines) == 1, err
    assert not [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("error:", "warning:"))
                and not EPOCH_LINE.match(ln)], err
    return lines[0]


# the kept widths of a VGG-11 pruned to about 30% of its FLOPs (experiment=smoke's network: width 0.125)
STUB_WIDTHS = [4, 8, 16, 16, 32, 32, 32, 32]


def stub_run(d, widths=STUB_WIDTHS, dead=(), target=0.3) -> str:
    """A finished run's record, as much of it as a scratch preset reads (`arch.run`): the kept
    widths, the dead layers, the dense reference and the target its network was made for."""
    from gated_pruning.models.vgg import build

    os.makedirs(d, exist_ok=True)
    ref = {"widths": [8, 16, 32, 32, 64, 64, 64, 64], "flops": build(11, 0.125, 10, gated=False).flops(), "params": 1}
    with open(os.path.join(d, "results.json"), "w") as f:
        json.dump({"prune": {"compact": {"widths": list(widths)}, "dead_layers": list(dead)},
                   "cost": {"reference": ref}, "target": {"kind": "budget", "flops": target},
                   "target_flops": target}, f)
    return str(d)


@pytest.fixture(scope="session")
def stub(tmp_path_factory):
    """The record of a finished, pruned smoke run (no training: scratch presets need only it)."""
    return stub_run(tmp_path_factory.mktemp("stub"))


class FullDisk:
    """A file whose writes fail as on a full disk once `room` bytes are written."""

    def __init__(self, path, mode, room):
        self.f, self.room = open(path, mode), room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device", self.f.name)
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.fixture(autouse=True)
def _no_claim_between_tests():
    """launch remembers the directory its command claimed; each test is a command of its own."""
    from gated_pruning import launch

    yield
    launch._claim = None


def preset_needs(run_dir) -> dict:
    """{group=option: the overrides its user must add}: the run whose architecture a scratch
    preset retrains, the FLOPs that method=uniform scales to and the cut presets cut to, the
    penalty that hard-concrete gates need (and the gates that the L0 penalty needs), the network
    that model=custom gates."""
    return {"method=scratch_e": [f"arch.run={run_dir}"], "method=scratch_b": [f"arch.run={run_dir}"],
            "method=uniform": ["target_flops=0.5"], "method=l1norm": ["target_flops=0.5"],
            "method=slimming": ["target_flops=0.5"], "method=taylor": ["target_flops=0.5"],
            "method=thinet": ["target_flops=0.5"], "method=lasso": ["target_flops=0.5"],
            "binarizer=hard_concrete": ["penalty=l0"],
            "penalty=l0": ["binarizer=hard_concrete"],
            "model=custom": [f"model.net._target_={USER_NET}"],
            "dataset=imagefolder": [f"dataset.root={run_dir}"]}


USER_NET = "user_nets.SmallNet"  # a user's network for model=custom (tests/user_nets.py)


def snapshot(d):
    """{relative path: bytes} of every file below `d` (.hydra/ included; a symbolic link: where it
    points)."""
    out = {}
    for dirpath, _, files in os.walk(d):
        for f in files:
            p = os.path.join(dirpath, f)
            if os.path.islink(p):
                out[os.path.relpath(p, d)] = b"-> " + os.readlink(p).encode()
                continue
            with open(p, "rb") as fh:
                out[os.path.relpath(p, d)] = fh.read()
    return out


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """One finished smoke run (1 epoch, pruned, compact.pt2 written), shared by the tests that
    need a run directory; none may change it (they compare snapshots before and after)."""
    d = tmp_path_factory.mktemp("finished")
    r = run_py("experiment=smoke", "trainer.epochs=1", f"hydra.run.dir={d}")
    assert r.returncode == 0, r.stderr
    return d


@pytest.fixture
def smoke_cfg():
    return lambda *o: make_cfg("experiment=smoke", *o)


def write_cifar100_python(root, n_train=60, n_test=30, seed=0):
    """Files in the official CIFAR-100 python format (as Python 3 reads the official
    Python 2 pickles: str keys); returns (train_md5, test_md5, arrays)."""
    rng = np.random.default_rng(seed)
    base = os.path.join(root, "cifar-100-python")
    os.makedirs(base, exist_ok=True)
    arrays = {}
    for name, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, n).tolist()
        with open(os.path.join(base, name), "wb") as f:
            pickle.dump({"data": data, "fine_labels": fine, "coarse_labels": [0] * n,
                         "filenames": ["x.png"] * n, "batch_label": name}, f)
        arrays[name] = (data.reshape(n, 3, 32, 32), fine)
    with open(os.path.join(base, "meta"), "wb") as f:
        pickle.dump({"fine_label_names": ["c%d" % i for i in range(100)],
                     "coarse_label_names": ["s%d" % i for i in range(20)]}, f)
    md5 = {k: hashlib.md5(open(os.path.join(base, k), "rb").read()).hexdigest() for k in ("train", "test", "meta")}
    return md5, arrays


@pytest.fixture
def cifar100_files(tmp_path, monkeypatch):
    """Real-format CIFAR-100 files; torchvision's integrity check is pointed at their md5s
    (the official checksums cannot match files a test writes)."""
    md5, arrays = write_cifar100_python(str(tmp_path))
    cls = torchvision.datasets.CIFAR100
    monkeypatch.setattr(cls, "train_list", [["train", md5["train"]]])
    monkeypatch.setattr(cls, "test_list", [["test", md5["test"]]])
    monkeypatch.setattr(cls, "meta", dict(cls.meta, md5=md5["meta"]))
    return str(tmp_path), arrays


def wandb_records(path):
    """The protobuf records of a W&B run file (`run-ID.wandb`: a ':W&B' header, then the
    LevelDB log format: 32 KiB blocks of chunks with a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = open(path, "rb").read()
    assert data[:4] == b":W&B", path
    pos, block, buf, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer
            pos += left
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        if kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:    # full
            out.append(chunk)
        elif kind == 2:  # first
            buf = chunk
        elif kind == 3:  # middle
            buf += chunk
        elif kind == 4:  # last
            out.append(buf + chunk)
    return [pb.Record.FromString(c) for c in out]


def wandb_history(path):
    """(run record, [history rows as {key: value}], merged summary) of a W&B run file."""
    import json as _json

    run, rows, summary = None, [], {}
    for r in wandb_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run = r.run
        elif kind == "history":
            rows.append({(i.key or "/".join(i.nested_key)): _json.loads(i.value_json) for i in r.history.item})
        elif kind == "summary":
            summary.update({(u.key or "/".join(u.nested_key)): _json.loads(u.value_json) for u in r.summary.update})
    return run, rows, summary
