"""Baselines at matched FLOPs: uniform channel scaling, the pruned architecture from scratch
(Scratch-E/B), cuts to a FLOPs target (Network Slimming's global gate ranking, L1-norm filters per
layer, Taylor, ThiNet, LASSO), iterative cuts, and the prune command's --target-flops (their
comparison report: test_compare.py)."""
import json
import os

import pytest
import torch

from gated_pruning import experiment, reprune, weights
from gated_pruning.models.vgg import VGG, build, uniform_width
from gated_pruning.masks import global_cut, target_masks
from gated_pruning.pruning import compact

from conftest import ROOT, STUB_WIDTHS, make_cfg, snapshot

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
    small, _, _ = compact(model, masks=masks)
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
    threads = torch.get_num_threads()
    assert reprune.main([str(d), "--target-flops", "0.4", "--finetune-epochs", "1", "--method", "l1norm",
                       "--threads", "1"]) == 0
    assert torch.get_num_threads() == 1  # what the record says it ran with
    torch.set_num_threads(threads)
    out = d / "prune-flops0.4-l1norm-ft1"
    rec = json.loads((out / "results.json").read_text())
    assert rec["method"] == "l1norm" and rec["target_flops"] == 0.4 and rec["env"]["threads"] == 1
    assert rec["target"] == {"kind": "cut", "flops": 0.4, "reached": rec["prune"]["kept"]["flops"], "missed": False}
    assert rec["prune"]["criterion"] == "l1norm" and rec["prune"]["finetune"]["epochs"] == 1
    assert 0.3 <= rec["cost"]["flops_kept"] <= 0.4
    assert rec["prune"]["test"]["dense"]["top1"] == pytest.approx(res["metrics"]["test"]["top1"])
    # a second identical command refuses instead of overwriting
    capsys.readouterr()
    before = snapshot(out)
    assert reprune.main([str(d), "--target-flops", "0.4", "--finetune-epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "exists already" in err and snapshot(out) == before


# the one meaning of each preset's FLOPs target (results.json's "target"), at target_flops=0.5
TARGET_KIND = {"dense": None, "uniform": "uniform", "l1norm": "cut", "slimming": "cut", "sss": "budget",
               "binary": "budget", "sss_paper": "budget", "scratch_e": "arch_run", "scratch_b": "arch_run",
               "float_gates": "budget", "ista_bn": "budget", "taylor": "cut", "thinet": "cut", "lasso": "cut"}


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


# -- the comparisons of the SSS paper: Taylor (Molchanov et al. 2017), ThiNet (Luo et al. 2017),
#    LASSO (He et al. 2017), ISTA on batch-norm scales (Ye et al. 2018)

def test_thinet_and_lasso_rebuild_a_redundant_linear_layer_exactly():
    from torch import nn

    from gated_pruning import reconstruction as r

    # three channels, the third the sum of the first two; the next layer y = x1 + x2 + x3 = 2 x1 + 2 x2
    x12 = torch.randn(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = torch.cat([x12, x12.sum(1, keepdim=True)], 1)
    layer = nn.Linear(3, 1, bias=False)
    layer.weight.data[:] = 1.0
    y = x @ layer.weight.detach().double().T
    gram, b, _ = r.grams(layer, x, y)
    torch.testing.assert_close(gram, (x.T @ x) * 1.0)  # a linear layer: G = X'X * (W'W), here W'W = 1
    # ThiNet removes the channel of least energy (x2: 190.7 against 204.1 and 417.0), then rescales:
    # y = 0 * x1 + 2 * (x1 + x2), exactly
    keep = r.thinet_keep(gram, 2)
    assert keep.tolist() == [True, False, True]
    torch.testing.assert_close(r.thinet_scales(gram, b, keep), torch.tensor([0.0, 2.0], dtype=torch.float64),
                               atol=1e-6, rtol=0)
    keep, weight = r._lasso(layer, x, y, 2)  # He et al.: the same two, the layer refitted whole
    torch.testing.assert_close(x[:, keep] @ weight.T, y, atol=1e-6, rtol=0)


def test_the_gram_of_conv_contributions_equals_the_contributions_computed_one_by_one():
    from torch import nn
    from torch.nn.functional import conv2d, unfold

    from gated_pruning import reconstruction as r

    g = torch.Generator().manual_seed(1)
    conv = nn.Conv2d(4, 5, 3, padding=1, bias=False).double()
    x = torch.randn(3, 4, 6, 6, dtype=torch.float64, generator=g)
    cols = unfold(x, 3, 1, 1, 1).transpose(1, 2).reshape(-1, 36)
    y = conv(x).flatten(2).transpose(1, 2).reshape(-1, 5)
    gram, b, kk = r.grams(conv, cols, y)
    each = torch.stack([conv2d(x[:, c:c + 1], conv.weight[:, c:c + 1], padding=1) for c in range(4)])
    torch.testing.assert_close(gram, torch.einsum("cbohw,dbohw->cd", each, each))
    torch.testing.assert_close(b, torch.einsum("cbohw,bohw->c", each, conv(x)))
    assert kk == 9


def test_taylor_scores_a_channel_the_next_layer_ignores_at_zero_and_normalizes_each_layer():
    from gated_pruning.importance import Taylor

    torch.manual_seed(0)
    model = build(11, 0.25, 10, gated=False)
    with torch.no_grad():
        model.conv_blocks()[1][1].conv.weight[:, 3] = 0  # conv1 reads nothing of conv0's channel 3
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(2)]
    scores = Taylor().scores(model, batches)
    assert scores[0][3] == 0 and (scores[0] > 0).sum() == model.units()[0].size - 1
    for s in scores:
        assert s.norm() == pytest.approx(1.0)
    # against the criterion computed by hand for conv2's channels: per example |mean z dL/dz|, averaged
    z = {}
    h = model.conv_blocks()[2][1].bn.register_forward_hook(lambda m, i, o: z.__setitem__("z", o) or o.retain_grad())
    total = torch.zeros(model.units()[2].size)
    model.eval()
    for x, y in batches:
        for k in range(len(y)):
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(x[k:k + 1]), y[k:k + 1]).backward()
            # a one-example loss is len(y) times that example's share of the batch's mean loss
            total += ((z["z"] * z["z"].grad).mean(dim=(2, 3))[0].abs() / len(y)).detach()
    h.remove()
    total /= 16
    torch.testing.assert_close(scores[2], total / total.norm(), rtol=1e-4, atol=1e-6)


def test_reconstruction_cuts_refuse_a_network_whose_channels_feed_several_layers():
    cfg = make_cfg("experiment=smoke", "model=resnet20", "model.width=0.25", "model.gated=false",
                   "model.inner_gates=false", "model.gate_stream=true")
    net = experiment.network(cfg, {"num_classes": 10, "input_size": 32}, None, {})
    from gated_pruning import reconstruction

    with pytest.raises(ValueError, match="no group of this model feeds a single conv or linear layer"):
        reconstruction.cut(net, 0.5, "thinet", [(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long))])


@pytest.mark.slow
@pytest.mark.parametrize("method,extra", [("taylor", []), ("thinet", []), ("lasso", []),
                                          ("taylor", ["prune.rounds=3"]), ("l1norm", ["prune.rounds=2"])])
def test_the_cut_baselines_meet_a_50_percent_target_and_fine_tune(method, extra, tmp_path):
    res = experiment.run(make_cfg("experiment=smoke", f"method={method}", "target_flops=0.5", *extra),
                         str(tmp_path))
    pr = res["prune"]
    assert 0.47 <= pr["kept"]["flops"] <= 0.5 + 1e-9 and not res["target"]["missed"]
    assert pr["criterion"] == method and pr["finetune"]["epochs"] == 1
    rounds = int(extra[0].split("=")[1]) if extra else 1
    assert pr["rounds"] == rounds and [t["epochs"] for t in pr["round_finetunes"]] == [1] * (rounds - 1)


def _scale_gated(layers, seed=0):
    """A VGG whose gates are batch norm's scale, in eval mode, with positive biases and varied
    running statistics (so that a closed channel's constant relu(beta) is not zero)."""
    torch.manual_seed(seed)
    net = VGG(layers, num_classes=3, gate_position="scale", bn_weight=False, input_size=8)
    with torch.no_grad():
        for _, b in net.conv_blocks():
            b.bn.bias.uniform_(0.2, 1.0)
            b.bn.running_mean.normal_()
            b.bn.running_var.uniform_(0.5, 2.0)
            b.gate.weight.uniform_(0.5, 1.5)
    return net.eval()


def test_a_scale_gate_is_batch_norms_gamma_and_a_closed_channel_outputs_relu_of_its_beta():
    net = _scale_gated([4, "M", 4])
    block = net.conv_blocks()[0][1]
    with torch.no_grad():
        block.gate.weight[1] = 0.0
    x = torch.randn(2, 3, 8, 8)
    out = block(x)
    beta = block.bn.bias.detach()
    assert torch.equal(out[:, 1], torch.full_like(out[:, 1], float(beta[1])))  # beta > 0: relu(beta) = beta
    z = block.conv(x)  # an open channel: gate * xhat + beta, batch norm's weight 1 and frozen
    xhat = (z[:, 0] - block.bn.running_mean[0]) / torch.sqrt(block.bn.running_var[0] + block.bn.eps)
    assert torch.allclose(out[:, 0], torch.relu(block.gate.weight[0] * xhat + beta[0]), atol=1e-5)
    assert not block.bn.weight.requires_grad and torch.equal(block.bn.weight, torch.ones(4))


def test_trained_gammas_move_into_scale_gates_and_the_network_computes_the_same(tmp_path):
    torch.manual_seed(1)
    dense = VGG([4, "M", 4], num_classes=3, gated=False, input_size=8)
    with torch.no_grad():
        for _, b in dense.conv_blocks():
            b.bn.weight.uniform_(-0.5, 1.5)  # a negative gamma too: ISTA's gate keeps its sign
            b.bn.bias.normal_()
            b.bn.running_mean.normal_()
    torch.save(dense.state_dict(), tmp_path / "dense.pt")
    gated = VGG([4, "M", 4], num_classes=3, gate_position="scale", bn_weight=False, input_size=8)
    weights.load_into(gated, str(tmp_path / "dense.pt"))
    for (_, d), (_, g) in zip(dense.conv_blocks(), gated.conv_blocks()):
        assert torch.equal(g.gate.weight.detach(), d.bn.weight.detach())
        assert torch.equal(g.bn.weight.detach(), torch.ones(4))
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(gated.eval()(x), dense.eval()(x), atol=1e-6)


def test_the_cut_moves_a_closed_scale_channels_constant_into_the_layer_that_reads_it():
    net = _scale_gated([4, 4, "M", 4])
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():  # the last layer's closed channels reach the classifier through the max pool
        net.conv_blocks()[2][1].gate.weight[[0, 2]] = 0.0
    small, dead, kept = compact(net)
    assert kept == [4, 4, 2] and not dead
    assert torch.allclose(small.eval()(x), net(x), atol=1e-5)  # exact: the classifier's bias took them
    plain, _, _ = compact(net, masks=[torch.ones(4, dtype=torch.bool)] * 2 + [torch.tensor([True, False, True, False])])
    assert not torch.allclose(plain.eval()(x), net(x), atol=1e-3)  # the constants are not nothing

    net = _scale_gated([4, 4, "M", 4], seed=2)
    with torch.no_grad():  # conv0's closed channels reach conv1 through its zero-padded 3x3 kernel
        net.conv_blocks()[0][1].gate.weight[[1, 3]] = 0.0
    small, _, kept = compact(net)
    assert kept == [2, 4, 4]
    want, got = net.features[:2](x), small.eval().features[:2](x)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    assert torch.allclose(got[inner], want[inner], atol=1e-5)  # exact inside the map
    assert not torch.allclose(got, want, atol=1e-3)  # the border reads only part of the constant


@pytest.mark.slow
def test_ista_on_batch_norm_scales_starts_from_a_trained_network_and_meets_its_target(tmp_path):
    dense = experiment.run(make_cfg("experiment=smoke", "method=dense"), str(tmp_path / "dense"))
    res = experiment.run(make_cfg("experiment=smoke", "method=ista_bn", "target_flops=0.5",
                                  f"model.weights={tmp_path / 'dense' / 'model.pt'}"), str(tmp_path / "ista"))
    assert res["config"]["optimizer"]["gates"]["momentum"] == 0.0  # ISTA: the proximal step without momentum
    assert abs(res["cost"]["flops_kept"] - 0.5) <= 0.03 and res["prune"]["finetune"]["epochs"] == 1
    assert res["cost"]["architecture"]["weights"]["tensors"] > 0 and dense["metrics"]["test"]["top1"] > 0
