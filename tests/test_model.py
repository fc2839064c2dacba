"""VGG of every depth; the fused BN*gate equals BN followed by a separate gate multiply."""
import pytest
import torch
from torch import nn

from gated_pruning.gates import ThresholdBinarizer
from gated_pruning.models.vgg import VGG, build, vgg_widths
from gated_pruning.optim import split_parameters


@pytest.mark.parametrize("depth,convs", [(11, 8), (13, 10), (16, 13), (19, 16)])
def test_every_depth_builds_and_runs(depth, convs):
    model = build(depth, width=0.125, num_classes=7)
    assert len(model.gates()) == convs
    assert model.widths() == [v for v in vgg_widths(depth, 0.125) if v != "M"]
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(g.weight.grad is not None for g in model.gates())


def test_full_vgg16_has_the_standard_widths():
    assert build(16).widths() == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert vgg_widths(16, 0.25)[:2] == [16, 16]


def test_plain_baseline_has_no_gates():
    model = build(16, width=0.125, gated=False)
    assert model.gates() == [] and split_parameters(model)[1] == []


@pytest.mark.parametrize("binarizer", [None, ThresholdBinarizer(0.5)])
@pytest.mark.parametrize("train", [True, False])
def test_fused_gate_equals_bn_then_gate(binarizer, train):
    torch.manual_seed(0)
    model = VGG([6, "M", 5], num_classes=3, binarizer=binarizer)
    for g in model.gates():
        with torch.no_grad():
            g.weight.copy_(torch.rand(g.weight.shape) * 1.2 - 0.1)
    ref = VGG([6, "M", 5], num_classes=3, gated=False)
    ref.load_state_dict({k: v for k, v in model.state_dict().items() if "gate" not in k})
    model.train(train); ref.train(train)
    x = torch.randn(4, 3, 32, 32)
    h = x
    for m in ref.features:
        if isinstance(m, nn.MaxPool2d):
            h = m(h)
            continue
        i = list(ref.features).index(m)
        gate = model.features[i].gate
        h = torch.relu(gate(m.bn(m.conv(h))))
    expect = ref.classifier(torch.flatten(torch.nn.functional.adaptive_max_pool2d(h, 1), 1))
    torch.testing.assert_close(model(x), expect, rtol=1e-5, atol=1e-5)
    if train:  # both paths updated the running statistics the same way
        torch.testing.assert_close(model.features[0].bn.running_mean, ref.features[0].bn.running_mean)


def test_gate_parameters_are_split_from_weights():
    model = build(11, width=0.125)
    weights, gates = split_parameters(model)
    assert len(gates) == 8 and all(p.dim() == 1 for p in gates)
    assert len(weights) + len(gates) == len(list(model.parameters()))


def test_bad_depth_and_width():
    with pytest.raises(ValueError, match="model.depth"):
        vgg_widths(17)
    with pytest.raises(ValueError, match="model.width"):
        vgg_widths(16, 0)
