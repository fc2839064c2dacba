"""The speed levers (bf16 autocast, torch.compile, channels_last, jobs packed by the joblib
launcher) on the CPU, the validation split, and what a record says made it."""
import glob
import json
import os
import subprocess

import pytest
import torch

from gated_pruning import experiment
from gated_pruning.data import Split, hold_out

from conftest import ROOT, make_cfg, run_py

# 8 steps, a gate record at every step, float32 unless a test turns a lever on
STEPS = ["experiment=smoke", "trainer.epochs=1", "trainer.log_every=1", "trainer.amp=false",
         "prune.latency_reps=1", "prune.latency_warmup=0"]


def train(tmp_path, name, *overrides):
    return experiment.run(make_cfg(*STEPS, *overrides), str(tmp_path / name))


def weights(run_dir):
    return torch.load(os.path.join(run_dir, "model.pt"), weights_only=True)["model"]


def one_step(*overrides):
    """(state before, state after one training step) of the smoke network, gates as trained."""
    from gated_pruning.data import build_data

    cfg = make_cfg(*STEPS, *overrides)
    data = build_data(cfg.dataset, torch.device("cpu"), cfg.seed)
    trainer, _ = experiment.build_trainer(cfg, data, torch.device("cpu"))
    state = lambda: {k: v.detach().clone().float() for k, v in trainer.model.state_dict().items()}  # noqa: E731
    before = state()
    trainer._train_step(*next(data.train.epoch(0)))
    with trainer.gates.view():
        return before, state()


def update_differences(a_overrides, b_overrides) -> dict:
    """Per tensor, |update of run b - update of run a| / |update of run a| after one step."""
    w0, a = one_step(*a_overrides)
    _, b = one_step(*b_overrides)
    return {k: float((b[k] - a[k]).norm() / (a[k] - w0[k]).norm()) for k in a if (a[k] - w0[k]).norm() > 0}


GATES = [["method=sss", "target_flops=0.5"], ["method=binary", "gamma=0.05"]]


@pytest.mark.parametrize("gates", GATES)
def test_a_compiled_step_is_the_eager_step_to_float_tolerance(gates):
    diff = update_differences(gates, [*gates, "trainer.compile=true"])
    # inductor reorders reductions (batch norm, max-pool backward): measured 1.2e-3 at most
    assert max(diff.values()) < 1e-2, diff


@pytest.mark.parametrize("gates", [GATES[0], ["method=binary", "target_flops=0.5"],
                                   ["binarizer=hard_concrete", "penalty=l0"]])
@pytest.mark.slow
def test_a_compiled_run_prunes_as_an_eager_run(gates, tmp_path):
    eager = train(tmp_path, "eager", *gates, "trainer.epochs=2")
    compiled = train(tmp_path, "compiled", *gates, "trainer.epochs=2", "trainer.compile=true")
    # rounding differences grow over 16 steps (and compiled code draws other random numbers
    # for stochastic gates): the same behaviour, not the same digits
    channels = sum(eager["gates"]["channels"])
    assert abs(sum(compiled["gates"]["final"]["zeros"]) - sum(eager["gates"]["final"]["zeros"])) <= 0.1 * channels
    assert compiled["prune"]["kept"]["flops"] == pytest.approx(eager["prune"]["kept"]["flops"], abs=0.1)
    assert compiled["prune"]["test"]["compact"] == pytest.approx(compiled["prune"]["test"]["dense"], rel=1e-5)


@pytest.mark.parametrize("gates", GATES + [["method=dense"]])
def test_a_bf16_step_is_the_float32_step_to_bf16_tolerance(gates):
    diff = update_differences(gates, [*gates, "trainer.amp=true"])
    assert diff["classifier.weight"] > 0  # autocast changed the arithmetic
    # bf16 keeps 8 bits of mantissa; the error grows as gradients flow back: measured 1e-3 to 1e-2
    # for the classifier and batch-norm statistics, up to 0.36 for the first conv layers of this
    # tiny network (the plain network alike: the gates add nothing to it)
    assert diff["classifier.weight"] < 0.05 and max(diff.values()) < 0.5, diff


@pytest.mark.slow
def test_a_bf16_run_trains_and_evaluates_in_float32(tmp_path):
    f32 = train(tmp_path, "f32", "method=sss", "target_flops=0.5", "trainer.epochs=2")
    bf16 = train(tmp_path, "bf16", "method=sss", "target_flops=0.5", "trainer.epochs=2", "trainer.amp=true")
    assert bf16["prune"]["kept"]["flops"] == pytest.approx(f32["prune"]["kept"]["flops"], abs=0.05)
    assert bf16["metrics"]["test"]["top1"] == pytest.approx(f32["metrics"]["test"]["top1"], abs=0.15)
    # evaluation is float32: the gated network and its compact network score the same
    assert bf16["prune"]["test"]["compact"] == pytest.approx(bf16["prune"]["test"]["dense"], rel=1e-5)


def test_bf16_autocast_and_channels_last_reach_the_layers(tmp_path):
    from gated_pruning.data import build_data

    cfg = make_cfg(*STEPS, "trainer.amp=true", "trainer.channels_last=true", "method=sss")
    data = build_data(cfg.dataset, torch.device("cpu"), cfg.seed)
    trainer, _ = experiment.build_trainer(cfg, data, torch.device("cpu"))
    seen = []
    conv = trainer.model.features[0].conv
    conv.register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o.dtype, o.is_contiguous(
        memory_format=torch.channels_last))))
    trainer._train_step(*next(data.train.epoch(0)))
    assert seen == [(torch.float32, torch.bfloat16, True)]  # the conv runs in bf16 (autocast casts inside)
    trainer.evaluate()
    assert seen[1][:2] == (torch.float32, torch.float32)  # evaluation: float32


@pytest.mark.slow
def test_joblib_launcher_runs_two_jobs_at_once_with_one_thread_each(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    r = run_py("-m", "experiment=smoke", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1",
               f"hydra.sweep.dir={tmp_path}", env={"OMP_NUM_THREADS": None})
    assert r.returncode == 0, r.stderr[-3000:]
    recs = [json.load(open(p)) for p in sorted(glob.glob(str(tmp_path / "*" / "results.json")))]
    assert [rec["config"]["seed"] for rec in recs] == [0, 1]
    cores = len(os.sched_getaffinity(0))
    assert all(rec["env"]["threads"] == max(1, cores // 2) for rec in recs)
    (s0, e0), (s1, e1) = ((rec["time"]["start"], rec["time"]["end"]) for rec in recs)
    assert s0 < e1 and s1 < e0  # the two jobs ran at the same time, in two processes
    assert recs[0]["env"]["pid"] != recs[1]["env"]["pid"]


def test_a_sweep_of_one_job_under_joblib_gets_every_core(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    r = run_py("-m", "experiment=smoke", "trainer.epochs=1", "hydra/launcher=joblib", "seed=3",
               f"hydra.sweep.dir={tmp_path}", env={"OMP_NUM_THREADS": None})
    assert r.returncode == 0, r.stderr[-3000:]
    (rec,) = [json.load(open(p)) for p in glob.glob(str(tmp_path / "*" / "results.json"))]
    assert rec["env"]["threads"] == len(os.sched_getaffinity(0))  # not the half of a two-job sweep


def test_records_say_what_made_them(tmp_path):
    res = train(tmp_path, "run")
    env = res["env"]
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert env["commit"] == head.stdout.strip() and isinstance(env["dirty"], bool)
    else:
        assert env["commit"] == "unknown"
    assert env["torch"] == torch.__version__ and env["threads"] == torch.get_num_threads()
    assert env["device"] == "cpu" and env["device_name"]
    assert json.load(open(tmp_path / "run" / "results.json"))["env"] == env


def test_the_code_version_is_taken_when_the_run_starts(tmp_path, monkeypatch):
    # a commit made while a long run trains must not be recorded as the code that trained it
    from gated_pruning.train import Trainer

    steps, seen = [], []
    step = Trainer._train_step
    monkeypatch.setattr(Trainer, "_train_step", lambda self, *a: steps.append(1) or step(self, *a))
    monkeypatch.setattr(experiment, "environment", lambda device: seen.append(len(steps)) or {"commit": "abc"})
    res = train(tmp_path, "run")
    assert seen == [0] and steps and res["env"] == {"commit": "abc"}  # before the first training step


def test_a_run_outside_a_checkout_says_unknown(tmp_path):
    from gated_pruning.runtime import code_version

    assert code_version(str(tmp_path)) == {"commit": "unknown", "dirty": "unknown"}


def test_the_held_out_split_is_fixed_balanced_and_disjoint():
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 10, (1000,), generator=g)
    x = torch.arange(1000).view(-1, 1, 1, 1).expand(-1, 3, 1, 1).to(torch.int64)
    rest, val = hold_out(Split(x, y), 100)
    rest2, val2 = hold_out(Split(x, y), 100)
    assert torch.equal(val.x, val2.x)  # one fixed draw, not the run's seed
    ids_val, ids_rest = set(val.x[:, 0, 0, 0].tolist()), set(rest.x[:, 0, 0, 0].tolist())
    assert len(ids_val) == 100 and not ids_val & ids_rest and len(ids_rest) == 900
    assert torch.bincount(val.y, minlength=10).tolist() == [10] * 10  # class-balanced
    assert torch.equal(y[val.x[:, 0, 0, 0]], val.y)  # labels travel with their images


def test_val_is_judged_every_epoch_and_test_read_once(tmp_path):
    res = experiment.run(make_cfg(*STEPS, "trainer.epochs=2", "dataset.val_size=64"), str(tmp_path))
    ends = [h for h in res["gates"]["history"] if "val_top1" in h]
    assert len(ends) == 2 and not any("test_top1" in h for h in res["gates"]["history"])
    assert set(res["metrics"]) >= {"val", "test"} and res["prune"]["val"]["compact"]["top1"] >= 0
    assert [(c["epoch"], c["val_top1"]) for c in res["curve"]] == [(h["epoch"], h["val_top1"]) for h in ends]
    assert res["curve"][-1]["val_top1"] == res["metrics"]["val"]["top1"] and "test_top1" not in res["curve"][0]
    # the seed changes the training order and subsets, never the held-out images
    from gated_pruning.data import build_data

    vals = [build_data(make_cfg(*STEPS, "dataset.val_size=64", f"seed={s}").dataset, "cpu", s).val for s in (0, 3)]
    assert torch.equal(vals[0].x, vals[1].x) and torch.equal(vals[0].y, vals[1].y)


def test_label_smoothing_is_in_the_training_loss_only(tmp_path):
    import torch.nn.functional as F

    from gated_pruning.data import build_data

    cfg = make_cfg(*STEPS, "trainer.label_smoothing=0.2")
    data = build_data(cfg.dataset, torch.device("cpu"), cfg.seed)
    trainer, _ = experiment.build_trainer(cfg, data, torch.device("cpu"))
    x, y = next(data.train.epoch(0))
    with torch.no_grad():
        expected = F.cross_entropy(trainer.model(x), y, label_smoothing=0.2).item()
    trainer._train_step(x, y)
    assert trainer.running.loss_sum.item() / len(y) == pytest.approx(expected, rel=1e-5)
