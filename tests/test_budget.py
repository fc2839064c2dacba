"""The FLOPs budget controller: its schedule by hand, reaching targets on a model whose gates have
known importances, exact state round trip, and a real (synthetic-data) run through run.py."""
import json
import os

import pytest
import torch

from gated_pruning.budget import FlopsBudget
from gated_pruning.models.vgg import VGG
from gated_pruning.optim import APG
from gated_pruning.penalty import L1

from conftest import run_py


def test_schedule_goes_linearly_from_one_to_the_target_then_holds():
    b = FlopsBudget(0.4, start=0.1, ramp=0.5)
    b.total_steps = 100
    assert [b.schedule(s) for s in (0, 10, 35, 60, 100)] == pytest.approx([1.0, 1.0, 0.7, 0.4, 0.4])


def toy(target, steps=3000, seed=0):
    """Gates of a 3-layer VGG under the data loss sum_i a_i (1 - g_i)^2 (channel i's importance
    a_i, log-uniform), L1 by APG: at a fixed gamma a gate settles at 1 - gamma / (2 a_i) or 0,
    so the FLOPs kept fall as gamma grows. Returns (budget, model)."""
    model = VGG([8, "M", 16, "M", 16], num_classes=10)
    g = torch.Generator().manual_seed(seed)
    imp = [torch.exp(torch.empty(w.numel()).uniform_(-5, 1, generator=g)) for w in
           (x.weight for x in model.gates())]
    penalty = L1(1e-3).bind(model)
    opt = APG([x.weight for x in model.gates()], lr=0.1, momentum=0.9)
    budget = FlopsBudget(target, ramp=0.5, freeze=None).bind(
        model, penalty, lambda: [opt.state[x.weight]["prox"] if opt.state else x.weight.detach()
                                 for x in model.gates()], steps)
    for step in range(1, steps + 1):
        loss = sum((a * (1 - x.weight) ** 2).sum() for a, x in zip(imp, model.gates()))
        opt.zero_grad()
        loss.backward()
        opt.step(l1=penalty.l1())
        budget.update(step)
    return budget, model


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
def test_controller_ends_within_three_points_of_the_target(target):
    budget, _ = toy(target)
    assert abs(budget.kept.item() - target) <= 0.03, budget.kept
    assert budget.penalty.gamma.item() > 1e-3  # it had to raise gamma to get there


def test_state_dict_round_trip_continues_identically():
    a, _ = toy(0.5, steps=200)
    b = FlopsBudget(0.5, ramp=0.5).bind(VGG([8, "M", 16, "M", 16], num_classes=10),
                                       L1(1e-3).bind(VGG([8, "M", 16, "M", 16], num_classes=10)),
                                       lambda: [], 200)
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.integral, a.integral) and torch.equal(b.penalty.gamma, a.penalty.gamma)


@pytest.mark.parametrize("kwargs,match", [
    (dict(target=0.0), "target_flops"), (dict(target=1.5), "target_flops"),
    (dict(target=0.5, start=0.6, ramp=0.5), "start"), (dict(target=0.5, ki=0.0), "ki"),
])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FlopsBudget(**kwargs)


@pytest.mark.slow
def test_a_budget_run_on_the_synthetic_set_ends_at_its_target(tmp_path):
    r = run_py("experiment=smoke", "target_flops=0.5", "model.gate_position=relu", "dataset.train_size=1024",
               "trainer.epochs=6", "binarizer=threshold", "model.gate_init=0.6", "model.gate_jitter=0.02",
               "gamma=1e-3", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    res = json.load(open(os.path.join(tmp_path, "results.json")))
    hist = res["gates"]["history"]
    assert all("gamma" in h and "flops_kept" in h and "flops_target" in h for h in hist)
    assert len({round(h["gamma"], 12) for h in hist}) > 3  # the controller moved gamma
    assert hist[-1]["frozen"] and hist[-1]["gamma"] == 0.0  # frozen at 60%: penalty off
    kept = res["prune"]["kept"]["flops"]
    assert 0.5 - 0.03 <= kept <= 0.5, res["prune"]["kept"]
    assert kept == pytest.approx(hist[-1]["flops_kept"], abs=1e-6)
    assert res["cost"]["flops_kept"] == pytest.approx(kept)
    assert res["target"] == {"kind": "budget", "flops": 0.5, "reached": res["cost"]["flops_kept"], "missed": False}


def test_freeze_cuts_to_the_target_and_keeps_closed_channels_closed():
    model = VGG([32, "M", 64, "M", 64], num_classes=10)  # one channel is at most ~2% of the FLOPs
    penalty = L1(1e-6).bind(model)  # far too weak to prune by itself: the freeze must cut
    opt = APG([x.weight for x in model.gates()], lr=0.1, momentum=0.9)
    weights = lambda: [x.weight.detach() for x in model.gates()]  # noqa: E731
    budget = FlopsBudget(0.4, ramp=0.5, freeze=0.6).bind(model, penalty, weights, 100)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for x in model.gates():
            x.weight.copy_(torch.rand(x.weight.shape, generator=g))
    for step in range(1, 101):
        loss = sum(((1 - x.value()) ** 2).sum() for x in model.gates())
        opt.zero_grad()
        loss.backward()
        opt.step(l1=penalty.l1())
        budget.update(step)
        if step == 59:
            assert not budget.frozen
    assert budget.frozen and penalty.gamma.item() == 0.0
    kept = budget.kept.item()
    assert 0.4 - 0.03 <= kept <= 0.4
    # the closed channels are exactly zero, although the loss pulls every gate towards 1
    for x in model.gates():
        assert (x.hard()[~x.mask] == 0).all() and x.mask.any() and bool(x.frozen)
    assert model.flops([int(x.mask.sum()) for x in model.gates()]) / model.flops() == pytest.approx(kept)


def test_frozen_binary_gates_stay_open_or_closed_whatever_their_latent_value():
    from gated_pruning.gates import Gate, ThresholdBinarizer

    gate = Gate(4, init=0.6, binarizer=ThresholdBinarizer(0.5))
    gate.freeze(torch.tensor([True, True, False, True]))
    with torch.no_grad():
        gate.weight.copy_(torch.tensor([0.1, 0.9, 0.9, -3.0]))  # latent values that would flip them
    assert gate.value().tolist() == gate.hard().tolist() == [1.0, 1.0, 0.0, 1.0]
    assert gate.state_dict()["frozen"].item() and gate.state_dict()["mask"].tolist() == [True, True, False, True]


def binary_toy(target, latents, **budget_kwargs):
    """A 3-layer VGG with binary gates whose latent values are `latents` (one tensor per layer),
    and a budget bound to them (the latents stay where they are: no training)."""
    from gated_pruning.gates import ThresholdBinarizer

    model = VGG([len(x) if i % 2 == 0 else "M" for i, x in enumerate(sum(([t, None] for t in latents), [])[:-1])],
                num_classes=10, binarizer=ThresholdBinarizer(0.5))
    with torch.no_grad():
        for gate, lat in zip(model.gates(), latents):
            gate.weight.copy_(lat)
    penalty = L1(1e-3).bind(model)
    weights = lambda: [x.weight.detach() for x in model.gates()]  # noqa: E731
    return model, FlopsBudget(target, **budget_kwargs).bind(model, penalty, weights, 100)


def test_freeze_on_target_stops_selecting_as_soon_as_the_ramp_is_over_and_the_budget_met():
    g = torch.Generator().manual_seed(0)
    latents = [torch.rand(n, generator=g) for n in (16, 32, 32)]  # about half of them below 0.5
    model, budget = binary_toy(0.6, latents, ramp=0.3, freeze=0.8, freeze_on_target=True)
    assert budget.kept_fraction().item() < 0.6  # already under the target
    for step in range(1, 30):  # during the ramp: no freeze, even though the budget is met
        budget.update(step)
        assert not budget.frozen
    budget.update(30)  # the ramp's last step: frozen there, not at 80% of the run
    assert budget.frozen and budget.penalty.gamma.item() == 0.0


def test_reopen_gives_an_overshot_binary_network_its_best_closed_channels_back():
    g = torch.Generator().manual_seed(1)
    latents = [torch.rand(n, generator=g) * 0.6 for n in (16, 32, 32)]  # most gates closed
    model, budget = binary_toy(0.5, latents, freeze=0.5, reopen=True)
    before = [x.hard().bool() for x in model.gates()]
    dense = model.flops()
    assert model.flops([int(b.sum()) for b in before]) / dense < 0.4  # overshot by > 10 points
    budget.freeze_architecture()
    after = [x.mask.clone() for x in model.gates()]
    counts = [int(a.sum()) for a in after]
    kept = model.flops(counts) / dense
    assert kept <= 0.5 and budget.kept.item() == pytest.approx(kept)
    assert all((a | ~b).all() for a, b in zip(after, before))  # nothing open was closed
    # by hand: no closed channel fits under the target any more ...
    for layer in range(3):
        if not after[layer].all():
            more = list(counts)
            more[layer] += 1
            assert model.flops(more) / dense > 0.5
    # ... and within a layer, the reopened channels are those with the largest latent values
    for lat, a, b in zip(latents, after, before):
        reopened, still_closed = lat[a & ~b], lat[~a]
        if len(reopened) and len(still_closed):
            assert reopened.min() >= still_closed.max()
    # frozen binary gates are their mask: the reopened channels are open now
    assert all(torch.equal(x.value(), x.mask.float()) for x in model.gates())


def test_reopen_leaves_float_gates_before_the_relu_as_they_are():
    g = torch.Generator().manual_seed(2)
    model = VGG([16, "M", 32, "M", 32], num_classes=10)  # gate_position=bn: a zero gate gets no gradient
    with torch.no_grad():
        for x in model.gates():
            x.weight.copy_(torch.rand(x.weight.shape, generator=g) * (torch.rand(x.weight.shape, generator=g) > 0.7))
    weights = lambda: [x.weight.detach() for x in model.gates()]  # noqa: E731
    budget = FlopsBudget(0.9, freeze=0.5, reopen=True).bind(model, L1(1e-3).bind(model), weights, 100)
    before = [x.hard() != 0 for x in model.gates()]
    for step in range(1, 5):
        budget.update(step)
    budget.freeze_architecture()
    assert all(torch.equal(x.mask, b) for x, b in zip(model.gates(), before))  # nothing that could train back


def closing_resnet(target, inner_position, close_at, steps=40, inner_open=1.0, **budget_kwargs):
    """ResNet-20 x0.25 with float block gates (and inner channel gates at `inner_position`), a
    budget with reopen, and a history: block i's gate is 1 until step close_at[i] and 0 after;
    the inner gates are open, or with `inner_open=0.5` every other channel closed from the start.
    Returns (model, budget, the block units' indices)."""
    from gated_pruning.models.resnet import build

    model = build(depth=20, width=0.25, num_classes=10, block_gates=True, gate_position=inner_position)
    units = model.units()
    blocks = [i for i, u in enumerate(units) if u.kind == "block"]
    gates = model.gates()
    weights = lambda: [x.weight.detach() for x in gates]  # noqa: E731
    budget = FlopsBudget(target, freeze=1.0, reopen=True, **budget_kwargs).bind(model, L1(1e-3).bind(model), weights, 100)
    with torch.no_grad():
        for i, u in enumerate(units):
            if u.kind == "channels":
                gates[i].weight.copy_(((torch.arange(u.size) % 2) < 2 * inner_open).float())
        for step in range(1, steps + 1):
            for b, t in zip(blocks, close_at):
                gates[b].weight.fill_(1.0 if step < t else 0.0)
            budget.update(step)
    return model, budget, blocks


def test_reopen_gives_float_block_gates_back_in_the_order_they_closed():
    # 9 blocks closing one per step from step 2 on, in a scrambled order; at the freeze all are closed
    close_at = [2 + k for k in (4, 0, 7, 2, 8, 1, 5, 3, 6)]
    model, budget, blocks = closing_resnet(0.6, "relu", close_at)
    gates = model.gates()
    dense = model.flops()
    assert budget.kept_fraction().item() < 0.3  # every block gone
    budget.freeze_architecture()
    # by hand: walk the blocks from the last closed to the first, reopening each that fits
    counts = [int((x.hard() != 0).sum()) for x in gates]
    for b in sorted(blocks, key=lambda b: -close_at[blocks.index(b)]):
        counts[b] = 1
        if model.flops(counts) > 0.6 * dense:
            counts[b] = 0
    reopened = [int(gates[b].mask.item()) for b in blocks]
    assert reopened == [counts[b] for b in blocks] and 0 < sum(reopened) < len(blocks)
    last = sorted(range(9), key=lambda k: -close_at[k])  # the reopened are the last to close
    assert [reopened[k] for k in last] == sorted(reopened, reverse=True)
    assert budget.kept.item() <= 0.6 and budget.kept.item() == pytest.approx(
        model.flops([int(x.mask.sum()) for x in gates]) / dense)
    assert all(x.hard()[x.mask].sum() == 0 for b, x in enumerate(gates) if b in blocks)  # they restart at 0


def test_reopen_passes_over_channel_gates_folded_before_the_relu():
    close_at = [2 + k for k in range(9)]
    model, budget, blocks = closing_resnet(0.9, "bn", close_at, inner_open=0.5)
    gates, units = model.gates(), model.units()
    inner = [i for i, u in enumerate(units) if u.kind == "channels"]
    before = {i: gates[i].hard() != 0 for i in inner}
    budget.freeze_architecture()
    assert all(torch.equal(gates[i].mask, before[i]) for i in inner)  # a zero gate there gets no gradient
    assert all(bool(gates[b].mask) for b in blocks)  # blocks always can: every one back under 90%


def test_reopen_state_round_trip_and_a_checkpoint_without_it_is_refused():
    close_at = [2 + k for k in range(9)]
    _, a, _ = closing_resnet(0.6, "relu", close_at, steps=20)
    _, b, _ = closing_resnet(0.6, "relu", [100] * 9, steps=1)
    b.load_state_dict(a.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(a.last_open, b.last_open))
    state = a.state_dict()
    del state["last_open"]
    with pytest.raises(ValueError, match="last open"):
        b.load_state_dict(state)
