"""Sentence pairs for sequence-to-sequence training: denoising pairs from a corpus, or a parallel TSV.

Token ids: the tokenizer's own, plus one extra id (``vocab_size`` of the tokenizer) for the denoising mask
token; the end-of-text token (``<|endoftext|>``, id of ``eot``) is the decoder's BOS and EOS and pads the
batches (padded positions are masked out of the encoder and labelled -100). A batch holds ``input_ids`` and
``attention_mask`` (the source), ``decoder_input_ids`` = [BOS, y_1 .. y_n] and ``labels`` = [y_1 .. y_n, EOS].
Training order and sharding reuse the pretraining sampler (resumable by step count).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from data_prep.errors import UserError
from data_prep.manifest import read_manifest
from pipeline.data import EpochSampler, _ByEpoch, _Prefix
from pipeline.denoise import corrupt
from pipeline.seq2seq_recipe import Seq2SeqDataConfig

IGNORE_INDEX = -100


def shards_folder(path: str | Path) -> Path:
    """A ``shards`` folder, or the shards a ``gpt``/``bert`` folder was built from (named in its manifest)."""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest.get("stage") == "shards":
        return path
    ref = manifest.get("shards_manifest", {}).get("path")
    if not ref or not Path(ref).is_file():
        raise UserError(f"{path}: not a shards folder, and its manifest names no shards folder that exists")
    return Path(ref).parent


class DenoisingPairs:
    """Every sentence of a shards split with ``min_tokens``..``max_tokens`` tokens; ``get(i, epoch)`` gives
    (corrupted copy, sentence), the corruption drawn from (seed, epoch, i)."""

    def __init__(self, folder: Path, split: str, cfg: Seq2SeqDataConfig, mask_id: int) -> None:
        from data_prep.shards import open_split

        shards = open_split(folder, split)
        self.sentences = [
            s
            for d in range(len(shards))
            for s in shards.document_sentences(d)
            if cfg.min_tokens <= len(s) <= cfg.max_tokens
        ]
        self.noise, self.mask_id, self.seed = cfg.noise, mask_id, cfg.seed

    def __len__(self) -> int:
        return len(self.sentences)

    def get(self, i: int, epoch: int = 0) -> dict[str, np.ndarray]:
        target = np.asarray(self.sentences[i], dtype=np.int64)
        source = corrupt(target, self.noise, self.mask_id, (self.seed, epoch, i))
        return {"source": source, "target": target}


class TsvPairs:
    """``source<TAB>target`` lines, tokenized once; ``get`` ignores the epoch."""

    def __init__(self, lines: list[str], tokenizer: Any, max_tokens: int, where: str) -> None:
        self.pairs = []
        for n, line in enumerate(lines, 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2:
                raise UserError(f"{where}: line {n} has {len(parts) - 1} tabs; expected source<TAB>target")
            src, tgt = (np.asarray(tokenizer.encode(p).ids[:max_tokens], dtype=np.int64) for p in parts)
            self.pairs.append((src, tgt))

    def __len__(self) -> int:
        return len(self.pairs)

    def get(self, i: int, epoch: int = 0) -> dict[str, np.ndarray]:
        src, tgt = self.pairs[i]
        return {"source": src, "target": tgt}


def collate_pairs(
    samples: list[dict[str, np.ndarray]], pad_id: int, bos_id: int, eos_id: int
) -> dict[str, Any]:
    """Pad a list of (source, target) pairs into a batch (see the module docstring)."""
    B = len(samples)
    S = max(len(s["source"]) for s in samples)
    T = max(len(s["target"]) for s in samples) + 1
    input_ids = torch.full((B, S), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((B, S), dtype=torch.long)
    decoder_input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    for b, s in enumerate(samples):
        src, tgt = torch.as_tensor(s["source"]), torch.as_tensor(s["target"])
        input_ids[b, : len(src)] = src
        attention_mask[b, : len(src)] = 1
        decoder_input_ids[b, 0] = bos_id
        decoder_input_ids[b, 1 : len(tgt) + 1] = tgt
        labels[b, : len(tgt)] = tgt
        labels[b, len(tgt)] = eos_id
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "decoder_input_ids": decoder_input_ids,
        "labels": labels,
    }


class Seq2SeqDataModule(L.LightningDataModule):
    """Denoising pairs from ``data.path`` or parallel pairs from ``data.tsv``, in resumable shuffled order."""

    def __init__(
        self, cfg: Seq2SeqDataConfig, *, micro_batch_size: int, grad_accumulation: int, val_batches: int
    ):
        super().__init__()
        self.cfg = cfg
        self.micro_batch_size, self.grad_accumulation, self.val_batches = (
            micro_batch_size,
            grad_accumulation,
            val_batches,
        )
        self.train_ds: Any = None
        self.val_ds: Any = None
        self.tokenizer_file: Path | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_ds is not None:
            return
        from data_prep.tokenizer import load_tokenizer, tokenizer_path

        cfg = self.cfg
        if cfg.tsv is None and cfg.path is None:
            raise UserError("data: give a corpus folder (data.path) or a parallel TSV file (data.tsv)")
        folder = shards_folder(cfg.path) if cfg.tsv is None else None
        tok_src = cfg.tokenizer or folder or (Path(cfg.path) if cfg.path else None)
        if tok_src is None:
            raise UserError("data.tsv needs data.tokenizer (a tokenizer.json or a folder holding one)")
        self.tokenizer_file = tokenizer_path(tok_src)
        tok = load_tokenizer(tok_src)
        self.tokenizer = tok
        self.vocab_size = tok.get_vocab_size() + 1  # + the mask token
        self.mask_id = tok.get_vocab_size()
        eot = tok.token_to_id("<|endoftext|>")
        self.bos_id = self.eos_id = self.pad_id = 0 if eot is None else eot
        if folder is not None:
            self.train_ds = DenoisingPairs(folder, "train", cfg, self.mask_id)
            self.val_ds = DenoisingPairs(folder, "valid", cfg, self.mask_id)
        else:
            assert cfg.tsv is not None
            lines = _read_lines(cfg.tsv)
            if cfg.valid_tsv:
                train_lines, val_lines = lines, _read_lines(cfg.valid_tsv)
            else:
                n_val = max(1, int(len(lines) * cfg.valid_fraction)) if len(lines) > 1 else 0
                train_lines, val_lines = lines[: len(lines) - n_val], lines[len(lines) - n_val :]
            self.train_ds = TsvPairs(train_lines, tok, cfg.max_tokens, cfg.tsv)
            self.val_ds = TsvPairs(val_lines, tok, cfg.max_tokens, cfg.valid_tsv or cfg.tsv)
        if len(self.train_ds) == 0:
            raise UserError(f"{cfg.tsv or cfg.path}: no training pairs (check data.min_tokens / max_tokens)")

    def collate(self, samples: list[dict[str, np.ndarray]]) -> dict[str, Any]:
        return collate_pairs(samples, self.pad_id, self.bos_id, self.eos_id)

    def samples_consumed(self) -> int:
        trainer = getattr(self, "trainer", None)
        step = trainer.global_step if trainer is not None else 0
        return step * self.grad_accumulation * self.micro_batch_size

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (0, 1) if trainer is None else (trainer.global_rank, trainer.world_size)

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank_world()
        sampler = EpochSampler(
            len(self.train_ds), seed=self.cfg.seed, rank=rank, world_size=world, start=self.samples_consumed()
        )
        return DataLoader(
            _ByEpoch(self.train_ds),
            batch_size=self.micro_batch_size,
            sampler=sampler,
            collate_fn=self.collate,
        )

    def val_dataloader(self) -> DataLoader | list:
        if self.val_ds is None or len(self.val_ds) == 0 or self.val_batches == 0:
            return []
        rank, world = self._rank_world()
        n = len(self.val_ds)
        share = list(range(rank, n, world))[: self.val_batches * self.micro_batch_size]
        return DataLoader(
            torch.utils.data.Subset(_Prefix(self.val_ds, n), share),
            batch_size=self.micro_batch_size,
            collate_fn=self.collate,
        )


def _read_lines(path: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: parallel TSV file not found (data.tsv)")
    return [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
