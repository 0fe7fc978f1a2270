"""Run-folder logging that survives resumes, and the throughput / MFU monitor.

``MetricsCSV`` writes ``RUN/metrics.csv`` (a ``step`` column plus one column per metric). Unlike Lightning's
CSVLogger it appends on resume, and first drops rows logged after the step the run resumes from, so the file
reads as one uninterrupted run. ``Throughput`` logs tokens/s, samples/s and MFU from the FLOP counter.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only


class MetricsCSV(Logger):
    """Appends ``{step, metric...}`` rows to ``path``; the header grows when new metrics appear."""

    def __init__(self, path: str | Path, resume_step: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self._rows: list[dict[str, Any]] = []
        self._resume_step = resume_step

    @property
    def name(self) -> str:
        return "csv"

    @property
    def version(self) -> str:
        return "0"

    @property
    @rank_zero_experiment
    def experiment(self) -> None:
        return None

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        row = {"step": step}
        row.update({k: float(v) for k, v in metrics.items()})
        self._rows.append(row)
        if len(self._rows) >= 20:
            self.save()

    def _read(self) -> tuple[list[str], list[dict[str, Any]]]:
        if not self.path.is_file():
            return [], []
        with self.path.open(newline="") as f:
            reader = csv.DictReader(f)
            return list(reader.fieldnames or []), list(reader)

    @rank_zero_only
    def save(self) -> None:
        if not self._rows and self._resume_step is None:
            return
        fields, old = self._read()
        if self._resume_step is not None:
            # A resumed run replays steps after its checkpoint: drop what the interrupted run logged there.
            old = [r for r in old if r.get("step") not in (None, "") and int(r["step"]) < self._resume_step]
            self._resume_step = None
            rewrite = True
        else:
            rewrite = False
        new_fields = [k for row in self._rows for k in row if k not in fields]
        fields = fields + list(dict.fromkeys(new_fields))
        if "step" in fields:
            fields = ["step"] + [f for f in fields if f != "step"]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if rewrite or new_fields or not self.path.is_file():
            with self.path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(old)
                writer.writerows(self._rows)
        else:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=fields).writerows(self._rows)
        self._rows = []

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Rows of a ``metrics.csv`` with numbers parsed (empty cells left out)."""
    with Path(path).open(newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in (None, "")} for row in csv.DictReader(f)]


class Throughput(L.Callback):
    """Logs ``perf/tokens_per_s``, ``perf/samples_per_s``, ``perf/tflops_per_device`` and ``perf/mfu``.

    Tokens are the non-padding tokens of the batches (padding costs compute in a dense model but is not
    useful work, so it is not counted). Rates are for the whole job: one rank's count times the world size.
    MFU = achieved model FLOP/s per device / the device's peak, with FLOPs from ``pipeline.flops`` (FLOP
    metrics are left out when ``flops_per_token`` is None).
    """

    def __init__(
        self, flops_per_token: float | None, peak_flops: float | None, log_every_n_steps: int
    ) -> None:
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self.every = max(1, log_every_n_steps)
        self._reset()

    def _reset(self) -> None:
        self._tokens = 0
        self._samples = 0
        self._t0: float | None = None
        self._last_step = -1

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int
    ) -> None:
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        mask = batch.get("attention_mask")
        ids = batch["input_ids"]
        self._tokens += int(mask.sum()) if mask is not None else ids.numel()
        self._samples += ids.shape[0]
        step = trainer.global_step
        if step == self._last_step or step % self.every or self._t0 is None:
            return
        self._last_step = step
        if ids.is_cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - self._t0
        world = trainer.world_size
        tokens_per_s = self._tokens * world / elapsed
        metrics = {
            "perf/tokens_per_s": tokens_per_s,
            "perf/samples_per_s": self._samples * world / elapsed,
        }
        if self.flops_per_token:
            metrics["perf/tflops_per_device"] = tokens_per_s / world * self.flops_per_token / 1e12
        if self.flops_per_token and self.peak_flops:
            metrics["perf/mfu"] = tokens_per_s / world * self.flops_per_token / self.peak_flops
        pl_module.log_dict(metrics, on_step=True, on_epoch=False, rank_zero_only=True)
        self._tokens = self._samples = 0
        self._t0 = time.perf_counter()
