"""The one reader of run records (gated_pruning/reports/records.py): the labels it decides, the
same for new records and for older ones that lack `target`, and what it does with a record that
is malformed or not a run's."""
import glob
import json
import os

import pytest
import yaml

import stub_records as stub
from gated_pruning.reports import records

from conftest import CONF, ROOT


def test_every_configured_kind_is_declared_once_with_its_labels():
    """The config files and the declarations (gated_pruning/kinds.py) agree: every binarizer,
    gate optimizer and penalty a config names is declared, under the option name of its file."""
    from gated_pruning import kinds

    for group, registry, key in (("binarizer", kinds.BINARIZERS, None), ("penalty", kinds.PENALTIES, None),
                                 ("optimizer", kinds.GATE_OPTIMIZERS, "gates")):
        for path in glob.glob(os.path.join(CONF, group, "*.yaml")):
            node = yaml.safe_load(open(path))
            target = (node[key] if key else node)["_target_"]
            assert target in registry, path
            if group != "optimizer":
                assert registry[target].option == os.path.basename(path)[:-5], path
    for target in kinds.BINARIZERS:
        variant, label = records.gate_labels(target, "gated_pruning.optim.APG")
        assert variant.startswith("apg-") and label == kinds.BINARIZERS[target].label


def old_style(res):
    """The same record as written before `target`, `env` and `time` existed."""
    res = json.loads(json.dumps(res))
    for key in ("target", "env", "time"):
        res.pop(key, None)
    return res


@pytest.mark.parametrize("method,kind", [("sss", "budget"), ("uniform", "uniform"), ("l1norm", "cut"),
                                         ("scratch_e", "arch_run"), ("dense", None)])
def test_a_target_reads_the_same_from_new_and_older_records(method, kind):
    target = None if kind is None else 0.5
    res = stub.record(method, 0, 0.3, target=target, kind=kind)
    if kind == "arch_run":  # the config of a scratch run holds no target: only the source run's
        res["config"]["target_flops"] = None
    new, bad_new = records.read_run(res, "n/results.json", "n")
    old, bad_old = records.read_run(old_style(res), "o/results.json", "o")
    assert not bad_new and not bad_old
    assert (new.target_kind, new.target) == (old.target_kind, old.target) == (kind, target)
    assert new.threads == 1 and new.commit == "0123456789abcdef" and old.threads is None and old.commit is None


def test_a_prune_record_is_a_cut_of_its_run():
    """The record `python -m gated_pruning.reprune RUN --target-flops 0.4 --method l1norm` writes."""
    res = {"config": {"seed": 2, "model": {"gated": False}, "trainer": {"epochs": 4}, "target_flops": None},
           "derived_from": "/runs/dense_s2", "method": "l1norm", "target_flops": 0.4,
           "metrics": {"test": {"top1": 0.31}}, "gates": {},
           "prune": {"test": {"dense": {"top1": 0.31}, "compact": {"top1": 0.02}},
                     "finetune": {"epochs": 1, "test": {"top1": 0.29}, "val": {"top1": 0.33}},
                     "val": {"dense": {"top1": 0.35}, "compact": {"top1": 0.03}}}}
    run, bad = records.read_run(res, "c/results.json", "c")
    assert not bad and run.derived and run.method == "l1norm" and run.gates == "-"
    assert (run.target_kind, run.target, run.epochs_label, run.stage) == ("cut", 0.4, "4+1", "finetuned")
    assert (run.final, run.final_val, run.test["trained"], run.val["trained"]) == (0.29, 0.33, 0.31, 0.35)


def test_the_gamma_in_effect_at_the_end():
    frozen, _ = records.read_run(stub.record("sss", 0, 0.3, gamma=2e-3), "a", "a")
    assert frozen.gamma_end == 0.0 and frozen.gamma_at_freeze == 2e-3  # the freeze turned the penalty off
    running, _ = records.read_run(stub.record("sss", 0, 0.3, gamma_final=4e-3, frozen=False), "b", "b")
    assert running.gamma_end == 4e-3 and running.gamma_at_freeze is None and running.gamma == 1e-3
    fixed, _ = records.read_run(stub.record("sss", 0, 0.3, target=None, kind=None, gamma_final=1e-3), "c", "c")
    assert fixed.fixed_gamma == 1e-3 and frozen.fixed_gamma is None


def test_malformed_fields_are_named_null_ones_are_not():
    res = stub.record("sss", 0, 0.3)
    res["metrics"]["test"] = "abc"  # not an object: one problem, not one per field below it
    res["config"]["seed"] = 1.5
    res["gates"]["history"][3]["zeros"] = [1, 2]  # a shortened entry: left out, named
    res["prune"]["finetune"] = None  # null: nothing to say
    res["env"]["threads"] = "two"
    run, bad = records.read_run(res, "x", "x")
    assert sorted(p for p, _ in bad) == ["config.seed", "env.threads", "gates.history", "metrics.test"]
    assert run.seed is None and run.test["trained"] is None and run.threads is None
    assert len(run.history) == len(res["gates"]["history"]) - 1 and run.test["cut"] == 0.3


def test_records_that_are_not_a_runs_are_skipped_with_a_warning(tmp_path, capsys):
    stub.write(tmp_path, "good", stub.record("sss", 0, 0.3))
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "results.json").write_text("[1, 2]")
    (tmp_path / "noconfig").mkdir()
    (tmp_path / "noconfig" / "results.json").write_text(json.dumps({"metrics": "abc", "gates": 5}))
    runs = records.load(str(tmp_path))
    err = capsys.readouterr().err.strip().splitlines()
    assert [r.name for r in runs] == ["good"] and len(err) == 2
    assert err[0] == f"warning: skipping {tmp_path / 'list' / 'results.json'}: not the record of a run (not a JSON object)"
    assert err[1].endswith("noconfig/results.json: not the record of a run (no config)")
    os.remove(tmp_path / "good" / "results.json")
    with pytest.raises(records.ReportError, match="no readable results.json under"):
        records.load(str(tmp_path))


def test_every_committed_record_reads_without_a_warning():
    for path in glob.glob(os.path.join(ROOT, "docs", "runs", "*", "*", "results.json")):
        _, bad = records.read_run(json.load(open(path)), path, "x")
        assert not bad, (path, bad)
