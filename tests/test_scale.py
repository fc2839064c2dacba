"""Scale-out with existing engines: torchrun + DDP (gloo on CPU) and Hydra's submitit launcher."""
import glob
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, run_py

# two steps without augmentation: max-pool ties on zero padding would let float rounding pick
# different maxima, which is rounding too, but grows faster than a tolerance can say
# float32 (amp off): the comparison is of the parallel arithmetic, not of bf16 rounding
ARGS = ["experiment=smoke", "dataset.train_size=128", "dataset.pad=0", "dataset.flip=false", "trainer.amp=false",
        "trainer.epochs=1", "trainer.log_every=1", "prune.latency_reps=1", "prune.latency_warmup=0"]


@pytest.mark.slow
@pytest.mark.parametrize("binarizer", ["none", "stochastic"])
def test_two_process_ddp_matches_one_process(binarizer, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    r = run_py(*ARGS, f"binarizer={binarizer}", f"hydra.run.dir={one}")
    assert r.returncode == 0, r.stderr
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    r2 = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                         os.path.join(ROOT, "run.py"), *ARGS, f"binarizer={binarizer}", f"hydra.run.dir={two}"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert r2.stderr.count("results: ") == 1  # rank 0 alone reports
    a = torch.load(one / "model.pt", weights_only=True)["model"]
    b = torch.load(two / "model.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    # weights, gates, BN running statistics: the global batch on both sides. Tolerance: the same
    # one-process run with 1 instead of 2 threads already differs by ~2e-5 after these 2 steps
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-4, msg=k)
    ra, rb = (json.load(open(d / "results.json")) for d in (one, two))
    assert rb["metrics"]["step"] == ra["metrics"]["step"] == 2
    assert rb["metrics"]["train"]["loss"] == pytest.approx(ra["metrics"]["train"]["loss"], rel=1e-5)
    assert rb["metrics"]["test"]["loss"] == pytest.approx(ra["metrics"]["test"]["loss"], rel=1e-4)
    assert rb["gates"]["history"][-1]["zeros"] == ra["gates"]["history"][-1]["zeros"]


@pytest.mark.slow
def test_two_process_ddp_trains_under_bf16_autocast(tmp_path):
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        os.path.join(ROOT, "run.py"), *ARGS, "trainer.amp=true", f"hydra.run.dir={tmp_path}"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.load(open(tmp_path / "results.json"))
    assert res["config"]["trainer"]["amp"] and res["metrics"]["step"] == 2


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_sweep(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    r = run_py("-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", *ARGS,
               "gamma=0,0.05", f"hydra.sweep.dir={tmp_path}", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = sorted(glob.glob(str(tmp_path / "*" / "results.json")))
    assert len(runs) == 2
    assert sorted(json.load(open(p))["config"]["gamma"] for p in runs) == [0.0, 0.05]


def test_slurm_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir

    from conftest import CONF

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.gpus_per_node == 1
