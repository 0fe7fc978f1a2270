"""How far back gradients reach: ||dL_T / dx_{T-k}|| against the distance k, for any causal language model.

L_T is the loss of the prediction at the last position T of a window and x_{T-k} the input embedding at
position T-k. A vanilla RNN's gradient shrinks (or explodes) geometrically with k, as the product of k
Jacobians of the recurrence does (Bengio et al. 1994; Pascanu et al. 2013); the LSTM's and GRU's gated,
additive paths keep it larger for longer (Hochreiter & Schmidhuber 1997); attention reaches every position
in one step. The embedding's output is captured with a forward hook, so the model needs no special method.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def token_embedding(model: nn.Module) -> nn.Module:
    """The module that embeds the token ids: ``wte`` (RNN LMs, ``TransformerLM``) or ``transformer.wte`` (GPT)."""
    if hasattr(model, "transformer") and "wte" in model.transformer:
        return model.transformer.wte
    if hasattr(model, "wte"):
        return model.wte
    raise ValueError(f"{type(model).__name__}: no token embedding (wte) to measure gradients at")


def distance_profile(grads: Tensor) -> Tensor:
    """Gradients (B, T, E) at every input position -> (T,): mean over the batch of the norm at T-1-k."""
    return grads.norm(dim=-1).flip(1).mean(0)


def input_gradient_norms(model: nn.Module, input_ids: Tensor, labels: Tensor) -> Tensor:
    """(T,): entry k is ||dL_T / dx_{T-k}|| averaged over the batch, L_T the last position's loss (per sequence:
    the summed loss, so batch size does not scale it). Runs in eval mode (no dropout); restores the mode."""
    captured: dict[str, Tensor] = {}

    def keep(module: nn.Module, args: tuple, out: Tensor) -> None:
        out.retain_grad()
        captured["x"] = out

    was_training = model.training
    model.eval()
    handle = token_embedding(model).register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(input_ids).logits  # (B, T, V)
            loss = F.cross_entropy(logits[:, -1].float(), labels[:, -1], reduction="sum")
            loss.backward()
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    grads = captured["x"].grad
    assert grads is not None
    return distance_profile(grads.detach())


def gradient_profile(model: nn.Module, batches: Iterable[dict[str, Tensor]], max_batches: int) -> Tensor:
    """``input_gradient_norms`` averaged over up to ``max_batches`` batches (``input_ids``/``labels``)."""
    profiles = []
    for i, batch in enumerate(batches):
        if i >= max_batches:
            break
        profiles.append(input_gradient_norms(model, batch["input_ids"], batch["labels"]))
    if not profiles:
        raise ValueError("no batches to measure gradients on")
    return torch.stack(profiles).mean(0)
