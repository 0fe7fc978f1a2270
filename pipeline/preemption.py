"""Slurm preemption: on ``SIGUSR1`` save ``checkpoints/step-N.ckpt`` and requeue the job.

A job submitted by ``python -m pipeline submit`` asks for ``--signal=USR1@S --requeue``: Slurm sends SIGUSR1 to
every task S seconds before the time limit (or a user sends it: ``scancel --signal=USR1 JOBID``). The handler
only sets a flag. At the next optimiser-step boundary all ranks agree on the flag (one tiny all-reduce per step),
save a normal step checkpoint together (a file, or a ZeRO folder under DeepSpeed), and rank 0 runs
``scontrol requeue $SLURM_JOB_ID``. The requeued job starts with ``--resume auto`` and picks that checkpoint up
like any other, so a preempted run finishes with the same total step count.

We do this instead of Lightning's own auto-requeue (``hpc_ckpt_N.ckpt``, saved inside the signal handler at
whatever point each rank happens to be): saving at a step boundary on all ranks at once cannot interleave with
a collective of the training step, and the checkpoint lands where ``--resume auto`` and pruning look.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from typing import Any

import lightning as L

log = logging.getLogger(__name__)


def under_slurm_batch() -> bool:
    """Whether this process is a task of a Slurm job (``srun`` inside ``sbatch``)."""
    return bool(os.environ.get("SLURM_JOB_ID")) and bool(os.environ.get("SLURM_STEP_ID"))


def slurm_job_id() -> str:
    """The id ``scontrol requeue`` takes: ``ARRAYID_TASK`` for array tasks, else the job id."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ["SLURM_JOB_ID"]


class SlurmRequeue(L.Callback):
    """Checkpoint and requeue on ``signum`` (SIGUSR1); a no-op outside a Slurm job."""

    def __init__(self, signum: int = signal.SIGUSR1) -> None:
        self.signum = signum
        self.requested = False
        self._installed = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = True  # only a flag: the work happens at the next step boundary, on every rank

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if under_slurm_batch():
            self._previous = signal.signal(self.signum, self._handler)
            self._installed = True

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._installed:
            signal.signal(self.signum, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not self._installed:
            return
        batch_idx = args[-1] if args else 0
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # mid-accumulation: wait for the optimiser step
        if not trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            return
        self.requested = False
        step = trainer.global_step
        if trainer.max_steps and step >= trainer.max_steps:
            return  # the run is finishing anyway; its final checkpoint follows
        self._save(trainer)
        ok = True
        if trainer.is_global_zero:
            for logger in trainer.loggers:  # metrics.csv up to this step, before Slurm stops the job
                logger.save()
            job = slurm_job_id()
            result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
            ok = result.returncode == 0
            if ok:
                log.warning("preempted at step %d: checkpoint saved, job %s requeued", step, job)
            else:
                log.warning(
                    "checkpoint saved at step %d, but requeue failed: %s", step, result.stderr.strip()
                )
        if trainer.strategy.broadcast(ok, src=0):
            trainer.should_stop = True  # exit cleanly; the requeued job resumes from the checkpoint

    @staticmethod
    def _save(trainer: L.Trainer) -> None:
        """Save through the run's ``RecipeCheckpoint`` (same name, recipe sidecar and pruning as every step)."""
        from pipeline.strategies import RecipeCheckpoint

        for cb in trainer.callbacks:  # type: ignore[attr-defined]
            if isinstance(cb, RecipeCheckpoint):
                if cb._last_global_step_saved != trainer.global_step:
                    cb._save_topk_checkpoint(trainer, cb._monitor_candidates(trainer))
                    cb._last_global_step_saved = trainer.global_step
                return
        raise RuntimeError("SlurmRequeue needs the run's RecipeCheckpoint callback")
