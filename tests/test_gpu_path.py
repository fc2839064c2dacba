"""The GPU path, as far as a CPU can check it: the data staging in parts (the device takes at
most 64 MiB a transfer) and benchmarks/gpu.sh end to end at toy size (SMOKE=1)."""
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGE = os.path.join(ROOT, "benchmarks", "stage_data.py")


def fake_cifar100(path, n_train=600, n_test=300):
    g = np.random.default_rng(0)
    np.savez(path, x_train=g.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
             y_train=g.integers(0, 100, n_train), x_test=g.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
             y_test=g.integers(0, 100, n_test))


def stage(*args):
    return subprocess.run([sys.executable, STAGE, *map(str, args)], capture_output=True, text=True, timeout=120)


def test_split_and_join_give_the_same_bytes_and_refuse_a_damaged_part(tmp_path):
    src = tmp_path / "cifar100.npz"
    fake_cifar100(src)
    r = stage("split", src, tmp_path / "parts", "--part-mib", 0.5)
    assert r.returncode == 0, r.stderr
    parts = sorted(p for p in os.listdir(tmp_path / "parts") if ".part" in p)
    assert len(parts) == -(-os.path.getsize(src) // int(0.5 * 2**20))  # ceil(size / part size)
    assert stage("join", tmp_path / "parts", "--parts", "0").returncode == 0  # checked as it arrives
    out = tmp_path / "there" / "cifar100.npz"
    assert stage("join", tmp_path / "parts", out).returncode == 0
    assert hashlib.md5(out.read_bytes()).digest() == hashlib.md5(src.read_bytes()).digest()
    with open(tmp_path / "parts" / parts[1], "r+b") as f:  # one flipped byte
        f.seek(10)
        b = f.read(1)
        f.seek(10)
        f.write(bytes([b[0] ^ 1]))
    again = tmp_path / "again.npz"
    r = stage("join", tmp_path / "parts", again)
    assert r.returncode != 0 and r.stderr.strip() == f"error: part 1 ({tmp_path / 'parts' / parts[1]}) is damaged " \
        "(md5 differs from the manifest)"
    assert not again.exists() and not (tmp_path / "again.npz.tmp").exists()


IMAGE = ("torch", "torchvision", "numpy", "tqdm", "matplotlib", "pyyaml", "packaging")  # what the lent image has


def image_python(root):
    """A Python that holds only what the lent GPU image holds of the project's needs (IMAGE and
    what they need in turn), linked from this environment: a venv whose one extra path is a
    folder of links to those distributions' files."""
    import importlib.metadata as md
    import venv

    from packaging.requirements import Requirement

    seen, todo = set(), list(IMAGE)
    while todo:
        name = todo.pop()
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        for req in dist.requires or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    site = root / "image-site"
    site.mkdir(parents=True)
    for name in seen:
        dist = md.distribution(name)
        for f in dist.files or []:
            top = f.parts[0]
            src = dist.locate_file(top)
            if top.endswith((".pth", "__pycache__")) or ".." in f.parts or not os.path.exists(src):
                continue
            if not (site / top).exists():
                os.symlink(src, site / top)
    venv.create(root / "venv", with_pip=True)
    lib = next((root / "venv" / "lib").glob("python3*")) / "site-packages"
    (lib / "image.pth").write_text(str(site) + "\n")
    return str(root / "venv" / "bin" / "python")


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="bash script")
def test_gpu_script_runs_every_stage_at_toy_size_on_the_image_python_with_carried_wheels(tmp_path):
    """What the lent GPU machine has: a Python with the image's packages only, no network. The
    wheels it lacks are downloaded here (benchmarks/wheels.sh), and gpu.sh installs them without a
    network and runs: staged parts in, the benchmarks, the study's jobs side by side, the report out."""
    python = image_python(tmp_path / "image")
    r = subprocess.run([python, "-c", "import torch, torchvision, matplotlib, yaml\ntry:\n import hydra\nexcept ImportError:"
                        "\n print('no hydra')"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "no hydra", r.stderr  # as bare as the image
    wheels = tmp_path / "wheels"
    r = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "wheels.sh")], cwd=ROOT, capture_output=True,
                       text=True, timeout=600, env=dict(os.environ, WHEELS=str(wheels), PY="%d.%d" % sys.version_info[:2]))
    if r.returncode != 0:
        pytest.skip(f"the package index cannot be reached for the wheels: {r.stderr.strip()[-200:]}")
    src = tmp_path / "cifar100.npz"
    fake_cifar100(src)
    data = tmp_path / "data"
    assert stage("split", src, data / "parts", "--part-mib", 0.5).returncode == 0
    env = dict(os.environ, SMOKE="1", OUTDIR=str(tmp_path / "out"), WANDB_MODE="disabled", PYTHON=python,
               WHEELS=str(wheels), SITE=str(tmp_path / "site"), PYTHONPATH="")
    r = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu.sh"), "all", str(data), "1", "dense,uniform"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert (data / "cifar100.npz").read_bytes() == src.read_bytes()
    assert "images/s" in r.stdout and "operators per step" in r.stdout
    report = (tmp_path / "out" / "report" / "gpu_study" / "results.md").read_text()
    assert "| dense |" in report and "| uniform |" in report
