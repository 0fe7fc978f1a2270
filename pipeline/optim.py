"""Optimisers, weight-decay groups, the learning-rate schedule and gradient accumulation.

Everything here is a plain function of explicit arguments (no recipe objects except in the two ``build_*``
helpers), so the training module and the tests call the same code.

* ``lr_lambda``: multiplier of the peak lr per optimiser step (linear warmup, then linear/cosine/constant).
* ``param_groups``: two groups, decay (matrices: Linear and Embedding weights) and no_decay (biases,
  LayerNorm weights and every other 1-D parameter); the groups carry only ``params`` and ``weight_decay``.
* ``Lamb``: layer-wise adaptive moments (You et al. 2019), for very large batches.
* ``grad_accumulation``: micro-batches per optimiser step from the global batch size.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from pipeline.config import OptimConfig

SCHEDULES = ("linear", "cosine", "constant")


def lr_lambda(step: int, *, warmup_steps: int, max_steps: int, schedule: str, min_lr_ratio: float) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (0-based, as ``LambdaLR`` counts).

    Warmup is linear from 0 at step 0 to 1 at ``warmup_steps`` (``step / warmup_steps``, as BERT and
    Hugging Face do; the very first update therefore has lr 0). After warmup ``progress`` runs from 0 at
    ``warmup_steps`` to 1 at ``max_steps`` and the multiplier is

    * ``linear``: ``min_lr_ratio + (1 - min_lr_ratio) * (1 - progress)``,
    * ``cosine``: ``min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + cos(pi * progress))``,
    * ``constant``: 1.

    Past ``max_steps`` the value stays at its end value (``min_lr_ratio``, or 1 for ``constant``).
    ``warmup_steps=0`` starts at the peak. Warmup takes precedence: with ``warmup_steps > max_steps``
    (a short smoke run of a long recipe) the lr simply never reaches its peak.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
    if warmup_steps < 0 or max_steps < 0:
        raise ValueError(f"warmup_steps ({warmup_steps}) and max_steps ({max_steps}) must be >= 0")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    step = max(step, 0)
    if step < warmup_steps:
        return step / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    if schedule == "linear":
        shape = 1.0 - progress
    else:
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_lr_ratio + (1.0 - min_lr_ratio) * shape


def _split_params(model: torch.nn.Module) -> tuple[list[tuple[str, torch.nn.Parameter]], ...]:
    """Trainable ``(name, param)`` pairs split into (decay, no_decay); tied parameters appear once."""
    decay: list[tuple[str, torch.nn.Parameter]] = []
    no_decay: list[tuple[str, torch.nn.Parameter]] = []
    # named_parameters() removes duplicates (tied embedding/head weights are yielded once).
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 else no_decay).append((name, param))
    return decay, no_decay


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Optimiser groups: ``[{params: matrices, weight_decay}, {params: 1-D params, weight_decay: 0}]``.

    Parameters with ``ndim >= 2`` (Linear and Embedding weights) are decayed; biases, LayerNorm weights and
    biases and any other 1-D parameter are not. Frozen parameters are left out and empty groups dropped.
    Only the keys ``params`` and ``weight_decay`` are set (DeepSpeed copies groups and dislikes extras);
    use ``param_group_names`` for the names.
    """
    decay, no_decay = _split_params(model)
    groups = [
        {"params": [p for _, p in decay], "weight_decay": weight_decay},
        {"params": [p for _, p in no_decay], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def param_group_names(model: torch.nn.Module) -> tuple[list[str], list[str]]:
    """Names of the (decay, no_decay) parameters of ``param_groups``, for tests and logging."""
    decay, no_decay = _split_params(model)
    return [n for n, _ in decay], [n for n, _ in no_decay]


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning"), one parameter at a time.

    Per parameter ``p`` with gradient ``g`` at step ``t``::

        m = b1 * m + (1 - b1) * g            v = b2 * v + (1 - b2) * g * g
        update = (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + eps) + weight_decay * p
        trust = ||p|| / ||update||           (1 when either norm is 0)
        p -= lr * trust * update

    A group with ``layer_adaptation=False`` uses trust 1 (plain Adam with decoupled decay).
    ``build_optimizer`` sets it on the no-decay group, as Google's BERT LAMB excludes biases and LayerNorm
    from adaptation: with it, a scalar bias could never change sign (each step moves it by ``lr * |b|``).

    The trust ratio is per tensor, so it needs whole tensors: under DeepSpeed ZeRO, which flattens and
    shards the parameters, it would be computed over a shard instead (use AdamW there).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        layer_adaptation: bool = True,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"invalid learning rate {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas {betas}")
        if eps < 0.0 or weight_decay < 0.0:
            raise ValueError(f"invalid eps {eps} or weight_decay {weight_decay}")
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "layer_adaptation": layer_adaptation,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update of every parameter that has a gradient; returns the closure's loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("Lamb does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)

                m_hat = exp_avg / (1.0 - beta1**t)
                v_hat = exp_avg_sq / (1.0 - beta2**t)
                update = m_hat / (v_hat.sqrt() + group["eps"])
                if group["weight_decay"] != 0.0:
                    update.add_(p, alpha=group["weight_decay"])

                if group.get("layer_adaptation", True):
                    dtype = torch.promote_types(p.dtype, torch.float32)  # norms in >= fp32
                    w_norm = torch.linalg.vector_norm(p, dtype=dtype)
                    u_norm = torch.linalg.vector_norm(update, dtype=dtype)
                    ok = (w_norm > 0) & (u_norm > 0)
                    trust = torch.where(ok, w_norm / torch.where(ok, u_norm, 1.0), 1.0)
                    update.mul_(trust.to(update.dtype))
                p.add_(update, alpha=-group["lr"])
        return loss


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, *, fused: bool = True) -> torch.optim.Optimizer:
    """AdamW or ``Lamb`` over ``param_groups(model, cfg.weight_decay)`` with the recipe's lr, betas and eps.

    For Lamb the no-decay group (biases, norms) gets ``layer_adaptation=False`` (see ``Lamb``), also when
    ``weight_decay`` is 0.
    """
    if len(cfg.betas) != 2:
        raise ValueError(f"optim.betas must hold two numbers, got {cfg.betas}")
    betas = (float(cfg.betas[0]), float(cfg.betas[1]))
    groups = param_groups(model, cfg.weight_decay)
    if cfg.name == "adamw":
        # The fused kernel (CPU and CUDA) does the whole update in one pass: ~0.15 s of a bert-base step on
        # this CPU against the per-tensor loop (benchmarks/train_step.py). Same math as the loop.
        fused = fused and all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, eps=cfg.eps, fused=fused)
    if cfg.name == "lamb":
        for group in groups:  # as Google's BERT LAMB: biases and norms (1-D) are not adapted
            group["layer_adaptation"] = all(p.ndim >= 2 for p in group["params"])
        return Lamb(groups, lr=cfg.lr, betas=betas, eps=cfg.eps)
    raise ValueError(f"unknown optimiser {cfg.name!r}; expected 'adamw' or 'lamb'")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, max_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` following ``lr_lambda``; step it once per optimiser step (the lambda is a picklable
    ``functools.partial``, not a closure)."""
    fn = functools.partial(
        lr_lambda,
        warmup_steps=cfg.warmup_steps,
        max_steps=max_steps,
        schedule=cfg.schedule,
        min_lr_ratio=cfg.min_lr_ratio,
    )
    fn(0)  # validate the arguments now rather than at the first step
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def grad_accumulation(global_batch_size: int, micro_batch_size: int, world_size: int) -> int:
    """Micro-batches per optimiser step on each rank: ``global = micro * world * accum``.

    Raises ``ValueError`` when the sizes are not positive or the global batch is not a multiple of
    ``micro_batch_size * world_size``.
    """
    for name, value in (
        ("global_batch_size", global_batch_size),
        ("micro_batch_size", micro_batch_size),
        ("world_size", world_size),
    ):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    per_step = micro_batch_size * world_size
    if global_batch_size % per_step:
        raise ValueError(
            f"global_batch_size {global_batch_size} is not a multiple of micro_batch_size "
            f"{micro_batch_size} x world_size {world_size} = {per_step}"
        )
    return global_batch_size // per_step
