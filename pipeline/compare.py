"""``python -m pipeline compare``: train several language models on the same data and budget, then report.

Each listed model becomes an ordinary pretraining recipe (same data, optimiser, trainer, logging; its own run
folder ``OUT/runs/NAME``) and trains through ``pipeline.train.pretrain``, so every strategy, W&B, checkpoints
and resume work as for any run; a finished run is not trained again. The step count comes from the budget:
the same number of training tokens for every model, or the same number of training FLOPs. Afterwards each
model is evaluated on the same validation batches and its gradient-by-distance profile measured, and
``pipeline.report`` writes ``OUT/report/`` (``report.md``, PNG plots, ``results.json``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from data_prep.errors import UserError
from pipeline.config import (
    CheckpointConfig,
    DataConfig,
    LoggingConfig,
    OptimConfig,
    PretrainRecipe,
    TrainerConfig,
)


@dataclass
class CompareModel:
    """One contestant."""

    name: str
    """Label in the report, and the name of its run folder."""
    model: str
    """A preset from ``recipes/models/`` (``lstm-tiny``, ``gpt-tiny``, ...) or a model YAML path."""
    model_overrides: dict[str, Any] = field(default_factory=dict)
    """Fields of the model config to change (``vocab_size`` is set from the data when not given)."""
    lr: float | None = None
    """Peak learning rate for this model; ``None`` = ``optim.lr``."""


@dataclass
class BudgetConfig:
    """How much training every model gets (give one of the two, or neither to use ``trainer.max_steps``)."""

    tokens: int | None = None
    """Training tokens per model: steps = tokens / (global batch x sequence length), rounded up."""
    flops: float | None = None
    """Training FLOPs per model (``pipeline.flops``): steps = flops / (FLOPs per token x tokens per step)."""


@dataclass
class GradientProbeConfig:
    """The gradient-norm-against-distance measurement."""

    batches: int = 4
    """Validation micro-batches averaged (0 = skip the measurement)."""


@dataclass
class CompareRecipe:
    """A comparison of language models (``recipes/compare/<name>.yaml``)."""

    out_dir: str
    """Folder of the comparison: ``runs/NAME`` per model and ``report/``."""
    data: DataConfig
    """The ``gpt`` windows every model trains on."""
    models: list[CompareModel]
    """The models, in report order."""
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    """Training budget per model."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimiser and schedule shared by all models (``lr`` per model can differ)."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """Shared trainer settings; ``max_steps`` is derived from the budget when one is given."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpointing of each run."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """W&B: each model is its own run, named ``OUT_NAME/MODEL`` and tagged ``compare``."""
    gradients: GradientProbeConfig = field(default_factory=GradientProbeConfig)
    """Gradient norm against distance."""


class WallClock(L.Callback):
    """Logs ``perf/elapsed_s``, the training wall-clock since the run (or its resume) started."""

    def __init__(self) -> None:
        self._t0: float | None = None
        self._offset = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        assert self._t0 is not None
        pl_module.log("perf/elapsed_s", time.perf_counter() - self._t0, on_step=True, on_epoch=False)


def run_recipes(
    recipe: CompareRecipe, seq_len: int, vocab_size: int
) -> list[tuple[CompareModel, PretrainRecipe]]:
    """The pretraining recipe of each model, with the budget turned into ``max_steps``."""
    from pipeline.flops import flops_per_token
    from pipeline.models.config import load_model_config

    out, names = [], set()
    tokens_per_step = recipe.trainer.global_batch_size * seq_len
    for m in recipe.models:
        if m.name in names or not m.name or "/" in m.name:
            raise UserError(f"models: names must be unique folder names, got {m.name!r}")
        names.add(m.name)
        overrides = {"vocab_size": vocab_size, **m.model_overrides}
        cfg = load_model_config(m.model, **overrides)
        steps = recipe.trainer.max_steps
        if recipe.budget.tokens and recipe.budget.flops:
            raise UserError("budget: give tokens or flops, not both")
        if recipe.budget.tokens:
            steps = math.ceil(recipe.budget.tokens / tokens_per_step)
        elif recipe.budget.flops:
            steps = math.ceil(recipe.budget.flops / (flops_per_token(cfg, seq_len) * tokens_per_step))
        trainer = dataclasses.replace(recipe.trainer, max_steps=max(1, steps))
        optim = dataclasses.replace(recipe.optim, lr=m.lr if m.lr is not None else recipe.optim.lr)
        lg = recipe.logging
        logging = dataclasses.replace(
            lg, name=f"{Path(recipe.out_dir).name}/{m.name}", tags=[*lg.tags, "compare", cfg.arch]
        )
        pr = PretrainRecipe(
            run_dir=str(Path(recipe.out_dir) / "runs" / m.name),
            data=recipe.data,
            model=m.model,
            model_overrides=overrides,
            optim=optim,
            trainer=trainer,
            checkpoint=recipe.checkpoint,
            logging=logging,
        )
        out.append((m, pr))
    return out


def _finished(run: PretrainRecipe) -> bool:
    from pipeline.checkpoint import checkpoint_step, latest_checkpoint

    last = latest_checkpoint(run.run_dir)
    return last is not None and (checkpoint_step(last) or 0) >= run.trainer.max_steps


def evaluate(run: PretrainRecipe, probe_batches: int) -> dict[str, Any]:
    """Final validation loss of a trained run (the same batches for every model) and its gradient profile."""
    from pipeline.checkpoint import latest_checkpoint, load_training_state_dict
    from pipeline.data import PretrainDataModule
    from pipeline.gradients import gradient_profile
    from pipeline.models import build_model
    from pipeline.models.config import load_model_config

    cfg = load_model_config(run.model, **run.model_overrides)
    model = build_model(cfg)
    ckpt = latest_checkpoint(run.run_dir)
    if ckpt is None:
        raise UserError(f"{run.run_dir}: no checkpoint to evaluate")
    weights, _ = load_training_state_dict(ckpt)
    model.load_state_dict(weights, strict=False)
    model.eval()
    dm = PretrainDataModule(
        run.data, cfg, micro_batch_size=run.trainer.micro_batch_size, grad_accumulation=1,
        val_batches=run.trainer.val_batches,
    )  # fmt: skip
    dm.setup("fit")
    batches = list(dm.val_dataloader())
    if not batches:
        raise UserError(f"{run.data.path}: no validation split to evaluate on")
    with torch.no_grad():
        losses = [float(model(b["input_ids"], labels=b["labels"]).loss) for b in batches]
    result: dict[str, Any] = {
        "val_loss": sum(losses) / len(losses),
        "val_tokens": sum(b["labels"].numel() for b in batches),
    }
    result["val_ppl"] = math.exp(min(result["val_loss"], 20))
    if probe_batches:
        result["grad_by_distance"] = gradient_profile(model, batches, probe_batches).tolist()
    return result


def compare(recipe: CompareRecipe, *, progress: bool = False, report_only: bool = False) -> Path:
    """Train (unless finished or ``report_only``), evaluate, and write the report; returns the report folder."""
    from data_prep.manifest import read_manifest
    from pipeline.flops import flops_per_token
    from pipeline.models import build_model
    from pipeline.models.config import load_model_config
    from pipeline.report import write_report
    from pipeline.train import pretrain

    manifest = read_manifest(recipe.data.path, "gpt")
    seq_len, vocab = int(manifest["seq_len"]), int(manifest["vocab_size"])
    out = Path(recipe.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.yaml").write_text(
        __import__("yaml").safe_dump(dataclasses.asdict(recipe), sort_keys=False)
    )
    results = []
    for m, run in run_recipes(recipe, seq_len, vocab):
        if not report_only and not _finished(run):
            print(f"[compare] training {m.name} ({run.model}) for {run.trainer.max_steps} steps", flush=True)
            pretrain(run, resume="auto", progress=progress, callbacks=[WallClock()])
        cfg = load_model_config(run.model, **run.model_overrides)
        model = build_model(cfg)
        res = {
            "name": m.name,
            "model": run.model,
            "arch": cfg.arch,
            "run_dir": run.run_dir,
            "params": sum(p.numel() for p in model.parameters()),  # tied weights once
            "flops_per_token": flops_per_token(cfg, seq_len),
            "tokens_per_step": run.trainer.global_batch_size * seq_len,
            "max_steps": run.trainer.max_steps,
            "lr": run.optim.lr,
        }
        res.update(evaluate(run, recipe.gradients.batches))
        results.append(res)
    return write_report(results, out / "report", title=out.name, seq_len=seq_len)
