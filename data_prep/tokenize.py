"""The ``shards`` stage: documents -> tokens -> indexed shards (``data_prep.shards``), split train/valid.

Tokenizing runs in worker processes; results are written in input order, so the output is byte-identical
whatever the number of workers. The train/valid split hashes ``(seed, document index)`` (index in
``documents.jsonl``): it does not depend on workers, batch size or the tokenizer.

An empty split is still written as one shard of zero documents, so readers can always open both splits. When
``valid_fraction > 0`` but no document landed in ``valid`` (a tiny corpus), no document is moved there behind the
user's back: the manifest's ``"warnings"`` says so and a ``UserWarning`` is raised.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import shutil
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from data_prep.config import ShardConfig
from data_prep.errors import UserError
from data_prep.manifest import MANIFEST, SkipLog, file_entry, read_manifest, sha256_file, write_manifest
from data_prep.shards import SPLITS, ShardWriter, dtype_for_vocab
from data_prep.tokenizer import TOKENIZER_FILE, load_tokenizer, tokenizer_info
from data_prep.tokenizer import tokenizer_path as _tokenizer_file

_M64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def split_of(doc_index: int, seed: int, valid_fraction: float) -> str:
    """``"valid"`` or ``"train"`` for a document: a hash of ``(seed, index)``, uniform in [0, 1), vs the fraction.

    Independent per document, so streaming needs no look-ahead and any worker count gives the same split.
    """
    h = _splitmix64(_splitmix64(seed & _M64) ^ (doc_index & _M64))
    return "valid" if (h >> 11) * (1.0 / (1 << 53)) < valid_fraction else "train"


class _Encoder:
    """Encodes batches of documents with one tokenizer; lives once per worker process (or in-process)."""

    def __init__(self, tok_file: str, kind: str) -> None:
        self.tok = load_tokenizer(tok_file)
        self.strip = kind == "wordpiece"  # BERT pieces carry no whitespace; BPE keeps it so text round-trips
        self.unk_id = self.tok.token_to_id("[UNK]") if kind == "wordpiece" else None

    def encode(self, docs: list[tuple[str, list[str]]]) -> tuple[list[np.ndarray | None], dict, int]:
        """Per document: its non-empty sentences' tokens (``None`` when nothing is left); skips; UNK count."""
        flat = [s.strip() if self.strip else s for _, sents in docs for s in sents]
        encoded = self.tok.encode_batch(flat, add_special_tokens=False) if flat else []
        skips, unk, out, k = SkipLog(), 0, [], 0
        for source, sents in docs:
            kept = []
            for e in encoded[k : k + len(sents)]:
                if ids := e.ids:
                    kept.append(np.asarray(ids, dtype=np.uint32))
                else:
                    skips.add("empty_sentence", source)
            k += len(sents)
            if self.unk_id is not None:
                unk += sum(int((a == self.unk_id).sum()) for a in kept)
            if not kept:
                skips.add("empty_document", source)
            out.append(kept or None)
        return out, skips.to_dict(), unk


_WORKER: _Encoder | None = None


def _init_worker(tok_file: str, kind: str) -> None:
    # One Rust thread pool per process would oversubscribe the cores the pool already uses.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    global _WORKER
    _WORKER = _Encoder(tok_file, kind)


def _work(docs: list[tuple[str, list[str]]]) -> tuple[list[np.ndarray | None], dict, int]:
    assert _WORKER is not None
    return _WORKER.encode(docs)


def _batches(documents: Iterator[dict], size: int) -> Iterator[list[tuple[str, list[str]]]]:
    batch: list[tuple[str, list[str]]] = []
    for doc in documents:
        batch.append((str(doc.get("source", "")), list(doc["sentences"])))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _encoded(batches: Iterator[list], tok_file: str, kind: str, workers: int) -> Iterator[tuple[Any, int]]:
    """``(encode result, documents in batch)`` in input order, from ``workers`` processes.

    At most ``2 * workers`` batches are in flight (``apply_async`` + a deque): ``Pool.imap`` would read the whole
    input ahead and hold it in memory. Spawned, not forked: forking after tokenizers or tqdm started threads
    can deadlock.
    """
    if workers == 1:
        encoder = _Encoder(tok_file, kind)
        for batch in batches:
            yield encoder.encode(batch), len(batch)
        return
    with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(tok_file, kind)) as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append((pool.apply_async(_work, (batch,)), len(batch)))
            if len(pending) >= 2 * workers:
                result, n = pending.popleft()
                yield result.get(), n
        while pending:
            result, n = pending.popleft()
            yield result.get(), n


def _cpu_count() -> int:
    """Cores this process may use (a Slurm job or container may get fewer than the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def tokenize_to_shards(
    documents_dir: str | Path,
    tokenizer_path: str | Path,
    out_dir: str | Path,
    cfg: ShardConfig,
    progress: bool = True,
    *,
    part: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Tokenize a documents folder into ``out_dir/{train,valid}`` shards; writes and returns the manifest.

    ``part=(i, n)``: only the i-th of n contiguous ranges of documents (a Slurm array task; the split still
    hashes each document's global index). ``data_prep.parts.merge_parts`` joins the parts into the folder a
    single run writes, byte for byte.
    """
    from data_prep.extract import read_documents  # imported late: the extract stage is optional for readers

    documents_dir, out_dir = Path(documents_dir), Path(out_dir)
    if not 0.0 <= cfg.valid_fraction < 1.0:
        raise UserError(f"valid_fraction must be in [0, 1), got {cfg.valid_fraction}")
    if cfg.batch_documents < 1:
        raise UserError(f"batch_documents must be at least 1, got {cfg.batch_documents}")
    doc_manifest = read_manifest(documents_dir, "documents")
    tok_file = _tokenizer_file(tokenizer_path)
    info = tokenizer_info(tok_file)
    dtype = dtype_for_vocab(info["vocab_size"])
    workers = cfg.workers if cfg.workers > 0 else _cpu_count()

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # a half-written folder must not look finished
    writers = {s: ShardWriter(out_dir / s, dtype, cfg.shard_tokens) for s in SPLITS}
    skips, unk, doc_index = SkipLog(), 0, 0
    total = (doc_manifest.get("counts") or {}).get("documents")
    # disable=None: draw only on a terminal, so logs and one-line CLI errors stay clean.
    total = total if isinstance(total, int) else None
    bar = tqdm(total=total, unit="doc", desc="shards", disable=None if progress else True)

    documents: Iterator[dict] = read_documents(documents_dir)
    start = 0
    if part is not None:
        from data_prep.parts import part_range

        start, end = part_range(doc_manifest, part)
        documents = itertools.islice(documents, start, end)
        doc_index = start
    batches = _batches(documents, cfg.batch_documents)
    try:
        for (docs, batch_skips, batch_unk), n in _encoded(batches, str(tok_file), info["kind"], workers):
            # Results come in input order, so the split and the shard layout never depend on workers.
            for sentences in docs:
                if sentences is not None:
                    writers[split_of(doc_index, cfg.seed, cfg.valid_fraction)].add_document(sentences)
                doc_index += 1
            skips.merge(batch_skips)
            unk += batch_unk
            bar.update(n)
    finally:
        bar.close()
    shard_lists = {s: w.close() for s, w in writers.items()}
    if part is not None:
        from data_prep.parts import write_part_manifest

        return write_part_manifest(
            out_dir,
            documents_dir,
            tok_file,
            info,
            dtype,
            cfg,
            shard_lists,
            (start, doc_index),
            skips,
            unk,
            part,
        )
    return write_shards_manifest(
        out_dir, documents_dir, tok_file, info, dtype, cfg, shard_lists, doc_index, skips, unk
    )


def write_shards_manifest(
    out_dir: Path,
    documents_dir: Path,
    tok_file: Path,
    info: dict[str, Any],
    dtype: np.dtype,
    cfg: ShardConfig,
    shard_lists: dict[str, list[dict[str, Any]]],
    doc_index: int,
    skips: SkipLog,
    unk: int,
) -> dict[str, Any]:
    """Check the counts, copy the tokenizer and write the ``shards`` manifest (``doc_index`` documents read)."""
    keys = ("documents", "sentences", "tokens")
    splits = {s: {**{k: sum(x[k] for x in sh) for k in keys}, "shards": sh} for s, sh in shard_lists.items()}
    written = splits["train"]["documents"] + splits["valid"]["documents"]
    if doc_index == 0:
        raise UserError(f"{documents_dir}: no documents to tokenize")
    if written == 0:
        raise UserError(
            f"{documents_dir}: no document produced any token ({skips.count('empty_document')} empty)"
        )
    notes = []
    if cfg.valid_fraction > 0 and splits["valid"]["documents"] == 0:
        notes.append(
            f"valid split is empty: none of {written} documents fell under valid_fraction={cfg.valid_fraction} "
            "(tiny corpus); raise valid_fraction to get a validation set"
        )
    if splits["train"]["documents"] == 0:
        notes.append(f"train split is empty: all {written} documents went to valid; lower valid_fraction")
    for note in notes:
        warnings.warn(note, stacklevel=2)

    shutil.copyfile(tok_file, out_dir / TOKENIZER_FILE)
    files = [
        out_dir / s / f"{x['name']}{ext}" for s in SPLITS for x in shard_lists[s] for ext in (".bin", ".idx")
    ]
    files.append(out_dir / TOKENIZER_FILE)
    fields: dict[str, Any] = {
        "documents_manifest": {
            "path": str((documents_dir / MANIFEST).resolve()),
            "sha256": sha256_file(documents_dir / MANIFEST),
        },
        "tokenizer": info,
        "dtype": dtype.name,
        "settings": asdict(cfg),
        "counts": {
            "documents_read": doc_index,
            **{k: splits["train"][k] + splits["valid"][k] for k in keys},
            "unk_tokens": unk,
        },
        "splits": splits,
        "skipped": skips.to_dict(),
        "warnings": notes,
        "files": [file_entry(f, out_dir) for f in files],
    }
    write_manifest(out_dir, "shards", **fields)
    return read_manifest(out_dir, "shards")
