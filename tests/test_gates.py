"""Binarizers: forward values and the gradient that reaches the float gate."""
import pytest
import torch

from gated_pruning.gates import Gate, NoBinarizer, StochasticBinarizer, ThresholdBinarizer


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
