"""Token classification (NER): CoNLL-2003 files, first-sub-word label alignment, entity-level F1 (seqeval).

A word split into several WordPiece tokens is labelled on its first piece; the other pieces, [CLS], [SEP] and
padding get -100 (ignored by the loss). Predictions are read back at the first pieces, one tag per word; words
cut off by truncation are predicted ``O``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from data_prep.errors import UserError

IGNORE = -100


def read_conll(path: str | Path) -> list[dict[str, Any]]:
    """CoNLL-2003: ``word POS chunk TAG`` per line (the tag is the last column), blank lines between
    sentences, ``-DOCSTART-`` lines between documents. Returns ``{"words", "tags", "source"}`` per sentence."""
    path = Path(path)
    sentences: list[dict[str, Any]] = []
    words: list[str] = []
    tags: list[str] = []
    start = 0
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                if words:
                    sentences.append({"words": words, "tags": tags, "source": f"{path}:{start}"})
                words, tags = [], []
                continue
            if len(fields) < 2:
                raise UserError(f"{path}: line {line_no}: expected 'WORD ... TAG' (at least 2 columns)")
            if not words:
                start = line_no
            words.append(fields[0])
            tags.append(fields[-1])
    if words:
        sentences.append({"words": words, "tags": tags, "source": f"{path}:{start}"})
    if not sentences:
        raise UserError(f"{path}: no sentences found (CoNLL format: one 'WORD ... TAG' per line)")
    return sentences


def align_labels(word_ids: list[int | None], word_labels: list[int]) -> list[int]:
    """Token labels from word labels: the first token of each word gets the word's label, the rest -100.

    ``word_ids[i]`` is the word of token i (None for special tokens), as ``tokenizers`` reports it."""
    out, prev = [], None
    for wid in word_ids:
        out.append(word_labels[wid] if wid is not None and wid != prev else IGNORE)
        prev = wid
    return out


def word_predictions(token_preds: list[int], labels: list[int], n_words: int, outside: int) -> list[int]:
    """One predicted label per word: the prediction at each labelled (first sub-word) position, in order;
    words truncated away get ``outside``."""
    preds = [p for p, lab in zip(token_preds, labels) if lab != IGNORE]
    return (preds + [outside] * n_words)[:n_words]


def entity_scores(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
    """Entity-level precision, recall and F1 (seqeval, CoNLL evaluation: exact span and type), plus token
    accuracy."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    total = sum(len(g) for g in gold)
    correct = sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p))
    return {
        "entity_precision": float(precision_score(gold, pred, zero_division=0)),
        "entity_recall": float(recall_score(gold, pred, zero_division=0)),
        "entity_f1": float(f1_score(gold, pred, zero_division=0)),
        "token_accuracy": correct / max(total, 1),
    }
