"""One trainer for every run: strategy, precision, checkpoints, loggers and callbacks from the recipe.

DeepSpeed (ZeRO 1/2/3) also runs on the CPU with the gloo backend, through the same Lightning strategy as on a
GPU cluster (``CPUDeepSpeedStrategy`` lifts Lightning's CUDA-only check), so tests and laptops exercise the
production path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import yaml

from data_prep.errors import UserError
from pipeline.config import CheckpointConfig, LoggingConfig, OptimConfig, PretrainRecipe, TrainerConfig

log = logging.getLogger(__name__)


def on_gpu(cfg: TrainerConfig) -> bool:
    """Whether the run uses GPUs (``auto`` = when CUDA is available)."""
    if cfg.accelerator == "gpu":
        if not torch.cuda.is_available():
            raise UserError("trainer.accelerator is gpu but no CUDA device is available")
        return True
    return cfg.accelerator == "auto" and torch.cuda.is_available()


def cluster_shape(cfg: TrainerConfig) -> tuple[int, int]:
    """(devices per node, nodes): from the Slurm allocation when running under ``srun``, else the recipe."""
    if os.environ.get("SLURM_JOB_ID") and os.environ.get("SLURM_NTASKS") and os.environ.get("SLURM_STEP_ID"):
        nodes = int(os.environ.get("SLURM_NNODES", "1"))
        ntasks = int(os.environ["SLURM_NTASKS"])
        return max(ntasks // nodes, 1), nodes
    return cfg.devices, cfg.num_nodes


def build_strategy(cfg: TrainerConfig, gpu: bool, devices: int, num_nodes: int) -> Any:
    """The Lightning strategy the recipe asks for."""
    from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

    timeout = timedelta(seconds=cfg.process_group_timeout_s)
    backend = "nccl" if gpu else "gloo"
    world = devices * num_nodes
    name = cfg.strategy
    if name == "auto":
        name = "single" if world == 1 else "ddp"
    if name == "single":
        if world != 1:
            raise UserError(f"strategy single runs one process, but devices x nodes = {world}")
        return SingleDeviceStrategy(device=torch.device("cuda", 0) if gpu else torch.device("cpu"))
    parallel = None if gpu else [torch.device("cpu", i) for i in range(devices)]
    if name == "ddp":
        return DDPStrategy(parallel_devices=parallel, process_group_backend=backend, timeout=timeout)
    if not gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from pipeline.strategies import CPUDeepSpeedStrategy

    return CPUDeepSpeedStrategy(
        stage=cfg.zero_stage,
        offload_optimizer=cfg.offload_optimizer,
        parallel_devices=parallel,
        process_group_backend=backend,
        timeout=timeout,
    )


def wandb_mode(mode: str) -> str:
    """``auto`` -> online when an API key is configured, else offline (no server needed; ``wandb sync`` later)."""
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    netrc = Path.home() / ".netrc"
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (
        netrc.is_file() and "api.wandb.ai" in netrc.read_text()
    )
    return "online" if has_key else "offline"


def wandb_run_id(run_dir: Path) -> str:
    """A W&B run id that stays the same for a run folder (and a Slurm job), so resumes continue the same run."""
    path = run_dir / "wandb_run_id"
    if path.is_file():
        return path.read_text().strip()
    seed = os.environ.get("SLURM_JOB_ID") or str(run_dir.resolve())
    run_id = hashlib.sha1(seed.encode()).hexdigest()[:12]
    path.write_text(run_id + "\n")
    return run_id


def build_loggers(
    logging_cfg: LoggingConfig, run_dir: Path, resume_step: int | None, config: dict[str, Any]
) -> list[Any]:
    """``metrics.csv`` (always) and W&B (offline without an API key) for a run folder; ``config`` goes to W&B."""
    from pipeline.callbacks import MetricsCSV

    loggers: list[Any] = [MetricsCSV(run_dir / "metrics.csv", resume_step=resume_step)]
    lg = logging_cfg
    mode = wandb_mode(lg.mode)
    if lg.wandb and mode != "disabled":
        from lightning.pytorch.loggers import WandbLogger

        os.environ["WANDB_MODE"] = mode
        os.environ.setdefault("WANDB_SILENT", "true")
        loggers.append(
            WandbLogger(
                project=lg.project,
                entity=lg.entity,
                name=lg.name or run_dir.name,
                tags=list(lg.tags),
                save_dir=str(run_dir),
                id=wandb_run_id(run_dir),
                resume="allow",
                offline=mode == "offline",
                config=config,
            )
        )
    return loggers


def peak_flops(logging_cfg: LoggingConfig, trainer_cfg: TrainerConfig, gpu: bool) -> float | None:
    """Peak FLOP/s of one device: recipe override, else the device table, else measured (CPU)."""
    from pipeline.flops import estimate_cpu_peak_flops, peak_flops_for

    if logging_cfg.peak_flops:
        return logging_cfg.peak_flops
    prec = trainer_cfg.precision
    precision = "bf16" if "bf16" in prec else ("fp16" if "16" in prec else "fp32")
    if gpu:
        return peak_flops_for(torch.cuda.get_device_name(0), precision)
    return estimate_cpu_peak_flops()


def save_resolved_recipe(recipe: Any, run_dir: Path) -> dict[str, Any]:
    """Write ``run_dir/recipe.yaml`` (the recipe after overrides) and return it as a plain dict."""
    data = dataclasses.asdict(recipe)
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return data


@dataclasses.dataclass
class RunContext:
    """Where and how a run trains: resolved once, before the model and data are built."""

    run_dir: Path
    gpu: bool
    devices: int
    num_nodes: int
    accum: int
    ckpt_path: Path | None
    resume_step: int | None
    recipe_dict: dict[str, Any]

    @property
    def world(self) -> int:
        return self.devices * self.num_nodes


def prepare_run(recipe: Any, resume: str | None) -> RunContext:
    """Make the run folder, save the resolved recipe, seed, and work out devices, accumulation and resume.

    ``recipe`` is any run recipe with ``run_dir`` and ``trainer`` (pretraining, fine-tuning, baselines).
    """
    import lightning as L

    from pipeline.checkpoint import checkpoint_step, resolve_resume
    from pipeline.optim import grad_accumulation

    tc: TrainerConfig = recipe.trainer
    run_dir = Path(recipe.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    gpu = on_gpu(tc)
    devices, num_nodes = cluster_shape(tc)
    accum = grad_accumulation(tc.global_batch_size, tc.micro_batch_size, devices * num_nodes)
    ckpt_path = resolve_resume(resume, run_dir)
    resume_step = checkpoint_step(ckpt_path) if ckpt_path is not None else None
    recipe_dict = save_resolved_recipe(recipe, run_dir)
    L.seed_everything(tc.seed, workers=True, verbose=False)
    return RunContext(run_dir, gpu, devices, num_nodes, accum, ckpt_path, resume_step, recipe_dict)


def build_trainer(
    ctx: RunContext,
    *,
    trainer_cfg: TrainerConfig,
    optim_cfg: OptimConfig,
    checkpoint_cfg: CheckpointConfig,
    logging_cfg: LoggingConfig,
    flops_per_token: float | None = None,
    callbacks: list[Any] | None = None,
    progress: bool = True,
    **overrides: Any,
) -> Any:
    """The Lightning ``Trainer`` every run uses: strategy, precision, step checkpoints, CSV + W&B, throughput.

    ``flops_per_token`` (training FLOPs per token) turns on the MFU metric. ``overrides`` replace Trainer
    arguments (fine-tuning trains by epochs, for example).
    """
    import lightning as L
    from lightning.fabric.plugins.environments import SLURMEnvironment

    from pipeline.callbacks import Throughput
    from pipeline.preemption import SlurmRequeue
    from pipeline.strategies import RecipeCheckpoint

    tc = trainer_cfg
    all_callbacks = [
        *(callbacks or []),
        SlurmRequeue(),  # SIGUSR1 under Slurm: step checkpoint + requeue (a no-op elsewhere)
        RecipeCheckpoint(
            ctx.recipe_dict,
            dirpath=ctx.run_dir / "checkpoints",
            filename="step-{step:07d}",
            auto_insert_metric_name=False,
            every_n_train_steps=checkpoint_cfg.every_n_steps,
            keep_last=checkpoint_cfg.keep_last,
            save_on_train_epoch_end=False,
        ),
        Throughput(
            flops_per_token,
            peak_flops(logging_cfg, tc, ctx.gpu) if flops_per_token else None,
            tc.log_every_n_steps,
        ),
    ]
    kwargs: dict[str, Any] = dict(
        accelerator="gpu" if ctx.gpu else "cpu",
        devices=ctx.devices,
        num_nodes=ctx.num_nodes,
        strategy=build_strategy(tc, ctx.gpu, ctx.devices, ctx.num_nodes),
        precision=tc.precision,
        max_steps=tc.max_steps,
        accumulate_grad_batches=ctx.accum,
        gradient_clip_val=optim_cfg.grad_clip or None,
        val_check_interval=tc.val_every_n_steps * ctx.accum if tc.val_every_n_steps else None,
        check_val_every_n_epoch=None,
        limit_val_batches=tc.val_batches if tc.val_every_n_steps else 0,
        num_sanity_val_steps=0,
        log_every_n_steps=tc.log_every_n_steps,
        logger=build_loggers(logging_cfg, ctx.run_dir, ctx.resume_step, ctx.recipe_dict),
        callbacks=all_callbacks,
        default_root_dir=str(ctx.run_dir),
        use_distributed_sampler=False,  # our data modules shard by rank themselves, resumably
        enable_progress_bar=progress,
        enable_model_summary=progress,
        deterministic=False,
    )
    if SLURMEnvironment.detect():  # rendezvous from the Slurm environment; requeue is SlurmRequeue's job
        kwargs["plugins"] = [SLURMEnvironment(auto_requeue=False)]
    kwargs.update(overrides)
    return L.Trainer(**kwargs)


def fit(trainer: Any, module: Any, datamodule: Any, ctx: RunContext, *, compile: bool = False) -> Path:
    """``trainer.fit`` (resuming from ``ctx.ckpt_path``), then close W&B; returns the run folder."""
    if compile:
        module.model = torch.compile(module.model)
    try:
        trainer.fit(
            module,
            datamodule=datamodule,
            ckpt_path=str(ctx.ckpt_path) if ctx.ckpt_path else None,
            weights_only=True,
        )
    finally:
        _finish_wandb()
    return ctx.run_dir


def pretrain(
    recipe: PretrainRecipe,
    *,
    resume: str | None = None,
    progress: bool = True,
    callbacks: list[Any] | None = None,
) -> Path:
    """Run (or resume) a pretraining recipe; returns the run folder. ``callbacks`` are extra Lightning callbacks."""
    from pipeline.data import PretrainDataModule
    from pipeline.flops import flops_per_token
    from pipeline.models.config import load_model_config
    from pipeline.tasks.pretrain import PretrainModule

    tc = recipe.trainer
    model_cfg = load_model_config(recipe.model, **recipe.model_overrides)
    if recipe.optim.name == "lamb" and tc.strategy == "deepspeed":
        log.warning(
            "LAMB under ZeRO computes trust ratios per shard, not per tensor; prefer adamw with deepspeed"
        )
    ctx = prepare_run(recipe, resume)
    dm = PretrainDataModule(
        recipe.data,
        model_cfg,
        micro_batch_size=tc.micro_batch_size,
        grad_accumulation=ctx.accum,
        val_batches=tc.val_batches,
    )
    dm.setup("fit")  # fail on a data/model mismatch before any process group starts
    module = PretrainModule(
        model_cfg, recipe.optim, max_steps=tc.max_steps, seed=tc.seed, recipe=ctx.recipe_dict
    )
    mlm_fraction = None
    if model_cfg.arch == "bert":
        masking = dm.train_ds.manifest.get("settings", {}).get("masking", {})
        mlm_fraction = float(masking.get("mlm_probability", 0.15))
    trainer = build_trainer(
        ctx,
        trainer_cfg=tc,
        optim_cfg=recipe.optim,
        checkpoint_cfg=recipe.checkpoint,
        logging_cfg=recipe.logging,
        flops_per_token=flops_per_token(model_cfg, dm.seq_len, mlm_fraction=mlm_fraction),
        callbacks=callbacks,
        progress=progress,
    )
    return fit(trainer, module, dm, ctx, compile=tc.compile)


def _finish_wandb() -> None:
    """Close the W&B run, so the next run in this process (the demo, tests) gets its own."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()
