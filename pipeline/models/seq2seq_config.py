"""The shape of a sequence-to-sequence model: an RNN encoder-decoder (with or without attention) or the
original encoder-decoder Transformer. One dataclass, the ``model`` section of a ``recipes/seq2seq/*.yaml``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.models.config import ModelConfig


@dataclass
class Seq2SeqModelConfig:
    """An encoder-decoder: ``rnn`` (Bahdanau/Luong style) or ``transformer`` (Vaswani et al. 2017)."""

    arch: Literal["rnn", "transformer"] = "rnn"
    """``rnn``: recurrent encoder and decoder (``pipeline.models.seq2seq``); ``transformer``: the post-LN
    encoder-decoder Transformer (``pipeline.models.transformer``)."""
    vocab_size: int | None = None
    """Shared source/target vocabulary; ``None`` = from the data (the tokenizer's size, plus one id for the
    denoising mask token)."""
    cell: Literal["lstm", "gru"] = "lstm"
    """RNN: the recurrent cell of encoder and decoder."""
    attention: Literal["additive", "dot", "none"] = "additive"
    """RNN: ``additive`` (Bahdanau: v^T tanh(W_s s + W_h h_j)), ``dot`` (Luong: s^T W h_j), or ``none`` (the
    decoder sees only the encoder's final state)."""
    bidirectional: bool = True
    """RNN: the encoder reads the source in both directions (its states are 2H wide)."""
    embedding_size: int = 128
    """RNN: width of the token embeddings (the Transformer uses ``hidden_size``)."""
    hidden_size: int = 256
    """RNN: width of the recurrent state (H); Transformer: width of the residual stream (d_model)."""
    num_layers: int = 1
    """RNN: stacked recurrent layers, in the encoder and in the decoder."""
    teacher_forcing: float = 1.0
    """RNN, training: probability of feeding the gold previous token to the decoder (else its own greedy
    prediction, detached); 1.0 = always teacher-forced."""
    dropout: float = 0.1
    """Dropout on embeddings and between layers (Transformer: on every sublayer's output too)."""
    num_heads: int = 8
    """Transformer: attention heads."""
    encoder_layers: int = 6
    """Transformer: encoder blocks."""
    decoder_layers: int = 6
    """Transformer: decoder blocks."""
    intermediate_size: int | None = None
    """Transformer: MLP width; ``None`` = 4 x ``hidden_size``."""
    attention_dropout: float = 0.1
    """Transformer: dropout on the attention probabilities."""
    max_len: int = 512
    """Longest source or target sequence (the Transformer's sinusoidal table covers this many positions)."""
    initializer_range: float = 0.02
    """Standard deviation of the normal initialisation of the Transformer's weight matrices."""

    def block_config(self) -> ModelConfig:
        """The shared blocks' config for the Transformer (post-LN, ReLU MLP as in Vaswani et al.)."""
        if self.vocab_size is None:
            raise ValueError("vocab_size is not set (it is filled from the data before the model is built)")
        return ModelConfig(
            arch="transformer-lm",
            vocab_size=self.vocab_size,
            max_position_embeddings=self.max_len,
            hidden_size=self.hidden_size,
            num_layers=self.encoder_layers,
            num_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            hidden_dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            initializer_range=self.initializer_range,
        )
