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


@pytest.mark.slow
def test_torchrun_with_fine_tuning_after_pruning_ends_cleanly_on_rank_0(tmp_path):
    # issue 26: ranks > 0 left after training and rank 0 built a DDP fine-tuner: a crash (gloo), a hang (nccl)
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        os.path.join(ROOT, "run.py"), *ARGS, "target_flops=0.5", "gamma=0.01",
                        "prune.finetune_epochs=1", f"hydra.run.dir={tmp_path}"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("results: ") == 1 and "Traceback" not in r.stderr
    res = json.load(open(tmp_path / "results.json"))
    tuned = res["prune"]["finetune"]
    # rank 0 fine-tuned the compact network on whole batches: 128 images / 64 a batch = 2 steps
    assert tuned["epochs"] == 1 and res["final"]["test_top1"] == tuned["test"]["top1"]


def test_a_gpu_random_state_is_the_training_devices_own_and_resumes_on_any_gpu(monkeypatch):
    from gated_pruning import checkpoint

    put = {}
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda d: torch.tensor([d.index]))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, d: put.__setitem__(d.index, s))
    state = checkpoint.rng_state(torch.device("cuda", 1))  # saved by rank 0 on cuda:1
    assert state["cuda"].tolist() == [1]
    checkpoint.set_rng_state(state, torch.device("cuda", 3))  # every rank restores it on its own GPU
    assert put[3].tolist() == [1]
    older = {"torch": torch.get_rng_state(), "cuda": [torch.tensor([7]), torch.tensor([8])]}  # every GPU's
    checkpoint.set_rng_state(older, torch.device("cuda", 0))  # a machine with fewer GPUs: no IndexError
    assert put[0].tolist() == [7]
    assert "cuda" not in checkpoint.rng_state(torch.device("cpu"))


def test_deterministic_mode_is_torchs_and_off_again_for_the_next_job():
    from gated_pruning.runtime import set_deterministic

    set_deterministic(True)
    try:
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        set_deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
