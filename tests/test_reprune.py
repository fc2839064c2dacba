"""Physical pruning: exact outputs, hand-counted FLOPs and params, the dead-layer rule, the saved
compact network, and pruning a finished run again at another threshold."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from gated_pruning import experiment, reprune
from gated_pruning.gates import HardConcreteBinarizer, StochasticBinarizer, ThresholdBinarizer
from gated_pruning.models.vgg import VGG, build
from gated_pruning.masks import keep_masks
from gated_pruning.measure import count_flops
from gated_pruning.pruning import compact
from gated_pruning.stats import count_params

from conftest import ROOT, make_cfg, run_py


def trained_looking(model, zero_pattern, seed):
    """Random BN statistics and affine values, gates from `zero_pattern` (True = zero gate)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for (_, block), zeros in zip(model.conv_blocks(), zero_pattern):
            n = block.conv.out_channels
            block.bn.running_mean.copy_(torch.randn(n, generator=g))
            block.bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            block.bn.weight.copy_(torch.randn(n, generator=g))
            block.bn.bias.copy_(torch.randn(n, generator=g))
            block.gate.weight.copy_(torch.where(zeros, torch.zeros(n), 0.05 + torch.rand(n, generator=g)))
    return model.eval()


def random_pattern(model, p, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(b.conv.out_channels, generator=g) < p for _, b in model.conv_blocks()]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("binarizer", [None, ThresholdBinarizer(0.0), StochasticBinarizer(0.0),
                                       HardConcreteBinarizer()])
@pytest.mark.parametrize("bn_weight", [True, False])
def test_compact_equals_gated_on_random_zero_patterns(seed, binarizer, bn_weight):
    model = build(11, width=0.25, num_classes=10, binarizer=binarizer, bn_weight=bn_weight)
    pattern = random_pattern(model, p=0.2 + 0.15 * seed, seed=seed)
    pattern[0][:3] = True    # the first conv layer loses channels
    pattern[-1][-3:] = True  # and so does the last, feeding the classifier
    trained_looking(model, pattern, seed)
    small, dead, _ = compact(model)
    assert dead == []
    assert small.widths() == [int((~z).sum()) for z in pattern]
    assert not any(isinstance(m, type(model.gates()[0])) for m in small.modules())
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("binarizer", [None, ThresholdBinarizer(0.5), HardConcreteBinarizer()])
def test_a_layer_floor_keeps_channels_and_stays_exact(binarizer):
    model = build(11, width=0.25, num_classes=10, binarizer=binarizer, min_keep=3)
    pattern = random_pattern(model, 0.5, 3)
    pattern[2][:] = True  # every gate of conv2 at zero: the floor holds its 3 largest open
    trained_looking(model, pattern, 3)
    small, dead, _ = compact(model)
    if binarizer is not None:  # binary gates: the floor opens them (1), so the layer lives
        assert dead == [] and small.widths()[2] == 3
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-5)


def test_binary_gates_of_one_vanish_and_threshold_prunes_small_float_gates():
    model = build(11, width=0.125, num_classes=4, binarizer=ThresholdBinarizer(0.5))
    trained_looking(model, random_pattern(model, 0.0, 0), 0)
    with torch.no_grad():
        for gate in model.gates():
            gate.weight.fill_(0.9)            # binarized to 1: vanish into BN
        model.gates()[2].weight[:5] = 0.3  # binarized to 0
    small, _, _ = compact(model)
    assert small.widths()[2] == model.widths()[2] - 5
    # float gates: the threshold removes small but non-zero gates
    floaty = build(11, width=0.125, num_classes=4)
    trained_looking(floaty, random_pattern(floaty, 0.0, 1), 1)
    with torch.no_grad():
        floaty.gates()[0].weight[:2] = 0.01
    assert compact(floaty, threshold=0.02)[0].widths()[0] == floaty.widths()[0] - 2
    assert compact(floaty, threshold=0.0)[0].widths()[0] == floaty.widths()[0]


def test_flops_and_params_of_a_hand_sized_network():
    net = VGG([4, "M", 6], num_classes=3, gated=False)
    # conv 3->4 on 32x32: 4*3*9*32*32 MACs; conv 4->6 on 16x16: 6*4*9*16*16 MACs; fc 6->3: 18 MACs
    assert count_flops(net) == 2 * (4 * 3 * 9 * 32 * 32 + 6 * 4 * 9 * 16 * 16 + 6 * 3)
    # conv weights (no bias), BN weight+bias, fc weight+bias
    assert count_params(net) == 4 * 3 * 9 + 2 * 4 + 6 * 4 * 9 + 2 * 6 + 6 * 3 + 3


def test_a_dead_layer_keeps_its_strongest_channel_and_stays_exact():
    model = build(11, width=0.25, num_classes=5)
    pattern = random_pattern(model, 0.3, 7)
    pattern[3][:] = True
    trained_looking(model, pattern, 7)
    masks, dead = keep_masks(model)
    assert dead == ["conv3"] and int(masks[3].sum()) == 1
    small, dead, _ = compact(model)
    assert dead == ["conv3"] and small.widths()[3] == 1
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        out = small(x)
        torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-5)
        assert torch.allclose(out, out[:1].expand_as(out))  # the documented consequence: constant


def write_npz(root, n_train=300, n_test=100, classes=100):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n_train + n_test, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, classes, n_train + n_test)
    np.savez(os.path.join(root, "cifar100.npz"), x_train=x[:n_train], y_train=y[:n_train],
             x_test=x[n_train:], y_test=y[n_train:])


@pytest.mark.slow
def test_run_prunes_saves_and_the_compact_file_reevaluates_alone(tmp_path):
    write_npz(tmp_path)
    run = tmp_path / "run"
    r = run_py("experiment=smoke", "dataset=cifar100", f"dataset.root={tmp_path}", "dataset.download=false",
               "dataset.batch_size=50", "dataset.test_size=80", "gamma=0.02", "trainer.epochs=2",
               "prune.finetune_epochs=1", f"hydra.run.dir={run}")
    assert r.returncode == 0, r.stderr
    res = json.load(open(run / "results.json"))
    pr = res["prune"]
    assert pr["dense"]["widths"] == res["gates"]["channels"]
    assert pr["compact"]["widths"] == [c - z for c, z in zip(res["gates"]["channels"], res["gates"]["final"]["zeros"])]
    assert pr["compact"]["flops"] <= pr["dense"]["flops"] and pr["dense"]["latency_ms"] > 0
    for net in ("dense", "compact"):  # timed in both layouts, the faster one counts
        by_layout = pr[net]["latency_ms_by_layout"]
        assert set(by_layout) == {"nchw", "channels_last"}
        assert pr[net]["latency_ms"] == min(by_layout.values()) == by_layout[pr[net]["layout"]]
    # exact pruning of exact zeros: the cut network scores what the gated one scored
    assert pr["test"]["compact"] == pytest.approx(pr["test"]["dense"], abs=1e-4)
    assert pr["test"]["dense"]["top1"] == res["metrics"]["test"]["top1"]
    assert pr["finetune"]["epochs"] == 1
    # reload with torch alone, in a fresh process, and evaluate the same test subset
    out = subprocess.run([sys.executable, "-m", "gated_pruning.evaluate", str(run / "compact.pt2"),
                          "--data-root", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["examples"] == 80 and got["top1"] == pytest.approx(pr["finetune"]["test"]["top1"])


@pytest.mark.slow
def test_prune_a_finished_run_again_at_another_threshold(tmp_path, capsys):
    run = tmp_path / "run"
    res = experiment.run(make_cfg("experiment=smoke", "optimizer=sgd", "gamma=0.01", "trainer.epochs=1"), str(run))
    assert sum(res["gates"]["final"]["zeros"]) == 0  # SGD never lands on exact zero

    # the command itself, once: python -m gated_pruning.reprune
    p = subprocess.run([sys.executable, "-m", "gated_pruning.reprune", str(run), "--threshold", "0.99"],
                       cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    again = json.load(open(run / "prune-0.99" / "prune.json"))
    assert again["threshold"] == 0.99
    assert reprune.main([str(run), "--threshold", "0.99", "--round-to", "8", "--out", str(run / "r8")]) == 0
    rounded = json.load(open(run / "r8" / "prune.json"))["compact"]["widths"]
    assert all(w % 8 == 0 or w == c for w, c in zip(rounded, res["gates"]["channels"]))
    assert sum(again["compact"]["widths"]) < sum(res["prune"]["compact"]["widths"])
    assert os.path.isfile(run / "prune-0.99" / "compact.pt2")
    before = open(run / "prune-0.99" / "prune.json").read()
    capsys.readouterr()
    assert reprune.main([str(run), "--threshold", "0.99"]) == 2  # would overwrite: refused, nothing touched
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "exists already" in err
    assert open(run / "prune-0.99" / "prune.json").read() == before


def test_round_to_keeps_zero_channels_for_aligned_widths_and_stays_exact():
    model = build(11, width=0.25, num_classes=5)
    pattern = random_pattern(model, 0.5, 3)
    trained_looking(model, pattern, 3)
    small, _, _ = compact(model, round_to=8)
    exact, _, _ = compact(model)
    assert all(w % 8 == 0 or w == full for w, full in zip(small.widths(), model.widths()))
    assert all(e <= w for e, w in zip(exact.widths(), small.widths()))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-5)
