"""``python -m data_prep inspect DIR``: samples exactly as the training loader yields them.

The samples come from the same dataset classes the pretraining DataModule uses (``BertDataset.get`` /
``GptDataset.get``), with the same per-sample masking seed, so what you see is what the model is fed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from data_prep.datasets import open_dataset
from data_prep.errors import UserError
from data_prep.tokenizer import load_tokenizer


def sample_indices(n_total: int, n: int, seed: int) -> list[int]:
    """``n`` distinct indices drawn with ``seed`` (all of them, in order, when the split is smaller)."""
    if n_total <= n:
        return list(range(n_total))
    return sorted(np.random.default_rng(seed).choice(n_total, size=n, replace=False).tolist())


def iter_samples(
    folder: str | Path,
    *,
    n: int = 5,
    seed: int = 0,
    split: str = "train",
    epoch: int = 0,
    tokenizer: str | Path | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield ``n`` samples as JSON-ready dicts: integer lists plus ``tokens`` as strings.

    ``tokenizer``, when given, is checked against the one the data was built with (the manifest's hash).
    """
    folder = Path(folder)
    ds = open_dataset(folder, split, seed=seed, tokenizer=tokenizer)
    if len(ds) == 0:
        raise UserError(f"{folder}: the {split!r} split holds no samples")
    tok = load_tokenizer(folder)
    for i in sample_indices(len(ds), n, seed):
        sample = ds.get(i, epoch)
        record: dict[str, Any] = {"split": split, "index": i}
        for key, value in sample.items():
            record[key] = value.tolist()
        record["tokens"] = [tok.id_to_token(int(t)) for t in sample["input_ids"]]
        yield record


def _join(tokens: list[str]) -> str:
    """WordPiece tokens as readable text: ``##`` pieces glued to their word, specials left visible."""
    out: list[str] = []
    for t in tokens:
        if t.startswith("##") and out:
            out[-1] += t[2:]
        else:
            out.append(t)
    return " ".join(out)


def _bpe_text(tok: Any, ids: list[int]) -> str:
    return tok.decode(ids, skip_special_tokens=False)


def format_sample(record: dict[str, Any], tok: Any) -> str:
    """A human-readable view of one sample."""
    lines = [f"--- sample {record['index']} ({record['split']}) ---"]
    tokens = record["tokens"]
    if "next_sentence_label" in record:
        length = int(sum(record["attention_mask"]))
        types = record["token_type_ids"][:length]
        a = [t for t, s in zip(tokens[:length], types) if s == 0]
        b = [t for t, s in zip(tokens[:length], types) if s == 1]
        nsp = record["next_sentence_label"]
        lines.append(f"next_sentence_label: {nsp} ({'B is random' if nsp else 'B is the true continuation'})")
        lines.append(f"A (segment 0, {len(a)} tokens): {_join(a)}")
        lines.append(f"B (segment 1, {len(b)} tokens): {_join(b)}")
        lines.append(f"token_type_ids: {''.join(str(s) for s in types)}  (+{len(tokens) - length} padding)")
        masked = [(p, lab) for p, lab in enumerate(record["labels"]) if lab != -100]
        parts = []
        for pos, lab in masked:
            shown, orig = tokens[pos], tok.id_to_token(lab)
            how = "[MASK]" if shown == "[MASK]" else ("kept" if shown == orig else f"random {shown!r}")
            parts.append(f"{pos}:{orig!r}->{how}")
        lines.append(f"masked ({len(masked)}): " + ", ".join(parts))
    else:
        lines.append(f"input ({len(record['input_ids'])} tokens): {_bpe_text(tok, record['input_ids'])!r}")
        lines.append(f"labels: input shifted by one; last label {tok.id_to_token(record['labels'][-1])!r}")
    return "\n".join(lines)


def inspect(
    folder: str | Path,
    *,
    n: int = 5,
    seed: int = 0,
    split: str = "train",
    epoch: int = 0,
    as_json: bool = False,
    tokenizer: str | Path | None = None,
    stream: TextIO,
) -> None:
    """Write ``n`` samples of ``folder`` to ``stream`` as text or JSON lines."""
    tok = load_tokenizer(folder)
    for record in iter_samples(folder, n=n, seed=seed, split=split, epoch=epoch, tokenizer=tokenizer):
        if as_json:
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            stream.write(format_sample(record, tok) + "\n\n")
