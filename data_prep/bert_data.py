"""The ``bert`` stage: NSP instances ``[CLS] A [SEP] B [SEP]`` from shards, optionally masked statically, and the
dataset that reads them back for training.

Layout of the output folder (every file memory-mapped by the loader, written in streamed chunks)::

    manifest.json              stage "bert": tokenizer, ids, dtype, max_seq_len, settings, counts, checksums
    tokenizer.json             copy of the shards' tokenizer (the folder is self-contained)
    train/input_ids.bin        [N, max_seq_len] in the shards' dtype, padded with [PAD]; masked ids when static
    train/meta.bin             [N] structured: length u2, segment_a_len u2, next_sentence_label u1, n_masked u2
    train/mlm_positions.bin    static masking only: [N, P] uint16 predicted positions (first n_masked valid)
    train/mlm_ids.bin          static masking only: [N, P] original ids at those positions (shards' dtype)
    valid/...

Pairs follow Google's ``create_pretraining_data.py`` (see :mod:`data_prep.pairs`), ``dupe_factor`` passes over
the documents, each pass with its own seeds. Instances are stored in document order, pass after pass: the
loader shuffles (random access into a memory map is cheap), so nothing here holds the corpus in memory.
Static masking (Google's way) fixes one mask per stored copy; otherwise the loader masks dynamically
(RoBERTa's way) with a generator seeded by ``(seed, epoch, index)``, so any rank, a resumed run and
``inspect`` all see the same sample for the same ``(epoch, index)``.
"""

from __future__ import annotations

import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from tqdm import tqdm

from data_prep.config import BertInstanceConfig, MaskingConfig
from data_prep.datasets import check_tokenizer, read_split_manifest, readonly_memmap
from data_prep.errors import UserError
from data_prep.manifest import MANIFEST, SkipLog, file_entry, read_manifest, sha256_file, write_manifest
from data_prep.masking import IGNORE_INDEX, mask_tokens, masking_kwargs
from data_prep.pairs import PairInstance, create_instances_from_document, special_positions, token_type_ids

META_DTYPE = np.dtype(
    [("length", "<u2"), ("segment_a_len", "<u2"), ("next_sentence_label", "u1"), ("n_masked", "<u2")]
)
"""One record per instance in ``meta.bin`` (7 bytes, packed)."""
CHUNK_INSTANCES = 4096
"""Instances buffered before one vectorised masking call and one write per file."""
MAX_SEQ_LEN_LIMIT = np.iinfo(np.uint16).max  # lengths and positions are stored as uint16


def continuation_table(tokenizer_path: str | Path, vocab_size: int) -> np.ndarray:
    """``is_continuation[id]``: True for WordPiece ``##`` pieces, so ``~table[ids]`` gives the word starts.

    A lookup table makes whole-word masking one fancy-index per batch instead of a string test per token.
    """
    from data_prep.tokenizer import load_tokenizer

    table = np.zeros(vocab_size, dtype=bool)
    for token, token_id in load_tokenizer(tokenizer_path).get_vocab(with_added_tokens=True).items():
        if token.startswith("##") and token_id < vocab_size:
            table[token_id] = True
    return table


def _first_regular_id(special_ids: dict[str, int]) -> int:
    """Random replacements are drawn above the specials (WordPiece puts them first, at ids 0..4)."""
    return max(special_ids.values()) + 1


class _SplitWriter:
    """Appends chunks of instances (padded, optionally masked) to one split's ``.bin`` files and counts them."""

    def __init__(
        self,
        split_dir: Path,
        cfg: BertInstanceConfig,
        dtype: np.dtype,
        tok: dict[str, Any],
        table: np.ndarray | None,
    ):
        self.cfg, self.dtype, self.table = cfg, dtype, table
        self.ids = tok["special_ids"]
        self.vocab_size = int(tok["vocab_size"])
        split_dir.mkdir(parents=True, exist_ok=True)
        names = ["input_ids.bin", "meta.bin"] + (
            ["mlm_positions.bin", "mlm_ids.bin"] if cfg.static_masking else []
        )
        self.paths = [split_dir / n for n in names]
        self.files: list[BinaryIO] = [open(p, "wb") for p in self.paths]  # noqa: SIM115 (closed in close())
        self.counts = {"instances": 0, "random_next": 0, "tokens": 0}
        if cfg.static_masking:
            self.counts["masked_predictions"] = 0

    def write(self, instances: list[PairInstance], mask_rng: np.random.Generator) -> None:
        """Pad ``instances`` into a ``[B, L]`` buffer, mask it with one ``mask_tokens`` call, append to the files."""
        if not instances:
            return
        L, b = self.cfg.max_seq_len, len(instances)
        lengths = np.fromiter((len(x.tokens) for x in instances), dtype=np.int64, count=b)
        seg_a = np.fromiter((x.segment_a_len for x in instances), dtype=np.int64, count=b)
        nsp = np.fromiter((x.is_random_next for x in instances), dtype=np.uint8, count=b)
        ids = np.full((b, L), self.ids["pad"], dtype=np.int64)
        ids[np.arange(L) < lengths[:, None]] = np.concatenate([x.tokens for x in instances])  # row-major fill
        meta = np.zeros(b, dtype=META_DTYPE)
        meta["length"], meta["segment_a_len"], meta["next_sentence_label"] = lengths, seg_a, nsp
        out = [ids, meta]
        if self.cfg.static_masking:
            p = self.cfg.masking.max_predictions_per_seq
            ids, labels = mask_tokens(
                ids,
                special_positions(lengths, seg_a, L),
                mask_rng,
                mask_id=self.ids["mask"],
                vocab_size=self.vocab_size,
                first_regular_id=_first_regular_id(self.ids),
                word_starts=None if self.table is None else ~self.table[ids],
                **masking_kwargs(self.cfg.masking),
            )
            chosen = labels != IGNORE_INDEX
            n_masked = chosen.sum(axis=1)
            order = np.argsort(~chosen, axis=1, kind="stable")[
                :, : min(p, L)
            ]  # chosen positions first, in order
            valid = np.arange(order.shape[1]) < n_masked[:, None]
            positions = np.zeros((b, p), dtype=np.uint16)
            originals = np.zeros((b, p), dtype=self.dtype)
            positions[:, : order.shape[1]] = np.where(valid, order, 0)
            originals[:, : order.shape[1]] = np.where(valid, np.take_along_axis(labels, order, axis=1), 0)
            meta["n_masked"] = n_masked
            out = [ids, meta, positions, originals]
            self.counts["masked_predictions"] += int(n_masked.sum())
        out[0] = out[0].astype(self.dtype)
        for f, arr in zip(self.files, out):
            f.write(np.ascontiguousarray(arr).tobytes())
        self.counts["instances"] += b
        self.counts["random_next"] += int(nsp.sum())
        self.counts["tokens"] += int(lengths.sum())

    def close(self) -> None:
        for f in self.files:
            f.close()


def build_bert_instances(
    shards_dir: str | Path, out_dir: str | Path, cfg: BertInstanceConfig, progress: bool = True
) -> dict[str, Any]:
    """Write ``out_dir`` (see the module docstring) from a WordPiece shards folder; returns the manifest written.

    Each ``dupe_factor`` pass re-creates the pairs with ``random.Random(seed + pass)`` (Google's script draws
    new pairs per pass) and, when masking statically, new masks with ``np.random.default_rng((seed, pass))``.
    The output depends only on the shards and ``cfg``: the same seed gives byte-identical files.
    """
    shards_dir, out_dir = Path(shards_dir), Path(out_dir)
    shards = read_manifest(shards_dir, "shards")
    tok = shards["tokenizer"]
    if tok.get("kind") != "wordpiece":
        raise UserError(
            f"bert instances need a WordPiece tokenizer with [CLS]/[SEP]/[MASK]; {shards_dir} has a {tok.get('kind')} tokenizer"
        )
    _check_config(cfg)
    if out_dir.resolve() == shards_dir.resolve():
        raise UserError(f"{out_dir}: the bert output folder must differ from the shards folder")
    dtype = np.dtype(shards["dtype"])
    ids = tok["special_ids"]

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # a crash mid-way must not leave a stale manifest behind
    shutil.copyfile(shards_dir / "tokenizer.json", out_dir / "tokenizer.json")
    static_ww = cfg.static_masking and cfg.masking.whole_word
    table = continuation_table(out_dir / "tokenizer.json", int(tok["vocab_size"])) if static_ww else None

    skipped = SkipLog()
    splits: dict[str, dict[str, int]] = {}
    files = [file_entry(out_dir / "tokenizer.json", out_dir)]
    start = time.perf_counter()
    for split in shards.get("splits", {}):
        writer = _SplitWriter(out_dir / split, cfg, dtype, tok, table)
        try:
            splits[split] = _build_split(shards_dir / split, split, writer, cfg, ids, skipped, progress)
        finally:
            writer.close()
        splits[split].update(writer.counts)
        files.extend(file_entry(p, out_dir) for p in writer.paths)
    seconds = time.perf_counter() - start

    fields: dict[str, Any] = {
        "shards_manifest": {
            "path": str((shards_dir / MANIFEST).resolve()),
            "sha256": sha256_file(shards_dir / MANIFEST),
        },
        "tokenizer": tok,
        "vocab_size": tok["vocab_size"],
        "special_ids": ids,
        "dtype": dtype.name,
        "max_seq_len": cfg.max_seq_len,
        "static_masking": cfg.static_masking,
        "max_predictions_per_seq": cfg.masking.max_predictions_per_seq,
        "meta_dtype": [list(d) for d in META_DTYPE.descr],
        "order": "document order, pass after pass; the loader shuffles instances",
        "settings": asdict(cfg),
        "splits": splits,
        "skipped": skipped.to_dict(),
        "seconds": round(seconds, 3),
        "files": files,
    }
    write_manifest(out_dir, "bert", **fields)
    return read_manifest(out_dir, "bert")


def _check_config(cfg: BertInstanceConfig) -> None:
    if not 5 <= cfg.max_seq_len <= MAX_SEQ_LEN_LIMIT:
        raise UserError(
            f"bert max_seq_len must be in [5, {MAX_SEQ_LEN_LIMIT}] ([CLS] A [SEP] B [SEP]), got {cfg.max_seq_len}"
        )
    if cfg.dupe_factor < 1:
        raise UserError(f"bert dupe_factor must be at least 1, got {cfg.dupe_factor}")
    if not 0.0 <= cfg.short_seq_prob <= 1.0:
        raise UserError(f"bert short_seq_prob must be in [0, 1], got {cfg.short_seq_prob}")
    if cfg.seed < 0:
        raise UserError(f"bert seed must be non-negative, got {cfg.seed}")
    m = cfg.masking
    if not 0.0 < m.mlm_probability <= 1.0 or m.max_predictions_per_seq < 1:
        raise UserError(
            f"masking: need 0 < mlm_probability <= 1 and max_predictions_per_seq >= 1, got {asdict(m)}"
        )
    if m.mask_token_prob < 0 or m.random_token_prob < 0 or m.mask_token_prob + m.random_token_prob > 1:
        raise UserError(
            f"masking: mask_token_prob + random_token_prob must be within [0, 1], got {asdict(m)}"
        )


def _build_split(
    split_dir: Path,
    split: str,
    writer: _SplitWriter,
    cfg: BertInstanceConfig,
    ids: dict[str, int],
    skipped: SkipLog,
    progress: bool,
) -> dict[str, int]:
    """All ``dupe_factor`` passes over one split; returns the document counts (the writer holds the rest)."""
    from data_prep.shards import IndexedShards

    docs = IndexedShards(split_dir) if split_dir.is_dir() else None
    n_docs = docs.num_documents if docs is not None else 0
    counts = {"documents": n_docs, "single_sentence_documents": 0, "empty_documents": 0}
    if docs is not None:
        for i in range(n_docs):
            n_sent = sum(1 for s in docs.document_sentences(i) if len(s))
            counts["single_sentence_documents"] += n_sent == 1
            if n_sent == 0:
                counts["empty_documents"] += 1
                skipped.add("empty document (no sentences): no instances", f"{split}#{i}")
    if n_docs - counts["empty_documents"] < 2:
        if n_docs:
            skipped.add(
                "split has fewer than 2 non-empty documents: NSP cannot draw a random B", split, n_docs
            )
        return counts

    bar = tqdm(
        total=n_docs * cfg.dupe_factor, unit="doc", desc=f"bert {split}", disable=None if progress else True
    )
    with bar:
        for dupe in range(cfg.dupe_factor):
            pair_rng = random.Random(cfg.seed + dupe)
            mask_rng = np.random.default_rng((cfg.seed, dupe))
            buffer: list[PairInstance] = []
            for i in range(n_docs):
                buffer.extend(
                    create_instances_from_document(
                        docs,
                        i,
                        max_seq_len=cfg.max_seq_len,
                        short_seq_prob=cfg.short_seq_prob,
                        cls_id=ids["cls"],
                        sep_id=ids["sep"],
                        rng=pair_rng,
                    )
                )
                if len(buffer) >= CHUNK_INSTANCES:
                    writer.write(buffer, mask_rng)
                    buffer = []
                bar.update(1)
            writer.write(buffer, mask_rng)
    return counts


class BertDataset:
    """Instances of a ``bert`` folder as int64 arrays: ``input_ids``, ``token_type_ids``, ``attention_mask``,
    ``labels`` (``-100`` where not predicted) and a 0-d ``next_sentence_label`` (1 = B is random).

    ``dynamic_masking``: None masks dynamically unless the data was masked statically (then the stored masks
    are used); True on statically-masked data is refused (its input ids are already masked); False on
    unmasked data gives the plain instances with no predictions. Memory maps open lazily and are dropped when
    pickled, so each DataLoader worker maps the files itself.
    """

    def __init__(
        self,
        folder: str | Path,
        split: str = "train",
        *,
        dynamic_masking: bool | None = None,
        seed: int = 0,
        tokenizer: str | Path | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.split = split
        self.manifest, self.split_info = read_split_manifest(self.folder, "bert", split)
        check_tokenizer(self.folder, self.manifest, tokenizer)
        self.static: bool = bool(self.manifest["static_masking"])
        if dynamic_masking and self.static:
            raise UserError(
                f"{self.folder}: the data was masked statically in data prep; dynamic masking needs data built "
                "with static_masking false"
            )
        self.dynamic = (not self.static) if dynamic_masking is None else bool(dynamic_masking)
        if seed < 0:
            raise UserError(f"masking seed must be non-negative, got {seed}")
        self.seed = seed
        self.max_seq_len: int = int(self.manifest["max_seq_len"])
        self.vocab_size: int = int(self.manifest["vocab_size"])
        self.special_ids: dict[str, int] = dict(self.manifest["special_ids"])
        self.dtype = np.dtype(self.manifest["dtype"])
        self.masking = MaskingConfig(**self.manifest["settings"]["masking"])
        self._mask_kwargs = masking_kwargs(self.masking)
        self.num_instances: int = int(self.split_info["instances"])
        self.epoch = 0
        self._table = None
        if self.dynamic and self.masking.whole_word:
            self._table = continuation_table(self.folder / "tokenizer.json", self.vocab_size)
        self._maps: dict[str, np.ndarray] | None = None
        _ = self.maps  # open now so a truncated file fails here, not in the middle of training

    @property
    def maps(self) -> dict[str, np.ndarray]:
        """The split's memory-mapped arrays."""
        if self._maps is None:
            n, L, d = self.num_instances, self.max_seq_len, self.folder / self.split
            maps = {
                "input_ids": readonly_memmap(d / "input_ids.bin", self.dtype, (n, L)),
                "meta": readonly_memmap(d / "meta.bin", META_DTYPE, (n,)),
            }
            if self.static:
                p = int(self.manifest["max_predictions_per_seq"])
                maps["mlm_positions"] = readonly_memmap(d / "mlm_positions.bin", np.uint16, (n, p))
                maps["mlm_ids"] = readonly_memmap(d / "mlm_ids.bin", self.dtype, (n, p))
            self._maps = maps
        return self._maps

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = None
        return state

    def __len__(self) -> int:
        return self.num_instances

    def set_epoch(self, epoch: int) -> None:
        """Epoch used by ``__getitem__``: dynamic masks change with it."""
        self.epoch = epoch

    def get(self, i: int, epoch: int = 0) -> dict[str, np.ndarray]:
        """Instance ``i``; with dynamic masking the mask comes from ``default_rng((seed, epoch, i))``."""
        n = self.num_instances
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"instance {i} out of range ({n} instances)")
        maps, L = self.maps, self.max_seq_len
        meta = maps["meta"][i]
        length, seg_a = int(meta["length"]), int(meta["segment_a_len"])
        ids = np.asarray(maps["input_ids"][i], dtype=np.int64)
        labels = np.full(L, IGNORE_INDEX, dtype=np.int64)
        if self.static:
            k = int(meta["n_masked"])
            labels[maps["mlm_positions"][i, :k].astype(np.int64)] = maps["mlm_ids"][i, :k]
        elif self.dynamic:
            ids, labels = mask_tokens(
                ids,
                special_positions(length, seg_a, L),
                np.random.default_rng((self.seed, epoch, i)),
                mask_id=self.special_ids["mask"],
                vocab_size=self.vocab_size,
                first_regular_id=_first_regular_id(self.special_ids),
                word_starts=None if self._table is None else ~self._table[ids],
                **self._mask_kwargs,
            )
        return {
            "input_ids": ids,
            "token_type_ids": token_type_ids(length, seg_a, L),
            "attention_mask": (np.arange(L) < length).astype(np.int64),
            "labels": labels,
            "next_sentence_label": np.array(meta["next_sentence_label"], dtype=np.int64),
        }

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return self.get(i, self.epoch)
