"""The output projection to the vocabulary, shared by every language-model head (BERT, GPT, RNN, seq2seq).

On the CPU it can write its logits into rows padded to a multiple of ``ROW_ALIGN`` (``vocab_logits``), which
makes the large matrix multiply faster; ``VocabLinear`` is the module that heads use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROW_ALIGN = 64
"""``vocab_logits`` pads each row of logits to a multiple of this many elements."""


class _PaddedRowsLinear(torch.autograd.Function):
    """x (N, C) @ weight (V, C)^T (+ bias) written into (N, Vp) rows, -inf in the Vp - V padding columns."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, padded: int) -> Tensor:  # type: ignore[override]
        V = weight.size(0)
        out = x.new_empty(x.size(0), padded)
        logits = out[:, :V]
        if bias is None:
            torch.mm(x, weight.t(), out=logits)
        else:
            torch.addmm(bias, x, weight.t(), out=logits)
        out[:, V:] = float("-inf")
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        g = grad[:, : weight.size(0)]  # the padding columns are constants
        grad_x = g.mm(weight) if ctx.needs_input_grad[0] else None
        grad_w = g.t().mm(x) if ctx.needs_input_grad[1] else None
        grad_b = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None


def vocab_logits(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """The output projection to the vocabulary: x (N, C) -> logits (N, Vp) with Vp >= V = ``weight.size(0)``.

    ``[:, :V]`` are ``F.linear(x, weight, bias)``; the other Vp - V columns are -inf, so a softmax or
    cross-entropy over the whole row equals the one over the V real columns (exp(-inf) = 0, and no gradient
    reaches the padding). Why: on the CPU a row length like GPT-2's 50257 floats leaves almost every row
    of the (N, V) output misaligned, and the matrix multiply writing it runs about 25% slower than into rows
    padded to a multiple of ``ROW_ALIGN`` (nanoGPT pads the vocabulary itself; here the parameter keeps its
    shape, only the output buffer is padded). Elsewhere (GPU, autocast, other dtypes, aligned V) it is
    ``F.linear`` and Vp = V."""
    V = weight.size(0)
    padded = -(-V // ROW_ALIGN) * ROW_ALIGN
    if (
        padded == V
        or x.device.type != "cpu"
        or x.dtype != torch.float32
        or weight.dtype != torch.float32
        or torch.is_autocast_enabled("cpu")
    ):
        return F.linear(x, weight, bias)
    return _PaddedRowsLinear.apply(x, weight, bias, padded)


class VocabLinear(nn.Linear):
    """``nn.Linear`` to the vocabulary that can also return padded rows (``vocab_logits``).

    The padded path runs inside this module's own ``forward``, so DeepSpeed ZeRO-3, which gathers a module's
    partitioned parameters around its forward call, has the full weight there."""

    def forward(self, x: Tensor, padded: bool = False, bias: Tensor | None = None) -> Tensor:
        b = self.bias if bias is None else bias
        return vocab_logits(x, self.weight, b) if padded else F.linear(x, self.weight, b)
