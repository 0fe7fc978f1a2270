"""The ``extract`` stage: raw sources -> cleaned documents split into sentences, in ``documents.jsonl``.

One JSON object per line keeps the output streamable (later stages read it line by line) and diff-able.
The join of a document's sentences is exactly its cleaned text, so nothing downstream needs the raw source.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from data_prep.config import SourceConfig
from data_prep.errors import UserError
from data_prep.manifest import MANIFEST, SkipLog, file_entry, input_entries, write_manifest
from data_prep.sources import iter_documents, resolve_input
from data_prep.text import clean_text, merge_short_sentences, split_sentences

DOCUMENTS_FILE = "documents.jsonl"
STAGE = "documents"


def _skip_summary(skips: SkipLog) -> str:
    if not skips:
        return ""
    parts = ", ".join(f"{reason}: {entry['count']}" for reason, entry in skips.to_dict().items())
    return f"; skipped {parts}"


def extract(cfg: SourceConfig, out_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Write ``out_dir/documents.jsonl`` and ``out_dir/manifest.json``; return the manifest.

    Streams document by document (memory does not grow with the corpus). The output is written under a
    temporary name and renamed at the end, and an old manifest is removed first, so an interrupted run never
    leaves a folder that looks complete.
    """
    if not cfg.inputs:
        raise UserError("no inputs given: set source.inputs (files, folders or pkg:NAME/path)")
    paths = [resolve_input(spec) for spec in cfg.inputs]  # fail on a missing input before writing anything
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)
    final = out_dir / DOCUMENTS_FILE
    tmp = out_dir / (DOCUMENTS_FILE + ".tmp")

    skips = SkipLog()
    counts = {"documents": 0, "sentences": 0, "characters": 0}
    min_doc = max(cfg.min_document_chars, 1)
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as out:
            docs = tqdm(
                iter_documents(cfg, skips), unit="doc", desc="extract", disable=None if progress else True
            )
            for doc in docs:
                text = clean_text(doc.text)
                if len(text) < min_doc:
                    skips.add("document_too_short", doc.source)
                    continue
                sentences = merge_short_sentences(split_sentences(text), cfg.min_sentence_chars)
                out.write(json.dumps({"source": doc.source, "sentences": sentences}, ensure_ascii=False))
                out.write("\n")
                counts["documents"] += 1
                counts["sentences"] += len(sentences)
                counts["characters"] += len(text)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if counts["documents"] == 0:
        tmp.unlink(missing_ok=True)
        names = ", ".join(str(p) for p in paths)
        raise UserError(
            f"no documents found in {names} (empty corpus, or every document was skipped{_skip_summary(skips)})"
        )
    tmp.replace(final)
    manifest = {
        "inputs": input_entries(paths),
        "settings": dataclasses.asdict(cfg),
        "counts": counts,
        "skipped": skips.to_dict(),
        "files": [file_entry(final, out_dir)],
    }
    write_manifest(out_dir, STAGE, **manifest)
    return json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))


def read_documents(folder: str | Path) -> Iterator[dict[str, Any]]:
    """Yield ``{"source", "sentences"}`` per line of an extract output (a folder, or the file itself).

    Each line is checked so that a corrupt or hand-edited file fails with its line number instead of
    producing wrong tokens later.
    """
    path = Path(folder)
    if path.is_dir():
        path = path / DOCUMENTS_FILE
    if not path.is_file():
        raise UserError(f"{path}: not found; run the extract stage first")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{lineno}: corrupt line, not JSON ({exc.msg})") from None
            if (
                not isinstance(doc, dict)
                or not isinstance(doc.get("source"), str)
                or not isinstance(doc.get("sentences"), list)
                or not all(isinstance(s, str) for s in doc["sentences"])
            ):
                raise UserError(
                    f"{path}:{lineno}: corrupt line, expected {{'source': str, 'sentences': [str]}}"
                )
            yield doc


def iter_texts(paths: list[str], fmt: str = "auto", text_field: str = "text") -> Iterator[str]:
    """Document texts for tokenizer training, from extract outputs or raw sources.

    An extract output folder (holding ``documents.jsonl``) gives the exact text later stages tokenize, so the
    tokenizer sees the same cleaning; anything else is read as a raw source and cleaned the same way.
    """
    for spec in paths:
        path = resolve_input(spec)
        if path.is_dir() and (path / DOCUMENTS_FILE).is_file():
            for doc in read_documents(path):
                yield "".join(doc["sentences"])
            continue
        cfg = SourceConfig(inputs=[spec], format=fmt, text_field=text_field)  # type: ignore[arg-type]
        for doc in iter_documents(cfg, SkipLog()):
            text = clean_text(doc.text)
            if text:
                yield text
