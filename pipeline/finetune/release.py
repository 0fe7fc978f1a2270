"""Where fine-tuning starts, and the release folder it ends with.

``--checkpoint`` may name: a release folder (``python -m pipeline consolidate``), a fine-tuned release (its
backbone is reused, its head dropped), a Hugging Face folder (``config.json`` with ``model_type``; imported with
``pipeline.export.import_hf``), a run folder or a training checkpoint (consolidated first), or
``scratch:FOLDER`` / ``scratch:MODEL`` for the same architecture with random weights (a baseline).

A fine-tuned release is a release folder plus ``task.json`` (task type, labels) whose ``model.safetensors``
holds the task model (backbone under ``bert.`` / ``gpt.`` and the head).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model
from torch import nn

from data_prep.errors import UserError
from data_prep.recipe import from_dict
from pipeline.finetune.heads import build_task_model
from pipeline.models.config import ModelConfig, load_model_config

TASK_FILE = "task.json"


@dataclass
class StartPoint:
    """The pretrained backbone fine-tuning starts from."""

    config: ModelConfig
    weights: dict[str, torch.Tensor] | None
    """Pretraining-model state dict (``BertForPreTraining`` / ``GPT`` names); None = random init."""
    tokenizer: Path
    """The ``tokenizer.json`` to use."""


def read_model_config(folder: Path) -> ModelConfig:
    path = folder / "config.json"
    if not path.is_file():
        raise UserError(f"{folder}: not a release folder (no config.json)")
    return from_dict(ModelConfig, json.loads(path.read_text()), str(path))


def read_task(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / TASK_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def load_task_release(folder: str | Path) -> tuple[nn.Module, ModelConfig, dict[str, Any]]:
    """A fine-tuned release: the task model with its weights, the model config and ``task.json``."""
    folder = Path(folder)
    task = read_task(folder)
    if task is None:
        raise UserError(f"{folder}: not a fine-tuned release (no {TASK_FILE})")
    cfg = read_model_config(folder)
    model = build_task_model(cfg, task["type"], int(task["num_labels"]))
    load_model(model, str(folder / "model.safetensors"))
    return model, cfg, task


def backbone_weights(folder: Path) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """Pretraining-named weights of a release folder (pretraining or fine-tuned)."""
    from pipeline.checkpoint import load_release

    if read_task(folder) is not None:
        model, cfg, _ = load_task_release(folder)
        sd = model.state_dict()
        if cfg.arch == "gpt":
            sd = {k[len("gpt.") :]: v for k, v in sd.items() if k.startswith("gpt.")}
        return sd, cfg
    model, cfg = load_release(folder)
    return model.state_dict(), cfg


def resolve_start(spec: str, work_dir: Path, tokenizer: str | None = None, **overrides: Any) -> StartPoint:
    """Turn ``--checkpoint`` into a ``StartPoint``; imports and consolidations go under ``work_dir``."""
    from data_prep.tokenizer import load_tokenizer, tokenizer_path

    if spec.startswith("scratch:"):
        name = spec[len("scratch:") :]
        if Path(name).is_dir():
            cfg = read_model_config(Path(name))
            tok = Path(tokenizer) if tokenizer else Path(name)
        else:
            if tokenizer is None:
                raise UserError(f"{spec}: a scratch start from a model name needs `tokenizer:` in the recipe")
            tok = Path(tokenizer)
            vocab = load_tokenizer(tok).get_vocab_size(with_added_tokens=True)
            cfg = load_model_config(name, vocab_size=vocab)
        cfg = _override(cfg, overrides)
        return StartPoint(cfg, None, tokenizer_path(tok))
    folder = Path(spec)
    if (folder / "release" / "config.json").is_file() and not (folder / "config.json").is_file():
        folder = folder / "release"  # a fine-tuning run folder: continue from its best model
    if not folder.exists():
        raise UserError(
            f"{folder}: checkpoint not found (a release folder, an HF folder, a run folder or .ckpt)"
        )
    if folder.is_dir() and (folder / "config.json").is_file():
        if "model_type" in json.loads((folder / "config.json").read_text()):
            from pipeline.export import import_hf

            folder = import_hf(folder, work_dir / "imported")
    else:  # a run folder or a training checkpoint
        from pipeline.checkpoint import consolidate, latest_checkpoint

        ckpt = latest_checkpoint(folder) if folder.is_dir() and not (folder / "latest").exists() else folder
        if ckpt is None:
            raise UserError(f"{folder}: no config.json and no checkpoints: not a model folder")
        folder = consolidate(ckpt, work_dir / "consolidated", tokenizer=tokenizer)
    weights, cfg = backbone_weights(folder)
    tok = tokenizer_path(Path(tokenizer) if tokenizer else folder)
    if not tok.is_file():
        raise UserError(f"{folder}: no tokenizer.json (set `tokenizer:` in the recipe)")
    return StartPoint(_override(cfg, overrides), weights, tok)


def _override(cfg: ModelConfig, overrides: dict[str, Any]) -> ModelConfig:
    import dataclasses

    sizes = {"vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "arch"}
    bad = sorted(set(overrides) & sizes)
    if bad:
        raise UserError(f"model_overrides cannot change the pretrained shape ({', '.join(bad)})")
    try:
        return dataclasses.replace(cfg, **overrides)
    except TypeError as exc:
        raise UserError(f"model_overrides: {exc}") from None


def write_task_release(
    model: nn.Module,
    cfg: ModelConfig,
    out: Path,
    *,
    tokenizer: Path,
    task: dict[str, Any],
    recipe: dict[str, Any] | None = None,
) -> Path:
    """A fine-tuned release: ``write_release`` of the task model plus ``task.json``."""
    from pipeline.checkpoint import write_release

    write_release(model, cfg, out, tokenizer=tokenizer, recipe=recipe)
    (out / TASK_FILE).write_text(json.dumps(task, indent=2) + "\n")
    return out
