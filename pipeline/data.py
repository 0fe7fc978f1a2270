"""The pretraining DataModule: data-prep folders in, shuffled rank-sharded resumable batches out.

Training data is an endless stream: epoch ``e`` is a permutation of the split drawn from ``(seed, e)``, each
rank takes every ``world_size``-th index of it, and BERT masks are drawn per sample from ``(seed, epoch,
index)``. A rank's position in the stream is a pure function of how many samples it has consumed, which is
``global_step * grad_accumulation * micro_batch_size``; so a resumed run continues exactly where the
interrupted one stopped, without re-reading data and without any state but the step counter.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from data_prep.datasets import check_data_manifest, open_dataset
from data_prep.errors import UserError
from data_prep.manifest import read_manifest
from pipeline.config import DataConfig
from pipeline.models.config import ModelConfig


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, index)`` forever: per-epoch shuffled, sharded by rank, starting at ``start``.

    Args:
        num_samples: size of the split.
        seed: seed of the permutations.
        rank, world_size: this process's share is ``permutation[rank::world_size]``, cut to equal length so
            every rank takes the same number of steps per epoch.
        start: samples of this rank's stream to skip (already consumed before a resume).
        shuffle: ``False`` keeps file order (validation).
    """

    def __init__(
        self,
        num_samples: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
        shuffle: bool = True,
    ) -> None:
        self.per_rank = num_samples // world_size
        if self.per_rank == 0:
            raise UserError(f"{num_samples} training samples cannot be shared by {world_size} ranks")
        self.num_samples, self.seed, self.rank, self.world_size = num_samples, seed, rank, world_size
        self.start, self.shuffle = start, shuffle

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """This rank's indices for ``epoch``."""
        if self.shuffle:
            order = np.random.default_rng((self.seed, epoch)).permutation(self.num_samples)
        else:
            order = np.arange(self.num_samples)
        return order[self.rank :: self.world_size][: self.per_rank]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.start, self.per_rank)
        while True:
            for i in self.epoch_indices(epoch)[offset:]:
                yield epoch, int(i)
            epoch, offset = epoch + 1, 0


class _ByEpoch(Dataset):
    """Map-style view whose keys are ``(epoch, index)``, so masks depend on the epoch."""

    def __init__(self, ds: Any) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, np.ndarray]:
        epoch, i = key
        return self.ds.get(i, epoch)


class _Prefix(Dataset):
    """The first ``n`` samples of a split in file order, for a fixed, cheap validation set."""

    def __init__(self, ds: Any, n: int) -> None:
        self.ds, self.n = ds, min(n, len(ds))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return self.ds.get(i, 0)


def collate(samples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Stack int64 numpy samples into a batch of tensors."""
    return {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in samples[0]}


class PretrainDataModule(L.LightningDataModule):
    """Reads a data-prep ``bert`` or ``gpt`` folder, checked against the model config before training starts."""

    def __init__(
        self,
        cfg: DataConfig,
        model_cfg: ModelConfig,
        *,
        micro_batch_size: int,
        grad_accumulation: int,
        val_batches: int,
    ) -> None:
        super().__init__()
        self.cfg, self.model_cfg = cfg, model_cfg
        self.micro_batch_size, self.grad_accumulation, self.val_batches = (
            micro_batch_size,
            grad_accumulation,
            val_batches,
        )
        self.train_ds: Any = None
        self.val_ds: Any = None

    def setup(self, stage: str | None = None) -> None:
        path = Path(self.cfg.path)
        expected = "bert" if self.model_cfg.arch == "bert" else "gpt"
        stage = read_manifest(path).get("stage")
        if stage != expected:
            raise UserError(f"{path}: {stage} data cannot train a {expected} model (data.path)")
        kwargs: dict[str, Any] = {"seed": self.cfg.seed}
        if expected == "bert":
            kwargs["dynamic_masking"] = self.cfg.dynamic_masking
        self.train_ds = open_dataset(path, "train", **kwargs)
        check_data_manifest(
            self.train_ds.manifest,
            vocab_size=self.model_cfg.vocab_size,
            special_ids={"pad": self.model_cfg.pad_token_id} if expected == "bert" else None,
            where=str(path),
        )
        seq_len = self.seq_len
        if seq_len > self.model_cfg.max_position_embeddings:
            raise UserError(
                f"{path}: sequences of {seq_len} tokens but the model has only "
                f"{self.model_cfg.max_position_embeddings} positions (max_position_embeddings)"
            )
        if len(self.train_ds) == 0:
            raise UserError(f"{path}: the train split holds no samples")
        try:
            self.val_ds = open_dataset(path, self.cfg.valid_split, **kwargs)
        except UserError:
            self.val_ds = None

    @property
    def seq_len(self) -> int:
        m = self.train_ds.manifest
        return int(m.get("max_seq_len") or m.get("seq_len"))

    @property
    def special_ids(self) -> dict[str, int]:
        return dict(self.train_ds.manifest.get("special_ids", {}))

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def samples_consumed(self) -> int:
        """Samples this rank has consumed so far: where its stream resumes."""
        trainer = getattr(self, "trainer", None)
        step = trainer.global_step if trainer is not None else 0
        return step * self.grad_accumulation * self.micro_batch_size

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank_world()
        sampler = EpochSampler(
            len(self.train_ds), seed=self.cfg.seed, rank=rank, world_size=world, start=self.samples_consumed()
        )
        return DataLoader(
            _ByEpoch(self.train_ds),
            batch_size=self.micro_batch_size,
            sampler=sampler,
            collate_fn=collate,
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
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
            collate_fn=collate,
            num_workers=0,
        )
