"""Penalties: the L1 coefficients handed to the gate optimizer, the smooth parts and their
gradients (polarization, expected L0), FLOPs weighting and the layer floor, by hand."""
import math

import pytest
import torch

from gated_pruning.gates import HardConcreteBinarizer, ThresholdBinarizer
from gated_pruning.models.vgg import VGG, build
from gated_pruning.penalty import L1, ExpectedL0, Polarization


def one_layer(values, **kw):
    """A VGG with one conv layer of len(values) channels, gates set to `values`."""
    model = VGG([len(values)], num_classes=2, **kw)
    with torch.no_grad():
        model.gates()[0].weight.copy_(torch.tensor(values))
    return model


def test_l1_hands_gamma_per_gate_to_the_optimizer_and_has_no_smooth_part():
    model = one_layer([0.2, 0.6, 1.0])
    pen = L1(0.5).bind(model)
    (p, c), = pen.l1().scaled().items()
    assert p is model.gates()[0].weight and c.tolist() == [0.5, 0.5, 0.5]
    assert pen.loss() is None
    assert pen.value().item() == pytest.approx(0.5 * 1.8)


def test_polarization_loss_and_gradient_by_hand():
    model = one_layer([0.25, 0.5, 0.75])  # exact in float32, so sign(0.5 - mean) is 0
    pen = Polarization(1.0, t=1.2).bind(model)
    assert list(pen.l1().scaled().values())[0].tolist() == pytest.approx([1.2] * 3)  # t * gamma, to the prox
    loss = pen.loss()  # -sum |g - mean|, mean 0.5: -(0.25 + 0 + 0.25)
    assert loss.item() == pytest.approx(-0.5)
    loss.backward()
    # d/dg_i = -sign(g_i - m) + mean_j sign(g_j - m) = [1, 0, -1] + 0: below the mean pushed down,
    # above pushed up (gradient descent moves against the gradient)
    assert model.gates()[0].weight.grad.tolist() == pytest.approx([1.0, 0.0, -1.0])


def test_polarization_global_scope_uses_one_mean_over_all_layers():
    model = VGG([2, 2], num_classes=2)
    with torch.no_grad():
        model.gates()[0].weight.copy_(torch.tensor([0.0, 0.2]))
        model.gates()[1].weight.copy_(torch.tensor([0.8, 1.0]))
    per_layer = Polarization(1.0, scope="layer").bind(model).loss().item()
    overall = Polarization(1.0, scope="global").bind(model).loss().item()
    assert per_layer == pytest.approx(-(0.1 + 0.1 + 0.1 + 0.1))  # means 0.1 and 0.9
    assert overall == pytest.approx(-(0.5 + 0.3 + 0.3 + 0.5))    # one mean, 0.5


def test_layer_floor_exempts_its_channels_from_every_part():
    model = one_layer([0.25, 0.5, 0.75], min_keep=1)
    l1 = L1(1.0).bind(model).l1()
    assert list(l1.values())[0].tolist() == [1.0, 1.0, 0.0]  # the largest gate is held open
    pen = Polarization(1.0, t=1.2).bind(model)
    pen.loss().backward()
    # -sum_j c_j |g_j - m| with c = [1, 1, 0]: d/dg_i = -c_i sign(g_i - m) + mean_j c_j sign(g_j - m)
    assert model.gates()[0].weight.grad.tolist() == pytest.approx([1 - 1 / 3, -1 / 3, -1 / 3])


def test_flops_weights_are_each_channels_cost_over_the_mean_cost():
    model = build(11, width=0.125, num_classes=10)
    pen = L1(1.0, flops_weighted=True).bind(model)
    costs = model.channel_costs()
    widths = model.widths()
    mean = sum(c * w for c, w in zip(costs, widths)) / sum(widths)
    coeffs = list(pen.l1().scaled().values())
    for c, w, k in zip(costs, widths, coeffs):
        assert k.tolist() == pytest.approx([c / mean] * w)
    assert torch.cat(coeffs).mean().item() == pytest.approx(1.0)  # gamma keeps its meaning


def test_channel_cost_is_what_removing_one_channel_saves():
    model = VGG([4, "M", 6], num_classes=3, gated=True)
    # conv0 channel: its own 3*9 MACs on 32x32 plus 6*9 MACs of conv1 on 16x16; conv1 channel:
    # 4*9 MACs on 16x16 plus the classifier's 3
    assert model.channel_costs() == [2 * (3 * 9 * 32 * 32 + 6 * 9 * 16 * 16), 2 * (4 * 9 * 16 * 16 + 3)]


def test_expected_l0_is_gamma_times_the_sum_of_open_probabilities():
    model = one_layer([0.0, 1.0], binarizer=HardConcreteBinarizer())
    pen = ExpectedL0(0.1).bind(model)
    assert pen.l1() is None
    p = [1 / (1 + math.exp(-(a + (2 / 3) * math.log(1.1 / 0.1)))) for a in (0.0, 1.0)]
    loss = pen.loss()
    assert loss.item() == pytest.approx(0.1 * sum(p))
    loss.backward()
    assert model.gates()[0].weight.grad.tolist() == pytest.approx([0.1 * q * (1 - q) for q in p])


def test_penalties_refuse_the_wrong_gate_kind():
    with pytest.raises(ValueError, match="hard_concrete"):
        ExpectedL0(0.1).bind(one_layer([0.5], binarizer=ThresholdBinarizer(0.5)))
    with pytest.raises(ValueError, match="penalty=l0"):
        L1(0.1).bind(one_layer([0.5], binarizer=HardConcreteBinarizer()))
    with pytest.raises(ValueError, match="t="):
        Polarization(0.1, t=0.0)
    with pytest.raises(ValueError, match="scope"):
        Polarization(0.1, scope="network")
