"""APG and GateSGD against steps computed by hand from MISSION.md's equations; the L1
coefficients come from the penalty at every step (`opt.step(l1=...)`)."""
import pytest
import torch

from gated_pruning.optim import APG, GateSGD, lr_lambda


def step(opt, p, grad, l1=None):
    p.grad = torch.tensor(grad)
    opt.step(l1=l1)


def close(a, b):
    torch.testing.assert_close(a, torch.tensor(b), rtol=0, atol=1e-6)


def test_soft_thresholding_lands_exactly_on_zero():
    # zero gradient, no momentum history: one step is s = S_{lr*gamma}(w) with lr*gamma = 0.1
    p = torch.nn.Parameter(torch.tensor([0.3, 0.1, -0.05, -0.1, -0.4, 0.0]))
    opt = APG([p], lr=0.1, momentum=0.9, clamp=False)
    step(opt, p, [0.0] * 6, l1=1.0)
    s = opt.state[p]["prox"]
    close(s, [0.2, 0.0, 0.0, 0.0, -0.3, 0.0])
    assert (s[1:4] == 0).all() and (s[5] == 0)  # exactly, not approximately


def test_apg_two_steps_by_hand_lookahead_no_clamp():
    # lr 0.1, gamma 1 -> threshold 0.1; mu 0.9
    p = torch.nn.Parameter(torch.tensor([1.0, 0.05, -0.3]))
    opt = APG([p], lr=0.1, momentum=0.9, clamp=False, forward="lookahead")
    step(opt, p, [0.5, 0.2, -1.0], l1=1.0)
    # z = [0.95, 0.03, -0.2]; s = [0.85, 0, -0.1]; v = s - w = [-0.15, -0.05, 0.2]
    # w = s + 0.9 v = [0.715, -0.045, 0.08]
    close(p.detach(), [0.715, -0.045, 0.08])
    close(opt.state[p]["prox"], [0.85, 0.0, -0.1])
    assert opt.state[p]["prox"][1] == 0  # exactly
    close(opt.state[p]["momentum_buffer"], [-0.15, -0.05, 0.2])
    step(opt, p, [0.1, 0.0, 0.3], l1=1.0)
    # z = [0.705, -0.045, 0.05]; s = [0.605, 0, 0]
    # v = s - w + 0.9 v = [-0.245, 0, 0.1]; w = s + 0.9 v = [0.3845, 0, 0.09]
    close(opt.state[p]["prox"], [0.605, 0.0, 0.0])
    close(opt.state[p]["momentum_buffer"], [-0.245, 0.0, 0.1])
    close(p.detach(), [0.3845, 0.0, 0.09])
    with opt.prox_view():
        close(p.detach(), [0.605, 0.0, 0.0])
    close(p.detach(), [0.3845, 0.0, 0.09])  # restored


def test_apg_clamp_at_zero_and_prox_forward_point():
    p = torch.nn.Parameter(torch.tensor([1.0, 0.05, -0.3]))
    opt = APG([p], lr=0.1, momentum=0.9, clamp="prox", forward="prox")
    step(opt, p, [0.5, 0.2, -1.0], l1=1.0)
    # s = max([0.85, 0, -0.1], 0) = [0.85, 0, 0]; v = [-0.15, -0.05, 0.3]; w = [0.715, -0.045, 0.27]
    close(p.detach(), [0.85, 0.0, 0.0])  # the forward sees s
    close(opt.state[p]["lookahead"], [0.715, -0.045, 0.27])
    # second step: the gradient (taken at s) is applied at the look-ahead point w
    step(opt, p, [0.1, 0.0, 0.3], l1=1.0)
    # z = [0.705, -0.045, 0.24]; s = [0.605, 0, 0.14]
    close(p.detach(), [0.605, 0.0, 0.14])


def test_apg_gamma_zero_is_nesterov_momentum():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(7))
    b = torch.nn.Parameter(a.detach().clone())
    apg = APG([a], lr=0.05, momentum=0.9, clamp=False)
    sgd = torch.optim.SGD([b], lr=0.05, momentum=0.9, nesterov=True)
    for _ in range(6):
        g = torch.randn(7)
        a.grad, b.grad = g.clone(), g.clone()
        apg.step()
        sgd.step()
    torch.testing.assert_close(a.detach(), b.detach())  # float32 rounding of another order


def test_apg_zero_gate_settles_to_exact_zero_in_lookahead():
    p = torch.nn.Parameter(torch.tensor([0.05]))
    opt = APG([p], lr=0.1, momentum=0.9, clamp=False)
    for _ in range(3):
        step(opt, p, [0.0], l1=1.0)
    assert p.item() == 0.0 and opt.state[p]["prox"].item() == 0.0


def test_apg_lr_follows_a_scheduler():
    p = torch.nn.Parameter(torch.tensor([1.0]))
    opt = APG([p], lr=0.1, momentum=0.0, clamp=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 ** t)
    step(opt, p, [1.0]); sched.step()   # lr 0.1
    step(opt, p, [1.0]); sched.step()   # lr 0.05
    close(p.detach(), [0.85])


def test_gate_sgd_two_steps_by_hand():
    p = torch.nn.Parameter(torch.tensor([0.5, -0.2, 0.0]))
    opt = GateSGD([p], lr=0.1, momentum=0.9)
    step(opt, p, [0.1, 0.1, 0.1], l1=0.5)
    # grad + 0.5 sign(w) = [0.6, -0.4, 0.1]; w -= 0.1 * buf
    close(p.detach(), [0.44, -0.16, -0.01])
    step(opt, p, [0.0, 0.0, 0.0], l1=0.5)
    # buf = 0.9 [0.6, -0.4, 0.1] + 0.5 sign([0.44, -0.16, -0.01]) = [1.04, -0.86, -0.41]
    close(p.detach(), [0.336, -0.074, 0.031])


def test_gate_sgd_gamma_zero_is_momentum_sgd():
    torch.manual_seed(1)
    a = torch.nn.Parameter(torch.randn(5))
    b = torch.nn.Parameter(a.detach().clone())
    o1 = GateSGD([a], lr=0.1, momentum=0.9)
    o2 = torch.optim.SGD([b], lr=0.1, momentum=0.9)
    for _ in range(4):
        g = torch.randn(5)
        a.grad, b.grad = g.clone(), g.clone()
        o1.step(); o2.step()
    torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(lr=0.0), "lr"), (dict(lr=0.1, clamp="sometimes"), "clamp"), (dict(lr=0.1, upper=0.0), "upper"),
    (dict(lr=0.1, forward="middle"), "forward"), (dict(lr=0.1, momentum=1.0), "momentum"),
])
def test_apg_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        APG([torch.nn.Parameter(torch.ones(2))], **kwargs)


def test_apg_clamp_on_the_lookahead_point_is_the_authors_apgnag():
    # TuSimple's MXNet APGNAG: mom *= mu; z = S(w - lr*g); mom = z - w + mom; w = z + mu*mom;
    # w = max(w, 0) -- the clamp acts on the stored point only, the momentum keeps its sign
    p = torch.nn.Parameter(torch.tensor([1.0, 0.05, -0.3]))
    opt = APG([p], lr=0.1, momentum=0.9, clamp="lookahead", forward="lookahead")
    step(opt, p, [0.5, 0.2, -1.0], l1=1.0)
    # s = [0.85, 0, -0.1]; v = [-0.15, -0.05, 0.2]; w = s + 0.9 v = [0.715, -0.045, 0.08] -> max 0
    close(p.detach(), [0.715, 0.0, 0.08])
    close(opt.state[p]["momentum_buffer"], [-0.15, -0.05, 0.2])   # not clamped
    close(opt.state[p]["prox"], [0.85, 0.0, -0.1])
    step(opt, p, [0.1, 0.0, 0.3], l1=1.0)
    # z = w - lr g = [0.705, 0.0, 0.05]; s = [0.605, 0, 0]
    # v = s - w + 0.9 v = [0.605-0.715-0.135, 0-0-0.045, 0-0.08+0.18] = [-0.245, -0.045, 0.1]
    # w = s + 0.9 v = [0.3845, -0.0405, 0.09] -> max 0 = [0.3845, 0, 0.09]
    close(opt.state[p]["momentum_buffer"], [-0.245, -0.045, 0.1])
    close(p.detach(), [0.3845, 0.0, 0.09])


def test_apg_per_gate_coefficients_and_upper_bound():
    # l1 = {param: per-gate coefficient}: thresholds lr*c = [0.1, 0, 0.3]; s clamped to [0, 1]
    p = torch.nn.Parameter(torch.tensor([1.5, 0.05, 0.2]))
    opt = APG([p], lr=0.1, momentum=0.0, clamp="prox", upper=1.0, forward="prox")
    step(opt, p, [0.0, 0.0, 0.0], l1={p: torch.tensor([1.0, 0.0, 3.0])})
    close(p.detach(), [1.0, 0.05, 0.0])  # 1.5-0.1 clipped to 1; untouched; 0.2-0.3 -> 0


def test_gate_sgd_per_gate_coefficients_clamp_and_upper():
    p = torch.nn.Parameter(torch.tensor([0.02, 0.5, 0.99]))
    opt = GateSGD([p], lr=0.1, momentum=0.0, clamp=True, upper=1.0)
    step(opt, p, [0.0, 0.0, -1.0], l1={p: torch.tensor([1.0, 2.0, 0.0])})
    # w - 0.1 * (g + c sign(w)) = [0.02-0.1, 0.5-0.2, 0.99+0.1] -> [0, 0.3, 1]
    close(p.detach(), [0.0, 0.3, 1.0])


def test_nesterov_sgd_is_the_authors_weight_update():
    # APGNAG's other weights: mom = mu*mom + (g + wd*w); w -= lr * (g + wd*w + mu*mom)
    w0, lr, mu, wd = torch.tensor([1.0, -2.0]), 0.1, 0.9, 0.01
    p = torch.nn.Parameter(w0.clone())
    opt = torch.optim.SGD([p], lr=lr, momentum=mu, weight_decay=wd, nesterov=True)
    w, mom = w0.clone(), torch.zeros(2)
    for g in ([0.5, 0.1], [-0.2, 0.3], [0.0, 1.0]):
        g = torch.tensor(g)
        p.grad = g.clone()
        opt.step()
        d = g + wd * w
        mom = mu * mom + d
        w = w - lr * (d + mu * mom)
    torch.testing.assert_close(p.detach(), w)


def test_schedules():
    cos = lr_lambda("cosine", total_steps=10, steps_per_epoch=5)
    assert cos(0) == 1.0 and abs(cos(5) - 0.5) < 1e-9 and cos(10) == 0.0
    ms = lr_lambda("multistep", total_steps=100, steps_per_epoch=10, milestones=[0.5, 0.75])
    assert [ms(49), ms(50), ms(74), ms(75)] == [1.0, 0.1, 0.1, pytest.approx(0.01)]
    warm = lr_lambda("constant", total_steps=100, steps_per_epoch=10, warmup_epochs=1)
    assert warm(0) == 0.1 and warm(9) == 1.0
    with pytest.raises(ValueError, match="schedule"):
        lr_lambda("linear", 10, 5)
