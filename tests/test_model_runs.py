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

from conftest import make_cfg
from test_models import MODELS, TORCHVISION

RUNS = [(m, []) for m in MODELS if m != "torchvision"] + [("torchvision", [f"model.name={n}"]) for n in TORCHVISION[:2]]
RUN_ARGS = ["experiment=smoke", "dataset.train_size=256", "trainer.log_every=2", "gamma=0.05",
            "prune.latency_reps=1", "prune.latency_warmup=0"]


def _widths(model):
    return ["model.width=0.125"] if model != "torchvision" else ["model.width=0.25"]


@pytest.mark.slow
@pytest.mark.parametrize("model,extra", RUNS, ids=[m + ("-" + e[0].split("=")[1] if e else "") for m, e in RUNS])
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
            self._stop_signal = signal.SIGTERM
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
    net = experiment.network(cfg, 10, instantiate(cfg.binarizer), {})
    net.load_state_dict(a)
    net.eval()
    with torch.no_grad():
        ref = net(x)
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    rec = json.load(open(tmp_path / "whole" / "results.json"))
    assert rec["prune"]["units"] == [u.name for u in net.units()] and len(rec["prune"]["compact"]["widths"]) == len(net.units())
