"""The fine-tuning LightningModule: trains a task model, and after each validation pass scores the whole split.

Outputs of every validation batch are kept (logits, or start/end logits, or token argmaxes) and turned into
metrics at the end of the pass (``pipeline.finetune.metrics.evaluate``), logged as ``val/<metric>``. Dropout is
re-seeded per micro-batch from (seed, step, rank) as in pretraining, so a resumed run matches.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from pipeline.config import OptimConfig
from pipeline.finetune.metrics import evaluate, token_predictions
from pipeline.optim import build_optimizer, build_scheduler
from pipeline.tasks.seeding import ReseedPerMicroBatch


class FinetuneModule(ReseedPerMicroBatch, L.LightningModule):
    """Trains ``model`` (a task model from ``pipeline.finetune.heads``) and evaluates it on the data module."""

    def __init__(
        self,
        model: nn.Module,
        task_type: str,
        optim_cfg: OptimConfig,
        *,
        total_steps: int,
        seed: int = 1234,
        recipe: dict[str, Any] | None = None,
        max_answer_len: int = 30,
    ) -> None:
        super().__init__()
        self.model, self.task_type, self.optim_cfg = model, task_type, optim_cfg
        self.total_steps, self.seed, self.max_answer_len = total_steps, seed, max_answer_len
        self.save_hyperparameters({"recipe": recipe or {}})
        self.last_metrics: dict[str, float] = {}
        self.last_rows: list[dict[str, Any]] = []

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.model(batch)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self(batch)
        bs = batch["input_ids"].shape[0]
        self.log(
            "train/loss", out["loss"].detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=bs
        )
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)
        return out["loss"]

    # ------------------------------------------------------------------ evaluation

    def start_collecting(self) -> None:
        self._outputs: dict[str, Any] = {
            "logits": [],
            "preds": [],
            "start_logits": [],
            "end_logits": [],
            "loss_sum": 0.0,
            "tokens": 0,
        }

    def collect(self, batch: dict[str, torch.Tensor]) -> None:
        """Run the model on a batch (no labels needed) and keep what the metrics need."""
        t = self.task_type
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "start_positions", "end_positions")}
        if t == "lm":
            out = self.model(batch)
            n = int((batch["labels"] != -100).sum())
            self._outputs["loss_sum"] += float(out["loss"]) * n
            self._outputs["tokens"] += n
            return
        out = self.model(inputs)
        if t in ("classification", "regression"):
            self._outputs["logits"].append(out["logits"].detach().float().cpu())
        elif t == "token_classification":
            self._outputs["preds"] += token_predictions(out["logits"].detach(), batch["labels"])
        elif t == "qa":
            for s, e, m in zip(out["start_logits"], out["end_logits"], batch["attention_mask"]):
                n = int(m.sum())
                self._outputs["start_logits"].append(s[:n].float().tolist())
                self._outputs["end_logits"].append(e[:n].float().tolist())

    def finish(self, split: str) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """Metrics and prediction rows of ``split`` from what ``collect`` kept."""
        dm = self.trainer.datamodule
        feats = dm.features[split]
        if self.task_type == "qa":
            feats = [f["qa"] for f in feats]
        return evaluate(
            self.task_type, dm.labels, dm.examples[split], feats, self._outputs, self.max_answer_len
        )

    def on_validation_epoch_start(self) -> None:
        self.start_collecting()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.collect(batch)

    def on_validation_epoch_end(self) -> None:
        metrics, rows = self.finish("validation")
        self.last_metrics, self.last_rows = metrics, rows
        for name, value in metrics.items():
            self.log(f"val/{name}", float(value), prog_bar=name in ("accuracy", "f1", "pearson", "entity_f1"))

    def configure_optimizers(self) -> Any:
        fused = str(self.trainer.precision) in ("32", "32-true")
        optimizer = build_optimizer(self.model, self.optim_cfg, fused=fused)
        scheduler = build_scheduler(optimizer, self.optim_cfg, self.total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
