"""What a search optimizes: the objective a job returns to a sweeper is the validation top-1 of the
network the run delivers (after a cut and fine-tuning, where a method makes them), unless a
command asks for another; Optuna's presets maximize it; a search that cannot read its objective is
refused before anything runs."""
import glob
import json
import os

import pytest
import yaml

from gated_pruning import objective

from conftest import one_error_line, run_py


def record(trained=(0.5, 0.4), cut=None, tuned=None, flops=0.5):
    """A results.json with (val, test) top-1 of the trained, cut and fine-tuned networks."""
    res = {"metrics": {"val": {"top1": trained[0]}, "test": {"top1": trained[1]}},
           "cost": {"flops_kept": flops, "params_kept": 0.6}}
    if cut is not None:
        res["prune"] = {"val": {"compact": {"top1": cut[0]}}, "test": {"compact": {"top1": cut[1]}},
                        "finetune": None if tuned is None else {"val": {"top1": tuned[0]}, "test": {"top1": tuned[1]}}}
    return res


def test_the_delivered_network_is_the_last_one_a_run_makes():
    assert objective.delivered(record()) == {"val_top1": 0.5, "test_top1": 0.4, "flops_kept": 0.5, "params_kept": 0.6}
    assert objective.delivered(record(cut=(0.1, 0.05)))["val_top1"] == 0.1  # a cut: the network after it
    final = objective.delivered(record(cut=(0.1, 0.05), tuned=(0.45, 0.42)))
    assert (final["val_top1"], final["test_top1"]) == (0.45, 0.42)  # fine-tuned: that network
    assert objective.value(final, "val_top1") == 0.45
    assert objective.value(final, ["val_top1", "flops_kept"]) == [0.45, 0.5]


def test_a_search_that_cannot_read_its_objective_is_refused():
    assert "dataset.val_size=0" in objective.problem("val_top1", 0, ["maximize"])
    assert objective.problem("val_top1", 0, None) is None  # nothing searches: a plain run needs no split
    assert objective.problem("val_top1", 100, ["maximize"]) is None
    assert "one direction per objective" in objective.problem("val_top1", 100, ["maximize", "minimize"])
    assert "flops_kept (maximize, not minimize)" in objective.problem(["val_top1", "flops_kept"], 100,
                                                                      ["maximize", "maximize"])
    assert "optimistic" in objective.on_test("test_top1") and objective.on_test("val_top1") is None


@pytest.mark.slow
def test_refusals_and_the_test_set_warning_come_before_any_work(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = ["-m", "hydra/sweeper=tpe", "experiment=smoke", "gamma=interval(1e-5,1e-2)",
             "hydra.sweeper.n_trials=1"]
    r = run_py(*sweep, f"hydra.sweep.dir={tmp_path / 'a'}")
    assert r.returncode == 2 and "objective=val_top1" in one_error_line(r.stderr) and not (tmp_path / "a").exists()
    r = run_py(*sweep, "hydra/sweeper=pareto", "dataset.val_size=64", f"hydra.sweep.dir={tmp_path / 'b'}")
    assert r.returncode == 2 and "one direction per objective" in one_error_line(r.stderr)
    r = run_py(*sweep, "objective=test_top1", f"hydra.sweep.dir={tmp_path / 'c'}", "trainer.epochs=1")
    assert r.returncode == 0, r.stderr[-2000:]
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "optimistic" in warnings[0], r.stderr


@pytest.mark.slow
def test_an_optuna_search_returns_the_validation_top1_of_the_network_after_the_cut(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    # L1-norm cuts a trained plain network to 40% of its FLOPs, then fine-tunes: what the search
    # is told is the fine-tuned network's validation top-1, not the trained network's, nor test's
    r = run_py("-m", "hydra/sweeper=tpe", "hydra.sweeper.n_trials=2", "experiment=smoke", "method=l1norm",
               "target_flops=0.4", "dataset.val_size=128", "optimizer.lr=tag(log, interval(0.01, 0.1))",
               f"hydra.sweep.dir={tmp_path}", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = [json.load(open(p)) for p in glob.glob(str(tmp_path / "*" / "results.json"))]
    assert len(runs) == 2
    for res in runs:
        tuned = res["prune"]["finetune"]
        assert res["final"]["val_top1"] == tuned["val"]["top1"] and res["final"]["test_top1"] == tuned["test"]["top1"]
        assert res["final"]["flops_kept"] <= 0.4
    best = yaml.safe_load(open(tmp_path / "optimization_results.yaml"))
    assert best["best_value"] == max(res["final"]["val_top1"] for res in runs)
    assert best["best_value"] != max(res["metrics"]["val"]["top1"] for res in runs)  # not the network before the cut


def test_the_sweeper_presets_maximize_validation_top1():
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf", "hydra", "sweeper")
    tpe = yaml.safe_load(open(os.path.join(root, "tpe.yaml")))
    pareto = yaml.safe_load(open(os.path.join(root, "pareto.yaml")))
    assert tpe["direction"] == objective.DIRECTIONS["val_top1"] and tpe["n_trials"] > 0 and tpe["sampler"]["seed"] == 0
    assert pareto["direction"] == [objective.DIRECTIONS[n] for n in ("val_top1", "flops_kept")]
