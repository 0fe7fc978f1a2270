"""Recurrent language-model baselines: vanilla (tanh) RNN, LSTM and GRU (``ModelConfig.arch``).

Read top to bottom: token embedding (E) -> dropout -> stacked recurrent layers (H) -> dropout -> (H -> E
projection when tied and E != H) -> output projection to the vocabulary, tied to the embedding (Press & Wolf
2017; Inan et al. 2017). The loss is GPT's: mean next-token cross-entropy over the same windows, so losses and
perplexities compare directly. The recurrence runs through torch's fused ``nn.RNN``/``nn.LSTM``/``nn.GRU``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models.blocks import Dropout
from pipeline.models.config import RNN_ARCHS, ModelConfig
from pipeline.models.gpt import IGNORE_INDEX, GPTOutput
from pipeline.models.vocab import VocabLinear

_CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RNNLM(nn.Module):
    """wte -> dropout -> RNN/LSTM/GRU layers -> dropout -> [proj] -> lm_head (tied to wte unless told not to)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.arch not in RNN_ARCHS:
            raise ValueError(f"RNNLM builds {RNN_ARCHS}, not {config.arch!r}")
        self.config = config
        E, H, V = config.embedding_size or config.hidden_size, config.hidden_size, config.vocab_size
        self.wte = nn.Embedding(V, E)
        self.drop = Dropout(config.hidden_dropout)
        kwargs = {"nonlinearity": "tanh"} if config.arch == "rnn" else {}
        self.rnn = _CELLS[config.arch](
            E,
            H,
            num_layers=config.num_layers,
            batch_first=True,
            dropout=config.hidden_dropout if config.num_layers > 1 else 0.0,
            **kwargs,
        )
        tied = config.tie_embeddings
        self.proj = nn.Linear(H, E) if tied and E != H else None
        self.lm_head = VocabLinear(E if tied else H, V, bias=False)
        if tied:
            self.lm_head.weight = self.wte.weight  # one Parameter: input embedding and output projection
        nn.init.normal_(self.wte.weight, mean=0.0, std=config.initializer_range)
        if not tied:
            nn.init.normal_(self.lm_head.weight, mean=0.0, std=config.initializer_range)
        # The recurrent weights keep torch's default U(-1/sqrt(H), 1/sqrt(H)) initialisation.

    def embed(self, input_ids: Tensor) -> Tensor:
        """input_ids (B, T) -> token embeddings (B, T, E) (gradient probes hook this module: ``wte``)."""
        return self.wte(input_ids)

    def hidden_states(self, input_ids: Tensor) -> Tensor:
        """input_ids (B, T) -> the top layer's states (B, T, E or H), after dropout and the projection."""
        h, _ = self.rnn(self.drop(self.embed(input_ids)))  # (B, T, H); the initial state is zero
        h = self.drop(h)
        return self.proj(h) if self.proj is not None else h

    def forward(self, input_ids: Tensor, labels: Tensor | None = None) -> GPTOutput:
        """input_ids (B, T); labels (B, T), already shifted: labels[:, t] is the token after t (as for GPT)."""
        h = self.hidden_states(input_ids)
        B, T, D = h.shape
        V = self.config.vocab_size
        padded = self.lm_head(h.reshape(B * T, D), padded=True)  # (B*T, Vp), see vocab.vocab_logits
        loss = None
        if labels is not None:
            loss = F.cross_entropy(padded, labels.reshape(-1), ignore_index=IGNORE_INDEX)
        return GPTOutput(loss=loss, logits=padded[:, :V].view(B, T, V))
