"""Trained weights (`model.weights=PATH`): a plain state dict fills a gated network whose gates start
at 1, which then computes the trained network's function; a run's model.pt, a torchvision file
and a nested dict all load; a file of another network is one line before any work; a trained
network is cut and fine-tuned without training (`trainer.epochs=0`)."""
import json

import pytest
import torch
import torchvision

from gated_pruning import experiment
from gated_pruning.arch import model_node
from gated_pruning.errors import ConfigError

from conftest import make_cfg, one_error_line, run_py


def trained_like(net):
    """`net` with random weights and batch-norm statistics (a stand-in for a trained network)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if name.endswith(("running_var", "weight"))
                        and t.dim() == 1 else torch.randn(t.shape, generator=g) * 0.2)
    return net.eval()


def gated_from(path, *overrides, num_classes=10):
    cfg = make_cfg("experiment=smoke", f"model.weights={path}", *overrides)
    binarizer = experiment.build(cfg.binarizer)
    arch = {}
    return experiment.network(cfg, {"num_classes": num_classes, "input_size": 32}, binarizer, arch).eval(), arch


@pytest.mark.parametrize("overrides", [[], ["model.gate_position=relu", "optimizer.gates.clamp=prox"],
                                       ["binarizer=threshold"], ["model.bn_weight=false"]],
                         ids=["bn", "relu", "binary", "bn_weight_frozen"])
def test_gates_at_one_compute_the_trained_networks_function(overrides, tmp_path):
    plain = trained_like(experiment.build(model_node(make_cfg("experiment=smoke", "model.gated=false")), num_classes=10))
    path = tmp_path / "plain.pt"
    torch.save(plain.state_dict(), path)
    gated, arch = gated_from(path, *overrides)
    assert gated.gates() and all(bool((g.hard() == 1).all()) for g in gated.gates())
    x = torch.randn(8, 3, 32, 32)
    torch.testing.assert_close(gated(x), plain(x), rtol=0, atol=1e-5)
    assert arch["weights"]["gates"] is False and arch["weights"]["tensors"] == len(plain.state_dict())


def test_a_torchvision_file_and_a_nested_dict_load(tmp_path):
    plain = trained_like(torchvision.models.resnet18(num_classes=10))
    torch.save(plain.state_dict(), tmp_path / "tv.pth")
    torch.save({"epoch": 3, "ema": {"state_dict": {"module." + k: v for k, v in plain.state_dict().items()}}},
               tmp_path / "nested.pth")
    x = torch.randn(2, 3, 32, 32)
    for path, key in ((tmp_path / "tv.pth", None), (tmp_path / "nested.pth", "ema.state_dict")):
        extra = [f"model.weights_key={key}"] if key else []
        gated, _ = gated_from(path, "model=torchvision", "model.width=1", *extra)
        torch.testing.assert_close(gated(x), plain(x), rtol=0, atol=1e-4)
    with pytest.raises(ConfigError, match="model.weights_key=KEY"):  # a nested file, no key: where is it?
        gated_from(tmp_path / "nested.pth", "model=torchvision", "model.width=1")


def test_weights_of_another_network_name_the_first_tensors_that_differ(tmp_path):
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), tmp_path / "tv.pth")
    with pytest.raises(ConfigError, match=r"does not fit this network: \d+ of the network's tensors missing"):
        gated_from(tmp_path / "tv.pth")  # a ResNet's weights for a VGG
    torch.save(trained_like(torchvision.models.resnet18(num_classes=100)).state_dict(), tmp_path / "c100.pth")
    with pytest.raises(ConfigError, match=r"2 tensor\(s\) of another shape \(net.fc.bias \(100,\) in the file, "
                                          r"\(10,\) here"):
        gated_from(tmp_path / "c100.pth", "model=torchvision", "model.width=1")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="not a readable weights file"):
        gated_from(tmp_path / "junk.pt")


@pytest.mark.slow
def test_a_gated_run_starts_at_the_trained_accuracy_and_a_trained_network_is_cut_without_training(tmp_path):
    r = run_py("experiment=smoke", "method=dense", f"hydra.run.dir={tmp_path / 'dense'}")
    assert r.returncode == 0, r.stderr[-2000:]
    dense = json.load(open(tmp_path / "dense" / "results.json"))
    weights = f"model.weights={tmp_path / 'dense' / 'model.pt'}"
    r = run_py("experiment=smoke", weights, "trainer.epochs=0", f"hydra.run.dir={tmp_path / 'gated'}")
    assert r.returncode == 0, r.stderr[-2000:]
    gated = json.load(open(tmp_path / "gated" / "results.json"))
    assert gated["metrics"]["test"] == dense["metrics"]["test"]  # gates at 1: the trained network, exactly
    assert gated["cost"]["architecture"]["weights"]["path"] == str(tmp_path / "dense" / "model.pt")
    r = run_py("experiment=smoke", weights, "trainer.epochs=0", "method=l1norm", "target_flops=0.5",
               f"hydra.run.dir={tmp_path / 'cut'}")
    assert r.returncode == 0, r.stderr[-2000:]
    cut = json.load(open(tmp_path / "cut" / "results.json"))
    assert cut["prune"]["test"]["dense"] == dense["metrics"]["test"] and cut["prune"]["kept"]["flops"] <= 0.5
    assert cut["prune"]["finetune"]["epochs"] == 1 and cut["final"]["test_top1"] == cut["prune"]["finetune"]["test"]["top1"]
    # another architecture's file: one line, nothing written
    r = run_py("experiment=smoke", weights, "model.depth=13", f"hydra.run.dir={tmp_path / 'no'}")
    assert r.returncode == 2 and "does not fit this network" in one_error_line(r.stderr)
    assert not (tmp_path / "no").exists()
    r = run_py("experiment=smoke", "trainer.epochs=0", f"hydra.run.dir={tmp_path / 'no'}")
    assert r.returncode == 2 and "trainer.epochs=0 trains nothing" in one_error_line(r.stderr)
