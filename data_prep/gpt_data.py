"""The ``gpt`` stage: pack tokenized documents into one stream per split, and the dataset that reads its windows.

Layout of the output folder::

    manifest.json        stage "gpt": tokenizer, eot_id, dtype, seq_len, per-split counts, file checksums
    tokenizer.json       copy of the shards' tokenizer (the folder is self-contained)
    train/tokens.bin     flat token stream in the shards' dtype: doc0 <eot> doc1 <eot> ...
    valid/tokens.bin

Window ``i`` is ``tokens[i*L:(i+1)*L]`` with labels ``tokens[i*L+1:(i+1)*L+1]``: no padding and no per-window
index, so the file is written in one streamed pass and read by memory map (memory flat as the corpus grows).
The tail that does not fill a whole window is counted in ``dropped_tail_tokens``. Windows are stored in
document order; shuffling is the loader's job (random access into a memory map is cheap).
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from data_prep.config import GptPackingConfig
from data_prep.datasets import check_tokenizer, read_split_manifest, readonly_memmap
from data_prep.errors import UserError
from data_prep.manifest import MANIFEST, file_entry, read_manifest, sha256_file, write_manifest
from data_prep.packing import dropped_tail, num_windows, pack_documents, window

TOKENS = "tokens.bin"


def _open_split(shards_dir: Path, split: str) -> Any | None:
    """The split's ``IndexedShards``, or None when the split folder holds no documents at all."""
    from data_prep.shards import IndexedShards

    split_dir = shards_dir / split
    if not split_dir.is_dir():
        return None
    return IndexedShards(split_dir)


def pack_gpt_windows(
    shards_dir: str | Path, out_dir: str | Path, cfg: GptPackingConfig, progress: bool = True
) -> dict[str, Any]:
    """Write ``out_dir`` (see the module docstring) from a shards folder; returns the manifest written.

    Needs a byte-level BPE tokenizer: its end-of-text token separates documents. A WordPiece shards folder is
    refused because BERT's vocabulary has no end-of-text token and ``[SEP]`` would teach the wrong thing.
    """
    shards_dir, out_dir = Path(shards_dir), Path(out_dir)
    shards = read_manifest(shards_dir, "shards")
    tok = shards["tokenizer"]
    if tok.get("kind") != "bpe":
        raise UserError(
            f"gpt windows need a byte-level BPE tokenizer with <|endoftext|>; {shards_dir} has a {tok.get('kind')} tokenizer"
        )
    if "eot" not in tok.get("special_ids", {}):
        raise UserError(
            f"{shards_dir}: the tokenizer has no end-of-text token (special_ids {tok.get('special_ids')})"
        )
    if cfg.seq_len < 1:
        raise UserError(f"gpt seq_len must be at least 1, got {cfg.seq_len}")
    if out_dir.resolve() == shards_dir.resolve():
        raise UserError(f"{out_dir}: the gpt output folder must differ from the shards folder")
    eot_id = int(tok["special_ids"]["eot"])
    dtype = np.dtype(shards["dtype"])

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # a crash mid-way must not leave a stale manifest behind
    shutil.copyfile(shards_dir / "tokenizer.json", out_dir / "tokenizer.json")

    splits: dict[str, dict[str, int]] = {}
    files = [file_entry(out_dir / "tokenizer.json", out_dir)]
    for split in shards.get("splits", {}):
        docs = _open_split(shards_dir, split)
        n_docs = docs.num_documents if docs is not None else 0
        (out_dir / split).mkdir(exist_ok=True)
        path = out_dir / split / TOKENS
        n_tokens = 0
        with (
            open(path, "wb") as f,
            tqdm(total=n_docs, unit="doc", desc=f"gpt {split}", disable=None if progress else True) as bar,
        ):
            documents = docs.iter_documents() if docs is not None else iter(())
            for packed in pack_documents(documents, eot_id):
                f.write(packed.astype(dtype, copy=False).tobytes())
                n_tokens += len(packed)
                bar.update(1)
        splits[split] = {
            "documents": n_docs,
            "tokens": n_tokens,
            "windows": num_windows(n_tokens, cfg.seq_len),
            "dropped_tail_tokens": dropped_tail(n_tokens, cfg.seq_len),
        }
        files.append(file_entry(path, out_dir))

    manifest_fields: dict[str, Any] = {
        "shards_manifest": {
            "path": str((shards_dir / MANIFEST).resolve()),
            "sha256": sha256_file(shards_dir / MANIFEST),
        },
        "tokenizer": tok,
        "vocab_size": tok["vocab_size"],
        "special_ids": tok["special_ids"],
        "eot_id": eot_id,
        "dtype": dtype.name,
        "seq_len": cfg.seq_len,
        "settings": asdict(cfg),
        "order": "document order; the loader shuffles windows",
        "splits": splits,
        "files": files,
    }
    write_manifest(out_dir, "gpt", **manifest_fields)
    return read_manifest(out_dir, "gpt")


class GptDataset:
    """Windows of a ``gpt`` folder: ``get(i)`` gives int64 ``input_ids`` and ``labels`` (inputs shifted by one).

    ``seed`` is accepted and ignored, so callers can pass the same arguments to either dataset. The memory map opens lazily and is dropped when pickled, so a DataLoader's worker processes each open
    their own instead of copying the data through pickle.
    """

    def __init__(
        self, folder: str | Path, split: str = "train", *, seed: int = 0, tokenizer: str | Path | None = None
    ) -> None:
        self.folder = Path(folder)
        self.split = split
        self.manifest, self.split_info = read_split_manifest(self.folder, "gpt", split)
        check_tokenizer(self.folder, self.manifest, tokenizer)
        self.seq_len: int = int(self.manifest["seq_len"])
        self.max_seq_len = self.seq_len
        self.vocab_size: int = int(self.manifest["vocab_size"])
        self.special_ids: dict[str, int] = dict(self.manifest["special_ids"])
        self.eot_id: int = int(self.manifest["eot_id"])
        self.dtype = np.dtype(self.manifest["dtype"])
        self.num_tokens: int = int(self.split_info["tokens"])
        self.epoch = 0
        self._tokens: np.ndarray | None = None
        self.seed = (
            seed  # unused (packed windows have no randomness); accepted so open_dataset(..., seed=) works
        )
        _ = self.tokens  # open once now so a truncated file fails here, not in the middle of training

    @property
    def tokens(self) -> np.ndarray:
        """The split's whole token stream (memory-mapped)."""
        if self._tokens is None:
            self._tokens = readonly_memmap(self.folder / self.split / TOKENS, self.dtype, (self.num_tokens,))
        return self._tokens

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_tokens"] = None
        return state

    def __len__(self) -> int:
        return num_windows(self.num_tokens, self.seq_len)

    def set_epoch(self, epoch: int) -> None:
        """Packed windows do not change between epochs; kept so both datasets share one interface."""
        self.epoch = epoch

    def get(self, i: int, epoch: int = 0) -> dict[str, np.ndarray]:
        """Window ``i``; ``epoch`` is accepted for interface parity with ``BertDataset`` and has no effect."""
        input_ids, labels = window(self.tokens, i, self.seq_len)
        return {"input_ids": input_ids, "labels": labels}

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return self.get(i, self.epoch)
