"""Baselines at matched FLOPs: uniform channel scaling, the pruned architecture from scratch
(Scratch-E/B), cuts to a FLOPs target (Network Slimming's global gate ranking, L1-norm filters per
layer), the prune command's --target-flops, and the evidence report with its README section."""
import json
import os

import pytest
import torch

from gated_pruning import evidence, experiment, prune
from gated_pruning.models.vgg import VGG, build, uniform_width, vgg_widths
from gated_pruning.masks import global_cut, target_masks
from gated_pruning.surgery import compact

from conftest import ROOT, STUB_WIDTHS, make_cfg, snapshot

README = os.path.join(ROOT, "README.md")


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
def test_uniform_width_matches_the_flops_target(target):
    w = uniform_width(16, 0.25, target)
    ratio = build(16, w, 100).flops() / build(16, 0.25, 100).flops()
    assert abs(ratio - target) < 0.01
    assert build(16, w, 100).widths()[0] < 16  # every layer thinner, by the same multiplier


def test_global_cut_removes_the_lowest_gates_anywhere_until_the_target():
    model = VGG([4, "M", 4], num_classes=2)
    # FLOPs(k0, k1) = 2*9*3*k0*32*32 + 2*9*k0*k1*16*16 + 2*k1*2 = 55296 k0 + 4608 k0 k1 + 4 k1
    scores = [torch.tensor([0.9, 0.1, 0.5, 0.8]), torch.tensor([0.05, 0.7, 0.6, 0.95])]
    assert model.flops() == 294928
    keep = global_cut(model, scores, 0.6)
    # ascending: conv1[0] -> (4, 3) 276492 = 0.94; conv0[1] -> (3, 3) 207372 = 0.70;
    # conv0[2] -> (2, 3) 138252 = 0.47 <= 0.6: stop
    assert keep[0].tolist() == [True, False, False, True]
    assert keep[1].tolist() == [False, True, True, True]
    assert global_cut(model, scores, 0.01)[0].sum() == 1  # every layer keeps one channel


def test_l1norm_keeps_the_same_fraction_of_every_layer_by_filter_norm():
    torch.manual_seed(0)
    model = build(11, 0.25, 10, gated=False)
    masks = target_masks(model, 0.5, "l1norm")
    fractions = [m.float().mean().item() for m in masks]
    assert max(fractions) - min(fractions) < 0.15  # one ratio, up to rounding per layer
    for m, (_, block) in zip(masks, model.conv_blocks()):
        norms = block.conv.weight.abs().sum(dim=(1, 2, 3))
        assert norms[m].min() >= norms[~m].max() if (~m).any() else True
    small, _ = compact(model, masks=masks)
    assert small.flops() <= 0.5 * model.flops() < small.flops() * 1.2


def test_a_gate_cut_needs_gates():
    with pytest.raises(ValueError, match="criterion"):
        target_masks(build(11, 0.125, 10, gated=False), 0.5, "gate")


def test_scratch_runs_train_the_kept_widths_and_scratch_b_scales_the_epochs(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    widths = [4, 8, 16, 16, 32, 32, 32, 32]
    ref = {"widths": [8, 16, 32, 32, 64, 64, 64, 64], "flops": build(11, 0.125, 10, gated=False).flops(),
           "params": 1}
    (src / "results.json").write_text(json.dumps({"prune": {"compact": {"widths": widths}},
                                                  "cost": {"reference": ref}, "target_flops": 0.3}))
    for method, epochs in (("scratch_e", 1), ("scratch_b", int(1 * ref["flops"] /
                                                              build(11, widths=widths, num_classes=10).flops()))):
        cfg = make_cfg("experiment=smoke", f"method={method}", f"arch.run={src}", "trainer.epochs=1")
        res = experiment.run(cfg, str(tmp_path / method))
        assert res["cost"]["final"]["widths"] == widths and res["config"]["trainer"]["epochs"] == epochs
        assert res["target_flops"] == 0.3 and res["cost"]["reference"]["flops"] == ref["flops"]
        assert res["target"] == {"kind": "arch_run", "flops": 0.3, "reached": res["cost"]["flops_kept"], "missed": False}
    assert epochs > 1


def test_scratch_needs_a_finished_run(tmp_path):
    cfg = make_cfg("experiment=smoke", "method=scratch_e", f"arch.run={tmp_path}")
    with pytest.raises(Exception, match="arch.run="):
        experiment.run(cfg, str(tmp_path / "x"))


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("dense")
    res = experiment.run(make_cfg("experiment=smoke", "method=dense", "trainer.epochs=1"), str(d))
    return d, res


def test_prune_command_cuts_a_finished_run_to_a_flops_target_and_fine_tunes(dense_run, capsys):
    """The dense run cut to 40% of its FLOPs by filter L1 norm and fine-tuned, by the prune command
    (in this process: tests/test_prune.py runs the command itself)."""
    d, res = dense_run
    assert prune.main([str(d), "--target-flops", "0.4", "--finetune-epochs", "1", "--method", "l1norm"]) == 0
    out = d / "prune-flops0.4-l1norm-ft1"
    rec = json.loads((out / "results.json").read_text())
    assert rec["method"] == "l1norm" and rec["target_flops"] == 0.4
    assert rec["target"] == {"kind": "cut", "flops": 0.4, "reached": rec["prune"]["kept"]["flops"], "missed": False}
    assert rec["prune"]["criterion"] == "l1norm" and rec["prune"]["finetune"]["epochs"] == 1
    assert 0.3 <= rec["cost"]["flops_kept"] <= 0.4
    assert rec["prune"]["test"]["dense"]["top1"] == pytest.approx(res["metrics"]["test"]["top1"])
    # a second identical command refuses instead of overwriting
    capsys.readouterr()
    before = snapshot(out)
    assert prune.main([str(d), "--target-flops", "0.4", "--finetune-epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "exists already" in err and snapshot(out) == before


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


def test_evidence_report_aggregates_seeds_and_keeps_the_readme_in_step(tmp_path):
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
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:t -->\nold\n<!-- /results:t -->\nend\n")
    table = evidence.write("t", [str(tmp_path / "runs")], str(tmp_path / "out"), str(readme))
    rows = [ln.split("|")[1:-1] for ln in table.splitlines()[2:]]
    by = {r[0].strip(): [c.strip() for c in r] for r in rows}
    assert by["dense"][9] == "31.00 ± 1.41" and by["dense"][10] == "2 (0, 1)"
    assert by["uniform"][9] == "28.00 ± 1.00" and by["uniform"][4] == "50.00"
    assert by["l1norm"][7] == "10.00" and by["l1norm"][8] == "25.00" and by["l1norm"][9] == "25.00"
    text = readme.read_text()
    assert evidence.readme_section(text, "t") == table and text.startswith("intro") and text.endswith("end\n")
    assert (tmp_path / "out" / "t" / "accuracy_vs_flops.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 6 | sss | float | 0.5 | 0 | 4/16 30/32 | 0 | 0.31 |" in (tmp_path / "out" / "t" / "results.md").read_text()
    # one row per run folder: exploratory variants that share a method
    table = evidence.write("v", [str(tmp_path / "runs")], str(tmp_path / "out"), label="dir")
    rows = {ln.split("|")[1].strip(): ln.split("|")[10].strip() for ln in table.splitlines()[2:]}
    assert rows == {"0": "30.00", "1": "32.00", "2": "28.00", "3": "29.00", "4": "27.00", "5": "25.00", "6": "27.00"}
    # a README without the section is refused before anything is written
    with pytest.raises(evidence.ReportError, match="no section"):
        evidence.write("w", [str(tmp_path / "runs")], str(tmp_path / "out"), str(readme))
    assert not (tmp_path / "out" / "w").exists()


def test_readme_results_are_the_committed_reports():
    """Every results section of the README equals the table its report command committed."""
    text = open(README).read()
    names = evidence.section_names(text)
    assert names, "the README has no generated results section"
    for name in names:
        committed = open(os.path.join(ROOT, "docs", "results", name, "results.md")).read()
        section = evidence.readme_section(text, name)
        assert section is not None and section in committed, name


# the one meaning of each preset's FLOPs target (results.json's "target"), at target_flops=0.5
TARGET_KIND = {"dense": None, "uniform": "uniform", "l1norm": "cut", "slimming": "cut", "sss": "budget",
               "binary": "budget", "sss_paper": "budget", "scratch_e": "arch_run", "scratch_b": "arch_run"}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(m[:-5] for m in os.listdir(os.path.join(ROOT, "conf", "method"))))
def test_every_method_preset_runs_end_to_end(method, stub, tmp_path):
    """Every registered method trains, prunes and records its cost and target on the synthetic set."""
    extra = [f"arch.run={stub}"] if method.startswith("scratch") else ["target_flops=0.5"]
    cfg = make_cfg("experiment=smoke", f"method={method}", "trainer.epochs=1", "dataset.train_size=128",
                   "prune.finetune_epochs=0", *extra)
    res = experiment.run(cfg, str(tmp_path))
    assert 0 < res["cost"]["flops_kept"] <= 1.0 and res["metrics"]["test"]["top1"] >= 0
    kind = TARGET_KIND[method]
    assert res["target"]["kind"] == kind and res["target_flops"] == res["target"]["flops"]
    assert res["target"]["flops"] == (None if kind is None else 0.3 if kind == "arch_run" else 0.5)
    assert not res["target"]["missed"]  # budgets, widths and cuts hold their target
    if method.startswith("scratch"):  # the source run's widths, against the dense reference
        assert res["cost"]["final"]["widths"] == STUB_WIDTHS
    elif method == "uniform":  # the closest width multiplier
        assert abs(res["cost"]["flops_kept"] - 0.5) <= 0.03
    elif method != "dense":  # budgets and cuts end at the target or just under it
        assert 0.5 - 0.03 <= res["cost"]["flops_kept"] <= 0.5 + 1e-9


def test_sss_paper_is_the_authors_optimizer():
    cfg = make_cfg("method=sss_paper")
    assert cfg.optimizer.gates.clamp == "lookahead" and cfg.optimizer.gates.forward == "lookahead"
    assert cfg.optimizer.weights.nesterov is True and cfg.penalty._target_.endswith(".L1")
    assert cfg.model.gate_position == "bn" and cfg.binarizer._target_.endswith("NoBinarizer")


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
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:g -->\n<!-- /results:g -->\n")
    body = evidence.write("g", [str(tmp_path / "runs")], str(tmp_path / "out"), str(readme))
    # in the window: 3e-4, 1e-3, 3e-3 (1e-4 keeps 95%, 1e-2 has a dead layer, 3e-2 keeps 10%)
    assert "- sss, float: gammas 0.0003 to 0.003 keep 20-90% of the FLOPs with no dead layer, " \
        "a window of 1.00 decades" in body
    assert "| sss | float | 0.01 | 40.0 | 1 | 20.00 | - | no |" in body
    assert body.count("| sss (gamma ") == 6  # one row per gamma in the main table: no gamma is a seed
    assert evidence.readme_section(readme.read_text(), "g") == body
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
    body = evidence.write("g", [str(tmp_path / "runs")], str(tmp_path / "out2"), None)
    assert "- sss, float: the gammas that keep 20-90% of the FLOPs with no dead layer (0.0003, 0.001, 0.003) " \
        "are not one interval: a gamma between them does not; no window" in body and "decades" not in body
    assert "- slimming, float: no gamma tried keeps 20-90% of the FLOPs with no dead layer (tried: 0.0001)" in body
