"""The model's shape and its few switches: one dataclass, loaded from ``recipes/models/NAME.yaml``.

The same dataclass describes BERT, GPT and the language-model baselines (vanilla RNN, LSTM, GRU and the
original post-LN Transformer used as a decoder-only LM); the defaults that differ between the two (LayerNorm epsilon and the
GELU form) are left ``None`` here and filled in ``__post_init__`` from ``arch``, so a resolved config written
next to a checkpoint holds the values that were really used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from data_prep.recipe import RecipeError, from_dict, load_yaml

MODEL_RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "models"

Arch = Literal["bert", "gpt", "rnn", "lstm", "gru", "transformer-lm"]
RNN_ARCHS = ("rnn", "lstm", "gru")
"""The recurrent baselines: vanilla (tanh) RNN, LSTM and GRU language models (``pipeline.models.rnn``)."""
CAUSAL_LM_ARCHS = tuple(a for a in get_args(Arch) if a != "bert")
"""Every arch trained by next-token prediction on the ``gpt`` windows."""


@dataclass
class ModelConfig:
    """A BERT or GPT Transformer, or a language-model baseline: sizes, dropout, initialisation and switches."""

    arch: Arch
    """``bert`` (post-LN encoder, MLM + NSP heads), ``gpt`` (pre-LN causal decoder, GPT-2 layout), the
    recurrent baselines ``rnn`` (tanh), ``lstm``, ``gru``, or ``transformer-lm`` (the original post-LN
    Transformer's decoder stack with sinusoidal positions, as a causal LM). All but ``bert`` train on the
    ``gpt`` windows with the same next-token loss."""
    vocab_size: int
    """Rows of the token embedding (and of the tied output projection); must match the tokenizer."""
    max_position_embeddings: int
    """Longest sequence the learned position embedding covers (RNNs and ``transformer-lm`` have no table:
    the longest window they accept)."""
    hidden_size: int
    """Width of the residual stream (C); for RNNs the width of the recurrent state (H)."""
    num_layers: int
    """Transformer blocks, or stacked recurrent layers."""
    num_heads: int = 1
    """Attention heads; ``hidden_size`` must divide evenly among them (unused by RNNs)."""
    intermediate_size: int | None = None
    """Hidden width of each block's MLP; ``None`` means ``4 * hidden_size``."""
    type_vocab_size: int = 2
    """BERT only: segment (token type) embeddings, 2 for sentence A / sentence B."""
    hidden_dropout: float = 0.1
    """Dropout on the embeddings and on each sublayer's output before the residual add (RNNs: on the
    embeddings, between stacked layers and on the top layer's output)."""
    attention_dropout: float = 0.1
    """Dropout on the attention probabilities (training only)."""
    layer_norm_eps: float | None = None
    """LayerNorm epsilon; ``None`` means 1e-12 for BERT and 1e-5 for GPT (what their checkpoints assume)."""
    activation: Literal["gelu", "gelu_new", "relu"] | None = None
    """MLP activation: ``gelu`` is the exact erf form (BERT), ``gelu_new`` the tanh approximation (GPT-2),
    ``relu`` the original Transformer's; ``None`` picks the one that matches ``arch`` (``transformer-lm``:
    ``relu``)."""
    nsp: bool = True
    """BERT only: keep the pooler and the next-sentence head; ``false`` trains MLM only (RoBERTa-style)."""
    pad_token_id: int = 0
    """BERT only: the padding token, whose word-embedding row starts at zero and gets no gradient from lookups."""
    initializer_range: float = 0.02
    """Standard deviation of the normal initialisation of every weight matrix and embedding."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward pass (``torch.utils.checkpoint``): less memory,
    about one more forward pass of compute."""

    embedding_size: int | None = None
    """RNN baselines: width of the token embedding (E); ``None`` means ``hidden_size``."""
    tie_embeddings: bool = True
    """RNN baselines: the output projection reuses the input embedding (through an H -> E projection when
    E != H). GPT and ``transformer-lm`` always tie."""

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size
        if self.layer_norm_eps is None:
            self.layer_norm_eps = 1e-12 if self.arch == "bert" else 1e-5
        if self.activation is None:
            self.activation = {"gpt": "gelu_new", "transformer-lm": "relu"}.get(self.arch, "gelu")
        if self.embedding_size is None:
            self.embedding_size = self.hidden_size

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_heads


def model_preset_names() -> list[str]:
    """The named sizes under ``recipes/models/``."""
    return sorted(p.stem for p in MODEL_RECIPES.glob("*.yaml"))


def load_model_config(name_or_path: str | Path, **overrides: Any) -> ModelConfig:
    """A named size (``"bert-base"`` -> ``recipes/models/bert-base.yaml``) or a YAML file, with ``overrides``
    (e.g. ``vocab_size=8000``) applied on top and checked like the file's own keys."""
    path = Path(name_or_path)
    if not path.is_file():
        if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
            raise RecipeError(f"{path}: model recipe file not found")
        path = MODEL_RECIPES / f"{name_or_path}.yaml"
        if not path.is_file():
            names = ", ".join(model_preset_names())
            raise RecipeError(
                f"unknown model size {str(name_or_path)!r} (known: {names}; or give a YAML path)"
            )
    data = {**load_yaml(path), **overrides}
    return from_dict(ModelConfig, data, str(path))
