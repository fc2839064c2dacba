"""The sweep report (`python -m gated_pruning.reports.sweep`) and the W&B sweep files in sweeps/."""
import glob
import json
import math
import os
import subprocess
import sys

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from gated_pruning.reports import sweep as report

from conftest import ROOT, make_cfg, run_py, snapshot

SMALL = ("dataset.train_size=64", "dataset.batch_size=32", "dataset.test_size=32",  # seconds a run
         "trainer.log_every=1")
MACROS = ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]
SWEEPS = sorted(glob.glob(os.path.join(ROOT, "sweeps", "*.yaml")))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_report(*args):
    return subprocess.run([sys.executable, "-m", "gated_pruning.reports.sweep", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def table(md_text):
    """(header cells, data rows as cell lists) of the first markdown table."""
    lines = [ln for ln in md_text.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    assert set(lines[1].replace("|", "")) == {"-"}, lines[1]
    return cells[0], cells[2:]


@pytest.fixture(scope="module")
def multirun(tmp_path_factory):
    out = tmp_path_factory.mktemp("multirun")
    r = run_py("-m", "experiment=smoke", "gamma=0,0.05", "optimizer=apg,sgd", "trainer.epochs=1", *SMALL,
               "logger=wandb", f"hydra.sweep.dir={out}", env={"WANDB_MODE": "offline"})
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_report_of_a_real_multirun(multirun):
    r = run_report(multirun)
    assert r.returncode == 0, r.stderr
    md = (multirun / "report" / "report.md").read_text()
    header, rows = table(md)
    assert header[:4] == ["run", "variant", "gamma", "top-1 %"]
    assert len(rows) == 4
    col = {name: i for i, name in enumerate(header)}
    # sorted by variant, then gamma
    assert [(row[col["variant"]], float(row[col["gamma"]])) for row in rows] == [
        ("apg-float", 0.0), ("apg-float", 0.05), ("sgd-float", 0.0), ("sgd-float", 0.05)]
    results = {}
    for path in glob.glob(str(multirun / "*" / "results.json")):
        with open(path) as f:
            results[os.path.basename(os.path.dirname(path))] = json.load(f)
    assert sorted(results) == sorted(row[col["run"]] for row in rows)
    for row in rows:
        res = results[row[col["run"]]]
        assert float(row[col["top-1 %"]]) == pytest.approx(100 * res["metrics"]["test"]["top1"], abs=0.006)
        sparsity = [float(s) for s in row[col["sparsity per layer"]].split()]
        assert len(sparsity) == len(res["gates"]["layers"]) and all(0 <= s <= 1 for s in sparsity)
        prune = res["prune"]
        if prune:
            assert float(row[col["pruned top-1 %"]]) == pytest.approx(
                100 * prune["test"]["compact"]["top1"], abs=0.006)
            assert float(row[col["FLOPs kept %"]]) == pytest.approx(100 * prune["kept"]["flops"], abs=0.06)
            assert float(row[col["params kept %"]]) == pytest.approx(100 * prune["kept"]["params"], abs=0.06)
            assert row[col["speedup"]].startswith("x")
            widths = zip(prune["compact"]["widths"], prune["dense"]["widths"])
            assert sparsity == pytest.approx([1 - k / d for k, d in widths], abs=0.006)
        else:
            assert row[col["pruned top-1 %"]] == row[col["FLOPs kept %"]] == "-"
    assert r.stdout.count("| apg-float |") == 2 and r.stdout.count("| sgd-float |") == 2
    for name in report.PLOTS:
        data = (multirun / "report" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name


def fake_results(gamma, opt="APG", binarizer="NoBinarizer", pruned=True, widths=(8, 16), kept=(6, 4)):
    res = {"config": {"gamma": gamma, "optimizer": {"gates": {"_target_": f"gated_pruning.optim.{opt}"}},
                      "binarizer": {"_target_": f"gated_pruning.gates.{binarizer}"}},
           "run_name": None,
           "metrics": {"epoch": 1, "step": 10, "test": {"loss": 1.0, "top1": 0.5, "top5": 0.9}},
           "gates": {"layers": ["conv0", "conv1"], "channels": list(widths),
                     "final": {"step": 10, "epoch": 1.0, "zeros": [1, 2], "ones": [0, 0], "small": [1, 2]},
                     "history": [{"step": s, "epoch": s / 10, "zeros": [s // 10, s // 5], "ones": [0, 0],
                                  "small": [0, 0]} for s in (5, 10, 10)],
                     "dead_layers": []}}
    if pruned:
        res["prune"] = {"threshold": 0.0,
                        "dense": {"params": 1000, "flops": 2000, "latency_ms": 2.0, "widths": list(widths)},
                        "compact": {"params": 500, "flops": 500, "latency_ms": 1.0, "widths": list(kept)},
                        "kept": {"params": 0.5, "flops": 0.25}, "speedup": 2.0,
                        "test": {"dense": {"top1": 0.5}, "compact": {"loss": 1.2, "top1": 0.4, "top5": 0.8}},
                        "finetune": None}
    return res


def test_report_columns_with_and_without_prune(tmp_path):
    runs = {"b/2": fake_results(1e-2, "GateSGD", "ThresholdBinarizer"),
            "b/1": fake_results(1e-3, "GateSGD", "StochasticBinarizer", pruned=False),
            "a": fake_results(1e-3)}
    old = fake_results(1e-4)  # an older run: no prune, fewer keys
    del old["gates"]["history"], old["metrics"]["test"]["top5"]
    runs["old"] = {**old, "prune": None}
    for name, res in runs.items():
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "results.json").write_text(json.dumps(res))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{")
    out = tmp_path / "elsewhere"
    assert report.main([str(tmp_path), "--out", str(out)]) == 0
    header, rows = table((out / "report.md").read_text())
    assert header == list(report.COLUMNS)
    assert rows == [
        ["old", "apg-float", "0.0001", "50.00", "-", "-", "-", "-", "0.12 0.12"],
        ["a", "apg-float", "0.001", "50.00", "40.00", "25.0", "50.0", "x2.00", "0.25 0.75"],
        ["b/1", "sgd-stochastic", "0.001", "50.00", "-", "-", "-", "-", "0.12 0.12"],
        ["b/2", "sgd-threshold", "0.01", "50.00", "40.00", "25.0", "50.0", "x2.00", "0.25 0.75"]]
    for name in report.PLOTS:
        assert (out / name).read_bytes().startswith(PNG_MAGIC)
    # a fine-tuned run adds a column
    tuned = fake_results(1e-3)
    tuned["prune"]["finetune"] = {"epochs": 2, "test": {"loss": 1.0, "top1": 0.45, "top5": 0.9}}
    (tmp_path / "a" / "results.json").write_text(json.dumps(tuned))
    assert report.main([str(tmp_path / "a")]) == 0
    header, rows = table((tmp_path / "a" / "report" / "report.md").read_text())
    assert header[5] == "fine-tuned top-1 %" and rows == [
        ["a", "apg-float", "0.001", "50.00", "40.00", "45.00", "25.0", "50.0", "x2.00", "0.25 0.75"]]


def test_report_of_an_empty_dir_is_one_error_line(tmp_path):
    r = run_report(tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "results.json" in lines[0], r.stderr
    assert not (tmp_path / "report").exists()


def test_a_val_column_when_a_run_held_out_a_validation_split(tmp_path):
    import stub_records

    stub_records.write(tmp_path, "v", stub_records.record("sss", 0, 0.30, val=0.41, target=None, kind=None))
    stub_records.write(tmp_path, "t", stub_records.record("sss", 0, 0.29, target=None, kind=None, gamma=2e-3))
    md, _ = report.write_report(str(tmp_path))
    header, rows = table(open(md).read())
    assert header[3:5] == ["top-1 %", "val top-1 %"]
    assert [row[:5] for row in rows] == [["v", "apg-float", "0.001", "30.00", "41.00"],
                                         ["t", "apg-float", "0.002", "29.00", "-"]]


def test_a_malformed_record_is_one_warning_line_and_the_rest_is_reported(tmp_path, capsys):
    """A hand-edited field of the wrong type and a shortened list: one line naming the file and the
    fields; the run's other columns and the other runs are reported."""
    good, bad = fake_results(1e-3), fake_results(1e-2, pruned=False)
    bad["metrics"]["test"]["top1"] = "fifty"
    bad["gates"]["final"]["zeros"] = [1]  # two layers
    for name, res in (("good", good), ("bad", bad)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(res))
    assert report.main([str(tmp_path)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: {tmp_path / 'bad' / 'results.json'}: malformed "), err
    assert 'metrics.test.top1 is "fifty", not a finite number' in err[0]
    assert "gates.final.zeros has 1 entries, the layers are 2" in err[0]
    header, rows = table((tmp_path / "report" / "report.md").read_text())
    assert rows == [["good", "apg-float", "0.001", "50.00", "40.00", "25.0", "50.0", "x2.00", "0.25 0.75"],
                    ["bad", "apg-float", "0.01", "-", "-", "-", "-", "-", "-"]]


def test_out_is_replaced_only_when_the_report_wrote_it(tmp_path, capsys):
    from gated_pruning.reports import output

    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "results.json").write_text(json.dumps(fake_results(1e-3)))
    runs = str(tmp_path / "runs")
    # another tool's folder (a comparison's files) and a folder of the user's: refused, untouched
    for name, files in (("comparison", ("results.md", "accuracy_vs_flops.png", "runs.json")), ("mine", ("a.txt",))):
        (tmp_path / name).mkdir()
        for f in files:
            (tmp_path / name / f).write_text(f"{name} {f}")
        before = snapshot(tmp_path)
        assert report.main([runs, "--out", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "holds files this tool did not write" in err[0]
        assert snapshot(tmp_path) == before
    # its own report, from before the marker file (only report.md and the plots) and after it: replaced
    old = tmp_path / "runs" / "report"
    old.mkdir()
    (old / "report.md").write_text("# Report: earlier\n")
    (old / "kept_widths.png").write_text("old plot")
    for _ in range(2):
        assert report.main([runs]) == 0
        assert sorted(os.listdir(old)) == sorted([output.MARKER, "report.md", *report.PLOTS])
        assert (old / "kept_widths.png").read_bytes().startswith(PNG_MAGIC)
    assert sorted(os.listdir(tmp_path / "runs")) == ["a", "report"]  # no temporary folder left
    assert oct(os.stat(old).st_mode & 0o777) == oct(0o777 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_the_plots_of_200_runs_stay_readable(tmp_path):
    """200 runs of 40 settings: each plot within MAX_INCHES at DPI (before: 27,000-pixel PNGs)."""
    from PIL import Image

    import stub_records
    from gated_pruning.reports import plots

    stub_records.sweep(tmp_path / "runs", 200)
    md, runs = report.write_report(str(tmp_path / "runs"))
    assert len(runs) == 200 and "40 settings" in open(md).read()
    limit = [plots.MAX_INCHES[0] * plots.DPI, plots.MAX_INCHES[1] * plots.DPI]
    for name in report.PLOTS:
        w, h = Image.open(tmp_path / "runs" / "report" / name).size
        assert w <= limit[0] and h <= limit[1], (name, w, h)


def sample(spec):
    """One value of a sweep parameter: the first grid value, or a fixed point of a distribution."""
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return spec["values"][0]
    lo, hi = spec["min"], spec["max"]
    assert isinstance(lo, (int, float)) and isinstance(hi, (int, float)), spec  # YAML `1e-5` is a string
    if "log" in spec.get("distribution", ""):
        return math.sqrt(lo * hi)
    return (lo + hi) / 2


def agent_command(sweep, params):
    """The command a W&B agent runs (wandb_agent.Agent._command_run), `python` = this interpreter."""
    macros = {"env": ["/usr/bin/env"] if os.path.exists("/usr/bin/env") else [],
              "interpreter": [sys.executable], "program": [sweep["program"]],
              "args_no_hyphens": [f"{k}={v}" for k, v in params.items()]}
    cmd = []
    for c in map(str, sweep["command"]):
        cmd += macros[c[2:-1]] if c.startswith("${") and c.endswith("}") else [c]
    return cmd


@pytest.mark.parametrize("path", SWEEPS, ids=os.path.basename)
def test_sweep_file_drives_run_py(path, tmp_path, monkeypatch):
    with open(path) as f:
        sweep = yaml.safe_load(f)
    assert sweep["command"][:4] == MACROS
    assert sweep["program"] == "run.py" and sweep["metric"] == {"name": "final/val_top1", "goal": "maximize"}
    params = {k: sample(v) for k, v in sweep["parameters"].items()}
    fixed = [str(c) for c in sweep["command"][4:]]
    OverridesParser.create().parse_overrides(fixed)  # valid Hydra overrides
    # the fixed overrides compose with the parameters; an agent's runs land in one sweep folder
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep1")
    monkeypatch.setenv("WANDB_RUN_ID", "run1")
    cfg = make_cfg(*[f"{k}={v}" for k, v in params.items()], *fixed)
    assert cfg.logger.name == "wandb" and cfg.gamma == pytest.approx(params["gamma"])
    hydra_run_dir = [c for c in fixed if c.startswith("hydra.run.dir=")]
    if hydra_run_dir:
        from hydra import compose, initialize_config_dir
        with initialize_config_dir(config_dir=os.path.join(ROOT, "conf"), version_base="1.3"):
            hcfg = compose("config", overrides=hydra_run_dir, return_hydra_config=True)
        assert OmegaConf.select(hcfg, "hydra.run.dir") == "outputs/sweeps/sweep1/run1"
    monkeypatch.delenv("WANDB_SWEEP_ID")
    monkeypatch.delenv("WANDB_RUN_ID")

    cmd = agent_command(sweep, params) + ["experiment=smoke", "trainer.epochs=1", "logger=none",
                                          *SMALL, f"hydra.run.dir={tmp_path}"]
    env = dict(os.environ, WANDB_MODE="disabled", HYDRA_FULL_ERROR="0")
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(tmp_path / "results.json") as f:
        res = json.load(f)
    config = res["config"]
    assert config["gamma"] == pytest.approx(params["gamma"])
    assert config["logger"]["name"] == "none" and config["dataset"]["name"] == "synthetic"
    for key, value in params.items():
        if key == "optimizer":
            assert config["optimizer"]["gates"]["_target_"].endswith({"apg": "APG", "sgd": "GateSGD"}[value])
        elif key == "binarizer":
            cls = {"none": "NoBinarizer", "threshold": "ThresholdBinarizer", "stochastic": "StochasticBinarizer"}
            assert config["binarizer"]["_target_"].endswith("." + cls[value])
        else:
            assert OmegaConf.select(OmegaConf.create(config), key) == pytest.approx(value), key


def test_multirun_makes_one_offline_wandb_run_per_job_with_gate_counts(multirun):
    from conftest import wandb_history

    files = sorted(glob.glob(str(multirun / "*" / "wandb" / "offline-run-*" / "run-*.wandb")))
    assert len(files) == 4  # wandb.finish() per job: four runs, not one merged run
    ids = set()
    for path in files:
        job_dir = path.split(os.sep + "wandb" + os.sep)[0]
        res = json.load(open(os.path.join(job_dir, "results.json")))
        run, rows, summary = wandb_history(path)
        ids.add(run.run_id)
        assert run.run_group == multirun.name  # one group per sweep
        assert "gamma=" in run.display_name and "optimizer=" in run.display_name
        config = {u.key: json.loads(u.value_json) for u in run.config.update}
        assert config["gamma"] == res["config"]["gamma"] and config["optimizer"] in ("apg", "sgd")
        assert config["optimizer.lr"] == res["config"]["optimizer"]["lr"]
        # per-layer gate counts over time, equal to the history in results.json
        logged = [(row["_step"], [row[f"gates_zero/{n}"] for n in res["gates"]["layers"]])
                  for row in rows if "gates_zero/conv0" in row]
        expected = [(h["step"], h["zeros"]) for h in res["gates"]["history"]]
        assert sorted(set(map(lambda t: (t[0], tuple(t[1])), logged))) == \
            sorted(set(map(lambda t: (t[0], tuple(t[1])), expected)))
        assert all(f"gates_one/{n}" in rows[0] for n in res["gates"]["layers"])
        # the latent-gate quantiles, the scale each layer keeps, and a histogram per layer
        first = next(row for row in rows if "gates_q50/conv0" in row)
        h0 = next(h for h in res["gates"]["history"] if h["step"] == first["_step"])
        for i, n in enumerate(res["gates"]["layers"]):
            assert [first[f"gates_q{q}/{n}"] for q in (10, 25, 50, 75, 90)] == pytest.approx(h0["quantiles"][i])
            assert first[f"gates_nonzero_mean/{n}"] == pytest.approx(h0["nonzero_mean"][i])
            hist = first.get(f"gates_hist/{n}") or {"_type": first.get(f"gates_hist/{n}/_type")}
            assert hist["_type"] == "histogram"  # W&B keeps it nested or flattens it by key path
        assert first["penalty/gamma"] == pytest.approx(res["config"]["gamma"])
        assert summary["final/test_top1"] == res["final"]["test_top1"] == res["prune"]["test"]["compact"]["top1"]
        assert summary["trained/test_top1"] == res["metrics"]["test"]["top1"]
        assert summary["prune/flops_kept"] == res["prune"]["kept"]["flops"]
    assert len(ids) == 4
