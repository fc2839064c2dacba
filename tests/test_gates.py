"""Binarizers: forward values and the gradient that reaches the float gate; hard-concrete
gates against hand-computed samples and expected L0; the layer floor; initial jitter."""
import math

import pytest
import torch

from gated_pruning.gates import (Gate, HardConcreteBinarizer, NoBinarizer, StochasticBinarizer,
                                 ThresholdBinarizer, floor_count)


def grad_through(binarizer, values, training=True):
    w = torch.tensor(values, requires_grad=True)
    out = binarizer(w, training)
    (out * torch.arange(1.0, len(values) + 1)).sum().backward()
    return out.detach(), w.grad


def test_float_gates_are_the_identity():
    out, grad = grad_through(NoBinarizer(), [0.3, -0.2, 0.0])
    assert out.tolist() == pytest.approx([0.3, -0.2, 0.0])
    assert grad.tolist() == [1.0, 2.0, 3.0]


def test_threshold_forward_and_identity_straight_through():
    out, grad = grad_through(ThresholdBinarizer(0.5), [0.7, 0.5, 0.2, -1.0, 1.5])
    assert out.tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]  # strictly greater than the threshold
    assert grad.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]  # identity STE: upstream gradient as is


def test_threshold_clipped_estimator_blocks_outside_unit_interval():
    out, grad = grad_through(ThresholdBinarizer(0.5, "clipped"), [0.7, 0.2, -1.0, 1.5, 1.0])
    assert out.tolist() == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert grad.tolist() == [1.0, 2.0, 0.0, 0.0, 5.0]


def test_stochastic_samples_bernoulli_in_training_and_thresholds_in_eval():
    torch.manual_seed(0)
    b = StochasticBinarizer(threshold=0.5)
    w = torch.tensor([0.0, 0.25, 0.75, 1.0, 2.0, -1.0]).repeat(4000, 1).T.contiguous().view(-1)
    out = b(w, training=True).view(6, -1)
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    means = out.mean(dim=1)
    assert means[[0, 3, 4, 5]].tolist() == [0.0, 1.0, 1.0, 0.0]
    assert abs(means[1] - 0.25) < 0.03 and abs(means[2] - 0.75) < 0.03
    assert b(torch.tensor([0.25, 0.75]), training=False).tolist() == [0.0, 1.0]
    _, grad = grad_through(b, [0.3, 0.9])
    assert grad.tolist() == [1.0, 2.0]


@pytest.mark.parametrize("t", [-0.1, 1.0, 2.0])
def test_threshold_outside_range_is_refused(t):
    with pytest.raises(ValueError, match="threshold"):
        ThresholdBinarizer(t)


def test_gate_module_multiplies_channels_and_trains_float_gate():
    gate = Gate(3, init=1.0, binarizer=ThresholdBinarizer(0.5))
    with torch.no_grad():
        gate.weight.copy_(torch.tensor([0.9, 0.1, 0.6]))
    x = torch.ones(2, 3, 4, 4, requires_grad=True)
    y = gate(x)
    assert y[:, 0].eq(1).all() and y[:, 1].eq(0).all() and y[:, 2].eq(1).all()
    y.sum().backward()
    assert gate.weight.grad.tolist() == [32.0, 32.0, 32.0]  # STE: d(sum)/d(gate) = sum of x
    assert gate.hard().tolist() == [1.0, 0.0, 1.0]


def hc_by_hand(log_alpha, u, beta=2 / 3, lo=-0.1, hi=1.1):
    s = 1 / (1 + math.exp(-(math.log(u) - math.log(1 - u) + log_alpha) / beta))
    return min(1.0, max(0.0, s * (hi - lo) + lo))


def test_hard_concrete_sample_matches_the_formula_and_hits_exact_0_and_1():
    b = HardConcreteBinarizer()
    log_alpha = torch.tensor([0.5, 0.5, -1.0, 3.0, -3.0])
    u = torch.tensor([0.3, 0.9, 0.6, 0.999, 0.001])
    z = b.sample(log_alpha, u)
    expect = [hc_by_hand(a, v) for a, v in zip(log_alpha.tolist(), u.tolist())]
    assert z.tolist() == pytest.approx(expect, abs=1e-6)
    assert z[0].item() == pytest.approx(0.34716, abs=1e-4)  # worked by hand in the comment below
    # 0.5, u=0.3: (ln .3 - ln .7 + .5)/(2/3) = -0.52095; sigmoid = 0.37263; *1.2 - 0.1 = 0.34716
    assert z[3].item() == 1.0 and z[4].item() == 0.0       # the stretch gives exact 0 and 1


def test_hard_concrete_expected_l0_is_the_probability_of_a_nonzero_gate():
    b = HardConcreteBinarizer()
    log_alpha = torch.tensor([0.0, 1.0, -2.0])
    p = b.prob_open(log_alpha)
    # P(z > 0) = sigmoid(log_alpha - beta * ln(-gamma/zeta)) = sigmoid(log_alpha + 1.59858)
    by_hand = [1 / (1 + math.exp(-(a - (2 / 3) * math.log(0.1 / 1.1)))) for a in (0.0, 1.0, -2.0)]
    assert p.tolist() == pytest.approx(by_hand, abs=1e-6)
    assert p[0].item() == pytest.approx(0.83184, abs=1e-4)
    torch.manual_seed(0)
    draws = b(log_alpha.repeat(20000, 1), training=True)
    assert (draws > 0).float().mean(0).tolist() == pytest.approx(by_hand, abs=0.01)  # Monte Carlo


def test_hard_concrete_is_exact_0_1_after_training_and_has_a_gradient_in_training():
    b = HardConcreteBinarizer()
    assert b(torch.tensor([0.3, -0.3, 0.0]), training=False).tolist() == [1.0, 0.0, 0.0]
    torch.manual_seed(1)
    w = torch.zeros(5, requires_grad=True)
    z = b(w, training=True)
    z.sum().backward()
    assert w.grad.abs().sum() > 0
    st = HardConcreteBinarizer(estimator="straight_through")
    w = torch.zeros(2000, requires_grad=True)
    z = st(w, training=True)
    assert set(z.detach().unique().tolist()) <= {0.0, 1.0}   # 0/1 in training as well
    z.sum().backward()
    assert w.grad.abs().sum() > 0                            # the relaxed sample's gradient


@pytest.mark.parametrize("binarizer", [NoBinarizer(), ThresholdBinarizer(0.5), StochasticBinarizer(0.5),
                                       HardConcreteBinarizer()])
def test_layer_floor_holds_the_largest_gates_open(binarizer):
    gate = Gate(6, binarizer=binarizer, min_keep=2)
    with torch.no_grad():
        gate.weight.copy_(torch.tensor([-0.5, 0.2, -0.1, 0.3, -2.0, -0.4]))
    assert gate.floor().tolist() == [False, True, False, True, False, False]
    if binarizer.binary:
        assert gate.hard().tolist() == [0.0, 1.0, 0.0, 1.0, 0.0, 0.0]
        gate.eval()
        assert gate.value().tolist() == [0.0, 1.0, 0.0, 1.0, 0.0, 0.0]
        gate.train()
        torch.manual_seed(0)
        assert gate.value()[[1, 3]].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("min_keep,count", [(0, 0), (0.1, 2), (0.5, 8), (3, 3), (40, 16)])
def test_floor_counts(min_keep, count):
    assert floor_count(min_keep, 16) == count


@pytest.mark.parametrize("bad", [-0.1, 2.5])
def test_floor_refuses_bad_values(bad):
    with pytest.raises(ValueError, match="min_keep"):
        floor_count(bad, 16)


def test_jitter_spreads_the_initial_gates_around_gate_init():
    torch.manual_seed(0)
    w = Gate(4000, init=0.6, jitter=0.05).weight.detach()
    assert abs(w.mean().item() - 0.6) < 0.005 and abs(w.std().item() - 0.05) < 0.005
    assert Gate(5, init=0.6).weight.tolist() == pytest.approx([0.6] * 5)
