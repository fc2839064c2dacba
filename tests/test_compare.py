"""The matched-FLOPs comparison (`python -m gated_pruning.reports.compare`): rows aggregated over
seeds, val and test, paired differences by seed within one thread setting, what made the runs,
gamma windows, the docs page's sections, and its output written staged or not at all."""
import errno
import json
import os
import subprocess
import sys

import pytest

import stub_records as stub
from gated_pruning.reports import compare, output, records
from gated_pruning.reports.records import ReportError

from conftest import ROOT, snapshot

PAGE = os.path.join(ROOT, "docs", "results.md")


def first_table(text):
    """The lines of the first markdown table in `text`."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def table_by(text, header):
    """{first cell: cells} of the table whose header row starts with `header`."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(header))
    rows = {}
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        cells = [c.strip() for c in ln.strip("|").split("|")]
        rows.setdefault(cells[0], []).append(cells)
    return rows


def fake(method, seed, top1, target=0.5, flops=0.5, tuned=None):
    res = {"config": {"seed": seed, "model": {"gated": method != "dense"}, "target_flops": target,
                      "binarizer": {"_target_": "gated_pruning.gates.NoBinarizer"}},
           "choices": {"method": method}, "target_flops": target,
           "metrics": {"test": {"top1": top1}},
           "prune": {"test": {"compact": {"top1": top1}}, "kept": {"flops": flops, "params": flops}},
           "cost": {"flops_kept": flops, "params_kept": flops}}
    if tuned is not None:
        res["prune"]["finetune"] = {"test": {"top1": tuned}}
    return res


def test_comparison_aggregates_seeds_and_keeps_the_docs_page_in_step(tmp_path):
    runs = [fake("dense", s, t, None, 1.0) for s, t in ((0, 0.30), (1, 0.32))]
    runs += [fake("uniform", s, t) for s, t in ((0, 0.28), (1, 0.29), (2, 0.27))]
    runs += [fake("l1norm", 0, 0.10, tuned=0.25)]
    sss = fake("sss", 0, 0.27)  # a gated training run: what its gates kept is listed
    sss["prune"]["compact"] = {"widths": [4, 30]}
    sss["cost"]["reference"] = {"widths": [16, 32]}
    sss["gates"] = {"final": {"nonzero_mean": [0.5, 0.31]}}
    runs += [sss]
    for i, r in enumerate(runs):
        (tmp_path / "runs" / str(i)).mkdir(parents=True)
        (tmp_path / "runs" / str(i) / "results.json").write_text(json.dumps(r))
    readme = tmp_path / "results.md"
    readme.write_text("intro\n<!-- results:t -->\nold\n<!-- /results:t -->\nend\n")
    table = compare.write("t", [str(tmp_path / "runs")], str(tmp_path / "out"), str(readme))
    rows = [ln.split("|")[1:-1] for ln in first_table(table)[2:]]
    by = {r[0].strip(): [c.strip() for c in r] for r in rows}
    assert by["dense"][10] == "31.00 ± 1.41" and by["dense"][11] == "-" and by["dense"][12] == "2 (0, 1)"
    assert by["uniform"][10] == "28.00 ± 1.00" and by["uniform"][5] == "50.00"
    assert by["l1norm"][8] == "10.00" and by["l1norm"][9] == "25.00" and by["l1norm"][10] == "25.00"
    text = readme.read_text()
    assert output.section(text, "t") == table and text.startswith("intro") and text.endswith("end\n")
    assert (tmp_path / "out" / "t" / "accuracy_vs_flops.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 6 | sss | float | 0.5 | 0 | 4/16 30/32 | 0 | 0.31 |" in (tmp_path / "out" / "t" / "results.md").read_text()
    # one row per run folder: exploratory variants that share a method
    table = compare.write("v", [str(tmp_path / "runs")], str(tmp_path / "out"), label="dir")
    rows = {ln.split("|")[1].strip(): ln.split("|")[11].strip() for ln in first_table(table)[2:]}
    assert rows == {"0": "30.00", "1": "32.00", "2": "28.00", "3": "29.00", "4": "27.00", "5": "25.00", "6": "27.00"}
    # a page without the section is refused before anything is written
    with pytest.raises(ReportError, match="no section"):
        compare.write("w", [str(tmp_path / "runs")], str(tmp_path / "out"), str(readme))
    assert not (tmp_path / "out" / "w").exists()


def test_docs_page_results_are_the_committed_reports():
    """Every generated section of docs/results.md equals the tables its report command committed,
    and the README holds none (it links to the page)."""
    text = open(PAGE).read()
    names = output.section_names(text)
    assert names, "docs/results.md has no generated results section"
    for name in names:
        committed = open(os.path.join(ROOT, "docs", "results", name, "results.md")).read()
        section = output.section(text, name)
        assert section is not None and section in committed, name
    assert output.section_names(open(os.path.join(ROOT, "README.md")).read()) == []


def test_every_figure_of_the_readme_headline_is_in_a_committed_report():
    """The README's headline is prose, but each of its figures (a number with decimals: top-1,
    FLOPs, a spread, a paired difference) is printed by a report in docs/results/, so none is
    copied by hand or left behind when a report changes."""
    import glob
    import re
    readme = open(os.path.join(ROOT, "README.md")).read()
    headline = readme.split("<!-- headline -->", 1)[1].split("<!-- /headline -->", 1)[0]
    reports = "".join(open(p).read() for p in glob.glob(os.path.join(ROOT, "docs", "results", "*", "results.md")))
    figures = re.findall(r"(?<![\d.])[-+]?\d+\.\d+", headline)
    assert figures, "the headline has no figure"
    for figure in figures:
        assert re.search(rf"(?<![\d.]){re.escape(figure)}(?![\d])", reports), f"{figure} is in no report"


def test_gamma_window_is_the_span_of_gammas_that_keep_20_to_90_percent_with_no_dead_layer(tmp_path):
    """Fixed-gamma runs: the window by hand, a dead layer or too few FLOPs put a gamma outside."""
    cases = [(1e-4, 0.95, []), (3e-4, 0.80, []), (1e-3, 0.50, []), (3e-3, 0.25, []), (1e-2, 0.40, ["conv3"]),
             (3e-2, 0.10, [])]
    for i, (gamma, flops, dead) in enumerate(cases):
        r = fake("sss", 0, 0.2, target=None, flops=flops)
        r["config"]["gamma"] = gamma
        r["prune"]["dead_layers"] = dead
        (tmp_path / "runs" / str(i)).mkdir(parents=True)
        (tmp_path / "runs" / str(i) / "results.json").write_text(json.dumps(r))
    readme = tmp_path / "results.md"
    readme.write_text("<!-- results:g -->\n<!-- /results:g -->\n")
    body = compare.write("g", [str(tmp_path / "runs")], str(tmp_path / "out"), str(readme))
    # in the window: 3e-4, 1e-3, 3e-3 (1e-4 keeps 95%, 1e-2 has a dead layer, 3e-2 keeps 10%)
    assert "- sss, float: gammas 0.0003 to 0.003 keep 20-90% of the FLOPs with no dead layer, " \
        "a window of 1.00 decades" in body
    assert "| sss | float | 0.01 | 40.0 | 1 | 20.00 | - | no |" in body
    assert "\n".join(first_table(body)).count("| sss (gamma ") == 6  # one row per gamma in the main table: no gamma is a seed
    assert output.section(readme.read_text(), "g") == body
    assert body in (tmp_path / "out" / "g" / "results.md").read_text()
    # a gamma outside between two inside ones: the gammas inside are not an interval, no width
    r = fake("sss", 0, 0.2, target=None, flops=0.95)
    r["config"]["gamma"] = 2e-3
    (tmp_path / "runs" / "gap").mkdir()
    (tmp_path / "runs" / "gap" / "results.json").write_text(json.dumps(r))
    r = fake("slimming", 0, 0.2, target=None, flops=1.0)  # and a method with no gamma inside
    r["config"]["gamma"] = 1e-4
    (tmp_path / "runs" / "none").mkdir()
    (tmp_path / "runs" / "none" / "results.json").write_text(json.dumps(r))
    body = compare.write("g", [str(tmp_path / "runs")], str(tmp_path / "out2"), None)
    assert "- sss, float: the gammas that keep 20-90% of the FLOPs with no dead layer (0.0003, 0.001, 0.003) " \
        "are not one interval: a gamma between them does not; no window" in body and "decades" not in body
    assert "- slimming, float: no gamma tried keeps 20-90% of the FLOPs with no dead layer (tried: 0.0001)" in body


# ------------------------------------------------------------------ new in the reports package

def write_runs(root, runs):
    for name, res in runs.items():
        stub.write(root, name, res)
    return str(root)


def paired_rows(body, method):
    return [cells for cells in table_by(body, "| method | gates | target FLOPs | epochs | thread setting").get(method, [])]


def test_paired_differences_by_seed_computed_by_hand(tmp_path):
    """sss minus uniform and minus dense, per seed, over the seeds both have (seed 3 has no partner)."""
    runs = {f"dense_s{s}": stub.record("dense", s, t, v, 1.0, None, None) for s, t, v in
            ((0, 0.30, 0.40), (1, 0.32, 0.41), (2, 0.31, 0.39))}
    runs |= {f"uniform_s{s}": stub.record("uniform", s, t, v, 0.5, 0.5, "uniform") for s, t, v in
             ((0, 0.28, 0.38), (1, 0.29, 0.37), (2, 0.27, 0.36))}
    runs |= {f"sss_s{s}": stub.record("sss", s, t, v) for s, t, v in ((0, 0.285, 0.39), (1, 0.27, 0.36), (3, 0.25, 0.35))}
    body = compare.write("p", [write_runs(tmp_path / "runs", runs)], str(tmp_path / "out"))
    # test: vs uniform 0.005, -0.02; vs dense -0.015, -0.05. val: vs uniform 0.01, -0.01; vs dense -0.01, -0.05
    [sss] = paired_rows(body, "sss")
    assert sss[4:] == ["1 thread (stub)", "-0.75 ± 1.77 (n=2)", "+0.00 ± 1.41 (n=2)", "-3.25 ± 2.47 (n=2)",
                       "-3.00 ± 2.83 (n=2)"]
    [uniform] = paired_rows(body, "uniform")  # uniform is paired with dense only: 3 seeds
    assert uniform[5:7] == ["-", "-"] and uniform[7] == "-3.00 ± 1.00 (n=3)"
    assert paired_rows(body, "dense") == []
    # val and test columns: mean ± std over the row's seeds, test and val of the same network
    main = table_by(body, "| method | gates | target FLOPs | epochs | train compute")
    assert main["sss"][0][10:13] == ["26.83 ± 1.76", "36.67 ± 2.08", "3 (0, 1, 3)"]
    assert main["dense"][0][10:12] == ["31.00 ± 1.00", "40.00 ± 1.00"]
    # what made the runs: the target's meaning, the gamma each budget ended with, threads, commits
    prov = table_by(body, "| method | gates | target FLOPs | epochs | target is")
    assert prov["sss"][0][4:] == ["budget (gamma controlled)", ", ".join(["0 (frozen; 0.001 before)"] * 3), "1",
                                  "0123456"]
    assert prov["uniform"][0][4:6] == ["uniform width", "-"] and prov["dense"][0][4] == "-"
    saved = json.loads((tmp_path / "out" / "p" / "runs.json").read_text())
    assert {r["val"]["final"] for r in saved if r["method"] == "sss"} == {0.39, 0.36, 0.35}


def test_scratch_b_is_paired_with_the_dense_run_of_the_same_training_compute(tmp_path):
    """Scratch-B trains a half-FLOPs network 8 epochs: the compute of 4 dense epochs (8 x 0.5),
    so its dense partner is the 4-epoch run, not the 8-epoch one; Scratch-E (4 epochs) the same."""
    runs = {"dense_e4": stub.record("dense", 0, 0.30, 0.31, 1.0, None, None, epochs=4),
            "dense_e8": stub.record("dense", 0, 0.40, 0.41, 1.0, None, None, epochs=8),
            "scratch_e": stub.record("scratch_e", 0, 0.27, 0.29, 0.5, 0.5, "arch_run", epochs=4),
            "scratch_b": stub.record("scratch_b", 0, 0.33, 0.32, 0.5, 0.5, "arch_run", epochs=8)}
    runs["scratch_b"]["config"]["arch"]["epochs"] = "flops"
    runs["scratch_e"]["config"]["arch"]["epochs"] = "same"
    body = compare.write("b", [write_runs(tmp_path / "runs", runs)], str(tmp_path / "out"))
    [b] = paired_rows(body, "scratch_b")
    assert b[3] == "8" and b[7:] == ["+3.00 (n=1)", "+1.00 (n=1)"]  # 0.33 - 0.30, 0.32 - 0.31
    [e] = paired_rows(body, "scratch_e")
    assert e[3] == "4" and e[7:] == ["-3.00 (n=1)", "-2.00 (n=1)"]


def test_two_budget_controllers_are_two_rows_named_by_what_differs_from_the_method(tmp_path):
    """sss runs with the preset's controller and with budget.reopen=true are never averaged; a
    binary record from before freeze_on_target/reopen existed is labelled with what it lacked
    against today's method=binary (conf/method/binary.yaml: ramp 0.3, both on)."""
    runs = {f"sss_s{s}": stub.record("sss", s, 0.30 + s / 100) for s in (0, 1)}
    runs |= {f"sss_reopen_s{s}": stub.record("sss", s, 0.20 + s / 100) for s in (0, 1)}
    runs["old_binary"] = stub.record("binary", 0, 0.25, binarizer="threshold")
    runs["binary"] = stub.record("binary", 1, 0.26, binarizer="threshold")
    for s in (0, 1):
        runs[f"sss_reopen_s{s}"]["config"]["budget"].update(reopen=True, ramp=0.5)
        runs[f"sss_s{s}"]["config"]["budget"].update(reopen=False, ramp=0.5)
    runs["old_binary"]["config"]["budget"].update(ramp=0.5)
    runs["binary"]["config"]["budget"].update(ramp=0.3, freeze_on_target=True, reopen=True)
    body = compare.write("c", [write_runs(tmp_path / "runs", runs)], str(tmp_path / "out"))
    main = table_by(body, "| method | gates | target FLOPs | epochs | train compute")
    assert main["sss"][0][10] == "30.50 ± 0.71" and main["sss (budget.reopen=true)"][0][10] == "20.50 ± 0.71"
    assert main["binary"][0][10] == "26.00"
    assert main["binary (budget.ramp=0.5, budget.freeze_on_target=false, budget.reopen=false)"][0][10] == "25.00"


def test_runs_are_never_paired_across_thread_settings(tmp_path):
    runs = {"dense_1t": stub.record("dense", 0, 0.33, None, 1.0, None, None, threads=1),
            "dense_old": stub.record("dense", 0, 0.30, None, 1.0, None, None, env=False),
            "uniform_1t": stub.record("uniform", 0, 0.28, None, 0.5, 0.5, "uniform", threads=1, dirty=True),
            "sss_2t": stub.record("sss", 0, 0.27, threads=2, commit="fedcba9876"),
            "sss_old": stub.record("sss", 0, 0.28, env=False)}
    body = compare.write("t", [write_runs(tmp_path / "runs", runs)], str(tmp_path / "out"))
    # a row per setting, named by it; sss at 2 threads has no reference at 2 threads; the records
    # without env pair with each other only
    unknown, two, one = " [unknown (records without env)]", " [2 threads (stub)]", " [1 thread (stub)]"
    [sss] = paired_rows(body, "sss" + unknown)
    assert sss[4:] == ["unknown (records without env)", "-", "-", "-2.00 (n=1)", "-"]
    assert paired_rows(body, "sss" + two) == []
    [uniform] = paired_rows(body, "uniform" + one)
    assert uniform[4] == "1 thread (stub)" and uniform[7] == "-5.00 (n=1)"  # against the 1-thread dense run only
    prov = table_by(body, "| method | gates | target FLOPs | epochs | target is")
    assert prov["sss" + two][0][6:] == ["2", "fedcba9"] and prov["sss" + unknown][0][6:] == ["-", "-"]
    assert prov["uniform" + one][0][7] == "0123456 (dirty)"


def test_a_malformed_record_is_one_warning_line_and_the_rest_is_reported(tmp_path, capsys):
    broken = stub.record("sss", 1, 0.27)
    broken["prune"]["test"]["compact"]["top1"] = "27%"  # hand-edited
    broken["prune"]["compact"]["widths"] = broken["prune"]["compact"]["widths"][:5]  # a shortened list
    runs = {"a": stub.record("sss", 0, 0.28), "b": broken}
    root = write_runs(tmp_path / "runs", runs)
    assert compare.main(["m", root, "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"warning: {os.path.join(root, 'b', 'results.json')}: malformed ")
    assert "prune.test.compact.top1 is \"27%\", not a finite number" in err
    assert "prune.compact.widths has 5 entries, the dense widths are 13" in err
    main = table_by((tmp_path / "out" / "m" / "results.md").read_text(), "| method | gates | target FLOPs")
    # the broken run's cut top-1 counts as missing, never replaced by its trained top-1
    assert main["sss"][0][8] == "28.00" and main["sss"][0][10] == "28.00" and main["sss"][0][12] == "2 (0, 1)"


def test_names_outside_out_and_foreign_folders_are_refused_and_nothing_changes(tmp_path):
    root = write_runs(tmp_path / "runs", {"a": stub.record("sss", 0, 0.28)})
    out = tmp_path / "out"
    (out / "taken").mkdir(parents=True)
    (out / "taken" / "notes.md").write_text("mine")
    before = snapshot(tmp_path)
    for name, needle in (("../escape", "plain folder name"), (str(tmp_path / "abs"), "plain folder name"),
                         ("..", "plain folder name"), ("taken", "holds files this tool did not write")):
        r = subprocess.run([sys.executable, "-m", "gated_pruning.reports.compare", name, root, "--out", str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr
        assert snapshot(tmp_path) == before and sorted(os.listdir(tmp_path)) == ["out", "runs"]
    # a bad flag is one line too, like every other tool
    r = subprocess.run([sys.executable, "-m", "gated_pruning.reports.compare", "x"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "required: dirs" in r.stderr


def test_the_comparison_replaces_only_its_own_earlier_folder(tmp_path):
    root = write_runs(tmp_path / "runs", {"a": stub.record("sss", 0, 0.28)})
    out = tmp_path / "out"
    compare.write("own", [root], str(out))
    stub.write(tmp_path / "runs", "b", stub.record("sss", 1, 0.26))
    compare.write("own", [root], str(out))  # its own folder (marker): replaced whole
    assert "2 run records" in (out / "own" / "results.md").read_text()
    assert sorted(os.listdir(out)) == ["own"] and sorted(os.listdir(out / "own")) == sorted(
        [output.MARKER, *compare.FILES])
    # a folder written before markers existed, by gated_pruning.evidence: its own files only
    (out / "old").mkdir()
    (out / "old" / "results.md").write_text("# old\n\nWritten by `python -m gated_pruning.evidence old x` from 1 run.")
    (out / "old" / "runs.json").write_text("[]")
    compare.write("old", [root], str(out))
    assert "reports.compare old" in (out / "old" / "results.md").read_text()
    (out / "other").mkdir()  # the same files plus one it never writes: not its folder
    (out / "other" / "results.md").write_text("# other\n\nWritten by `python -m gated_pruning.evidence other x`")
    (out / "other" / "keep.txt").write_text("mine")
    before = snapshot(out / "other")
    with pytest.raises(ReportError, match="did not write"):
        compare.write("other", [root], str(out))
    assert snapshot(out / "other") == before


def test_a_full_disk_leaves_the_docs_page_intact_and_writes_nothing(tmp_path, monkeypatch, capsys):
    root = write_runs(tmp_path / "runs", {"a": stub.record("sss", 0, 0.28)})
    docs = tmp_path / "docs"
    docs.mkdir()
    page = docs / "results.md"
    page.write_text("# Results\n\n" + "prose\n" * 200 + "<!-- results:r -->\nold table\n<!-- /results:r -->\n"
                    + "more prose\n" * 40)
    before, page_bytes = snapshot(docs), page.read_bytes()
    write = output.write_text

    def full_disk(path, text):
        if os.path.basename(path).startswith(".results.md.tmp-"):  # the page's new version: half, then ENOSPC
            with open(path, "w") as f:
                f.write(text[:len(text) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write(path, text)
    monkeypatch.setattr(output, "write_text", full_disk)
    code = compare.main(["r", root, "--out", str(tmp_path / "out"), "--page", str(page)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "No space left on device" in err and "unchanged" in err
    assert len(err.strip().splitlines()) == 1
    assert page.read_bytes() == page_bytes and snapshot(docs) == before  # no temporary file left either
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(output, "write_text", write)  # with room: the section is replaced, the rest kept
    body = compare.write("r", [root], str(tmp_path / "out"), str(page))
    text = page.read_text()
    assert output.section(text, "r") == body and "old table" not in text
    assert text.count("prose\n") == 240 and sorted(os.listdir(docs)) == ["results.md"]


def test_budget_gamma_and_target_meaning_come_from_the_reader(tmp_path):
    """One reader: the same record labelled the same in both views."""
    res = stub.record("binary", 0, 0.27, binarizer="threshold")
    run, bad = records.read_run(res, "x/results.json", "x")
    assert not bad and run.gates == "binary (threshold STE)" and run.variant == "apg-threshold"
    assert (run.target_kind, run.target, run.gamma_end, run.gamma_at_freeze) == ("budget", 0.5, 0.0, 1e-3)


def test_what_the_gates_kept_names_the_residual_blocks_removed(tmp_path):
    from gated_pruning.reports import compare

    from stub_records import record

    res = record(method="sss", seed=0)
    names = ["block0.inner", "block0", "block1.inner", "block1", "block2.inner", "block2"]
    res["gates"]["layers"] = names
    res["gates"]["channels"] = [8, 1, 8, 1, 8, 1]
    res["gates"]["final"] = {"zeros": [0] * 6, "nonzero_mean": [0.5] * 6}
    res["gates"]["history"] = []
    res["prune"]["compact"]["widths"] = [4, 1, 0, 0, 8, 1]
    res["prune"]["dense"]["widths"] = [8, 1, 8, 1, 8, 1]
    res["prune"]["kinds"] = ["channels", "block"] * 3
    res["cost"]["reference"]["widths"] = [8, 1, 8, 1, 8, 1]
    (tmp_path / "runs" / "r").mkdir(parents=True)
    (tmp_path / "runs" / "r" / "results.json").write_text(json.dumps(res))
    runs = compare.load_all([str(tmp_path / "runs")])
    table = compare.structures(runs)
    assert table.splitlines()[0].endswith("| blocks removed |")
    assert table.splitlines()[2].endswith("| 1 (block1); 2 kept |")
    # the gate kind says which units were gated, so that channel, block and both are three rows
    assert runs[0].gates == "float on channels + blocks"
    res["prune"]["kinds"] = ["block"] * 6
    assert records.read_run(res, "x/results.json", "x")[0].gates == "float on blocks"
    res["prune"]["kinds"] = ["channels"] * 6
    assert records.read_run(res, "x/results.json", "x")[0].gates == "float"
    (tmp_path / "runs" / "c").mkdir()  # a run without block gates beside one with: no blocks to remove
    (tmp_path / "runs" / "c" / "results.json").write_text(json.dumps(res))
    table = compare.structures(compare.load_all([str(tmp_path / "runs")]))
    assert [ln.rsplit("|", 2)[1].strip() for ln in table.splitlines()[2:]] == ["-", "1 (block1); 2 kept"]


def test_two_networks_or_two_machines_are_never_one_row_and_contrasts_pair_by_seed(tmp_path):
    # the same method on two networks: two rows, each named by its network, paired only within it
    runs = {f"dense_s{s}": stub.record("dense", s, 0.40 + s / 100, None, 1.0, None, None, epochs=16) for s in (0, 1)}
    runs |= {f"uniform_s{s}": stub.record("uniform", s, 0.35, None, 0.5, 0.5, "uniform", epochs=16) for s in (0, 1)}
    runs |= {f"binary_s{s}": stub.record("binary", s, t, binarizer="threshold", epochs=16)
             for s, t in ((0, 0.33), (1, 0.36))}
    runs |= {f"float_s{s}": stub.record("float_gates", s, t, epochs=16) for s, t in ((0, 0.30), (1, 0.31))}
    runs["other"] = stub.record("binary", 0, 0.10, binarizer="threshold", epochs=16)
    for r in runs.values():
        r["config"]["model"].update(_target_="gated_pruning.models.vgg.build", depth=16, width=0.25)
        r["config"]["dataset"]["name"] = "cifar100"
    runs["other"]["config"]["model"]["depth"] = 11
    for name in ("binary_s0", "binary_s1", "float_s0", "float_s1", "other"):  # the presets' own controller
        runs[name]["config"]["budget"].update(ramp=0.3, freeze_on_target=True, reopen=True)
    body = compare.write("n", [write_runs(tmp_path / "runs", runs)], str(tmp_path / "out"), pairs=("binary:float_gates",))
    main = table_by(body, "| method | gates | target FLOPs | epochs | train compute")
    assert set(main) == {"dense [vgg16 x0.25, cifar100]", "uniform [vgg16 x0.25, cifar100]",
                         "binary [vgg16 x0.25, cifar100]", "float_gates [vgg16 x0.25, cifar100]",
                         "binary [vgg11 x0.25, cifar100]"}
    assert main["binary [vgg11 x0.25, cifar100]"][0][10] == "10.00"  # never averaged with the VGG-16 runs
    # the training compute, in dense epochs: 16 x 1 for a gated network, 16 x 0.5 for uniform scaling
    assert main["binary [vgg16 x0.25, cifar100]"][0][4] == "16.0" and main["uniform [vgg16 x0.25, cifar100]"][0][4] == "8.0"
    # binary - float_gates by seed: +0.03 and +0.05, mean +4.00 ± 1.41 points; the VGG-11 run has no partner
    contrast = table_by(body, "| difference |")
    assert [row[4] for row in contrast["binary - float_gates"]] == ["+4.00 ± 1.41 (n=2)"]
    with pytest.raises(SystemExit) as e:  # argparse's one line
        compare.main(["n2", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--pair", "binary"])
    assert e.value.code == 2
