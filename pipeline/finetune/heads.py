"""Task heads around the pretrained models, laid out like ``transformers``' task models so they export 1:1.

* ``BertForSequenceTask``: pooled [CLS] -> dropout -> ``classifier`` (classification, or regression with one
  output); ``transformers.BertForSequenceClassification``.
* ``BertForTokenTask``: every token -> dropout -> ``classifier``; ``BertForTokenClassification``.
* ``BertForQA``: every token -> ``qa_outputs`` (start, end logits); ``BertForQuestionAnswering``.
* ``GPTForSequenceTask``: the hidden state of the last real token -> ``score`` (no bias);
  ``GPT2ForSequenceClassification`` (which finds the last token that is not padding).
* ``GPTForLM``: the pretrained GPT itself; ``GPT2LMHeadModel``.

The backbone keeps its pretraining parameter names under ``bert.`` / ``gpt.``, so pretrained weights load by
prefix and the converters in ``pipeline.models`` apply unchanged.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models import GPT, BertModel, ModelConfig
from pipeline.models.blocks import init_weights


class BertForSequenceTask(nn.Module):
    """Sentence (pair) classification, or regression when ``num_labels == 1``."""

    def __init__(self, config: ModelConfig, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        # The head reads the pooler; a model pretrained without NSP gets a fresh one.
        self.config = dataclasses.replace(config, nsp=True)
        self.bert = BertModel(self.config)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        self.num_labels = num_labels
        self.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        _, pooled = self.bert(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        logits = self.classifier(self.dropout(pooled))  # (B, num_labels)
        out = {"logits": logits}
        if "labels" in batch:
            if self.num_labels == 1:
                out["loss"] = F.mse_loss(logits.squeeze(-1), batch["labels"].float())
            else:
                out["loss"] = F.cross_entropy(logits, batch["labels"])
        return out


class BertForTokenTask(nn.Module):
    """A label per token (NER); labels of -100 are ignored."""

    def __init__(self, config: ModelConfig, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.config = dataclasses.replace(config, nsp=False)  # no pooler: it would get no gradient
        self.bert = BertModel(self.config)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        self.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        seq, _ = self.bert(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        logits = self.classifier(self.dropout(seq))  # (B, T, num_labels)
        out = {"logits": logits}
        if "labels" in batch:
            out["loss"] = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
        return out


class BertForQA(nn.Module):
    """Start and end logits over the tokens (SQuAD)."""

    def __init__(self, config: ModelConfig, num_labels: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.config = dataclasses.replace(config, nsp=False)
        self.bert = BertModel(self.config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        seq, _ = self.bert(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        logits = self.qa_outputs(seq)  # (B, T, 2)
        # Padding can never be an answer.
        logits = logits.masked_fill(~batch["attention_mask"].bool()[..., None], -1e4)
        start, end = logits.unbind(-1)
        out = {"start_logits": start, "end_logits": end}
        if "start_positions" in batch:
            out["loss"] = (
                F.cross_entropy(start, batch["start_positions"])
                + F.cross_entropy(end, batch["end_positions"])
            ) / 2
        return out


class GPTForSequenceTask(nn.Module):
    """Classification (or regression) from the last real token's hidden state (inputs are right-padded)."""

    def __init__(self, config: ModelConfig, num_labels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.config = config
        self.gpt = GPT(config)
        self.score = nn.Linear(config.hidden_size, num_labels, bias=False)
        nn.init.normal_(self.score.weight, std=config.initializer_range)
        self.num_labels = num_labels

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        h = self.gpt.hidden_states(batch["input_ids"])  # (B, T, C); causal, so padding after does not matter
        last = batch["attention_mask"].sum(1) - 1  # (B,)
        logits = self.score(h[torch.arange(h.size(0), device=h.device), last])  # (B, num_labels)
        out = {"logits": logits}
        if "labels" in batch:
            if self.num_labels == 1:
                out["loss"] = F.mse_loss(logits.squeeze(-1), batch["labels"].float())
            else:
                out["loss"] = F.cross_entropy(logits, batch["labels"])
        return out


class GPTForLM(nn.Module):
    """Causal-LM fine-tuning: the pretrained GPT and its tied head."""

    def __init__(self, config: ModelConfig, num_labels: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.config = config
        self.gpt = GPT(config)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = self.gpt(batch["input_ids"], labels=batch.get("labels"))
        return {"logits": out.logits, "loss": out.loss} if out.loss is not None else {"logits": out.logits}


def head_class(arch: str, task_type: str) -> type[nn.Module]:
    """The task model for an architecture and task type."""
    table: dict[tuple[str, str], type[nn.Module]] = {
        ("bert", "classification"): BertForSequenceTask,
        ("bert", "regression"): BertForSequenceTask,
        ("bert", "token_classification"): BertForTokenTask,
        ("bert", "qa"): BertForQA,
        ("gpt", "classification"): GPTForSequenceTask,
        ("gpt", "regression"): GPTForSequenceTask,
        ("gpt", "lm"): GPTForLM,
    }
    if (arch, task_type) not in table:
        from data_prep.errors import UserError

        supported = ", ".join(t for a, t in table if a == arch)
        raise UserError(f"task.type {task_type!r} is not supported for {arch} (supported: {supported})")
    return table[(arch, task_type)]


def build_task_model(config: ModelConfig, task_type: str, num_labels: int, dropout: float = 0.1) -> nn.Module:
    """A freshly initialised task model."""
    return head_class(config.arch, task_type)(config, num_labels, dropout)


def backbone_prefix(arch: str) -> str:
    return "bert." if arch == "bert" else "gpt."


def load_backbone(model: nn.Module, weights: dict[str, Tensor], arch: str) -> None:
    """Load pretraining weights (``BertForPreTraining`` / ``GPT`` names) into the task model's backbone; heads
    stay freshly initialised. Anything the backbone needs and the weights lack is an error."""
    from data_prep.errors import UserError

    if arch == "bert":
        sub = {k: v for k, v in weights.items() if k.startswith("bert.")}
        target = model.bert  # type: ignore[attr-defined]
        sub = {k[len("bert.") :]: v for k, v in sub.items()}
    else:
        sub = {k: v for k, v in weights.items() if k.startswith(("transformer.", "lm_head."))}
        target = model.gpt  # type: ignore[attr-defined]
    own = target.state_dict()
    sub = {k: v for k, v in sub.items() if k in own}  # e.g. a pooler the token model does not have
    missing, _ = target.load_state_dict(sub, strict=False)
    aliases = set(dict(target.named_parameters(remove_duplicate=False))) - set(
        dict(target.named_parameters())
    )
    missing = [k for k in missing if k not in aliases and not k.startswith("pooler.")]
    if missing:
        raise UserError(f"the pretrained weights lack {len(missing)} backbone tensors, e.g. {missing[:3]}")
