"""The original Transformer (Vaswani et al. 2017): sinusoidal positions, post-LN blocks, and its encoder-decoder.

Both models reuse the blocks BERT and GPT share (``blocks.py``): the encoder is a stack of ``Block`` (post-LN,
bidirectional), the decoder a stack of ``DecoderBlock`` (masked self-attention, encoder-decoder attention, MLP).
Embeddings are scaled by sqrt(d_model) and added to fixed sinusoids; the output projection is tied to the
embedding. The MLP uses ReLU, as in the paper (``ModelConfig.activation``).

``TransformerLM`` is the decoder-only stack (no cross-attention) trained as a causal LM: the
``transformer-lm`` baseline of the comparison report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models.blocks import Block, DecoderBlock, Dropout, init_weights, padding_mask
from pipeline.models.config import ModelConfig
from pipeline.models.gpt import IGNORE_INDEX, GPTOutput
from pipeline.models.seq2seq_config import Seq2SeqModelConfig
from pipeline.models.vocab import VocabLinear


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """(length, dim): PE[p, 2i] = sin(p / 10000^(2i/dim)), PE[p, 2i+1] = cos(p / 10000^(2i/dim))."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]  # (L, 1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))  # (dim/2,)
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe


class _Embed(nn.Module):
    """Token embedding * sqrt(C) + sinusoidal position, then dropout."""

    def __init__(self, vocab_size: int, dim: int, max_len: int, dropout: float) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab_size, dim)
        self.register_buffer("pe", sinusoidal_positions(max_len, dim), persistent=False)
        self.drop = Dropout(dropout)
        self.scale = math.sqrt(dim)

    def forward(self, ids: Tensor) -> Tensor:
        T = ids.size(1)
        if T > self.pe.size(0):
            raise ValueError(f"sequence of {T} tokens > the {self.pe.size(0)} sinusoidal positions")
        return self.drop(self.wte(ids) * self.scale + self.pe[:T])


def _init(model: nn.Module, std: float, dim: int) -> None:
    model.apply(lambda m: init_weights(m, std))
    for m in model.modules():
        if isinstance(m, nn.Embedding):  # unit-variance after the sqrt(C) scale
            nn.init.normal_(m.weight, mean=0.0, std=dim**-0.5)


class TransformerLM(nn.Module):
    """The original Transformer's decoder stack as a causal LM: embed -> post-LN causal blocks -> lm_head."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        C = config.hidden_size
        self.embed = _Embed(config.vocab_size, C, config.max_position_embeddings, config.hidden_dropout)
        self.h = nn.ModuleList(
            Block(config, pre_ln=False, causal=True, fused_qkv=False) for _ in range(config.num_layers)
        )
        self.lm_head = VocabLinear(C, config.vocab_size, bias=False)
        _init(self, config.initializer_range, C)
        self.lm_head.weight = self.embed.wte.weight

    @property
    def wte(self) -> nn.Embedding:
        """The token embedding (gradient probes hook it)."""
        return self.embed.wte

    def forward(self, input_ids: Tensor, labels: Tensor | None = None) -> GPTOutput:
        """input_ids (B, T); labels (B, T), shifted by the data as for GPT."""
        x = self.embed(input_ids)
        for block in self.h:
            x = block(x)
        B, T, C = x.shape
        V = self.config.vocab_size
        padded = self.lm_head(x.reshape(B * T, C), padded=True)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(padded, labels.reshape(-1), ignore_index=IGNORE_INDEX)
        return GPTOutput(loss=loss, logits=padded[:, :V].view(B, T, V))

    @torch.no_grad()
    def attention_weights(self, input_ids: Tensor) -> list[Tensor]:
        """Each layer's causal attention weights (B, nh, T, T)."""
        x, maps = self.embed(input_ids), []
        for block in self.h:
            x, weights = block.forward_with_weights(x)
            maps.append(weights)
        return maps


@dataclass
class Seq2SeqOutput:
    """What a sequence-to-sequence model's ``forward`` returns."""

    loss: Tensor | None
    """Mean cross-entropy over target labels != -100; None without labels."""
    logits: Tensor
    """(B, T, V): logits[:, t] predicts target token t (the decoder saw tokens < t)."""
    cross_attention: Tensor | None = None
    """With ``return_attention``: (B, nh, T, S) encoder-decoder attention (RNN: nh = 1; Transformer: the
    last decoder layer), each row summing to 1 over the real source tokens."""


def seq2seq_loss(logits: Tensor, labels: Tensor | None) -> Tensor | None:
    """Token-level cross-entropy of (B, T, V) logits against (B, T) labels (-100 = ignored)."""
    if labels is None:
        return None
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE_INDEX)


class Seq2SeqTransformer(nn.Module):
    """Encoder (post-LN ``Block`` x N) + decoder (``DecoderBlock`` x N), shared and tied embeddings."""

    def __init__(self, config: Seq2SeqModelConfig) -> None:
        super().__init__()
        self.config = config
        bc = config.block_config()
        C, V = bc.hidden_size, bc.vocab_size
        self.embed = _Embed(V, C, config.max_len, config.dropout)
        self.encoder = nn.ModuleList(
            Block(bc, pre_ln=False, causal=False, fused_qkv=False) for _ in range(config.encoder_layers)
        )
        self.decoder = nn.ModuleList(DecoderBlock(bc) for _ in range(config.decoder_layers))
        self.lm_head = VocabLinear(C, V, bias=False)
        _init(self, config.initializer_range, C)
        self.lm_head.weight = self.embed.wte.weight

    def encode(self, src_ids: Tensor, src_mask: Tensor | None = None) -> Tensor:
        """src_ids, src_mask (B, S) -> memory (B, S, C)."""
        x, mask = self.embed(src_ids), padding_mask(src_mask)
        for block in self.encoder:
            x = block(x, mask)
        return x

    def decode(
        self, memory: Tensor, src_mask: Tensor | None, tgt_ids: Tensor, return_attention: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Decoder input tgt_ids (B, T) over memory (B, S, C) -> logits (B, T, V) and, with
        ``return_attention``, the last decoder layer's cross-attention (B, nh, T, S)."""
        x, mask, weights = self.embed(tgt_ids), padding_mask(src_mask), None
        for block in self.decoder:
            x, weights = block(x, memory, mask, return_weights=return_attention)
        return self.lm_head(x), weights

    def forward(
        self,
        src_ids: Tensor,
        src_mask: Tensor | None,
        decoder_input_ids: Tensor,
        labels: Tensor | None = None,
        return_attention: bool = False,
    ) -> Seq2SeqOutput:
        logits, weights = self.decode(
            self.encode(src_ids, src_mask), src_mask, decoder_input_ids, return_attention
        )
        return Seq2SeqOutput(seq2seq_loss(logits, labels), logits, weights)

    @torch.no_grad()
    def cross_attention_weights(
        self, src_ids: Tensor, src_mask: Tensor | None, tgt_ids: Tensor
    ) -> list[Tensor]:
        """Every decoder layer's encoder-decoder attention (B, nh, T, S), for alignment plots."""
        memory, mask = self.encode(src_ids, src_mask), padding_mask(src_mask)
        x, maps = self.embed(tgt_ids), []
        for block in self.decoder:
            x, weights = block(x, memory, mask, return_weights=True)
            maps.append(weights)
        return maps

    # Incremental decoding interface (``pipeline.decoding``): a state of batch-first tensors.
    def start(self, src_ids: Tensor, src_mask: Tensor) -> dict[str, Tensor]:
        """Encode once; the state also carries the target prefix so far (no cache: each step re-reads it)."""
        memory = self.encode(src_ids, src_mask)
        return {"memory": memory, "src_mask": src_mask, "prefix": src_ids.new_zeros(src_ids.size(0), 0)}

    def step(self, state: dict[str, Tensor], tokens: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Feed tokens (B,) -> next-token logits (B, V) and the new state."""
        prefix = torch.cat([state["prefix"], tokens[:, None]], dim=1)
        logits, _ = self.decode(state["memory"], state["src_mask"], prefix)
        return logits[:, -1], {**state, "prefix": prefix}
