"""The fine-tuning data module: reads the splits, fixes the label set, encodes, and serves padded batches.

Training batches are drawn by a ``DistributedSampler`` (one shard per rank, shuffled by seed and epoch, so a
resumed run sees the same order); validation and prediction run over the whole split on every rank, so metrics
need no gathering.
"""

from __future__ import annotations

import functools
from typing import Any

import lightning as L
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, DistributedSampler

from data_prep.errors import UserError
from pipeline.finetune.config import FinetuneDataConfig, TaskConfig
from pipeline.finetune.features import (
    collate,
    lm_features,
    sentence_features,
    special_ids,
    token_features,
)
from pipeline.finetune.readers import holdout_split, read_examples
from pipeline.finetune.squad import qa_features


class FinetuneData(L.LightningDataModule):
    """Examples and encoded features of the train / validation (/ test) splits."""

    def __init__(
        self,
        data: FinetuneDataConfig,
        task: TaskConfig,
        tokenizer: Tokenizer,
        arch: str,
        *,
        micro_batch_size: int,
        seed: int = 1234,
    ) -> None:
        super().__init__()
        self.cfg, self.task, self.tok, self.arch = data, task, tokenizer, arch
        self.micro_batch_size, self.seed = micro_batch_size, seed
        self.examples: dict[str, list[dict[str, Any]]] = {}
        self.features: dict[str, list[Any]] = {}
        self.labels: list[str] = list(task.labels)
        self._loaded = False

    @property
    def pad_id(self) -> int:
        return special_ids(self.tok, self.arch)["pad"]

    @property
    def num_labels(self) -> int:
        if self.task.type == "regression":
            return 1
        if self.task.type in ("qa", "lm"):
            return 0
        return len(self.labels)

    def load(self) -> None:
        """Read and encode every split (once)."""
        if self._loaded:
            return
        c, t = self.cfg, self.task.type
        train = read_examples(c.train, c, t, "train")
        if c.validation:
            valid = read_examples(c.validation, c, t, "validation")
        elif c.holdout:
            train, valid = holdout_split(train, c.holdout, c.holdout_seed, c.holdout_fold)
        else:
            raise UserError(f"{c.train}: no validation split: set data.validation or data.holdout")
        self.examples = {"train": train, "validation": valid}
        if c.test:
            self.examples["test"] = read_examples(c.test, c, t, "test")
        for split, exs in self.examples.items():
            if not exs:
                raise UserError(f"{getattr(c, split)}: no examples in the {split} split")
        if t in ("classification", "token_classification") and not self.labels:
            key = "tags" if t == "token_classification" else "label"
            seen = {str(v).strip() for ex in train for v in (ex[key] if key == "tags" else [ex[key]])}
            self.labels = sorted(seen)
        if t == "classification" and len(self.labels) < 2:
            raise UserError(f"{c.train}: classification needs at least 2 labels, found {self.labels}")
        for split, exs in self.examples.items():
            labelled = split != "test" or all(ex.get("label", ex.get("tags")) is not None for ex in exs)
            self.features[split] = self.encode(exs, with_labels=labelled)
        self._loaded = True

    def encode(self, examples: list[dict[str, Any]], with_labels: bool = True) -> list[Any]:
        t, c = self.task.type, self.cfg
        if t in ("classification", "regression"):
            return sentence_features(examples, self.tok, self.arch, t, self.labels, c, with_labels)
        if t == "token_classification":
            return token_features(examples, self.tok, self.labels, c, with_labels)
        if t == "qa":
            sp = special_ids(self.tok, "bert")
            feats = qa_features(examples, self.tok, sp, c.max_seq_len, c.doc_stride, c.max_query_len)
            return [
                {
                    "input_ids": f.input_ids,
                    "token_type_ids": f.token_type_ids,
                    "start_positions": f.start_position,
                    "end_positions": f.end_position,
                    "qa": f,
                }
                for f in feats
            ]
        if t == "lm":
            return lm_features(examples, self.tok, c)
        raise UserError(f"unknown task type {t!r}")

    def setup(self, stage: str | None = None) -> None:
        self.load()

    def _loader(self, split: str, train: bool) -> DataLoader:
        feats = self.features[split]
        sampler = None
        if train:
            world = self.trainer.world_size if self.trainer is not None else 1
            rank = self.trainer.global_rank if self.trainer is not None else 0
            sampler = DistributedSampler(feats, num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
        return DataLoader(
            feats,  # type: ignore[arg-type]
            batch_size=self.micro_batch_size,
            sampler=sampler,
            shuffle=False,
            collate_fn=functools.partial(collate, pad_id=self.pad_id),
            num_workers=self.cfg.num_workers,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", train=False)

    def loader(self, split: str) -> DataLoader:
        """An in-order loader over a split (predictions)."""
        return self._loader(split, train=False)
