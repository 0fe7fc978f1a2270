"""Optimisers and schedules: lr multipliers, weight-decay groups, LAMB, AdamW decay, accumulation."""

from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import OptimConfig
from pipeline.optim import (
    Lamb,
    build_optimizer,
    build_scheduler,
    grad_accumulation,
    lr_lambda,
    param_group_names,
    param_groups,
)


def lr(
    step: int, warmup: int = 10, total: int = 110, schedule: str = "linear", min_ratio: float = 0.0
) -> float:
    return lr_lambda(step, warmup_steps=warmup, max_steps=total, schedule=schedule, min_lr_ratio=min_ratio)


# ---------------------------------------------------------------- lr_lambda


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
def test_warmup(schedule: str) -> None:
    assert lr(0, schedule=schedule) == 0.0
    assert lr(5, schedule=schedule) == pytest.approx(0.5)
    assert lr(9, schedule=schedule) == pytest.approx(0.9)
    assert lr(10, schedule=schedule) == 1.0


def test_linear_decay() -> None:
    assert lr(60) == pytest.approx(0.5)  # halfway between warmup end (10) and max_steps (110)
    assert lr(35) == pytest.approx(0.75)
    assert lr(60, min_ratio=0.2) == pytest.approx(0.2 + 0.8 * 0.5)
    assert lr(110, min_ratio=0.2) == pytest.approx(0.2)
    assert lr(500, min_ratio=0.2) == pytest.approx(0.2)
    assert lr(110) == 0.0


def test_cosine_decay() -> None:
    assert lr(60, schedule="cosine") == pytest.approx(0.5)
    quarter = 0.5 * (1 + math.cos(math.pi * 0.25))
    assert lr(35, schedule="cosine") == pytest.approx(quarter)
    assert lr(35, schedule="cosine", min_ratio=0.1) == pytest.approx(0.1 + 0.9 * quarter)
    assert lr(110, schedule="cosine", min_ratio=0.1) == pytest.approx(0.1)
    assert lr(1000, schedule="cosine", min_ratio=0.1) == pytest.approx(0.1)


def test_constant_and_no_warmup() -> None:
    assert [lr(s, schedule="constant", min_ratio=0.3) for s in (10, 60, 110, 999)] == [1.0] * 4
    assert lr(0, warmup=0) == 1.0
    assert lr(50, warmup=0, total=100) == pytest.approx(0.5)
    # warmup == max_steps: the peak at the last step, the floor right after it.
    assert lr(10, warmup=10, total=10, min_ratio=0.2) == 1.0
    assert lr(11, warmup=10, total=10, min_ratio=0.2) == pytest.approx(0.2)


def test_warmup_longer_than_run() -> None:
    """A smoke run (max_steps=50) of a recipe with warmup 100: no error, lr still warming up."""
    values = [lr(s, warmup=100, total=50) for s in range(50)]
    assert values == pytest.approx([s / 100 for s in range(50)])


@pytest.mark.parametrize(
    "kwargs",
    [{"schedule": "step"}, {"min_ratio": 1.5}, {"min_ratio": -0.1}, {"warmup": -1}],
)
def test_lr_lambda_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        lr(3, **kwargs)


@settings(max_examples=200, deadline=None)
@given(
    warmup=st.integers(0, 50),
    extra=st.integers(0, 100),
    schedule=st.sampled_from(["linear", "cosine", "constant"]),
    min_ratio=st.floats(0.0, 1.0),
)
def test_lr_monotone(warmup: int, extra: int, schedule: str, min_ratio: float) -> None:
    total = warmup + extra
    values = [lr(s, warmup, total, schedule, min_ratio) for s in range(total + 10)]
    assert all(0.0 <= v <= 1.0 for v in values)
    up, down = values[: warmup + 1], values[warmup:]
    assert all(a < b for a, b in zip(up, up[1:]))
    assert all(a >= b - 1e-12 for a, b in zip(down, down[1:]))
    if total > 0 or warmup > 0:
        assert max(values) == 1.0
    end = 1.0 if schedule == "constant" else min_ratio
    assert values[-1] == pytest.approx(end)


# ---------------------------------------------------------------- param groups


class TinyLM(torch.nn.Module):
    """Embedding -> Linear+LayerNorm block -> head tied to the embedding, plus a frozen buffer-like param."""

    def __init__(self, vocab: int = 11, dim: int = 6) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, dim)
        self.pos = torch.nn.Embedding(4, dim)
        self.proj = torch.nn.Linear(dim, dim)
        self.norm = torch.nn.LayerNorm(dim)
        self.head = torch.nn.Linear(dim, vocab, bias=True)
        self.head.weight = self.embed.weight  # tied
        self.frozen = torch.nn.Parameter(torch.ones(dim, dim), requires_grad=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids) + self.pos(torch.arange(ids.shape[-1]))
        return self.head(self.norm(self.proj(h)))


def test_param_groups() -> None:
    model = TinyLM()
    decay, no_decay = param_group_names(model)
    assert decay == ["embed.weight", "pos.weight", "proj.weight"]
    assert no_decay == ["proj.bias", "norm.weight", "norm.bias", "head.bias"]
    assert not any(n.endswith("bias") or n.startswith("norm") for n in decay)

    groups = param_groups(model, weight_decay=0.1)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert all(set(g) == {"params", "weight_decay"} for g in groups)
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len(ids) == len(set(ids)) == len(trainable)  # each trainable param exactly once
    assert set(ids) == trainable
    assert ids.count(id(model.head.weight)) == 1  # the tied weight once
    assert id(model.frozen) not in ids


def test_param_groups_drop_empty_group() -> None:
    groups = param_groups(torch.nn.LayerNorm(4), weight_decay=0.1)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0


# ---------------------------------------------------------------- Lamb


def test_lamb_one_step_by_hand() -> None:
    """From zero moments, m_hat = g and v_hat = g^2, so the update is g / (|g| + eps) (+ wd * p)."""
    lr_, eps, wd = 0.1, 1e-6, 0.5
    w0 = torch.tensor([3.0, 4.0], dtype=torch.float64)
    g = torch.tensor([1.0, -2.0], dtype=torch.float64)
    for decay in (0.0, wd):
        p = torch.nn.Parameter(w0.clone())
        p.grad = g.clone()
        Lamb([p], lr=lr_, betas=(0.9, 0.999), eps=eps, weight_decay=decay).step()
        update = g / (g.abs() + eps) + decay * w0
        trust = w0.norm() / update.norm()
        expected = w0 - lr_ * trust * update
        torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-12)
    # Without decay the trust ratio makes the step length lr * ||p||, whatever the gradient's scale.
    p = torch.nn.Parameter(w0.clone())
    p.grad = g * 1e3
    Lamb([p], lr=lr_, eps=0.0).step()
    assert (p.detach() - w0).norm().item() == pytest.approx(lr_ * 5.0)


def test_lamb_zero_norms() -> None:
    """Zero weights or a zero update: trust ratio 1, no NaN."""
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([2.0, -1.0, 0.0])
    Lamb([p], lr=0.1, eps=1e-12).step()
    torch.testing.assert_close(p.detach(), torch.tensor([-0.1, 0.1, 0.0]))

    q = torch.nn.Parameter(torch.ones(3))
    q.grad = torch.zeros(3)
    Lamb([q], lr=0.1).step()
    torch.testing.assert_close(q.detach(), torch.ones(3))


def test_lamb_weight_decay_groups() -> None:
    """Zero gradients: the wd=0 group stays; the decayed one shrinks by exactly lr (trust = 1/wd)."""
    a = torch.nn.Parameter(torch.full((2, 2), 2.0))
    b = torch.nn.Parameter(torch.full((2,), 3.0))
    a.grad, b.grad = torch.zeros_like(a), torch.zeros_like(b)
    opt = Lamb([{"params": [a], "weight_decay": 0.01}, {"params": [b], "weight_decay": 0.0}], lr=0.1)
    opt.step()
    torch.testing.assert_close(a.detach(), torch.full((2, 2), 2.0 * 0.9))
    torch.testing.assert_close(b.detach(), torch.full((2,), 3.0))


def _regression(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 8, generator=gen)
    w_true = torch.randn(8, 1, generator=gen)
    return x, x @ w_true + 0.5


def test_lamb_layer_adaptation_off_is_adam() -> None:
    """``layer_adaptation=False``: the step is lr * (m_hat / (sqrt(v_hat) + eps) + wd * p), trust 1."""
    w0 = torch.tensor([3.0, 4.0], dtype=torch.float64)
    g = torch.tensor([1.0, -2.0], dtype=torch.float64)
    p = torch.nn.Parameter(w0.clone())
    p.grad = g.clone()
    Lamb([p], lr=0.1, eps=1e-6, weight_decay=0.5, layer_adaptation=False).step()
    torch.testing.assert_close(p.detach(), w0 - 0.1 * (g / (g.abs() + 1e-6) + 0.5 * w0))


def test_lamb_scalar_cannot_change_sign_with_adaptation() -> None:
    """Why build_optimizer turns adaptation off for biases: a scalar moves by lr * |b| and never crosses 0."""
    ends = []
    for adapt in (True, False):
        b = torch.nn.Parameter(torch.tensor([0.1]))
        opt = Lamb([b], lr=0.05, layer_adaptation=adapt)
        for _ in range(200):
            opt.zero_grad()
            ((b + 1.0) ** 2).sum().backward()  # minimum at -1
            opt.step()
        ends.append(b.item())
    assert 0 < ends[0] < 0.1
    assert ends[1] == pytest.approx(-1.0, abs=0.1)


def test_lamb_converges_on_least_squares() -> None:
    torch.manual_seed(0)
    x, y = _regression()
    model = torch.nn.Linear(8, 1)
    opt = build_optimizer(model, OptimConfig(name="lamb", lr=0.02, weight_decay=0.0))
    assert [g["layer_adaptation"] for g in opt.param_groups] == [True, False]  # weight adapts, bias not
    first = None
    for _ in range(400):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
    assert loss.item() < 1e-3 * first


def _train(
    model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, n: int
) -> None:
    for i in range(n):
        opt.zero_grad()
        rows = slice(16 * i, 16 * i + 16)
        torch.nn.functional.mse_loss(model(x[rows]), y[rows]).backward()
        opt.step()


def test_lamb_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    x, y = _regression(1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    opt = Lamb(param_groups(model, 0.01), lr=0.01)
    _train(model, opt, x, y, 5)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    _train(model, opt, x[80:], y[80:], 5)

    resumed = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    resumed.load_state_dict(saved_model)
    opt2 = Lamb(param_groups(resumed, 0.01), lr=0.01)
    opt2.load_state_dict(saved_opt)
    _train(resumed, opt2, x[80:], y[80:], 5)
    for p, q in zip(model.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


# ---------------------------------------------------------------- build_optimizer / build_scheduler


@pytest.mark.parametrize("name", ["adamw", "lamb"])
def test_build_optimizer_decays_only_decay_group(name: str) -> None:
    torch.manual_seed(0)
    model = TinyLM()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = OptimConfig(name=name, lr=0.1, weight_decay=0.2, betas=[0.8, 0.99], eps=1e-8)
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, torch.optim.AdamW if name == "adamw" else Lamb)
    assert [g["betas"] for g in opt.param_groups] == [(0.8, 0.99)] * 2
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    decay, no_decay = param_group_names(model)
    # AdamW: p *= 1 - lr * wd. Lamb: update = wd * p, trust = 1 / wd, so p *= 1 - lr.
    factor = 1 - 0.1 * 0.2 if name == "adamw" else 1 - 0.1
    params = dict(model.named_parameters())
    for n in decay:
        torch.testing.assert_close(params[n].detach(), before[n] * factor)
    for n in no_decay:
        torch.testing.assert_close(params[n].detach(), before[n], rtol=0, atol=0)
    torch.testing.assert_close(model.frozen.detach(), before["frozen"], rtol=0, atol=0)


def test_build_optimizer_rejects_bad_config() -> None:
    with pytest.raises(ValueError, match="betas"):
        build_optimizer(TinyLM(), OptimConfig(betas=[0.9]))
    with pytest.raises(ValueError, match="unknown optimiser"):
        build_optimizer(TinyLM(), OptimConfig(name="sgd"))  # type: ignore[arg-type]


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
def test_build_scheduler_follows_lr_lambda(schedule: str) -> None:
    model = torch.nn.Linear(3, 2)
    cfg = OptimConfig(lr=0.5, warmup_steps=4, schedule=schedule, min_lr_ratio=0.1)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, max_steps=20)
    seen = []
    for _ in range(25):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    for step, lrs in enumerate(seen):
        want = 0.5 * lr(step, 4, 20, schedule, 0.1)
        assert lrs == pytest.approx([want, want])
    # The scheduler pickles and its state round-trips into a fresh one.
    pickle.dumps(sched)
    sched2 = build_scheduler(build_optimizer(model, cfg), cfg, max_steps=20)
    sched2.load_state_dict(sched.state_dict())
    assert sched2.get_last_lr() == pytest.approx(sched.get_last_lr())
    assert sched2.last_epoch == 25


def test_build_scheduler_validates_early() -> None:
    opt = build_optimizer(torch.nn.Linear(2, 2), OptimConfig())
    with pytest.raises(ValueError, match="min_lr_ratio"):
        build_scheduler(opt, OptimConfig(min_lr_ratio=2.0), max_steps=10)


# ---------------------------------------------------------------- grad_accumulation


@pytest.mark.parametrize(
    ("global_bs", "micro", "world", "accum"),
    [(32, 8, 1, 4), (32, 8, 4, 1), (256, 16, 4, 4), (8, 8, 1, 1), (4096, 32, 64, 2)],
)
def test_grad_accumulation(global_bs: int, micro: int, world: int, accum: int) -> None:
    assert grad_accumulation(global_bs, micro, world) == accum


def test_grad_accumulation_errors() -> None:
    msg = "global_batch_size 30 is not a multiple of micro_batch_size 8 x world_size 2 = 16"
    with pytest.raises(ValueError, match=msg):
        grad_accumulation(30, 8, 2)
    with pytest.raises(ValueError, match="not a multiple"):
        grad_accumulation(8, 8, 2)  # global smaller than one step's micro-batches
    with pytest.raises(ValueError, match="micro_batch_size must be >= 1"):
        grad_accumulation(32, 0, 1)
