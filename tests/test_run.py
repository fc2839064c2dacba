"""End to end through run.py: a smoke run, a multirun sweep, CIFAR-100 in the real formats."""
import glob
import json
import os

import pytest

from gated_pruning import experiment

from conftest import SHARED_CIFAR100, make_cfg, run_py


def read_results(d):
    with open(os.path.join(d, "results.json")) as f:
        return json.load(f)


@pytest.mark.slow
def test_smoke_run_leaves_results_json(tmp_path):
    r = run_py("experiment=smoke", "binarizer=threshold", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    res = read_results(tmp_path)
    assert res["config"]["binarizer"]["_target_"].endswith("ThresholdBinarizer")
    assert res["metrics"]["epoch"] == 2 and 0 <= res["metrics"]["test"]["top1"] <= 1
    layers = res["gates"]["layers"]
    assert layers == [f"conv{i}" for i in range(8)]
    final = res["gates"]["final"]
    assert [z + o for z, o in zip(final["zeros"], final["ones"])] == res["gates"]["channels"]
    # history: every log_every=4 steps and every epoch end, 8 steps an epoch
    assert [h["step"] for h in res["gates"]["history"]] == [4, 8, 8, 12, 16, 16]
    assert "test_top1" in res["gates"]["history"][2]
    # the dynamics: quantiles of the latent gates and the mean kept gate, per layer and log step
    for h in res["gates"]["history"]:
        assert len(h["quantiles"]) == 8 and all(len(q) == 5 and q == sorted(q) for q in h["quantiles"])
        assert len(h["nonzero_mean"]) == 8 and h["gamma"] == pytest.approx(res["config"]["gamma"])
    assert all(m == 1.0 for m in final["nonzero_mean"] if m)  # binary gates keep 0 or 1
    # what the run printed is in its folder too, in order
    log = (tmp_path / "run.log").read_text().splitlines()
    epochs = [ln for ln in log if ln.startswith("epoch ")]
    assert [ln.split(":")[0] for ln in epochs] == ["epoch 1", "epoch 2"] and epochs == \
        [ln for ln in r.stderr.splitlines() if ln.startswith("epoch ")]
    assert log[-1].startswith("results: ") and log[-1] == r.stderr.splitlines()[-1]


@pytest.mark.parametrize("gates", [[], ["binarizer=threshold"], ["binarizer=hard_concrete", "penalty=l0"],
                                   ["penalty=polarization", "optimizer.gates.upper=1"]])
@pytest.mark.slow
def test_a_layer_floor_keeps_every_layer_alive_at_a_huge_gamma(gates, tmp_path):
    cfg = make_cfg("experiment=smoke", "gamma=20", "model.min_keep=2", "trainer.epochs=1", *gates)
    res = experiment.run(cfg, str(tmp_path))
    assert res["gates"]["dead_layers"] == [] and res["prune"]["dead_layers"] == []
    assert all(w >= 2 for w in res["prune"]["compact"]["widths"])
    without = experiment.run(make_cfg("experiment=smoke", "gamma=20", "trainer.epochs=1", *gates),
                             str(tmp_path / "no-floor"))
    assert without["gates"]["dead_layers"]  # the same gamma kills layers without the floor


@pytest.mark.slow
def test_multirun_of_two_gammas(tmp_path):
    r = run_py("-m", "experiment=smoke", "gamma=0,0.05", "trainer.epochs=1", f"hydra.sweep.dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    runs = sorted(glob.glob(str(tmp_path / "*" / "results.json")))
    assert len(runs) == 2
    gammas = sorted(json.load(open(p))["config"]["gamma"] for p in runs)
    assert gammas == [0.0, 0.05]


@pytest.mark.slow
def test_apg_zeroes_gates_and_high_gamma_zeroes_more(tmp_path):
    zeros = {}
    for gamma in (0.0, 0.2):
        cfg = make_cfg("experiment=smoke", f"gamma={gamma}", "trainer.epochs=3")
        zeros[gamma] = sum(experiment.run(cfg, str(tmp_path / str(gamma)))["gates"]["final"]["zeros"])
    assert zeros[0.0] == 0 and zeros[0.2] > 0


def test_run_on_torchvision_cifar100_files(cifar100_files, tmp_path):
    root, _ = cifar100_files
    cfg = make_cfg("experiment=smoke", "dataset=cifar100", f"dataset.root={root}",
                   "dataset.download=false", "dataset.batch_size=16", "trainer.epochs=1")
    res = experiment.run(cfg, str(tmp_path))
    assert res["metrics"]["step"] == 60 // 16
    assert os.path.isfile(tmp_path / "results.json")


@pytest.mark.skipif(not os.path.isfile(SHARED_CIFAR100),
                    reason="the real CIFAR-100 (../shared/data/cifar100.npz) is not on this machine")
@pytest.mark.slow
def test_short_run_on_real_cifar100_learns_above_chance(tmp_path):
    cfg = make_cfg("experiment=smoke", "dataset=cifar100", f"dataset.root={os.path.dirname(SHARED_CIFAR100)}",
                   "dataset.train_size=10000", "dataset.test_size=2000", "dataset.batch_size=100",
                   "model.width=0.25", "optimizer.lr=0.05", "trainer.epochs=2")
    res = experiment.run(cfg, str(tmp_path))
    assert res["metrics"]["test"]["top1"] > 0.04, res["metrics"]  # chance is 0.01


def test_plain_baseline_runs_and_prunes_nothing(tmp_path):
    cfg = make_cfg("experiment=smoke", "model.gated=false", "trainer.epochs=1")
    res = experiment.run(cfg, str(tmp_path))
    assert res["gates"]["final"] is None and res["gates"]["history"] == []
    assert res["prune"]["kept"] == {"params": 1.0, "flops": 1.0}
    assert res["prune"]["test"]["compact"] == pytest.approx(res["prune"]["test"]["dense"], abs=1e-4)


def test_a_long_run_says_how_long_it_will_take_and_on_a_cpu_which_preset_fits():
    from gated_pruning.train import eta_line

    # the paper recipe at 1.5 s a step: 160 epochs x 390 steps left = 93,600 s = 26 h 0 min
    line = eta_line(1.5, 160 * 390, 160, "cpu")
    assert line.startswith("estimated time: 26 h 0 min more for 160 epochs (1.50 s a step here; ")
    assert "experiment=cpu_cifar100" in line
    assert eta_line(1.0, 900, 4, "cuda") == ("estimated time: 15 min more for 4 epochs (1.00 s a step here; Ctrl-C "
                                            "saves a checkpoint and prints the command that continues)")
    assert eta_line(0.01, 1000, 2, "cpu") is None  # minutes: nothing said


def test_the_estimate_is_printed_once_after_the_first_steps(tmp_path, monkeypatch, capsys):
    import gated_pruning.train as train
    from gated_pruning import experiment

    ticks = iter(range(0, 10**12, 36000))  # every clock reading ten hours later: a very slow machine

    class Clock:
        @staticmethod
        def perf_counter():
            return float(next(ticks))
    monkeypatch.setattr(train, "time", Clock)
    experiment.run(make_cfg("experiment=smoke", "trainer.epochs=4", "prune.enabled=false"), str(tmp_path))
    said = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("estimated time:")]
    assert len(said) == 1 and "on a CPU, experiment=cpu_cifar100" in said[0]
