"""Tokenized documents in memory-mapped, Megatron-style indexed shards, split into ``train/`` and ``valid/``.

A split folder holds ``shard_00000.bin`` / ``shard_00000.idx`` pairs:

* ``.bin``: every token of the shard, back to back, raw little-endian ``uint16`` (vocab <= 65535) or ``uint32``.
* ``.idx``: header ``b"BGSHARD1"``, then ``uint64`` dtype code (the token size in bytes: 2 or 4), ``n_docs``,
  ``n_sentences``; then ``int64 sentence_offsets[n_sentences + 1]`` (token offsets into ``.bin``) and
  ``int64 doc_offsets[n_docs + 1]`` (sentence offsets).

Readers memory-map both files, so opening a 50 GB corpus costs nothing and pages come in as they are read.
Writing streams each document's tokens straight to the open ``.bin``; only the current shard's index arrays
stay in memory, so memory is bounded by ``shard_tokens`` and the batches in flight, never by the corpus.

The ``shards`` stage that tokenizes documents into this format is ``data_prep.tokenize``.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.errors import UserError

MAGIC = b"BGSHARD1"
HEADER_BYTES = len(MAGIC) + 3 * 8
_DTYPES = {2: np.dtype("<u2"), 4: np.dtype("<u4")}
SPLITS = ("train", "valid")


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """The smallest token dtype that holds every id: ``uint16`` halves the disk and page-cache cost."""
    return _DTYPES[2] if vocab_size <= 65535 else _DTYPES[4]


def _shard_name(i: int) -> str:
    return f"shard_{i:05d}"


class ShardWriter:
    """Appends documents (lists of sentence token arrays) to ``shard_NNNNN.{bin,idx}`` files in ``out_dir``.

    Stale ``shard_*`` files in ``out_dir`` are removed first: a reader globs the folder, and leftovers from an
    earlier, longer run would otherwise be read as part of this one.
    """

    def __init__(self, out_dir: str | Path, dtype: np.dtype, shard_tokens: int) -> None:
        self.out_dir = Path(out_dir)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        if self.dtype.itemsize not in _DTYPES or self.dtype.kind != "u":
            raise ValueError(f"token dtype must be uint16 or uint32, got {dtype}")
        if shard_tokens < 1:
            raise UserError(f"shard_tokens must be at least 1, got {shard_tokens}")
        self.shard_tokens = shard_tokens
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for stale in [*self.out_dir.glob("shard_*.bin"), *self.out_dir.glob("shard_*.idx")]:
            stale.unlink()
        self._max_id = np.iinfo(self.dtype).max
        self._shards: list[dict[str, Any]] = []
        self._bin = None
        self._sent: array = array("q")
        self._docs: array = array("q")

    def _open(self) -> None:
        path = self.out_dir / f"{_shard_name(len(self._shards))}.bin"
        self._bin = open(path, "wb", buffering=1 << 20)  # noqa: SIM115 (stays open across add_document calls)
        self._sent, self._docs = array("q", [0]), array("q", [0])

    def _finish(self) -> None:
        """Close the open ``.bin`` and write its index."""
        assert self._bin is not None
        self._bin.close()
        self._bin = None
        name = _shard_name(len(self._shards))
        n_docs, n_sents = len(self._docs) - 1, len(self._sent) - 1
        header = MAGIC + np.array([self.dtype.itemsize, n_docs, n_sents], dtype="<u8").tobytes()
        with open(self.out_dir / f"{name}.idx", "wb") as f:
            f.write(header)
            f.write(np.frombuffer(self._sent, dtype=np.int64).astype("<i8").tobytes())
            f.write(np.frombuffer(self._docs, dtype=np.int64).astype("<i8").tobytes())
        self._shards.append(
            {"name": name, "documents": n_docs, "sentences": n_sents, "tokens": self._sent[-1]}
        )

    def add_document(self, sentences: list[np.ndarray]) -> None:
        """Append one document; its tokens go to disk now. A full shard is closed (documents never span shards)."""
        arrays = [np.asarray(s).reshape(-1) for s in sentences]
        tokens = np.concatenate(arrays) if arrays else np.zeros(0, dtype=self.dtype)
        if tokens.size and (tokens.min() < 0 or tokens.max() > self._max_id):
            raise ValueError(f"token ids must lie in [0, {self._max_id}] for {self.dtype.name} shards")
        if self._bin is None:
            self._open()
        self._bin.write(tokens.astype(self.dtype, copy=False).tobytes())
        end = self._sent[-1]
        for a in arrays:
            end += a.size
            self._sent.append(end)
        self._docs.append(len(self._sent) - 1)
        if end >= self.shard_tokens:
            self._finish()

    def close(self) -> list[dict[str, Any]]:
        """Finish the last shard; returns ``{"name", "documents", "sentences", "tokens"}`` per shard.

        A writer that got no document still writes one empty shard, so the folder reads as a split of 0 documents.
        """
        if self._bin is not None or not self._shards:
            if self._bin is None:
                self._open()
            self._finish()
        return list(self._shards)


class _Shard:
    """One memory-mapped ``.bin``/``.idx`` pair, validated against its header."""

    def __init__(self, bin_path: Path) -> None:
        idx_path = bin_path.with_suffix(".idx")
        if not idx_path.is_file():
            raise UserError(f"{idx_path}: index missing for {bin_path.name}")
        size = idx_path.stat().st_size
        with open(idx_path, "rb") as f:
            head = f.read(HEADER_BYTES)
        if len(head) < HEADER_BYTES or head[: len(MAGIC)] != MAGIC:
            raise UserError(f"{idx_path}: not a shard index (bad header); rebuild the shards")
        code, n_docs, n_sents = (int(x) for x in np.frombuffer(head, dtype="<u8", offset=len(MAGIC)))
        if code not in _DTYPES:
            raise UserError(f"{idx_path}: unknown token dtype code {code}; rebuild the shards")
        expected = HEADER_BYTES + 8 * (n_sents + 1) + 8 * (n_docs + 1)
        if size != expected:
            raise UserError(
                f"{idx_path}: {size} bytes, header says {expected} (truncated or corrupt); rebuild"
            )
        self.dtype = _DTYPES[code]
        # One map of the whole index, viewed as the two offset arrays (the header keeps them 8-byte aligned).
        idx = np.memmap(idx_path, dtype=np.uint8, mode="r")
        split = HEADER_BYTES + 8 * (n_sents + 1)
        # Plain ndarray views of the maps: slicing a np.memmap subclass costs microseconds per slice, which
        # dominated BERT instance building (millions of sentence slices); the views keep the maps alive.
        idx = idx.view(np.ndarray)
        self.sent, self.docs = idx[HEADER_BYTES:split].view("<i8"), idx[split:].view("<i8")
        n_tokens = int(self.sent[-1])
        bin_size = bin_path.stat().st_size
        # Ends and sizes only: a full scan would read the whole index at every open; checksums cover the rest.
        ok = self.sent[0] == 0 and self.docs[0] == 0 and self.docs[-1] == n_sents
        if not ok or bin_size != n_tokens * self.dtype.itemsize:
            raise UserError(
                f"{idx_path}: offsets do not match {bin_path.name} ({bin_size} bytes); rebuild the shards"
            )
        # np.memmap refuses empty files; an empty shard is a valid split of zero documents.
        self.tokens = (
            np.memmap(bin_path, dtype=self.dtype, mode="r").view(np.ndarray)
            if n_tokens
            else np.zeros(0, self.dtype)
        )
        self.n_docs, self.n_sents, self.n_tokens = n_docs, n_sents, n_tokens


class IndexedShards:
    """A split folder (``shard_*.bin``/``.idx``) seen as one sequence of documents, all memory-mapped."""

    def __init__(self, split_dir: str | Path) -> None:
        self.split_dir = Path(split_dir)
        if not self.split_dir.is_dir():
            raise UserError(f"{self.split_dir}: shard folder not found")
        bins = sorted(self.split_dir.glob("shard_*.bin"))
        if not bins:
            raise UserError(f"{self.split_dir}: no shard_*.bin files here; run the shards stage first")
        self._shards = [_Shard(b) for b in bins]
        dtypes = {s.dtype for s in self._shards}
        if len(dtypes) > 1:
            raise UserError(f"{self.split_dir}: shards mix token dtypes {sorted(d.name for d in dtypes)}")
        self.dtype: np.dtype = self._shards[0].dtype
        self._doc_starts = np.cumsum([0] + [s.n_docs for s in self._shards])
        self.num_documents: int = int(self._doc_starts[-1])
        self.num_sentences: int = sum(s.n_sents for s in self._shards)
        self.num_tokens: int = sum(s.n_tokens for s in self._shards)

    def __len__(self) -> int:
        return self.num_documents

    def _locate(self, i: int) -> tuple[_Shard, int, int]:
        """Shard of document ``i`` and the document's sentence range in it."""
        if not 0 <= i < self.num_documents:
            raise IndexError(f"document {i} out of range (0..{self.num_documents - 1})")
        k = int(np.searchsorted(self._doc_starts, i, side="right")) - 1
        shard = self._shards[k]
        j = i - int(self._doc_starts[k])
        return shard, int(shard.docs[j]), int(shard.docs[j + 1])

    def document_sentences(self, i: int) -> list[np.ndarray]:
        """The sentences of document ``i`` as views into the memory map."""
        shard, s0, s1 = self._locate(i)
        offs = np.asarray(shard.sent[s0 : s1 + 1]).tolist()
        return [shard.tokens[a:b] for a, b in zip(offs[:-1], offs[1:])]

    def document_tokens(self, i: int) -> np.ndarray:
        """All tokens of document ``i`` (one contiguous view)."""
        shard, s0, s1 = self._locate(i)
        return shard.tokens[int(shard.sent[s0]) : int(shard.sent[s1])]

    def sentence_lengths(self, i: int) -> np.ndarray:
        """Token count of each sentence of document ``i``."""
        shard, s0, s1 = self._locate(i)
        return np.diff(np.asarray(shard.sent[s0 : s1 + 1]))

    def iter_documents(self) -> Iterator[np.ndarray]:
        """Every document's tokens in order, shard by shard (one index lookup per shard, not per document)."""
        for shard in self._shards:
            bounds = np.asarray(shard.sent[np.asarray(shard.docs)]).tolist()
            for a, b in zip(bounds[:-1], bounds[1:]):
                yield shard.tokens[a:b]


def open_split(shards_dir: str | Path, split: str) -> IndexedShards:
    """``IndexedShards`` of ``shards_dir/train`` or ``shards_dir/valid``."""
    if split not in SPLITS:
        raise UserError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    return IndexedShards(Path(shards_dir) / split)
