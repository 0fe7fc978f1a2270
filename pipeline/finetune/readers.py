"""Reading task examples from local files: CSV/TSV (GLUE), JSONL, fastText, CoNLL, SQuAD v1.1 JSON, text, and
``datasets`` folders written with ``save_to_disk``.

Every reader returns a list of plain dicts with a ``source`` (``file:line``) so that later errors (an unknown
label, say) name the file and the line. Field names: ``text``, ``text_pair``, ``label`` (sentence tasks),
``words``/``tags`` (CoNLL), ``id``/``question``/``context``/``answers`` (SQuAD), ``text`` (LM).
"""

from __future__ import annotations

import csv
import io
import json
import random
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from data_prep.errors import UserError
from data_prep.sources import resolve_input
from pipeline.finetune.config import FinetuneDataConfig

Example = dict[str, Any]

_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".json": "squad",
    ".conll": "conll",
    ".txt": "text",
    ".cor": "fasttext",
}


def read_text_file(path: Path) -> str:
    """A file's text: UTF-8, or Windows-1252 for older corpora that are not UTF-8 (pang_lee_polarity.cor)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def detect_format(path: Path, fmt: str) -> str:
    """The reader for ``path``: ``fmt`` unless it is ``auto``, then the extension (a folder = ``hf``)."""
    if fmt != "auto":
        return fmt
    if path.is_dir():
        return "hf"
    found = _EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise UserError(f"{path}: cannot tell the format from the extension; set data.format")
    return found


def _split_spec(spec: str) -> tuple[str, str | None]:
    """``FOLDER:SPLIT`` -> (FOLDER, SPLIT) for ``save_to_disk`` folders; other specs are unchanged."""
    if not spec.startswith("pkg:") and ":" in spec and not Path(spec).exists():
        folder, _, split = spec.rpartition(":")
        if Path(folder).is_dir():
            return folder, split
    return spec, None


def read_examples(spec: str, cfg: FinetuneDataConfig, task_type: str, role: str) -> list[Example]:
    """All examples of one split (``role`` = train / validation / test: the default split of a DatasetDict)."""
    spec, split = _split_spec(spec)
    path = resolve_input(spec)
    fmt = detect_format(path, cfg.format)
    if task_type == "token_classification" and fmt in ("text", "auto"):
        fmt = "conll"
    if fmt == "conll":
        from pipeline.finetune.ner import read_conll

        return read_conll(path)
    if fmt == "squad":
        from pipeline.finetune.squad import read_squad

        return read_squad(path)
    if fmt == "text":
        return _read_text(path)
    if fmt == "hf":
        rows = _read_hf(path, split or role)
    elif fmt in ("csv", "tsv"):
        rows = _read_delimited(path, "," if fmt == "csv" else "\t", cfg)
    elif fmt == "jsonl":
        rows = _read_jsonl(path)
    elif fmt == "fasttext":
        rows = _read_fasttext(path, cfg)
    else:
        raise UserError(f"{path}: unknown data format {fmt!r}")
    if task_type == "lm":
        return [
            {"text": str(r[cfg.text_column]), "source": r["source"]} for r in rows if cfg.text_column in r
        ]
    return [_sentence_example(r, cfg, need_label=role != "test") for r in rows]


def _sentence_example(row: dict[str, Any], cfg: FinetuneDataConfig, need_label: bool) -> Example:
    """Pick the text(s) and label of one row; a missing column is an error naming the file and line."""
    for col in (cfg.text_column, cfg.text_pair_column, cfg.label_column if need_label else None):
        if col is not None and col not in row:
            known = ", ".join(k for k in row if k != "source")
            raise UserError(f"{row['source']}: no column {col!r} (columns: {known}); set data.*_column")
    label = row.get(cfg.label_column)
    return {
        "text": str(row[cfg.text_column]),
        "text_pair": str(row[cfg.text_pair_column]) if cfg.text_pair_column else None,
        "label": label,
        "source": row["source"],
    }


def _read_delimited(path: Path, delimiter: str, cfg: FinetuneDataConfig) -> list[dict[str, Any]]:
    """CSV (quoted fields) or TSV (GLUE: no quoting at all, quotes are text)."""
    csv.field_size_limit(sys.maxsize)
    quoting = csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE
    rows: list[dict[str, Any]] = []
    with io.StringIO(read_text_file(path), newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        header: list[str] | None = None
        for fields in reader:
            line = reader.line_num
            if not fields or all(not x.strip() for x in fields):
                continue
            if header is None:
                if cfg.has_header:
                    header = [h.strip() for h in fields]
                    continue
                header = [str(i) for i in range(len(fields))]
            if len(fields) < len(header):
                if cfg.skip_bad_rows:
                    continue
                raise UserError(
                    f"{path}: line {line}: {len(fields)} fields, expected {len(header)} "
                    "(set data.skip_bad_rows: true to skip such rows)"
                )
            row: dict[str, Any] = dict(zip(header, fields))
            row["source"] = f"{path}:{line}"
            rows.append(row)
    if header is None:
        raise UserError(f"{path}: the file is empty")
    return rows


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}: line {line_no}: invalid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}: line {line_no}: expected a JSON object")
            row["source"] = f"{path}:{line_no}"
            rows.append(row)
    return rows


def _read_fasttext(path: Path, cfg: FinetuneDataConfig) -> list[dict[str, Any]]:
    """fastText's ``__label__NAME text`` lines (gensim's pang_lee_polarity.cor)."""
    rows = []
    for line_no, line in enumerate(read_text_file(path).splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        tag, _, text = line.partition(" ")
        if not tag.startswith("__label__") or not text.strip():
            raise UserError(f"{path}: line {line_no}: expected '__label__NAME text'")
        rows.append(
            {
                cfg.text_column: text.strip(),
                cfg.label_column: tag[len("__label__") :],
                "source": f"{path}:{line_no}",
            }
        )
    return rows


def _read_text(path: Path) -> list[Example]:
    """Plain text for LM fine-tuning: one document per blank-line-separated block."""
    docs, cur, start = [], [], 1
    for line_no, line in enumerate(read_text_file(path).splitlines(), 1):
        if line.strip():
            if not cur:
                start = line_no
            cur.append(line.rstrip("\n"))
        elif cur:
            docs.append({"text": "\n".join(cur), "source": f"{path}:{start}"})
            cur = []
    if cur:
        docs.append({"text": "\n".join(cur), "source": f"{path}:{start}"})
    return docs


def _read_hf(path: Path, split: str) -> list[dict[str, Any]]:
    """A ``datasets`` folder from ``save_to_disk`` (a Dataset, or a DatasetDict and the split to take)."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise UserError(f"{path}: not a save_to_disk folder ({type(exc).__name__}: {exc})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise UserError(f"{path}: no split {split!r} (splits: {', '.join(ds)}); use {path}:SPLIT")
        ds = ds[split]
    names = {col: feat.names for col, feat in ds.features.items() if isinstance(feat, datasets.ClassLabel)}
    rows = []
    for i, row in enumerate(ds):
        row = dict(row)
        for col, labels in names.items():
            if isinstance(row.get(col), int) and row[col] >= 0:
                row[col] = labels[row[col]]
        row["source"] = f"{path}[{i}]"
        rows.append(row)
    return rows


def holdout_split(
    examples: list[Example], n: int, seed: int, fold: int | None = None
) -> tuple[list[Example], list[Example]]:
    """(train, validation): ``n`` examples held out, stratified by label, the same on every machine.

    With ``fold`` set, the examples are dealt into ``len(examples) // n`` stratified folds (each label's examples
    shuffled by ``seed``, then dealt round-robin) and fold ``fold`` is held out, so folds ``0 .. k-1`` of one seed
    hold out every example exactly once (k-fold cross-validation)."""
    if not 0 < n < len(examples):
        raise UserError(f"data.holdout must be between 1 and {len(examples) - 1}, got {n}")
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        by_label[str(ex.get("label"))].append(i)
    rng = random.Random(seed)
    held: set[int] = set()
    groups = sorted(by_label.items())
    if fold is not None:
        k = len(examples) // n
        if not 0 <= fold < k:
            raise UserError(
                f"data.holdout_fold must be between 0 and {k - 1} ({len(examples)} examples, holdout {n})"
            )
        dealt = 0  # deal across labels continuously so every fold gets the same share of each label
        for _, idx in groups:
            order = list(idx)
            rng.shuffle(order)
            for i in order:
                if dealt % k == fold:
                    held.add(i)
                dealt += 1
    else:
        for j, (_, idx) in enumerate(groups):
            share = round(n * len(idx) / len(examples)) if j < len(groups) - 1 else n - len(held)
            held.update(rng.sample(idx, min(share, len(idx))))
    train = [ex for i, ex in enumerate(examples) if i not in held]
    valid = [ex for i, ex in enumerate(examples) if i in held]
    return train, valid
