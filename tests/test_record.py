"""results.json's schema: the one builder, the upgrade of older records, and every committed record
still read (docs/runs/)."""
import json
import os

import pytest

from gated_pruning import record
from gated_pruning.objective import delivered
from gated_pruning.reports import records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = os.path.join(ROOT, "docs", "runs")


def sections(**extra):
    base = {"config": {"model": {"gated": True}, "target_flops": 0.5, "budget": {"enabled": True}},
            "metrics": {"val": {"top1": 0.41}, "test": {"top1": 0.42}},
            "prune": {"test": {"compact": {"top1": 0.40}}, "val": {"compact": {"top1": 0.39}},
                      "finetune": {"test": {"top1": 0.45}, "val": {"top1": 0.44}}},
            "cost": {"flops_kept": 0.5, "params_kept": 0.7},
            "target": {"kind": "budget", "flops": 0.5}}
    base.update(extra)
    return base


def test_the_builder_puts_the_schema_first_and_computes_final_from_the_sections():
    rec = record.build(sections(final={"test_top1": 0.99}, schema=0))
    assert list(rec)[0] == "schema" and rec["schema"] == record.SCHEMA
    # the fine-tuned network is the one delivered; a hand-written `final` is never kept
    assert rec["final"] == {"val_top1": 0.44, "test_top1": 0.45, "flops_kept": 0.5, "params_kept": 0.7}


def test_a_record_of_this_schema_is_read_as_it_is():
    rec = record.build(sections())
    assert record.upgrade(rec) is rec


@pytest.mark.parametrize("config,extra,kind,flops", [
    ({"model": {"gated": True}, "target_flops": 0.5}, {}, "budget", 0.5),  # before `budget` existed
    ({"model": {"gated": True}, "target_flops": 0.5, "budget": {"enabled": False}}, {}, None, None),
    ({"model": {"gated": False}, "target_flops": 0.3, "arch": {"source": "uniform"}}, {}, "uniform", 0.3),
    ({"model": {"gated": False}, "target_flops": None, "arch": {"source": "run"}}, {"target_flops": 0.5},
     "arch_run", 0.5),
    ({"model": {"gated": False}, "prune": {"target_flops": 0.7}}, {}, "cut", 0.7),
    ({"model": {"gated": False}}, {"derived_from": "/r", "target_flops": 0.4}, "cut", 0.4),
    ({"model": {"gated": False}}, {"derived_from": "/r", "target_flops": None}, None, None),
    ({"model": {"gated": False}}, {}, None, None),
])
def test_an_older_record_gets_the_target_its_keys_meant(config, extra, kind, flops):
    old = {"config": config, "metrics": {"test": {"top1": 0.3}}, **extra}
    new = record.upgrade(old)
    assert new["schema"] == record.SCHEMA and new["target"] == {"kind": kind, "flops": flops}
    assert new["final"] == {"val_top1": None, "test_top1": 0.3, "flops_kept": None, "params_kept": None}
    assert "schema" not in old and "target" not in old  # the record read is left alone


def test_an_older_record_keeps_the_target_and_final_it_has():
    old = {**sections(target={"kind": "uniform", "flops": 0.3}), "final": {"test_top1": 0.5}}
    new = record.upgrade(old)
    assert new["target"] == {"kind": "uniform", "flops": 0.3} and new["final"] == {"test_top1": 0.5}


def test_an_older_record_with_a_broken_section_reads_without_final():
    new = record.upgrade({"config": {}, "prune": {"test": "oops"}})
    assert new["final"] is None and new["schema"] == record.SCHEMA


@pytest.mark.parametrize("schema,says", [(record.SCHEMA + 1, "newer than this code reads"),
                                         ("1", "not a version number"), (True, "not a version number"),
                                         (-1, "not a version number")])
def test_a_record_of_a_newer_or_unknown_schema_is_refused(schema, says):
    with pytest.raises(record.RecordError, match=says):
        record.upgrade({"schema": schema, "config": {}})


def test_a_report_skips_a_record_of_a_newer_schema_with_one_line(tmp_path, capsys):
    for name, schema in (("a", record.SCHEMA), ("b", record.SCHEMA + 1)):
        (tmp_path / name).mkdir()
        (tmp_path / name / record.RESULTS).write_text(json.dumps({**record.build(sections()), "schema": schema}))
    runs = records.load(str(tmp_path))
    assert [r.name for r in runs] == ["a"]
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "b/results.json" in err and "newer than this code reads" in err


def committed():
    return records.find_results(RUNS) if os.path.isdir(RUNS) else []


@pytest.mark.skipif(not committed(), reason="no committed records (docs/runs/) in this checkout")
def test_every_committed_record_still_reads(capsys):
    """Each record under docs/runs/, of whatever schema, upgrades to this one and reads as a run
    without a malformed field; where it holds `final`, the upgrade recomputes the same."""
    paths = committed()
    for path in paths:
        with open(path) as fh:
            raw = json.load(fh)
        rec = record.read(path)
        assert rec["schema"] == record.SCHEMA, path
        assert isinstance(rec["target"], dict) and set(rec["target"]) >= {"kind", "flops"}, path
        assert rec["target"]["kind"] in (None, *records.TARGET_KINDS), path
        assert isinstance(rec["final"], dict), path
        if "final" in raw:
            assert raw["final"] == delivered(raw), path
        run, bad = records.read_run(raw, path, os.path.relpath(path, RUNS))
        assert not bad, (path, bad)
        assert run.final is not None, path
    assert len(records.load(RUNS)) == len(paths)
    assert "warning" not in capsys.readouterr().err
