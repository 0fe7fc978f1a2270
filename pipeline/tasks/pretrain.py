"""LightningModules for pretraining: masked LM + next-sentence prediction (BERT) and causal LM (GPT).

One module serves both architectures: the model decides the loss, this module logs it, steps the schedule and
keeps dropout reproducible. Dropout's random stream is re-seeded at every micro-batch from (seed, step,
micro-batch, rank), so a run resumed from a checkpoint draws the same dropout masks as the uninterrupted run
and its losses match step for step.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from pipeline.config import OptimConfig
from pipeline.models import build_model
from pipeline.models.config import ModelConfig
from pipeline.optim import build_optimizer, build_scheduler
from pipeline.tasks.seeding import ReseedPerMicroBatch


class PretrainModule(ReseedPerMicroBatch, L.LightningModule):
    """Pretrains the model that ``model_cfg`` describes (BERT: MLM + NSP; GPT: next-token prediction)."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        optim_cfg: OptimConfig,
        *,
        max_steps: int,
        seed: int = 1234,
        recipe: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model_cfg, self.optim_cfg = model_cfg, optim_cfg
        self.max_steps, self.seed = max_steps, seed
        # Saved in every checkpoint (plain types only, so checkpoints load with weights_only=True).
        self.save_hyperparameters({"recipe": recipe or {}})
        self.model = build_model(model_cfg)

    @property
    def is_bert(self) -> bool:
        return self.model_cfg.arch == "bert"

    def forward(self, batch: dict[str, torch.Tensor]) -> Any:
        if self.is_bert:
            return self.model(
                batch["input_ids"],
                token_type_ids=batch["token_type_ids"],
                attention_mask=batch["attention_mask"],
                mlm_labels=batch["labels"],
                next_sentence_label=batch["next_sentence_label"] if self.model_cfg.nsp else None,
            )
        return self.model(batch["input_ids"], labels=batch["labels"])

    def _metrics(self, out: Any, batch_size: int) -> dict[str, torch.Tensor]:
        """Loss, accuracy and perplexity of one batch (perplexity of the LM part only)."""
        if self.is_bert:
            m = {"loss": out.loss.detach(), "mlm_loss": out.mlm_loss.detach()}
            m["mlm_acc"] = out.mlm_correct.float() / out.mlm_count.clamp(min=1)
            m["ppl"] = torch.exp(out.mlm_loss.detach().clamp(max=20))
            if out.nsp_loss is not None:
                m["nsp_loss"] = out.nsp_loss.detach()
                m["nsp_acc"] = out.nsp_correct.float() / batch_size
            return m
        return {"loss": out.loss.detach(), "ppl": torch.exp(out.loss.detach().clamp(max=20))}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self(batch)
        for name, value in self._metrics(out, batch["input_ids"].shape[0]).items():
            self.log(f"train/{name}", value, on_step=True, on_epoch=False, prog_bar=name == "loss")
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)
        return out.loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self(batch)
        bs = batch["input_ids"].shape[0]
        for name, value in self._metrics(out, bs).items():
            if name != "ppl":
                self.log(f"val/{name}", value, on_step=False, on_epoch=True, sync_dist=True, batch_size=bs)
        self._val_losses.append(out.mlm_loss.detach() if self.is_bert else out.loss.detach())

    def on_validation_epoch_start(self) -> None:
        self._val_losses: list[torch.Tensor] = []

    def on_validation_epoch_end(self) -> None:
        if self._val_losses:
            mean = torch.stack(self._val_losses).mean()
            self.log("val/ppl", torch.exp(mean.clamp(max=20)), sync_dist=True)

    def configure_optimizers(self) -> Any:
        # Lightning's mixed-precision plugin refuses to clip gradients for an optimizer that unscales them
        # itself (the fused step), so the fused kernel is used in full precision only.
        fused = str(self.trainer.precision) in ("32", "32-true")
        optimizer = build_optimizer(self.model, self.optim_cfg, fused=fused)
        scheduler = build_scheduler(optimizer, self.optim_cfg, self.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
