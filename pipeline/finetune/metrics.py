"""Validation metrics and per-example predictions of every task type.

Classification: accuracy, F1 (binary, positive class = label 1, as GLUE's MRPC/QQP; macro over classes with more
than two), Matthews correlation (CoLA). Regression: Pearson and Spearman correlation, MSE (STS-B). All via
``torchmetrics``. NER: entity precision/recall/F1 (seqeval) and token accuracy. QA: SQuAD v1.1 exact match and
F1. LM: loss and perplexity.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torchmetrics.functional import (
    accuracy,
    f1_score,
    matthews_corrcoef,
    mean_squared_error,
    pearson_corrcoef,
    spearman_corrcoef,
)

from pipeline.finetune.ner import IGNORE, entity_scores, word_predictions
from pipeline.finetune.squad import best_answers, squad_scores


def classification_scores(preds: torch.Tensor, target: torch.Tensor, num_classes: int) -> dict[str, float]:
    """accuracy, f1 (binary for two classes, else macro), mcc."""
    preds, target = preds.long(), target.long()
    if num_classes == 2:
        f1 = f1_score(preds, target, task="binary")
        mcc = matthews_corrcoef(preds, target, task="binary")
    else:
        f1 = f1_score(preds, target, task="multiclass", num_classes=num_classes, average="macro")
        mcc = matthews_corrcoef(preds, target, task="multiclass", num_classes=num_classes)
    acc = accuracy(preds, target, task="multiclass", num_classes=max(num_classes, 2))
    return {"accuracy": float(acc), "f1": float(f1), "mcc": float(mcc)}


def regression_scores(preds: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Pearson, Spearman (NaN -> 0 for constant predictions), MSE."""
    preds, target = preds.float(), target.float()
    out = {"mse": float(mean_squared_error(preds, target))}
    if len(preds) < 2 or float(preds.std()) == 0.0 or float(target.std()) == 0.0:
        out.update(pearson=0.0, spearman=0.0)
    else:
        out.update(
            pearson=float(pearson_corrcoef(preds, target)), spearman=float(spearman_corrcoef(preds, target))
        )
    return out


def evaluate(
    task_type: str,
    labels: list[str],
    examples: list[dict[str, Any]],
    features: list[Any],
    outputs: dict[str, Any],
    max_answer_len: int = 30,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """(metrics, one prediction row per example) from the outputs gathered over a split.

    Metrics are computed only when the split has labels (GLUE's test files have none)."""
    if task_type == "lm":
        loss = outputs["loss_sum"] / max(outputs["tokens"], 1)
        return {"loss": loss, "ppl": math.exp(min(loss, 20.0))}, []
    if task_type in ("classification", "regression"):
        logits = torch.cat(outputs["logits"]).float()
        has_gold = bool(features) and all("labels" in f for f in features)
        rows = []
        if task_type == "regression":
            preds = logits.squeeze(-1)
            for ex, p in zip(examples, preds.tolist()):
                rows.append({**_brief(ex), "prediction": p})
            if not has_gold:
                return {}, rows
            return regression_scores(preds, torch.tensor([f["labels"] for f in features])), rows
        pred_idx = logits.argmax(-1)
        probs = logits.softmax(-1)
        for ex, p, pr in zip(examples, pred_idx.tolist(), probs.tolist()):
            rows.append({**_brief(ex), "prediction": labels[p], "probs": [round(x, 5) for x in pr]})
        if not has_gold:
            return {}, rows
        target = torch.tensor([f["labels"] for f in features])
        return classification_scores(pred_idx, target, len(labels)), rows
    if task_type == "token_classification":
        outside = labels.index("O") if "O" in labels else 0
        gold, pred, rows = [], [], []
        for ex, f, tp in zip(examples, features, outputs["preds"]):
            words = word_predictions(tp, f["labels"], len(ex["words"]), outside)
            pred.append([labels[i] for i in words])
            gold.append(list(ex["tags"]))
            rows.append(
                {"source": ex["source"], "words": ex["words"], "tags": ex["tags"], "prediction": pred[-1]}
            )
        return entity_scores(gold, pred), rows
    if task_type == "qa":
        answers = best_answers(
            examples, features, outputs["start_logits"], outputs["end_logits"], max_answer_len
        )
        rows = [
            {"id": ex["id"], "prediction": a, "answers": [x["text"] for x in ex["answers"]]}
            for ex, a in zip(examples, answers)
        ]
        gold = [[x["text"] for x in ex["answers"]] for ex in examples]
        if not any(gold):
            return {}, rows
        return squad_scores(answers, gold), rows
    raise ValueError(f"unknown task type {task_type!r}")


def _brief(ex: dict[str, Any]) -> dict[str, Any]:
    row = {"source": ex["source"], "text": ex["text"]}
    if ex.get("text_pair") is not None:
        row["text_pair"] = ex["text_pair"]
    if ex.get("label") is not None:
        row["label"] = ex["label"]
    return row


def token_predictions(logits: torch.Tensor, labels: torch.Tensor) -> list[list[int]]:
    """Argmax per token, as lists trimmed to each row's labelled length (padding has label -100 at the end)."""
    preds = logits.argmax(-1)
    out = []
    for p, lab in zip(preds.tolist(), labels.tolist()):
        n = len(lab)
        while n and lab[n - 1] == IGNORE:
            n -= 1
        out.append(p[: n + 1])
    return out
