"""Extractive QA on SQuAD v1.1: reading the JSON, windows over long contexts, answer post-processing, EM / F1.

A context longer than fits is cut into windows of context tokens that start ``doc_stride`` tokens apart (as
Google's ``run_squad.py``); each window becomes ``[CLS] question [SEP] window [SEP]``. In training a window
whose span does not hold the whole answer points at [CLS] (position 0). At evaluation the best span
(start + end logit, end >= start, at most ``max_answer_len`` tokens, inside the context) over all windows of an
example is mapped back to the context's characters through the tokenizer's offsets. Scores use the official
v1.1 evaluation script's normalisation (lowercase, no punctuation, no articles a/an/the, single spaces) and
take the best over the gold answers.
"""

from __future__ import annotations

import collections
import json
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_prep.errors import UserError


def read_squad(path: str | Path) -> list[dict[str, Any]]:
    """SQuAD v1.1 JSON -> ``{"id", "question", "context", "answers": [{"text", "answer_start"}], "source"}``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise UserError(f"{path}: not SQuAD JSON (expected {{'data': [{{'paragraphs': ...}}]}})")
    out = []
    for article in data["data"]:
        for p in article.get("paragraphs", []):
            context = p["context"]
            for qa in p.get("qas", []):
                answers = [{"text": a["text"], "answer_start": int(a["answer_start"])} for a in qa["answers"]]
                for a in answers:
                    if context[a["answer_start"] : a["answer_start"] + len(a["text"])] != a["text"]:
                        raise UserError(
                            f"{path}: question {qa['id']}: answer {a['text']!r} is not at "
                            f"answer_start {a['answer_start']} of its context"
                        )
                out.append(
                    {
                        "id": str(qa["id"]),
                        "question": qa["question"],
                        "context": context,
                        "answers": answers,
                        "source": f"{path}#{qa['id']}",
                    }
                )
    return out


# ------------------------------------------------------------------------------------------------ windows


def windows(n_tokens: int, max_len: int, doc_stride: int) -> list[tuple[int, int]]:
    """(start, length) of the context windows: ``max_len`` tokens each, starts ``doc_stride`` apart, the last
    one reaching the end (Google's run_squad.py)."""
    if max_len <= 0:
        raise UserError("max_seq_len leaves no room for the context after the question; raise it")
    spans, start = [], 0
    while True:
        length = min(max_len, n_tokens - start)
        spans.append((start, length))
        if start + length >= n_tokens:
            return spans
        start += min(length, doc_stride)


def char_to_token_span(offsets: list[tuple[int, int]], start_char: int, end_char: int) -> tuple[int, int]:
    """First and last token (inclusive) covering the characters [start_char, end_char)."""
    first = next((i for i, (_, e) in enumerate(offsets) if e > start_char), len(offsets) - 1)
    last = max((i for i, (s, _) in enumerate(offsets) if s < end_char), default=first)
    return first, max(first, last)


@dataclass
class QAFeature:
    """One window of one example."""

    input_ids: list[int]
    token_type_ids: list[int]
    example: int
    """Index of the example."""
    context_offset: int
    """Position of the window's first context token in ``input_ids``."""
    offsets: list[tuple[int, int]]
    """Character span in the context of each of the window's context tokens."""
    start_position: int = 0
    end_position: int = 0


def qa_features(
    examples: list[dict[str, Any]],
    tokenizer: Any,
    special: dict[str, int],
    max_seq_len: int,
    doc_stride: int,
    max_query_len: int,
) -> list[QAFeature]:
    """Windows with start/end labels (the first gold answer's span, or [CLS] when a window misses it)."""
    feats = []
    for ei, ex in enumerate(examples):
        q = tokenizer.encode(ex["question"], add_special_tokens=False).ids[:max_query_len]
        enc = tokenizer.encode(ex["context"], add_special_tokens=False)
        ids, offsets = enc.ids, [tuple(o) for o in enc.offsets]
        ans = ex["answers"][0] if ex["answers"] else None
        span = None
        if ans is not None:
            span = char_to_token_span(offsets, ans["answer_start"], ans["answer_start"] + len(ans["text"]))
        shift = len(q) + 2
        for start, length in windows(len(ids), max_seq_len - len(q) - 3, doc_stride):
            f = QAFeature(
                input_ids=[special["cls"], *q, special["sep"], *ids[start : start + length], special["sep"]],
                token_type_ids=[0] * shift + [1] * (length + 1),
                example=ei,
                context_offset=shift,
                offsets=offsets[start : start + length],
            )
            if span is not None and start <= span[0] and span[1] < start + length:
                f.start_position, f.end_position = span[0] - start + shift, span[1] - start + shift
            feats.append(f)
    return feats


def best_answers(
    examples: list[dict[str, Any]],
    features: list[QAFeature],
    start_logits: list[list[float]],
    end_logits: list[list[float]],
    max_answer_len: int = 30,
    n_best: int = 20,
) -> list[str]:
    """The highest-scoring valid span of each example over all its windows, as context text."""
    best: dict[int, tuple[float, str]] = {}
    for f, sl, el in zip(features, start_logits, end_logits):
        lo, hi = f.context_offset, f.context_offset + len(f.offsets)
        starts = sorted(range(lo, hi), key=lambda i: -sl[i])[:n_best]
        ends = sorted(range(lo, hi), key=lambda i: -el[i])[:n_best]
        context = examples[f.example]["context"]
        for s in starts:
            for e in ends:
                if e < s or e - s + 1 > max_answer_len:
                    continue
                score = sl[s] + el[e]
                if f.example not in best or score > best[f.example][0]:
                    text = context[f.offsets[s - lo][0] : f.offsets[e - lo][1]]
                    best[f.example] = (score, text)
    return [best.get(i, (0.0, ""))[1] for i in range(len(examples))]


# ------------------------------------------------------------------------------------------------ official metric


def normalize_answer(s: str) -> str:
    """SQuAD v1.1: lowercase, remove punctuation, remove articles (a, an, the), collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def f1(prediction: str, truth: str) -> float:
    """Token-overlap F1 of the normalised strings."""
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = collections.Counter(pred) & collections.Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: list[str], gold: list[list[str]]) -> dict[str, float]:
    """Mean exact match and F1 (fractions, 0..1; the official script prints them x100), best over gold answers."""
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0}
    em = sum(max(exact_match(p, g) for g in golds) for p, golds in zip(predictions, gold) if golds)
    f = sum(max(f1(p, g) for g in golds) for p, golds in zip(predictions, gold) if golds)
    n = len(predictions)
    return {"exact_match": em / n, "f1": f / n}
