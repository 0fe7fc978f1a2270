"""Examples -> model inputs for each task type, and the collate function that pads a batch.

BERT inputs are built by hand from pieces encoded without special tokens: ``[CLS] A [SEP]`` or
``[CLS] A [SEP] B [SEP]`` with segment ids 0 for ``[CLS] A [SEP]`` and 1 for ``B [SEP]``; pairs are truncated
longest-first. So any WordPiece ``tokenizer.json`` works, whatever post-processor it carries. GPT inputs are the
text's tokens (a pair: A, ``<|endoftext|>``, B), truncated at the end.
"""

from __future__ import annotations

from typing import Any

import torch
from tokenizers import Tokenizer

from data_prep.errors import UserError
from pipeline.finetune.config import FinetuneDataConfig
from pipeline.finetune.ner import align_labels

Feature = dict[str, Any]


def special_ids(tok: Tokenizer, arch: str) -> dict[str, int]:
    """cls / sep / pad (BERT) or eot = pad (GPT) token ids of a tokenizer."""
    names = {"cls": "[CLS]", "sep": "[SEP]", "pad": "[PAD]"} if arch == "bert" else {"eot": "<|endoftext|>"}
    out = {}
    for key, token in names.items():
        tid = tok.token_to_id(token)
        if tid is None:
            raise UserError(f"the tokenizer has no {token} token, which {arch} fine-tuning needs")
        out[key] = tid
    if arch == "gpt":
        out["pad"] = out["eot"]
    return out


def truncate_pair(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Drop tokens from the end of the longer of a, b until both fit in ``budget`` tokens."""
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        if len(a) >= len(b):
            a.pop()
        else:
            b.pop()
    return a, b


def bert_inputs(a: list[int], b: list[int] | None, sp: dict[str, int], max_len: int) -> Feature:
    """``[CLS] A [SEP] (B [SEP])`` with segment ids, truncated longest-first to ``max_len`` tokens."""
    if b is None:
        a = a[: max_len - 2]
        ids = [sp["cls"], *a, sp["sep"]]
        return {"input_ids": ids, "token_type_ids": [0] * len(ids)}
    a, b = truncate_pair(a, b, max_len - 3)
    ids = [sp["cls"], *a, sp["sep"], *b, sp["sep"]]
    return {"input_ids": ids, "token_type_ids": [0] * (len(a) + 2) + [1] * (len(b) + 1)}


def label_index(value: Any, labels: list[str], source: str) -> int:
    """Index of a class label; an unknown one names the example's file and line."""
    key = str(value).strip()
    if key not in labels:
        raise UserError(f"{source}: unknown label {key!r} (labels: {', '.join(labels)}); set task.labels")
    return labels.index(key)


def sentence_features(
    examples: list[dict[str, Any]],
    tok: Tokenizer,
    arch: str,
    task_type: str,
    labels: list[str],
    cfg: FinetuneDataConfig,
    with_labels: bool,
) -> list[Feature]:
    sp = special_ids(tok, arch)
    feats = []
    for ex in examples:
        a = tok.encode(ex["text"], add_special_tokens=False).ids
        b = (
            tok.encode(ex["text_pair"], add_special_tokens=False).ids
            if ex.get("text_pair") is not None
            else None
        )
        if arch == "bert":
            f = bert_inputs(a, b, sp, cfg.max_seq_len)
        else:
            ids = (a if b is None else [*a, sp["eot"], *b])[: cfg.max_seq_len] or [sp["eot"]]
            f = {"input_ids": ids}
        if with_labels and ex.get("label") is not None:
            if task_type == "regression":
                try:
                    f["labels"] = float(ex["label"])
                except ValueError:
                    raise UserError(f"{ex['source']}: label {ex['label']!r} is not a number") from None
            else:
                f["labels"] = label_index(ex["label"], labels, ex["source"])
        feats.append(f)
    return feats


def token_features(
    examples: list[dict[str, Any]],
    tok: Tokenizer,
    labels: list[str],
    cfg: FinetuneDataConfig,
    with_labels: bool,
) -> list[Feature]:
    """NER: words -> pieces, the word's tag on its first piece, -100 elsewhere."""
    sp = special_ids(tok, "bert")
    feats = []
    for ex in examples:
        enc = tok.encode(ex["words"], is_pretokenized=True, add_special_tokens=False)
        ids, word_ids = enc.ids[: cfg.max_seq_len - 2], enc.word_ids[: cfg.max_seq_len - 2]
        f = {"input_ids": [sp["cls"], *ids, sp["sep"]], "token_type_ids": [0] * (len(ids) + 2)}
        tags = (
            [label_index(t, labels, ex["source"]) for t in ex["tags"]]
            if with_labels
            else [0] * len(ex["words"])
        )
        f["labels"] = align_labels([None, *word_ids, None], tags)
        feats.append(f)
    return feats


def lm_features(examples: list[dict[str, Any]], tok: Tokenizer, cfg: FinetuneDataConfig) -> list[Feature]:
    """GPT LM: documents joined by ``<|endoftext|>``, cut into windows of ``max_seq_len`` inputs and their
    next-token labels (the last window is padded with labels -100)."""
    eot = special_ids(tok, "gpt")["eot"]
    stream: list[int] = []
    for ex in examples:
        stream += [*tok.encode(ex["text"], add_special_tokens=False).ids, eot]
    n = cfg.max_seq_len
    feats = []
    for start in range(0, max(len(stream) - 1, 0), n):
        chunk = stream[start : start + n + 1]
        if len(chunk) < 2:
            break
        feats.append({"input_ids": chunk[:-1], "labels": chunk[1:]})
    return feats


def collate(items: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad to the longest item: ids with ``pad_id``, segment ids 0, mask 0, token labels -100."""
    T = max(len(it["input_ids"]) for it in items)
    batch: dict[str, torch.Tensor] = {}
    ids = torch.full((len(items), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), T), dtype=torch.long)
    for i, it in enumerate(items):
        ids[i, : len(it["input_ids"])] = torch.tensor(it["input_ids"])
        mask[i, : len(it["input_ids"])] = 1
    batch["input_ids"], batch["attention_mask"] = ids, mask
    if "token_type_ids" in items[0]:
        tt = torch.zeros((len(items), T), dtype=torch.long)
        for i, it in enumerate(items):
            tt[i, : len(it["token_type_ids"])] = torch.tensor(it["token_type_ids"])
        batch["token_type_ids"] = tt
    if "labels" in items[0]:
        first = items[0]["labels"]
        if isinstance(first, list):
            lab = torch.full((len(items), T), -100, dtype=torch.long)
            for i, it in enumerate(items):
                lab[i, : len(it["labels"])] = torch.tensor(it["labels"])
            batch["labels"] = lab
        else:
            dtype = torch.float if isinstance(first, float) else torch.long
            batch["labels"] = torch.tensor([it["labels"] for it in items], dtype=dtype)
    for key in ("start_positions", "end_positions"):
        if key in items[0]:
            batch[key] = torch.tensor([it[key] for it in items], dtype=torch.long)
    return batch
