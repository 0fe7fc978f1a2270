"""``finetune``: one fine-tuning run through the pretraining trainer (strategies, W&B, metrics.csv, resume).

The run folder ends up with ``best.ckpt`` (best validation ``task.metric``), ``release/`` (the best model as a
fine-tuned release folder: loads with ``load_task_release``, exports with ``python -m pipeline export``),
``predictions/validation.jsonl`` (and ``test.jsonl`` when ``data.test`` is set), ``eval.json`` (the best
model's validation metrics), ``metrics.csv`` and ``checkpoints/`` (step checkpoints for ``--resume auto``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from data_prep.errors import UserError
from pipeline.finetune.config import DEFAULT_METRIC, LOWER_IS_BETTER, FinetuneRecipe

METRICS = {
    "classification": {"accuracy", "f1", "mcc"},
    "regression": {"pearson", "spearman", "mse"},
    "token_classification": {"entity_f1", "entity_precision", "entity_recall", "token_accuracy"},
    "qa": {"exact_match", "f1"},
    "lm": {"loss", "ppl"},
}


def main_metric(recipe: FinetuneRecipe) -> str:
    """The metric that picks the best checkpoint (checked against what the task reports)."""
    metric = recipe.task.metric or DEFAULT_METRIC[recipe.task.type]
    if metric not in METRICS[recipe.task.type]:
        known = ", ".join(sorted(METRICS[recipe.task.type]))
        raise UserError(f"task.metric {metric!r} is not reported for {recipe.task.type} (known: {known})")
    return metric


def finetune(
    recipe: FinetuneRecipe,
    *,
    checkpoint: str | None = None,
    resume: str | None = None,
    progress: bool = True,
    callbacks: list[Any] | None = None,
) -> Path:
    """Fine-tune from ``checkpoint`` (or ``recipe.checkpoint_path``); returns the run folder."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from data_prep.tokenizer import load_tokenizer
    from pipeline.finetune.data import FinetuneData
    from pipeline.finetune.heads import build_task_model, load_backbone
    from pipeline.finetune.module import FinetuneModule
    from pipeline.finetune.release import resolve_start
    from pipeline.strategies import RecipeCheckpoint
    from pipeline.train import build_trainer, fit, prepare_run

    spec = checkpoint or recipe.checkpoint_path
    if not spec:
        raise UserError(
            "no model to start from: pass --checkpoint DIR (or set checkpoint_path in the recipe)"
        )
    recipe.checkpoint_path = spec
    metric = main_metric(recipe)
    ctx = prepare_run(recipe, resume)
    tc = recipe.trainer
    start = resolve_start(spec, ctx.run_dir, recipe.tokenizer, **recipe.model_overrides)
    tok = load_tokenizer(start.tokenizer)
    arch = start.config.arch
    if recipe.task.type in ("qa", "token_classification") and arch != "bert":
        raise UserError(f"task.type {recipe.task.type} needs a BERT checkpoint, {spec} is {arch}")
    dm = FinetuneData(recipe.data, recipe.task, tok, arch, micro_batch_size=tc.micro_batch_size, seed=tc.seed)
    dm.load()
    model = build_task_model(start.config, recipe.task.type, dm.num_labels, recipe.task.classifier_dropout)
    if start.weights is not None:
        load_backbone(model, start.weights, arch)
    batches = math.ceil(len(dm.features["train"]) / ctx.world / tc.micro_batch_size)
    total_steps = recipe.task.epochs * max(math.ceil(batches / ctx.accum), 1)
    module = FinetuneModule(
        model,
        recipe.task.type,
        recipe.optim,
        total_steps=total_steps,
        seed=tc.seed,
        recipe=ctx.recipe_dict,
        max_answer_len=recipe.data.max_answer_len,
    )
    best = ModelCheckpoint(
        dirpath=ctx.run_dir,
        filename="best",
        monitor=f"val/{metric}",
        mode="min" if metric in LOWER_IS_BETTER else "max",
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
        save_on_train_epoch_end=False,  # right after validation, before ``epoch_end`` saves the run's state
    )
    # A checkpoint after every epoch's validation (after ``best`` has seen it), so a resume knows the best so far.
    epoch_end = RecipeCheckpoint(
        ctx.recipe_dict,
        dirpath=ctx.run_dir / "checkpoints",
        filename="step-{step:07d}",
        auto_insert_metric_name=False,
        every_n_epochs=1,
        keep_last=recipe.checkpoint.keep_last,
        save_on_train_epoch_end=False,
        enable_version_counter=False,  # replaces a step checkpoint of the same step written before validation
    )
    trainer = build_trainer(
        ctx,
        trainer_cfg=tc,
        optim_cfg=recipe.optim,
        checkpoint_cfg=recipe.checkpoint,
        logging_cfg=recipe.logging,
        callbacks=[best, epoch_end, *(callbacks or [])],
        progress=progress,
        max_steps=-1,
        max_epochs=recipe.task.epochs,
        val_check_interval=None,  # validation at the end of every epoch
        check_val_every_n_epoch=1,
        limit_val_batches=1.0,
    )
    fit(trainer, module, dm, ctx)
    if trainer.is_global_zero:
        _drop_duplicate_checkpoints(ctx.run_dir / "checkpoints")
        finish_run(recipe, module, dm, best.best_model_path, start.tokenizer, metric, ctx.recipe_dict)
    return ctx.run_dir


def evaluate_split(module: Any, dm: Any, split: str) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Metrics and prediction rows of the module's current weights on one split (eval mode, no gradients)."""
    from pipeline.finetune.metrics import evaluate

    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    model = module.model.to(device).eval()
    module.start_collecting()
    with torch.no_grad():
        for batch in dm.loader(split):
            module.collect({k: v.to(device) for k, v in batch.items()})
    feats = dm.features[split]
    if module.task_type == "qa":
        feats = [f["qa"] for f in feats]
    model.cpu()
    return evaluate(
        module.task_type, dm.labels, dm.examples[split], feats, module._outputs, module.max_answer_len
    )


def finish_run(
    recipe: FinetuneRecipe,
    module: Any,
    dm: Any,
    best_path: str,
    tokenizer: Path,
    metric: str,
    recipe_dict: dict[str, Any],
) -> None:
    """Reload the best weights, write predictions, ``eval.json`` and the release folder."""
    from pipeline.checkpoint import load_training_state_dict
    from pipeline.finetune.release import write_task_release

    run_dir = Path(recipe.run_dir)
    if best_path and Path(best_path).exists():
        weights, _ = load_training_state_dict(best_path)
        module.model.load_state_dict(weights, strict=False)
    results: dict[str, Any] = {"metric": metric, "best_checkpoint": best_path or None}
    pred_dir = run_dir / "predictions"
    pred_dir.mkdir(exist_ok=True)
    for split in dm.features:
        if split == "train":
            continue
        metrics, rows = evaluate_split(module, dm, split)
        results[split] = metrics
        if rows:
            with open(pred_dir / f"{split}.jsonl", "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    (run_dir / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
    task = {
        "type": recipe.task.type,
        "labels": dm.labels,
        "num_labels": dm.num_labels,
        "max_seq_len": recipe.data.max_seq_len,
    }
    # A fresh copy: after DeepSpeed the parameters are views into flat buffers, which safetensors refuses.
    from pipeline.finetune.heads import build_task_model

    fresh = build_task_model(
        module.model.config, recipe.task.type, dm.num_labels, recipe.task.classifier_dropout
    )
    fresh.load_state_dict({k: v.detach().clone() for k, v in module.model.state_dict().items()})
    write_task_release(
        fresh, fresh.config, run_dir / "release", tokenizer=tokenizer, task=task, recipe=recipe_dict
    )


def _drop_duplicate_checkpoints(folder: Path) -> None:
    """The end-of-training checkpoint repeats the last epoch's one under ``step-N-v1.ckpt``: drop the copy."""
    import shutil

    for dup in folder.glob("step-*-v*.ckpt"):
        shutil.rmtree(dup) if dup.is_dir() else dup.unlink()
        side = dup.with_name(dup.name + ".recipe.yaml")
        if side.is_file():
            side.unlink()
