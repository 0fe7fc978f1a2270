"""BERT (Devlin et al. 2018): a post-LN Transformer encoder with masked-LM and next-sentence heads.

Read top to bottom: embeddings -> blocks -> pooler (``BertModel``), then the pretraining heads
(``BertForPreTraining``). The MLM head projects to the vocabulary only at the masked positions (~15% of them):
at every position that projection is ~22% of bert-base's training FLOPs at T=128 and ~70% of bert-tiny's
(``pipeline.flops``), and its softmax over the vocabulary is memory-bound on top of that.

Parameter names follow ``transformers``' ``BertForPreTraining`` except inside the blocks (shared with GPT) and the
heads; ``bert_from_hf_state_dict`` / ``bert_to_hf_state_dict`` convert by renaming keys, nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models.blocks import Block, Dropout, Rows, init_weights, padding_mask
from pipeline.models.config import ModelConfig
from pipeline.models.vocab import VocabLinear

IGNORE_INDEX = -100  # label of positions that are not predicted (PyTorch's cross-entropy default)


class BertEmbeddings(nn.Module):
    """word + position + token type, then LayerNorm and dropout."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        C = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, C, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, C)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, C)
        self.LayerNorm = nn.LayerNorm(C, eps=config.layer_norm_eps)  # the checkpoint's name
        self.dropout = Dropout(config.hidden_dropout)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        T = input_ids.size(1)
        # Absolute positions (T,): padding appended on the right moves no real token.
        positions = torch.arange(T, device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)  # (B, T, C)
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]  # all sentence A
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class BertModel(nn.Module):
    """The encoder: embeddings -> post-LN blocks -> (with NSP) a pooler over [CLS]."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.layers = nn.ModuleList(
            Block(config, pre_ln=False, causal=False, fused_qkv=False) for _ in range(config.num_layers)
        )
        # The pooler only feeds the NSP head; without NSP it would be a parameter that never gets a gradient.
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size) if config.nsp else None

    def forward(
        self, input_ids: Tensor, token_type_ids: Tensor | None = None, attention_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """input_ids, token_type_ids, attention_mask: (B, T) (mask: 1 real, 0 padding; None = no padding).

        Returns the sequence output (B, T, C) and the pooled [CLS] output (B, C) (None without a pooler)."""
        mask = padding_mask(attention_mask)  # (B, 1, 1, T) or None
        x = self.embeddings(input_ids, token_type_ids)
        for block in self.layers:
            x = block(x, mask)
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None  # [CLS] is position 0
        return x, pooled

    def forward_at(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None,
        attention_mask: Tensor | None,
        positions: Tensor,
    ) -> tuple[Tensor, Tensor | None]:
        """``forward`` when only some outputs are needed: the sequence output at ``positions`` (B, T) bool,
        as (K, C) in row-major order (``forward(...)[0][positions]``), and the pooled output.

        The same values, less work: every layer runs its projections, MLP and LayerNorms only on the real
        tokens (padding is masked out of attention, so its outputs are never read), and the last layer computes
        only the requested positions and [CLS]; its keys and values still come from every real token."""
        B, T = input_ids.shape
        need = positions.clone()
        if self.pooler is not None:
            need[:, 0] = True  # [CLS] feeds the pooler
        # Carried through the layers: the real tokens (keys and values of every layer) and the needed positions.
        carried = torch.ones_like(need) if attention_mask is None else need | attention_mask.bool()
        carried = carried.view(-1)
        rows = Rows(carried.nonzero().squeeze(1), B, T)  # (N,) flat positions of the carried tokens
        query = (carried.cumsum(0) - 1)[need.view(-1)]  # (K',) row of each needed position among the carried
        mask = padding_mask(attention_mask)

        x = rows.from_grid(self.embeddings(input_ids, token_type_ids))  # (N, C)
        for i, block in enumerate(self.layers):
            last = i == len(self.layers) - 1
            x = block.forward_rows(x, rows, mask, query if last else None)
        if not self.layers:
            x = x.index_select(0, query)
        # x: (K', C) at the needed positions, row-major
        pooled = None
        if self.pooler is not None:
            is_cls = (torch.arange(B * T, device=x.device) % T == 0)[need.view(-1)]  # one per sequence
            pooled = torch.tanh(self.pooler(x[is_cls]))  # (B, C)
        out = x if self.pooler is None else x[positions.view(-1)[need.view(-1)]]
        return out, pooled

    @torch.no_grad()
    def attention_weights(
        self, input_ids: Tensor, token_type_ids: Tensor | None = None, attention_mask: Tensor | None = None
    ) -> list[Tensor]:
        """Each layer's attention weights (B, nh, T, T), computed explicitly with the same mask (for plots)."""
        mask = padding_mask(attention_mask)
        x = self.embeddings(input_ids, token_type_ids)
        maps = []
        for block in self.layers:
            x, weights = block.forward_with_weights(x, mask)
            maps.append(weights)
        return maps


class BertMLMHead(nn.Module):
    """dense -> GELU -> LayerNorm -> vocabulary projection (tied to the word embeddings) + its own bias."""

    def __init__(self, config: ModelConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        C = config.hidden_size
        self.dense = nn.Linear(C, C)
        self.approximate = "tanh" if config.activation == "gelu_new" else "none"
        self.ln = nn.LayerNorm(C, eps=config.layer_norm_eps)
        self.decoder = VocabLinear(C, config.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight  # tied: one Parameter, gradients from both uses add up
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, h: Tensor, padded: bool = False) -> Tensor:
        """h: (..., C) -> logits (..., V); with ``padded``, h (N, C) -> (N, Vp): the logits in the first V
        columns and -inf in the rest (see ``vocab_logits``)."""
        h = self.ln(F.gelu(self.dense(h), approximate=self.approximate))
        if padded:
            return self.decoder(h, padded=True, bias=self.bias)
        return self.decoder(h) + self.bias

    def padded_logits(self, h: Tensor) -> Tensor:
        """h: (N, C) -> (N, Vp): ``forward(h)`` in the first V columns, -inf in the rest (see ``vocab_logits``)."""
        return self(h, padded=True)


@dataclass
class BertPreTrainingOutput:
    """What ``BertForPreTraining.forward`` returns. Counts are 0-dim tensors (no host sync)."""

    loss: Tensor | None
    """mlm_loss + nsp_loss (whichever have labels); None without labels."""
    mlm_loss: Tensor | None
    """Cross-entropy averaged over the masked tokens."""
    nsp_loss: Tensor | None
    """Next-sentence cross-entropy averaged over the batch."""
    mlm_logits: Tensor
    """(N_masked, V) with ``mlm_labels`` (rows in the order of ``mlm_labels[mlm_labels != -100]``),
    else (B, T, V) at every position."""
    nsp_logits: Tensor | None
    """(B, 2): index 0 = B follows A, 1 = B is random (the ``transformers`` convention); None without NSP."""
    mlm_correct: Tensor | None
    """Masked tokens whose argmax is the label."""
    mlm_count: Tensor | None
    """Masked tokens in the batch."""
    nsp_correct: Tensor | None
    """Sequences whose NSP argmax is the label."""


class BertForPreTraining(nn.Module):
    """BertModel + the MLM head (+ the NSP head when ``config.nsp``)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.mlm_head = BertMLMHead(config, self.bert.embeddings.word_embeddings)
        self.nsp_head = nn.Linear(config.hidden_size, 2) if config.nsp else None
        self.apply(lambda m: init_weights(m, config.initializer_range))
        # apply() also reached the tied decoder after the embedding: zero the padding row again.
        init_weights(self.bert.embeddings.word_embeddings, config.initializer_range)

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        mlm_labels: Tensor | None = None,
        next_sentence_label: Tensor | None = None,
    ) -> BertPreTrainingOutput:
        """input_ids, token_type_ids, attention_mask, mlm_labels: (B, T); next_sentence_label: (B,).

        ``mlm_labels`` holds the original token at masked positions and -100 elsewhere."""
        mlm_loss = mlm_correct = mlm_count = None
        if mlm_labels is None:
            sequence_output, pooled = self.bert(
                input_ids, token_type_ids, attention_mask
            )  # (B, T, C), (B, C)
            mlm_logits = self.mlm_logits_full(sequence_output)  # (B, T, V): inference / fill-mask
        else:
            masked = mlm_labels != IGNORE_INDEX  # (B, T)
            targets = mlm_labels[masked]  # (N,)
            # Only the N masked positions (and [CLS]) are read: the encoder skips the padding and the last
            # layer computes just those positions; transform + vocabulary projection run on N rows, not B*T.
            masked_output, pooled = self.bert.forward_at(input_ids, token_type_ids, attention_mask, masked)
            padded = self.mlm_head.padded_logits(masked_output)  # (N, C) -> (N, Vp), -inf past V
            mlm_logits = padded[:, : self.config.vocab_size]  # (N, V)
            if targets.numel() > 0:
                mlm_loss = F.cross_entropy(padded, targets)  # the -inf columns add nothing
            else:  # nothing masked: a zero that still touches the head (no unused parameters under DDP)
                mlm_loss = mlm_logits.sum() * 0.0
            mlm_correct = (mlm_logits.argmax(dim=-1) == targets).sum()
            mlm_count = masked.sum()

        nsp_logits = nsp_loss = nsp_correct = None
        if self.nsp_head is not None:
            assert pooled is not None
            nsp_logits = self.nsp_head(pooled)  # (B, 2)
            if next_sentence_label is not None:
                nsp_loss = F.cross_entropy(nsp_logits, next_sentence_label.view(-1))
                nsp_correct = (nsp_logits.argmax(dim=-1) == next_sentence_label.view(-1)).sum()

        losses = [x for x in (mlm_loss, nsp_loss) if x is not None]
        loss = sum(losses[1:], losses[0]) if losses else None
        return BertPreTrainingOutput(
            loss=loss,
            mlm_loss=mlm_loss,
            nsp_loss=nsp_loss,
            mlm_logits=mlm_logits,
            nsp_logits=nsp_logits,
            mlm_correct=mlm_correct,
            mlm_count=mlm_count,
            nsp_correct=nsp_correct,
        )

    def mlm_logits_full(self, sequence_output: Tensor) -> Tensor:
        """MLM logits at every position: (B, T, C) -> (B, T, V)."""
        return self.mlm_head(sequence_output)


# ----------------------------------------------------------------------------------------------------------------
# transformers <-> ours: (transformers key prefix, our key prefix); the first matching prefix renames a key.

_HF_BERT_BLOCK = [
    ("attention.self.query.", "attn.query."),
    ("attention.self.key.", "attn.key."),
    ("attention.self.value.", "attn.value."),
    ("attention.output.dense.", "attn.c_proj."),
    ("attention.output.LayerNorm.", "ln_1."),
    ("intermediate.dense.", "mlp.c_fc."),
    ("output.dense.", "mlp.c_proj."),
    ("output.LayerNorm.", "ln_2."),
]
_HF_BERT_TOP = [
    ("bert.embeddings.", "bert.embeddings."),
    ("bert.pooler.dense.", "bert.pooler."),
    ("cls.predictions.transform.dense.", "mlm_head.dense."),
    ("cls.predictions.transform.LayerNorm.", "mlm_head.ln."),
    ("cls.predictions.decoder.weight", "mlm_head.decoder.weight"),  # tied to the word embeddings
    ("cls.predictions.bias", "mlm_head.bias"),
    ("cls.seq_relationship.", "nsp_head."),
]
_LAYERS = {"hf": r"bert\.encoder\.layer\.(\d+)\.(.+)", "ours": r"bert\.layers\.(\d+)\.(.+)"}


def _rename(key: str, table: list[tuple[str, str]], to_ours: bool) -> str | None:
    for hf, ours in table:
        src, dst = (hf, ours) if to_ours else (ours, hf)
        if key.startswith(src):
            return dst + key[len(src) :]
    return None


def _convert_bert(sd: dict[str, Tensor], to_ours: bool) -> dict[str, Tensor]:
    src_layers, dst_layer = (
        (_LAYERS["hf"], "bert.layers") if to_ours else (_LAYERS["ours"], "bert.encoder.layer")
    )
    out = {}
    for key, value in sd.items():
        m = re.fullmatch(src_layers, key)
        if m:
            rest = _rename(m.group(2), _HF_BERT_BLOCK, to_ours)
            new = f"{dst_layer}.{m.group(1)}.{rest}" if rest else None
        else:
            new = _rename(key, _HF_BERT_TOP, to_ours)
        if new is None:
            if key == "cls.predictions.decoder.bias":  # transformers' alias of cls.predictions.bias
                continue
            raise KeyError(f"no mapping for {key!r}")
        out[new] = value
    if not to_ours and "cls.predictions.bias" in out:
        out["cls.predictions.decoder.bias"] = out["cls.predictions.bias"]
    return out


def bert_from_hf_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """A ``transformers`` ``BertForPreTraining`` state dict -> ours (keys renamed, tensors untouched)."""
    return _convert_bert(sd, to_ours=True)


def bert_to_hf_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our ``BertForPreTraining`` state dict -> ``transformers``' (loads with ``strict=True``)."""
    return _convert_bert(sd, to_ours=False)
