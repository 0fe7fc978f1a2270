"""The Transformer block that BERT and GPT share: self-attention, MLP, and their residual wiring.

The two architectures differ in three switches, all passed explicitly:

- ``pre_ln``: GPT-2 normalises the input of each sublayer; BERT normalises after each residual add (post-LN).
- ``causal``: GPT attends only to earlier positions; BERT attends everywhere except to padding.
- ``fused_qkv``: GPT-2 keeps Q, K and V in one ``c_attn`` matrix; BERT has separate ``query``/``key``/``value``.
  Matching each checkpoint's layout makes export to ``transformers`` a rename (see ``bert.py`` and ``gpt.py``).

Shapes in comments: B batch, T sequence length, C hidden size, nh heads, hd = C // nh head width, I MLP width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from pipeline.models.config import ModelConfig


def padding_mask(attention_mask: Tensor | None) -> Tensor | None:
    """(B, T) with 1 for real tokens and 0 for padding -> boolean (B, 1, 1, T), True where a key may be attended.

    It broadcasts over heads and query positions: padded keys are hidden from every query. Outputs *at* padded
    positions are still computed (and ignored by the losses)."""
    if attention_mask is None:
        return None
    return attention_mask.bool()[:, None, None, :]


class _MaskDropout(torch.autograd.Function):
    """x * mask, with ``mask`` 0 or 1 / (1 - p) precomputed; the backward multiplies by the same mask."""

    @staticmethod
    def forward(ctx, x: Tensor, mask: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """``F.dropout``: each element kept with probability 1 - p and scaled by 1 / (1 - p), else zeroed.

    On the CPU the keep mask comes from uniform 32-bit integers (keep when >= p * 2^32, a probability within
    2^-32 of 1 - p), drawn from the default generator as 64-bit words, two per word: about three times
    cheaper than ``bernoulli_``, which ``F.dropout`` uses and which runs on one thread and costs more than
    the rest of the dropout. Elsewhere: ``F.dropout``."""
    if not training or p == 0.0 or x.device.type != "cpu" or not x.is_floating_point() or not 0.0 < p < 1.0:
        return F.dropout(x, p, training)
    n = x.numel()
    bits = torch.empty((n + 1) // 2, dtype=torch.int64).random_(-(2**63), None)  # full 64-bit words
    words = bits.view(torch.int32)[:n].view(x.shape)  # uniform over [-2^31, 2^31)
    mask = torch.where(words >= round(p * 2**32) - 2**31, 1.0 / (1.0 - p), 0.0).to(x.dtype)
    return _MaskDropout.apply(x, mask)


class Dropout(nn.Dropout):
    """``nn.Dropout`` computed with ``dropout`` above (same distribution; cheaper on the CPU)."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


def _attention_with_dropout(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, p: float) -> Tensor:
    """Training attention on the CPU: softmax(Q K^T / sqrt(hd) + mask) with dropout ``p`` on the weights, @ V.

    What ``scaled_dot_product_attention`` falls back to on the CPU when dropout is on (its fused kernel has
    no dropout), with the cheaper ``dropout`` above. Masked keys get the dtype's lowest value rather than
    -inf, which gives them a weight of exactly 0 too and keeps a fully masked row finite.
    q, k, v: (B, nh, T, hd); mask: boolean, broadcastable to (B, nh, T, T), True = may attend."""
    scores = torch.matmul(q * (1.0 / math.sqrt(q.size(-1))), k.transpose(-2, -1))  # (B, nh, T, T)
    if mask is not None:
        scores = scores.masked_fill_(~mask, torch.finfo(scores.dtype).min)
    return dropout(scores.softmax(dim=-1), p, True) @ v  # (B, nh, T, hd)


def explicit_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """softmax(Q K^T / sqrt(hd)) V written out, returning the weights too (for attention maps, not training).

    q, k, v: (B, nh, T, hd); mask: boolean, broadcastable to (B, nh, T, T), True = may attend."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, nh, T, T)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)  # each query's row sums to 1
    return weights @ v, weights  # (B, nh, T, hd), (B, nh, T, T)


class Rows:
    """Which tokens of a (B, T) batch a (N, C) tensor of rows holds: flat positions ``index`` (N,), ascending.

    Running the position-wise parts of a block (projections, MLP, LayerNorm, dropout) on rows rather than on
    the padded (B, T, C) grid skips the positions whose output nothing reads (padding during pretraining, or
    in the last layer everything but the predicted positions). Only attention goes back to the grid."""

    def __init__(self, index: Tensor, batch: int, seq: int) -> None:
        self.index, self.batch, self.seq = index, batch, seq

    def to_grid(self, x: Tensor, index: Tensor | None = None) -> Tensor:
        """(M, D) rows at ``index`` (default: all rows) -> (B, T, D), zeros at the other positions."""
        index = self.index if index is None else index
        if index.numel() == self.batch * self.seq:  # all positions, in order: a view
            return x.view(self.batch, self.seq, -1)
        grid = x.new_zeros(self.batch * self.seq, x.size(-1)).index_copy(0, index, x)
        return grid.view(self.batch, self.seq, -1)

    def from_grid(self, x: Tensor, index: Tensor | None = None) -> Tensor:
        """(B, T, D) -> (M, D): the rows at ``index`` (default: all rows)."""
        index = self.index if index is None else index
        flat = x.reshape(self.batch * self.seq, x.size(-1))
        return flat if index.numel() == self.batch * self.seq else flat.index_select(0, index)


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``scaled_dot_product_attention`` (flash/memory-efficient kernels on GPU)."""

    def __init__(self, config: ModelConfig, *, causal: bool, fused_qkv: bool) -> None:
        super().__init__()
        C = config.hidden_size
        self.num_heads = config.num_heads
        self.causal = causal
        self.fused_qkv = fused_qkv
        if fused_qkv:
            self.c_attn = nn.Linear(C, 3 * C)  # output rows: [query | key | value], GPT-2's order
        else:
            self.query = nn.Linear(C, C)
            self.key = nn.Linear(C, C)
            self.value = nn.Linear(C, C)
        self.c_proj = nn.Linear(C, C)  # mixes the heads back into the residual stream
        self.attn_dropout = config.attention_dropout
        self.resid_dropout = Dropout(config.hidden_dropout)

    def forward(
        self,
        x: Tensor,
        pad_mask: Tensor | None = None,
        return_weights: bool = False,
        memory: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """x: (B, T, C); pad_mask: (B, 1, 1, S) from ``padding_mask`` (over the keys) or None.

        Self-attention by default (S = T). With ``memory`` (B, S, C) it is cross-attention (the encoder-decoder
        attention of the original Transformer): queries from ``x``, keys and values from ``memory``.

        Returns the output (B, T, C) and, with ``return_weights``, the attention weights (B, nh, T, S)
        (computed explicitly, without dropout), else None."""
        C = x.size(-1)
        if memory is None:
            if self.fused_qkv:
                q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
            else:
                q, k, v = self.query(x), self.key(x), self.value(x)
        elif self.fused_qkv:
            w, b = self.c_attn.weight, self.c_attn.bias
            q = F.linear(x, w[:C], b[:C])  # (B, T, C)
            k, v = F.linear(memory, w[C:], b[C:]).split(C, dim=2)  # 2 x (B, S, C)
        else:
            q, k, v = self.query(x), self.key(memory), self.value(memory)
        y, weights = self._attend(q, k, v, pad_mask, return_weights)
        return self.resid_dropout(self.c_proj(y)), weights

    def forward_rows(
        self, x: Tensor, rows: Rows, pad_mask: Tensor | None = None, query: Tensor | None = None
    ) -> Tensor:
        """The same attention on tokens stored as rows: x (N, C) holds the tokens at ``rows.index`` of a
        (B, T) batch. Keys and values come from every row, queries only from the rows ``query`` (M,) (indices
        into x; None = all rows), so the query projection, ``c_proj`` and everything after them run on M rows.
        Returns (M, C), equal to ``forward``'s output at those tokens."""
        C = x.size(-1)
        xq = x if query is None else x.index_select(0, query)
        if self.fused_qkv:
            w, b = self.c_attn.weight, self.c_attn.bias
            if query is None:
                q, k, v = self.c_attn(x).split(C, dim=-1)
            else:
                q = F.linear(xq, w[:C], b[:C])
                k, v = F.linear(x, w[C:], b[C:]).split(C, dim=-1)
        else:
            q, k, v = self.query(xq), self.key(x), self.value(x)
        q_index = rows.index if query is None else rows.index.index_select(0, query)
        # Attention itself runs on the padded (B, T) grid; positions without a row are zero and never attended
        # to (padding is masked) or read back (not a query).
        q, k, v = rows.to_grid(q, q_index), rows.to_grid(k), rows.to_grid(v)
        y, _ = self._attend(q, k, v, pad_mask, False)  # (B, T, C)
        y = rows.from_grid(y, q_index)  # (M, C)
        return self.resid_dropout(self.c_proj(y))

    def _attend(
        self, q: Tensor, k: Tensor, v: Tensor, pad_mask: Tensor | None, return_weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        """q: (B, T, C), k, v: (B, S, C) -> softmax(Q K^T / sqrt(hd)) V per head, heads side by side again:
        (B, T, C). Self-attention has S = T; cross-attention's keys come from another sequence."""
        B, T, C = q.shape
        # Split C into heads: (B, T, C) -> (B, T, nh, hd) -> (B, nh, T, hd)
        q, k, v = (t.view(B, -1, self.num_heads, C // self.num_heads).transpose(1, 2) for t in (q, k, v))

        mask, is_causal = pad_mask, self.causal
        if self.causal and (pad_mask is not None or return_weights):
            # SDPA's is_causal cannot be combined with a mask tensor, so build the lower triangle explicitly.
            causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()  # (T, T), True = may attend
            mask, is_causal = causal if pad_mask is None else causal & pad_mask, False

        weights = None
        if return_weights:
            y, weights = explicit_attention(q, k, v, mask)
        elif self.training and self.attn_dropout > 0.0 and q.device.type == "cpu":
            if is_causal:
                mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
            y = _attention_with_dropout(q, k, v, mask, self.attn_dropout)
        else:
            dropout_p = self.attn_dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal
            )
        return y.transpose(1, 2).contiguous().view(B, T, C), weights  # (B, nh, T, hd) -> (B, T, C)


class MLP(nn.Module):
    """Position-wise feed-forward: C -> I -> GELU (or ReLU) -> C, then dropout."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        assert config.intermediate_size is not None  # filled by ModelConfig.__post_init__
        self.c_fc = nn.Linear(config.hidden_size, config.intermediate_size)
        self.c_proj = nn.Linear(config.intermediate_size, config.hidden_size)
        # "gelu" is the exact erf form (BERT); "gelu_new" is GPT-2's tanh approximation; "relu" the original
        # Transformer's.
        self.relu = config.activation == "relu"
        self.approximate = "tanh" if config.activation == "gelu_new" else "none"
        self.dropout = Dropout(config.hidden_dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.c_fc(x)  # (B, T, I)
        h = F.relu(h) if self.relu else F.gelu(h, approximate=self.approximate)
        return self.dropout(self.c_proj(h))  # (B, T, C)


class Block(nn.Module):
    """One Transformer layer: attention then MLP, each with a residual connection and a LayerNorm.

    ``ln_1`` belongs to the attention sublayer and ``ln_2`` to the MLP; ``pre_ln`` only moves them."""

    def __init__(self, config: ModelConfig, *, pre_ln: bool, causal: bool, fused_qkv: bool) -> None:
        super().__init__()
        eps = config.layer_norm_eps
        assert eps is not None
        self.pre_ln = pre_ln
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=eps)
        self.attn = SelfAttention(config, causal=causal, fused_qkv=fused_qkv)
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=eps)
        self.mlp = MLP(config)
        self.activation_checkpointing = config.activation_checkpointing

    def forward(self, x: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """x: (B, T, C) -> (B, T, C)."""
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            # Keep only the block's input; rerun the block in backward. The RNG state is saved and restored,
            # so the recomputed dropout masks are the ones of the forward pass.
            return checkpoint(self._forward, x, pad_mask, use_reentrant=False)[0]
        return self._forward(x, pad_mask)[0]

    def forward_rows(
        self, x: Tensor, rows: Rows, pad_mask: Tensor | None = None, query: Tensor | None = None
    ) -> Tensor:
        """``forward`` on tokens stored as rows (see ``Rows``): x (N, C) -> (M, C), the outputs of the rows
        ``query`` (indices into x; None = all N). Keys and values still come from every row."""
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward_rows, x, rows, pad_mask, query, use_reentrant=False)
        return self._forward_rows(x, rows, pad_mask, query)

    def _forward_rows(self, x: Tensor, rows: Rows, pad_mask: Tensor | None, query: Tensor | None) -> Tensor:
        a = self.attn.forward_rows(self.ln_1(x) if self.pre_ln else x, rows, pad_mask, query)  # (M, C)
        if query is not None:
            x = x.index_select(0, query)  # the residual stream of the query rows
        if self.pre_ln:
            x = x + a
            return x + self.mlp(self.ln_2(x))
        x = self.ln_1(x + a)
        return self.ln_2(x + self.mlp(x))

    def forward_with_weights(self, x: Tensor, pad_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Like ``forward`` but also returns the attention weights (B, nh, T, T), for attention-map plots."""
        x, weights = self._forward(x, pad_mask, return_weights=True)
        assert weights is not None
        return x, weights

    def _forward(
        self, x: Tensor, pad_mask: Tensor | None, return_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        if self.pre_ln:
            # GPT-2: x = x + attn(LN(x)); x = x + mlp(LN(x)). The residual stream itself is never normalised,
            # which keeps gradients well-behaved in deep stacks (the model adds a final ln_f).
            a, weights = self.attn(self.ln_1(x), pad_mask, return_weights)
            x = x + a
            x = x + self.mlp(self.ln_2(x))
        else:
            # BERT: x = LN(x + attn(x)); x = LN(x + mlp(x)).
            a, weights = self.attn(x, pad_mask, return_weights)
            x = self.ln_1(x + a)
            x = self.ln_2(x + self.mlp(x))
        return x, weights


class DecoderBlock(nn.Module):
    """A decoder layer of the original encoder-decoder Transformer (Vaswani et al. 2017), built from the same
    parts as ``Block``: masked (causal) self-attention, then cross-attention over the encoder's output
    (``memory``), then the MLP, each with a residual connection and a LayerNorm (post-LN, as in the paper,
    unless ``pre_ln``). ``ln_1``/``ln_cross``/``ln_2`` belong to the three sublayers in that order."""

    def __init__(self, config: ModelConfig, *, pre_ln: bool = False) -> None:
        super().__init__()
        eps = config.layer_norm_eps
        assert eps is not None
        C = config.hidden_size
        self.pre_ln = pre_ln
        self.ln_1 = nn.LayerNorm(C, eps=eps)
        self.attn = SelfAttention(config, causal=True, fused_qkv=False)
        self.ln_cross = nn.LayerNorm(C, eps=eps)
        self.cross_attn = SelfAttention(config, causal=False, fused_qkv=False)
        self.ln_2 = nn.LayerNorm(C, eps=eps)
        self.mlp = MLP(config)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None = None,
        self_mask: Tensor | None = None,
        return_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """x: (B, T, C) target states; memory: (B, S, C) encoder output; memory_mask: (B, 1, 1, S) from
        ``padding_mask`` (source padding); self_mask: (B, 1, 1, T) target padding (the causal mask is always on).

        Returns (B, T, C) and, with ``return_weights``, the cross-attention weights (B, nh, T, S)."""
        sublayers = (
            (self.ln_1, lambda h: self.attn(h, self_mask)[0]),
            (self.ln_cross, lambda h: self.cross_attn(h, memory_mask, return_weights, memory=memory)),
            (self.ln_2, self.mlp),
        )
        weights = None
        for i, (ln, sublayer) in enumerate(sublayers):
            out = sublayer(ln(x) if self.pre_ln else x)
            if i == 1:
                out, weights = out
            x = x + out if self.pre_ln else ln(x + out)
        return x, weights


def init_weights(module: nn.Module, std: float) -> None:
    """The BERT/GPT-2 initialisation: weights ~ N(0, std), biases 0, LayerNorm 1/0 (use with ``model.apply``).

    An embedding's ``padding_idx`` row is set back to zero, as ``nn.Embedding`` and ``transformers`` do."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
