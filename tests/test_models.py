"""Every registered model (each option of conf/model/, and the torchvision names below) keeps the
protocol's promises: random gate patterns, with removed blocks and one-channel groups, compact to a
plain network that computes what the gated one computes, and whose FLOPs are what the protocol
predicted and what torch.utils.flop_counter counts. A new model gets these tests by its config."""
import os

import pytest
import torch
from hydra.utils import instantiate
from torch.utils.flop_counter import FlopCounterMode

from gated_pruning.arch import model_node
from gated_pruning.gates import NoBinarizer, ThresholdBinarizer
from gated_pruning.models.protocol import rebuilt

from conftest import CONF, make_cfg, preset_needs

MODELS = sorted(f[:-5] for f in os.listdir(os.path.join(CONF, "model")) if f.endswith(".yaml"))
TORCHVISION = ["resnet18", "mobilenet_v2", "mobilenet_v3_small"]
# every option at a small width (a ResNet-110 at width 1 is slow to trace for nothing)
VARIANTS = [(m, preset_needs(None).get(f"model={m}", [])) for m in MODELS if m != "torchvision"] + \
    [("resnet20", ["model.gate_stream=true", "model.block_gates=true"]),
     ("resnet20", ["model.block_gates=true", "model.inner_gates=false", "model.gate_position=relu"])] + \
    [("torchvision", [f"model.name={n}"]) for n in TORCHVISION] + \
    [("torchvision", ["model.name=resnet18", "model.block_gates=true"]),
     ("torchvision", ["model.name=resnet50", "model.block_gates=true", "model.channel_gates=false", "model.width=0.25"])]


def build(model, extra, binarizer=None):
    cfg = make_cfg(f"model={model}", *extra)
    m = model_node(cfg)
    if "width" in m and model != "torchvision":
        m.width = 0.25 if model.startswith("vgg") else 0.5
    return instantiate(m, num_classes=10, binarizer=binarizer or NoBinarizer())


def counted_flops(net) -> int:
    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, 32, 32))
    return int(counter.get_total_flops())


def random_pattern(model, seed):
    """Zero about half of every unit's gates (some whole blocks, and some groups down to one)."""
    g = torch.Generator().manual_seed(seed)
    masks = []
    with torch.no_grad():
        for i, (unit, gate) in enumerate(zip(model.units(), model.gates())):
            keep = torch.rand(unit.size, generator=g) > 0.5
            if unit.kind == "channels":
                if i % 3 == 0:  # a group cut to its last channel
                    keep[:] = False
                keep[torch.randint(unit.size, (1,), generator=g)] = True
            gate.weight.copy_(torch.where(keep, 0.2 + torch.rand(unit.size, generator=g), torch.zeros(unit.size)))
            masks.append(keep)
    return masks


@pytest.mark.parametrize("model,extra", VARIANTS, ids=[f"{m}{'-' + '-'.join(e) if e else ''}" for m, e in VARIANTS])
def test_compact_equals_gated_and_flops_agree_three_ways(model, extra):
    torch.manual_seed(0)
    net = build(model, extra)
    units = net.units()
    assert units and len(net.gates()) == len(units)
    assert net.flops() == counted_flops(net)  # the table of the dense network
    net.train()
    net(torch.randn(16, 3, 32, 32))  # batch-norm statistics that are not the identity
    for seed in (0, 1):
        masks = random_pattern(net, seed)
        small = net.compact(masks)
        net.eval()
        small.eval()
        x = torch.randn(8, 3, 32, 32)
        with torch.no_grad():
            ref, out = net(x), small(x)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
        predicted = net.flops([int(m.sum()) for m in masks])
        assert predicted == counted_flops(small) == small.flops()
        assert predicted < net.flops()
        assert not list(small.gates()) and sum(p.numel() for p in small.parameters()) < \
            sum(p.numel() for n, p in net.named_parameters() if "gate" not in n)


def test_block_gates_remove_blocks_and_the_shortcut_stays():
    net = build("resnet20", ["model.block_gates=true", "model.inner_gates=false"])
    units = net.units()
    assert [u.kind for u in units] == ["block"] * 9 and all(u.minimum == 0 for u in units)
    masks = [torch.tensor([i not in (1, 3)]) for i in range(9)]  # block 3 has the projection
    with torch.no_grad():
        for gate, m in zip(net.gates(), masks):
            gate.weight.fill_(1.0 if m else 0.0)
    small = net.compact(masks)
    spec = small.spec()["blocks"]
    assert [b["present"] for b in spec] == [i not in (1, 3) for i in range(9)]
    assert spec[3]["stride"] == 2 and spec[3]["out"] == 2 * spec[2]["out"]  # the projection survives
    net.eval()
    small.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(small(x), net(x))


def test_a_removed_blocks_inner_channels_may_count_zero_and_no_other_unit_may():
    # what a "both" run records (kept counts per unit, 0 for everything a removed block took along)
    # must rebuild for Scratch-E; a channel group left with nothing outside a removed block is refused
    net = build("resnet20", ["model.block_gates=true"])
    units = net.units()
    assert [u.kind for u in units[:2]] == ["channels", "block"] and units[0].minimum == 1
    counts = [u.size for u in units]
    counts[0] = counts[1] = 0  # block 0 removed, its inner channels with it
    small = rebuilt(net, counts)
    assert not small.spec()["blocks"][0]["present"] and small.flops() == net.flops(counts)
    counts[1] = 1  # block 0 kept, its inner channels none
    with pytest.raises(ValueError, match="unit block0.inner keeps 0 of .*fewer than its minimum 1"):
        rebuilt(net, counts)


@pytest.mark.parametrize("gates", ["binary", "float"])
def test_binary_and_float_gates_compact_alike(gates):
    binarizer = ThresholdBinarizer(0.5) if gates == "binary" else NoBinarizer()
    net = build("resnet20", ["model.gate_stream=true", "model.block_gates=true"], binarizer)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for gate in net.gates():
            gate.weight.copy_(torch.rand(gate.weight.shape, generator=g))
    masks = [gate.hard() != 0 for gate in net.gates()]
    for u, m in zip(net.units(), masks):
        if u.minimum and not m.any():
            m[0] = True
    with torch.no_grad():
        for gate, m in zip(net.gates(), masks):
            gate.weight[~m] = 0.0
    small = net.compact(masks)
    net.eval()
    small.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(small(x), net(x), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name,why", [("resnext50_32x4d", "grouped convolution"), ("densenet121", "concatenated"),
                                      ("squeezenet1_0", "no channel group is written by a batch norm"),
                                      ("not_a_model", "not a torchvision classification model")])
def test_an_architecture_the_graph_cannot_gate_is_refused_with_one_line(name, why):
    from gated_pruning.models import tv

    with pytest.raises(ValueError, match=why) as e:
        tv.build(name, num_classes=10)
    assert "\n" not in str(e.value) and str(e.value).startswith(f"model.name={name}")



@pytest.mark.parametrize("model,extra", VARIANTS, ids=[f"{m}{'-' + '-'.join(e) if e else ''}" for m, e in VARIANTS])
def test_the_flops_function_of_tensors_equals_the_table(model, extra):
    """What the budget evaluates every step (the table as index and coefficient tensors) is the
    protocol's table, for any kept counts."""
    net = build(model, extra)
    g = torch.Generator().manual_seed(0)
    flops = net.flops_function()
    for _ in range(3):
        counts = [int(torch.randint(u.minimum, u.size + 1, (1,), generator=g)) for u in net.units()]
        expected = float(net.flops(counts))
        assert float(flops(torch.tensor(counts, dtype=torch.float32))) == pytest.approx(expected, rel=1e-6)
