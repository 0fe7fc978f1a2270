"""Reproducible randomness across resumes, shared by every training module.

Dropout (and teacher-forcing draws) re-seed at every micro-batch from (seed, micro-step, rank), so a run
resumed from a checkpoint draws the same random numbers as the uninterrupted run and its losses match step for
step.
"""

from __future__ import annotations

from typing import Any

import torch


class ReseedPerMicroBatch:
    """LightningModule mixin: needs ``self.seed``; restores the micro-step from ``global_step`` on (re)start."""

    seed: int

    def on_train_start(self) -> None:
        self._micro_step = self.global_step * self.trainer.accumulate_grad_batches  # type: ignore[attr-defined]

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        torch.manual_seed(hash((self.seed, self._micro_step, self.global_rank)) % (2**63))  # type: ignore[attr-defined]
        self._micro_step += 1
