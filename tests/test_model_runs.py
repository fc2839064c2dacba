"""Every registered model through a real run (tests/test_models.py checks the protocol itself):
trained, stopped mid-run by SIGTERM and resumed to the same bits, pruned, exported, and the
exported file evaluated by torch alone in a fresh process."""
import json
import signal
import subprocess
import sys

import pytest
import torch
from hydra.utils import instantiate

from gated_pruning import experiment
from gated_pruning.train import Preempted, Trainer

from conftest import make_cfg, preset_needs
from test_models import MODELS, TORCHVISION

RUNS = [(m, preset_needs(None).get(f"model={m}", [])) for m in MODELS if m != "torchvision"] + \
    [("torchvision", [f"model.name={n}"]) for n in TORCHVISION[:2]] + \
    [("torchvision", ["model.name=resnet18", "model.block_gates=true"])]  # SSS's block gates on torchvision's blocks
RUN_ARGS = ["experiment=smoke", "dataset.train_size=256", "trainer.log_every=2", "gamma=0.05",
            "prune.latency_reps=1", "prune.latency_warmup=0"]


def _widths(model):
    return ["model.width=0.125"] if model != "torchvision" else ["model.width=0.25"]


@pytest.mark.slow
@pytest.mark.parametrize("model,extra", RUNS, ids=[m + "".join("-" + x.split("=")[1] for x in e) for m, e in RUNS])
def test_every_model_trains_resumes_prunes_and_exports(model, extra, tmp_path, monkeypatch):
    overrides = [*RUN_ARGS, f"model={model}", *_widths(model), *extra]
    if model.startswith("resnet"):
        overrides.append("model.block_gates=true")
    whole = experiment.run(make_cfg(*overrides), str(tmp_path / "whole"))
    # the same run, stopped by a SIGTERM after its 5th step (mid-epoch), then resumed
    step = Trainer._train_step

    def stopping(self, x, y):
        step(self, x, y)
        if self.step == 4:
            self.stop.signum = signal.SIGTERM
    monkeypatch.setattr(Trainer, "_train_step", stopping)
    with pytest.raises(Preempted):
        experiment.run(make_cfg(*overrides), str(tmp_path / "stopped"))
    monkeypatch.setattr(Trainer, "_train_step", step)
    resumed = experiment.run(make_cfg(*overrides, f"resume={tmp_path / 'stopped'}", "prune.enabled=false"),
                             str(tmp_path / "resumed"))  # pruning may differ on resume: not repeated here
    assert resumed["metrics"] == whole["metrics"] and resumed["gates"]["history"] == whole["gates"]["history"]
    a, b = (torch.load(tmp_path / d / "model.pt", weights_only=True)["model"] for d in ("whole", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # pruned and exported: torch alone, in a fresh process, gives the gated network's outputs
    assert whole["prune"]["test"]["compact"] == whole["prune"]["test"]["dense"]
    x = torch.randn(4, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    code = ("import sys, torch; m = torch.export.load(sys.argv[1]).module(); "
            "torch.save(m(torch.load(sys.argv[2])), sys.argv[3])")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "whole" / "compact.pt2"), str(tmp_path / "x.pt"),
                        str(tmp_path / "y.pt")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = make_cfg(*overrides)
    net = experiment.network(cfg, {"num_classes": 10, "input_size": 32}, instantiate(cfg.binarizer), {})
    net.load_state_dict(a)
    net.eval()
    with torch.no_grad():
        ref = net(x)
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    rec = json.load(open(tmp_path / "whole" / "results.json"))
    assert rec["prune"]["units"] == [u.name for u in net.units()] and len(rec["prune"]["compact"]["widths"]) == len(net.units())


# every gate kind, gate optimizer, penalty, the budget and the baselines on a residual network
# (inner, stream and block gates) and on a torchvision CNN: one short run each
FAMILIES = {"resnet": ["model=resnet20", "model.width=0.25", "model.gate_stream=true", "model.block_gates=true"],
            "torchvision": ["model=torchvision", "model.name=mobilenet_v2", "model.width=0.25"]}
SETTINGS = {
    "float-apg-l1": [], "threshold": ["binarizer=threshold"], "stochastic": ["binarizer=stochastic"],
    "hard_concrete": ["binarizer=hard_concrete", "penalty=l0", "model.gate_init=2"],
    "sgd": ["optimizer=sgd", "optimizer.gates.clamp=true"],
    "polarization-flops": ["penalty=polarization", "penalty.flops_weighted=true", "optimizer.gates.upper=1"],
    "budget": ["target_flops=0.5", "gamma=0.01"],
    "uniform": ["method=uniform", "target_flops=0.5"], "l1norm": ["method=l1norm", "target_flops=0.5"],
    "slimming": ["method=slimming", "target_flops=0.5"],
}
SHORT = ["experiment=smoke", "dataset.train_size=128", "trainer.epochs=1", "trainer.log_every=1",
         "prune.latency_reps=1", "prune.latency_warmup=0", "gamma=0.05"]


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_every_gate_kind_penalty_budget_and_baseline_runs_on_each_family(family, setting, tmp_path):
    res = experiment.run(make_cfg(*SHORT, *FAMILIES[family], *SETTINGS[setting]), str(tmp_path))
    p = res["prune"]
    assert p["test"]["compact"] == p["test"]["dense"] or p["target_flops"] is not None  # exact unless cut
    assert len(p["compact"]["widths"]) == len(p["units"]) == len(res["cost"]["reference"]["widths"])
    if res["target"]["kind"] in ("budget", "uniform", "cut"):  # the target met (a cut: at most)
        assert res["target"]["reached"] <= 0.5 + 0.03 and (res["target"]["kind"] == "cut" or
                                                          res["target"]["reached"] >= 0.5 - 0.03), res["target"]
    if setting == "uniform":
        assert not res["gates"]["layers"] and res["cost"]["flops_kept"] == pytest.approx(0.5, abs=0.03)


def test_scratch_runs_retrain_a_residual_networks_kept_blocks(tmp_path):
    """A source run's kept counts (a stub record: half of every channel group, blocks 1 and 4 gone)
    become the retrained network, blocks removed included, at the FLOPs the protocol predicts."""
    cfg = make_cfg(*SHORT, *FAMILIES["resnet"])
    dense = experiment.network(cfg, {"num_classes": 10, "input_size": 32}, instantiate(cfg.binarizer), {})
    units = dense.units()
    kept = [0 if u.name in ("block1", "block4") else max(1, u.size // 2) if u.kind == "channels" else 1 for u in units]
    src = tmp_path / "src"
    src.mkdir()
    (src / "results.json").write_text(json.dumps({
        "prune": {"compact": {"widths": kept}, "units": [u.name for u in units], "dead_layers": []},
        "gates": {"dead_layers": []}, "target": {"kind": "budget", "flops": 0.5},
        "cost": {"reference": {"widths": dense.sizes(), "flops": int(dense.flops()), "params": 1}}}))
    res = experiment.run(make_cfg(*SHORT, *FAMILIES["resnet"], "method=scratch_b", f"arch.run={src}"),
                         str(tmp_path / "scratch"))
    gone = [u.name.startswith(("block1.", "block4.")) for u in units]  # inner channels went with their block
    assert res["cost"]["final"]["widths"] == [0 if g else k for k, g in zip(kept, gone)] and res["gates"]["layers"] == []
    assert res["cost"]["final"]["flops"] == dense.flops(kept)
    assert res["config"]["trainer"]["epochs"] == int(dense.flops() / dense.flops(kept))  # Scratch-B: the dense compute
    net = torch.load(tmp_path / "scratch" / "model.pt", weights_only=True)["model"]
    assert not any(k.startswith(("blocks.1.conv", "blocks.4.conv")) for k in net)  # those blocks are shortcuts


@pytest.mark.slow
def test_block_gates_remove_blocks_and_the_export_scores_the_gated_top1_alone(tmp_path):
    """Issue 17's first promise: `model=resnet20 model.block_gates=true gamma=G` removes residual
    blocks, and its compact.pt2, in a fresh process through the evaluate tool, scores what the gated
    network scored."""
    res = experiment.run(make_cfg("experiment=smoke", "model=resnet20", "model.width=0.5", "model.block_gates=true",
                                  "model.inner_gates=false", "gamma=0.1", "trainer.epochs=3", "prune.latency_reps=1",
                                  "prune.latency_warmup=0"), str(tmp_path))
    removed = [n for n, k, w in zip(res["prune"]["units"], res["prune"]["kinds"], res["prune"]["compact"]["widths"])
               if k == "block" and w == 0]
    assert removed and res["prune"]["test"]["compact"] == res["prune"]["test"]["dense"]
    r = subprocess.run([sys.executable, "-m", "gated_pruning.evaluate", str(tmp_path / "compact.pt2")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["top1"] == res["prune"]["test"]["dense"]["top1"]
    # a removed block is not a dead layer: no warning, and Scratch-E retrains the chosen depth,
    # also from a record made before removed blocks were told apart (listed under gates.dead_layers)
    assert res["gates"]["dead_layers"] == [] and res["prune"]["dead_layers"] == []
    older = tmp_path / "older"
    older.mkdir()
    res["gates"]["dead_layers"] = removed
    (older / "results.json").write_text(json.dumps(res))
    again = experiment.run(make_cfg("experiment=smoke", "model=resnet20", "model.width=0.5", "model.block_gates=true",
                                    "model.inner_gates=false", "method=scratch_e", f"arch.run={older}",
                                    "trainer.epochs=1", "prune.latency_reps=1", "prune.latency_warmup=0"),
                           str(tmp_path / "scratch"))
    assert again["cost"]["architecture"]["counts"] == res["prune"]["compact"]["widths"]


@pytest.mark.slow
def test_a_torchvision_resnet18_meets_its_flops_budget_and_exports(tmp_path):
    res = experiment.run(make_cfg("experiment=smoke", "model=torchvision", "model.name=resnet18", "target_flops=0.5",
                                  "prune.latency_reps=1", "prune.latency_warmup=0"), str(tmp_path))
    assert abs(res["prune"]["kept"]["flops"] - 0.5) <= 0.03 and not res["target"]["missed"]
    assert (tmp_path / "compact.pt2").stat().st_size > 0
