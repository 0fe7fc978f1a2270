"""RNN encoder-decoder with attention (Bahdanau et al. 2015; Luong et al. 2015), or without (Sutskever et al.
2014; Cho et al. 2014).

Read top to bottom: the encoder (an LSTM or GRU, optionally bidirectional) turns the source into states
h_1..h_S (2H wide when bidirectional); its final state, through a ``bridge`` layer, starts the decoder. At every
target step t the decoder

1. scores every encoder state against its previous state s_{t-1}: ``additive`` v^T tanh(W_s s + W_h h_j) (a
   feed-forward layer) or ``dot`` s^T (W h_j); a softmax over the real source tokens gives the alignment
   alpha_t, and the context vector c_t = sum_j alpha_tj h_j (a new one each step);
2. runs one recurrent step on [embedding of y_{t-1}; c_t];
3. predicts y_t from tanh(W_o [s_t; c_t; embedding]) through the output projection tied to the embedding.

With ``attention: none`` there is no c_t: the source reaches the decoder only through its initial state.
Training feeds the gold y_{t-1} with probability ``teacher_forcing`` and the model's own previous greedy
prediction otherwise.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from pipeline.models.blocks import Dropout
from pipeline.models.seq2seq_config import Seq2SeqModelConfig
from pipeline.models.transformer import Seq2SeqOutput, seq2seq_loss
from pipeline.models.vocab import VocabLinear

_CELLS: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU}


def masked_softmax_attend(scores: Tensor, values: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """scores (B, S), values (B, S, D), mask (B, S) 1 = real -> context (B, D) and weights (B, S) summing to 1."""
    if mask is not None:
        scores = scores.masked_fill(~mask.bool(), float("-inf"))
    weights = scores.softmax(dim=-1)
    return torch.bmm(weights[:, None], values).squeeze(1), weights


class AdditiveAttention(nn.Module):
    """Bahdanau: score(s, h_j) = v^T tanh(W_s s + W_h h_j), a one-hidden-layer feed-forward net."""

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int) -> None:
        super().__init__()
        self.W_h = nn.Linear(key_dim, attn_dim)
        self.W_s = nn.Linear(query_dim, attn_dim, bias=False)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def keys(self, enc: Tensor) -> Tensor:
        """W_h h_j for all j, computed once per source: (B, S, D) -> (B, S, A)."""
        return self.W_h(enc)

    def scores(self, query: Tensor, keys: Tensor) -> Tensor:
        """query (B, Dq), keys (B, S, A) -> (B, S)."""
        return self.v(torch.tanh(keys + self.W_s(query)[:, None])).squeeze(-1)


class DotAttention(nn.Module):
    """Luong's ``general`` score: s^T W h_j (W maps the encoder's 2H states to the decoder's H)."""

    def __init__(self, query_dim: int, key_dim: int) -> None:
        super().__init__()
        self.W = nn.Linear(key_dim, query_dim, bias=False)

    def keys(self, enc: Tensor) -> Tensor:
        return self.W(enc)  # (B, S, Dq)

    def scores(self, query: Tensor, keys: Tensor) -> Tensor:
        return torch.bmm(keys, query[:, :, None]).squeeze(-1)  # (B, S)


class RNNSeq2Seq(nn.Module):
    """Encoder RNN -> bridge -> decoder RNN with additive, dot-product or no attention; tied embeddings."""

    def __init__(self, config: Seq2SeqModelConfig) -> None:
        super().__init__()
        if config.vocab_size is None:
            raise ValueError("vocab_size is not set (it is filled from the data before the model is built)")
        self.config = config
        V, E, H, L = config.vocab_size, config.embedding_size, config.hidden_size, config.num_layers
        D = 2 * H if config.bidirectional else H
        cell = _CELLS[config.cell]
        between = config.dropout if L > 1 else 0.0
        self.wte = nn.Embedding(V, E)
        self.drop = Dropout(config.dropout)
        self.encoder = cell(E, H, L, batch_first=True, bidirectional=config.bidirectional, dropout=between)
        self.bridge = nn.Linear(D, H)  # encoder's final state (both directions) -> decoder's initial state
        self.attn: AdditiveAttention | DotAttention | None = None
        if config.attention == "additive":
            self.attn = AdditiveAttention(H, D, H)
        elif config.attention == "dot":
            self.attn = DotAttention(H, D)
        ctx = D if self.attn is not None else 0
        self.decoder = cell(E + ctx, H, L, batch_first=True, dropout=between)
        self.pre_output = nn.Linear(H + ctx + E, E)
        self.lm_head = VocabLinear(E, V, bias=False)
        nn.init.normal_(self.wte.weight, std=E**-0.5)
        self.lm_head.weight = self.wte.weight

    @property
    def is_lstm(self) -> bool:
        return self.config.cell == "lstm"

    def _bridge(self, final: Tensor) -> Tensor:
        """(L * dirs, B, H) final encoder states -> (B, L, H) initial decoder states."""
        L = self.config.num_layers
        dirs = 2 if self.config.bidirectional else 1
        final = final.view(L, dirs, final.size(1), -1).permute(2, 0, 1, 3).flatten(2)  # (B, L, dirs*H)
        return torch.tanh(self.bridge(final))

    def start(self, src_ids: Tensor, src_mask: Tensor | None) -> dict[str, Tensor]:
        """Encode the source: the decoding state (batch-first tensors, so beams can reorder them)."""
        if src_mask is None:
            src_mask = torch.ones_like(src_ids)
        lengths = src_mask.sum(1).clamp(min=1).cpu()
        packed = pack_padded_sequence(
            self.drop(self.wte(src_ids)), lengths, batch_first=True, enforce_sorted=False
        )
        out, final = self.encoder(packed)
        enc, _ = pad_packed_sequence(out, batch_first=True, total_length=src_ids.size(1))  # (B, S, D)
        state = {"src_mask": src_mask}
        if self.is_lstm:
            state["h"], state["c"] = self._bridge(final[0]), self._bridge(final[1])
        else:
            state["h"] = self._bridge(final)
        if self.attn is not None:
            state["enc"] = self.drop(enc)
            state["keys"] = self.attn.keys(state["enc"])
        return state

    def step_with_attention(
        self, state: dict[str, Tensor], tokens: Tensor
    ) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
        """Feed y_{t-1} (B,) -> logits (B, V) of y_t, the new state, and the alignment (B, S) (None without)."""
        emb = self.drop(self.wte(tokens))  # (B, E)
        h = state["h"]  # (B, L, H)
        parts, weights = [emb], None
        if self.attn is not None:
            scores = self.attn.scores(h[:, -1], state["keys"])  # against the top layer's s_{t-1}
            context, weights = masked_softmax_attend(scores, state["enc"], state["src_mask"])
            parts.append(context)
        hidden = (h.transpose(0, 1).contiguous(),)
        if self.is_lstm:
            hidden = (hidden[0], state["c"].transpose(0, 1).contiguous())
        out, new = self.decoder(torch.cat(parts, dim=-1)[:, None], hidden if self.is_lstm else hidden[0])
        new_state = dict(state)
        if self.is_lstm:
            new_state["h"], new_state["c"] = new[0].transpose(0, 1), new[1].transpose(0, 1)
        else:
            new_state["h"] = new.transpose(0, 1)
        s_t = self.drop(out[:, 0])  # (B, H)
        pre = torch.tanh(self.pre_output(torch.cat([s_t, *parts[1:], emb], dim=-1)))  # (B, E)
        return self.lm_head(self.drop(pre)), new_state, weights

    def step(self, state: dict[str, Tensor], tokens: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The decoding interface (``pipeline.decoding``): logits (B, V) and the new state."""
        logits, state, _ = self.step_with_attention(state, tokens)
        return logits, state

    def forward(
        self,
        src_ids: Tensor,
        src_mask: Tensor | None,
        decoder_input_ids: Tensor,
        labels: Tensor | None = None,
        return_attention: bool = False,
    ) -> Seq2SeqOutput:
        """src (B, S), decoder input (B, T) = [BOS, y_1 .. y_{T-1}], labels (B, T) = [y_1 .. y_T] (-100 = pad)."""
        state = self.start(src_ids, src_mask)
        ratio = self.config.teacher_forcing if self.training else 1.0
        logits, alignments = [], []
        tokens = decoder_input_ids[:, 0]
        for t in range(decoder_input_ids.size(1)):
            if t > 0:
                gold = decoder_input_ids[:, t]
                use_gold = ratio >= 1.0 or bool(torch.rand(()) < ratio)
                tokens = gold if use_gold else logits[-1].argmax(-1).detach()
            step_logits, state, weights = self.step_with_attention(state, tokens)
            logits.append(step_logits)
            if weights is not None:
                alignments.append(weights)
        out = torch.stack(logits, dim=1)  # (B, T, V)
        attention = torch.stack(alignments, dim=1)[:, None] if return_attention and alignments else None
        return Seq2SeqOutput(seq2seq_loss(out, labels), out, attention)


def build_seq2seq(config: Seq2SeqModelConfig) -> nn.Module:
    """The model for ``config.arch``: ``RNNSeq2Seq`` or ``Seq2SeqTransformer``."""
    if config.arch == "rnn":
        return RNNSeq2Seq(config)
    from pipeline.models.transformer import Seq2SeqTransformer

    return Seq2SeqTransformer(config)
