"""Checkpoints in the run folder, and release folders (``model.safetensors`` + config + tokenizer + recipe).

Training checkpoints live in ``RUN/checkpoints/step-NNNNNNN.ckpt``: a file (single device, DDP) or a folder of
ZeRO shards (DeepSpeed). ``consolidate`` turns either into a release folder that needs neither Lightning nor
DeepSpeed to load. Loads use ``weights_only=True`` or safetensors: a checkpoint cannot run code.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_model, save_model

from data_prep.errors import UserError
from pipeline.models import build_model
from pipeline.models.config import ModelConfig

CHECKPOINTS = "checkpoints"
_STEP = re.compile(r"step-(\d+)\.ckpt$")


def checkpoint_step(path: str | Path) -> int | None:
    """The step number in a checkpoint's name (``step-0000100.ckpt`` -> 100)."""
    m = _STEP.search(str(path).rstrip("/"))
    return int(m.group(1)) if m else None


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints of a run, oldest first (files or DeepSpeed folders; a Slurm preemption writes one too)."""
    folder = Path(run_dir) / CHECKPOINTS
    found = (
        [p for p in folder.glob("step-*.ckpt") if checkpoint_step(p) is not None] if folder.is_dir() else []
    )
    found.sort(key=lambda p: checkpoint_step(p) or 0)
    return found


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint of a run (``--resume auto``), or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_resume(resume: str | None, run_dir: str | Path) -> Path | None:
    """``None`` -> start fresh; ``auto`` -> latest in the run folder (fresh if none); else that path."""
    if resume is None:
        return None
    if resume == "auto":
        return latest_checkpoint(run_dir)
    path = Path(resume)
    if not path.exists():
        raise UserError(f"{path}: checkpoint not found (use --resume auto for the latest in {run_dir})")
    return path


def _is_deepspeed(path: Path) -> bool:
    return path.is_dir() and (path / "latest").is_file()


def load_training_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Model weights (fp32, names without the Lightning ``model.`` prefix) and hyper-parameters of a checkpoint."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: checkpoint not found")
    if _is_deepspeed(path):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(path))
        state = {k.removeprefix("_forward_module."): v for k, v in state.items()}
        hparams = _read_hparams_sidecar(path)
    else:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a corrupt or foreign file: one clear line
            raise UserError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None
        state, hparams = ckpt["state_dict"], ckpt.get("hyper_parameters", {})
    weights = {k.removeprefix("model."): v.float() for k, v in state.items() if k.startswith("model.")}
    if not weights:
        raise UserError(f"{path}: no model weights found in the checkpoint")
    return weights, hparams


def _read_hparams_sidecar(path: Path) -> dict[str, Any]:
    """DeepSpeed checkpoints keep the recipe in a YAML file beside the shards (written by the trainer)."""
    side = path / "recipe.yaml"
    return {"recipe": yaml.safe_load(side.read_text())} if side.is_file() else {}


def model_config_from_recipe(recipe: dict[str, Any]) -> ModelConfig:
    """The model config a recipe resolves to (preset + overrides)."""
    from pipeline.models.config import load_model_config

    return load_model_config(recipe["model"], **recipe.get("model_overrides", {}))


def write_release(
    model: torch.nn.Module,
    model_cfg: ModelConfig,
    out_dir: str | Path,
    *,
    tokenizer: str | Path | None = None,
    recipe: dict[str, Any] | None = None,
) -> Path:
    """Write a release folder: ``model.safetensors``, ``config.json``, ``tokenizer.json``, ``recipe.yaml``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, str(out / "model.safetensors"))  # tied weights are stored once
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(model_cfg), indent=2) + "\n")
    if tokenizer is not None:
        tok = Path(tokenizer)
        tok = tok / "tokenizer.json" if tok.is_dir() else tok
        if not tok.is_file():
            raise UserError(f"{tok}: tokenizer.json not found")
        shutil.copyfile(tok, out / "tokenizer.json")
    if recipe is not None:
        (out / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return out


def consolidate(checkpoint: str | Path, out_dir: str | Path, *, tokenizer: str | Path | None = None) -> Path:
    """Turn a training checkpoint (ZeRO-sharded or not) into a release folder.

    The tokenizer is taken from ``tokenizer`` or, by default, from the data folder named in the recipe.
    """
    weights, hparams = load_training_state_dict(checkpoint)
    recipe = hparams.get("recipe") or {}
    if not recipe:
        raise UserError(f"{checkpoint}: the checkpoint carries no recipe; cannot tell the model config")
    model_cfg = model_config_from_recipe(recipe)
    model = build_model(model_cfg)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # A tied weight has two names; a checkpoint may carry only one of them.
    aliases = set(dict(model.named_parameters(remove_duplicate=False))) - set(dict(model.named_parameters()))
    missing = [k for k in missing if k not in aliases]
    if missing or unexpected:
        raise UserError(
            f"{checkpoint}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    if tokenizer is None and recipe.get("data", {}).get("path"):
        tokenizer = Path(recipe["data"]["path"])
    return write_release(model, model_cfg, out_dir, tokenizer=tokenizer, recipe=recipe)


def load_release(folder: str | Path) -> tuple[torch.nn.Module, ModelConfig]:
    """Build the model of a release folder and load its weights (safetensors: no code runs)."""
    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise UserError(f"{folder}: not a release folder (no config.json)")
    from data_prep.recipe import from_dict

    model_cfg = from_dict(ModelConfig, json.loads(cfg_path.read_text()), str(cfg_path))
    model = build_model(model_cfg)
    load_model(model, str(folder / "model.safetensors"))
    return model, model_cfg
