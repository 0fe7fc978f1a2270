"""Sequence-to-sequence training (denoising or parallel pairs) through the same trainer as pretraining.

``train_seq2seq`` builds the data, fills the model's vocabulary size from the tokenizer, and runs
``prepare_run`` / ``build_trainer`` / ``fit`` from ``pipeline.train``: the same strategies (DeepSpeed included),
checkpoints, resume, ``metrics.csv`` and W&B. Logged: ``train/loss``, ``train/ppl``, ``val/loss``, ``val/ppl``,
``val/acc`` (teacher-forced next-token accuracy) and ``val/exact_match`` (greedy or beam decoding of the first
``decode.eval_batches`` validation batches).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import lightning as L
import torch

from pipeline.config import OptimConfig
from pipeline.models.seq2seq import build_seq2seq
from pipeline.models.seq2seq_config import Seq2SeqModelConfig
from pipeline.optim import build_optimizer, build_scheduler
from pipeline.seq2seq_recipe import DecodeConfig, Seq2SeqRecipe
from pipeline.tasks.seeding import ReseedPerMicroBatch


def decode_batch(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], cfg: DecodeConfig, bos_id: int, eos_id: int
) -> list[list[int]]:
    """Greedy (``beam_size`` 1) or beam decoding of a batch's sources."""
    from pipeline.decoding import beam_search, greedy_decode

    src, mask = batch["input_ids"], batch["attention_mask"]
    if cfg.beam_size <= 1:
        return greedy_decode(model, src, mask, bos_id=bos_id, eos_id=eos_id, max_len=cfg.max_len)
    return beam_search(
        model, src, mask, bos_id=bos_id, eos_id=eos_id, max_len=cfg.max_len,
        beam_size=cfg.beam_size, length_penalty=cfg.length_penalty,
    )  # fmt: skip


class Seq2SeqModule(ReseedPerMicroBatch, L.LightningModule):
    """Trains an encoder-decoder on (source, target) batches from ``Seq2SeqDataModule``."""

    def __init__(
        self,
        model_cfg: Seq2SeqModelConfig,
        optim_cfg: OptimConfig,
        *,
        max_steps: int,
        decode_cfg: DecodeConfig | None = None,
        bos_id: int = 0,
        eos_id: int = 0,
        seed: int = 1234,
        recipe: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model_cfg, self.optim_cfg, self.decode_cfg = model_cfg, optim_cfg, decode_cfg or DecodeConfig()
        self.max_steps, self.seed, self.bos_id, self.eos_id = max_steps, seed, bos_id, eos_id
        self.save_hyperparameters({"recipe": recipe or {}})
        self.model = build_seq2seq(model_cfg)

    def forward(self, batch: dict[str, torch.Tensor]) -> Any:
        return self.model(
            batch["input_ids"], batch["attention_mask"], batch["decoder_input_ids"], batch["labels"]
        )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self(batch)
        loss = out.loss.detach()
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log("train/ppl", torch.exp(loss.clamp(max=20)), on_step=True, on_epoch=False)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)
        return out.loss

    def on_validation_epoch_start(self) -> None:
        self._val_losses: list[torch.Tensor] = []

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self(batch)
        labels = batch["labels"]
        bs = labels.size(0)
        real = labels != -100
        acc = ((out.logits.argmax(-1) == labels) & real).sum().float() / real.sum().clamp(min=1)
        self.log("val/loss", out.loss, on_epoch=True, sync_dist=True, batch_size=bs)
        self.log("val/acc", acc, on_epoch=True, sync_dist=True, batch_size=bs)
        self._val_losses.append(out.loss.detach())
        if batch_idx < self.decode_cfg.eval_batches:
            hyps = decode_batch(self.model, batch, self.decode_cfg, self.bos_id, self.eos_id)
            refs = [row[row != -100].tolist()[:-1] for row in labels]  # without the EOS label
            exact = sum(h == r for h, r in zip(hyps, refs)) / max(len(refs), 1)
            self.log("val/exact_match", float(exact), on_epoch=True, sync_dist=True, batch_size=bs)

    def on_validation_epoch_end(self) -> None:
        if self._val_losses:
            mean = torch.stack(self._val_losses).mean()
            self.log("val/ppl", torch.exp(mean.clamp(max=20)), sync_dist=True)

    def configure_optimizers(self) -> Any:
        fused = str(self.trainer.precision) in ("32", "32-true")
        optimizer = build_optimizer(self.model, self.optim_cfg, fused=fused)
        scheduler = build_scheduler(optimizer, self.optim_cfg, self.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def train_seq2seq(
    recipe: Seq2SeqRecipe,
    *,
    resume: str | None = None,
    progress: bool = True,
    callbacks: list[Any] | None = None,
) -> Path:
    """Run (or resume) a sequence-to-sequence recipe; returns the run folder."""
    from pipeline.seq2seq_data import Seq2SeqDataModule
    from pipeline.train import build_trainer, fit, prepare_run

    tc = recipe.trainer
    dm = Seq2SeqDataModule(
        recipe.data, micro_batch_size=tc.micro_batch_size, grad_accumulation=1, val_batches=tc.val_batches
    )
    dm.setup("fit")  # the tokenizer decides the vocabulary; fail on bad data before anything starts
    if recipe.model.vocab_size is None:
        recipe = dataclasses.replace(
            recipe, model=dataclasses.replace(recipe.model, vocab_size=dm.vocab_size)
        )
    elif recipe.model.vocab_size < dm.vocab_size:
        from data_prep.errors import UserError

        raise UserError(f"model.vocab_size {recipe.model.vocab_size} < the data's {dm.vocab_size} token ids")
    ctx = prepare_run(recipe, resume)
    dm.grad_accumulation = ctx.accum
    module = Seq2SeqModule(
        recipe.model, recipe.optim, max_steps=tc.max_steps, decode_cfg=recipe.decode,
        bos_id=dm.bos_id, eos_id=dm.eos_id, seed=tc.seed, recipe=ctx.recipe_dict,
    )  # fmt: skip
    trainer = build_trainer(
        ctx,
        trainer_cfg=tc,
        optim_cfg=recipe.optim,
        checkpoint_cfg=recipe.checkpoint,
        logging_cfg=recipe.logging,
        callbacks=callbacks,
        progress=progress,
    )
    return fit(trainer, module, dm, ctx, compile=tc.compile)
