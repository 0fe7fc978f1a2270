"""Lightning pieces we adapt: DeepSpeed on the CPU, and checkpoints that carry their recipe.

``CPUDeepSpeedStrategy`` is Lightning's ``DeepSpeedStrategy`` without its CUDA-only check, so ZeRO runs on CPU
processes over gloo (``DS_ACCELERATOR=cpu``); on GPUs it is the stock strategy. ``RecipeCheckpoint`` is
``ModelCheckpoint`` that writes the resolved recipe beside every checkpoint it keeps (``*.recipe.yaml``, or
``recipe.yaml`` inside a DeepSpeed checkpoint folder) and keeps only the newest ``keep_last`` checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    """DeepSpeed ZeRO that also runs on CPU processes (gloo): tests and laptops use the cluster's code path."""

    def setup_environment(self) -> None:
        if isinstance(self.accelerator, CUDAAccelerator):
            super().setup_environment()
        else:
            DDPStrategy.setup_environment(self)

    def _create_default_config(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        config = super()._create_default_config(*args, **kwargs)
        # Allow torch's AdamW with ZeRO-Offload (DeepSpeed otherwise insists on its compiled CPU Adam).
        config["zero_force_ds_cpu_optimizer"] = False
        return config


def sidecar(checkpoint: str | Path) -> Path:
    """Where the recipe of a checkpoint lives."""
    path = Path(checkpoint)
    return path / "recipe.yaml" if path.is_dir() else path.with_name(path.name + ".recipe.yaml")


class RecipeCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that saves the resolved recipe beside each checkpoint."""

    def __init__(self, recipe: dict[str, Any], *, keep_last: int, **kwargs: Any) -> None:
        # Lightning keeps every checkpoint; we prune to the newest ``keep_last`` by step number ourselves, which
        # also holds across resumes and Slurm requeues (Lightning's top-k memory does not).
        super().__init__(save_top_k=-1, **kwargs)
        self.recipe, self.keep_last = recipe, keep_last

    def _save_checkpoint(self, trainer: Any, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            sidecar(filepath).write_text(yaml.safe_dump(self.recipe, sort_keys=False))
            self._prune(Path(filepath))

    def _prune(self, newest: Path) -> None:
        from pipeline.checkpoint import checkpoint_step

        folder = newest.parent
        found = sorted(
            (p for p in folder.glob("step-*.ckpt") if checkpoint_step(p) is not None),
            key=lambda p: checkpoint_step(p) or 0,
        )
        for old in found[: max(len(found) - self.keep_last, 0)]:
            side = sidecar(old)
            if old.is_dir():
                import shutil

                shutil.rmtree(old)
            else:
                old.unlink()
            if side.is_file():
                side.unlink()

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        # Also keep the final state when max_steps is not a multiple of every_n_train_steps.
        if trainer.global_step > 0 and self._last_global_step_saved != trainer.global_step:
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))
            self._last_global_step_saved = trainer.global_step
        super().on_train_end(trainer, pl_module)
