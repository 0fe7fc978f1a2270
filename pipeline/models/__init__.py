"""BERT and GPT models in plain PyTorch, sharing one Transformer block (``blocks.py``), and the baselines.

``build_model(load_model_config("bert-base"))`` gives a ``BertForPreTraining``; ``"gpt2-small"`` a ``GPT``;
``"lstm-tiny"`` an ``RNNLM`` and ``"transformer-lm-tiny"`` a ``TransformerLM`` (both with GPT's output).
"""

from __future__ import annotations

from torch import nn

from pipeline.models.bert import (
    BertForPreTraining,
    BertModel,
    BertPreTrainingOutput,
    bert_from_hf_state_dict,
    bert_to_hf_state_dict,
)
from pipeline.models.config import RNN_ARCHS, ModelConfig, load_model_config, model_preset_names
from pipeline.models.gpt import (
    GPT,
    GPTOutput,
    gpt_from_hf_state_dict,
    gpt_to_hf_state_dict,
    next_token_probs,
    top_k_filter,
    top_p_filter,
)


def build_model(config: ModelConfig) -> nn.Module:
    """The pretraining model for ``config.arch``, freshly initialised: ``BertForPreTraining``, ``GPT``,
    ``RNNLM`` (rnn, lstm, gru) or ``TransformerLM``; all but BERT return a ``GPTOutput``."""
    if config.arch == "bert":
        return BertForPreTraining(config)
    if config.arch == "gpt":
        return GPT(config)
    if config.arch in RNN_ARCHS:
        from pipeline.models.rnn import RNNLM

        return RNNLM(config)
    if config.arch == "transformer-lm":
        from pipeline.models.transformer import TransformerLM

        return TransformerLM(config)
    raise ValueError(f"unknown arch {config.arch!r}")


__all__ = [
    "GPT",
    "BertForPreTraining",
    "BertModel",
    "BertPreTrainingOutput",
    "GPTOutput",
    "ModelConfig",
    "bert_from_hf_state_dict",
    "bert_to_hf_state_dict",
    "build_model",
    "gpt_from_hf_state_dict",
    "gpt_to_hf_state_dict",
    "load_model_config",
    "model_preset_names",
    "next_token_probs",
    "top_k_filter",
    "top_p_filter",
]
