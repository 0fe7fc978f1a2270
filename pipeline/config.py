"""Pretraining recipes (``recipes/*.yaml``): one dataclass per section, a docstring under every field.

``python -m pipeline pretrain --config recipes/bert-tiny.yaml trainer.max_steps=50`` loads the file into
``PretrainRecipe`` (unknown keys are errors naming the key and the file), applies the overrides and saves the
resolved recipe beside every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Precision = Literal["32", "bf16-mixed", "16-mixed", "bf16-true"]


@dataclass
class DataConfig:
    """The data-prep output the run trains on."""

    path: str
    """A ``bert`` or ``gpt`` folder written by ``python -m data_prep`` (it holds ``manifest.json``)."""
    dynamic_masking: bool | None = None
    """BERT: mask in the loader (RoBERTa). ``None`` = dynamic unless the data was masked statically."""
    seed: int = 1234
    """Seed of the shuffling order and of dynamic masking (per sample: seed, epoch, index)."""
    num_workers: int = 0
    """DataLoader worker processes per rank (0 = load in the training process)."""
    valid_split: str = "valid"
    """Split used for validation."""


@dataclass
class OptimConfig:
    """Optimiser, learning-rate schedule and clipping."""

    name: Literal["adamw", "lamb"] = "adamw"
    """``adamw`` (torch) or ``lamb`` (layer-wise adaptive, for very large batches)."""
    lr: float = 1e-4
    """Peak learning rate, reached at the end of warmup."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """Adam betas."""
    eps: float = 1e-6
    """Adam epsilon."""
    weight_decay: float = 0.01
    """Decoupled weight decay; never applied to biases, LayerNorm weights or embeddings' norms."""
    warmup_steps: int = 100
    """Linear warmup from 0 to ``lr`` over this many optimiser steps."""
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    """Decay after warmup, down to ``min_lr_ratio * lr`` at ``trainer.max_steps``."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of ``lr``."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 = no clipping)."""


@dataclass
class TrainerConfig:
    """Steps, batch sizes, precision and the distributed strategy."""

    max_steps: int = 1000
    """Optimiser steps to train for."""
    global_batch_size: int = 32
    """Sequences per optimiser step across all ranks; gradient accumulation is derived from it."""
    micro_batch_size: int = 8
    """Sequences per forward/backward on one rank."""
    precision: Precision = "32"
    """``32``, ``bf16-mixed`` or ``16-mixed`` (loss scaling), or ``bf16-true``."""
    strategy: Literal["auto", "single", "ddp", "deepspeed"] = "auto"
    """``deepspeed`` (ZeRO), ``ddp``, ``single`` (one device), or ``auto`` (single on one device, else ddp)."""
    zero_stage: Literal[1, 2, 3] = 2
    """DeepSpeed ZeRO stage: 1 shards optimiser states, 2 also gradients, 3 also parameters."""
    offload_optimizer: bool = False
    """DeepSpeed: keep optimiser states in CPU memory."""
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    """Where to train; ``auto`` picks the GPU when there is one."""
    devices: int = 1
    """Processes (GPUs, or CPU processes) per node. Under Slurm the allocation decides."""
    num_nodes: int = 1
    """Nodes. Under Slurm the allocation decides."""
    val_every_n_steps: int = 200
    """Validate every this many optimiser steps (0 = never)."""
    val_batches: int = 20
    """Validation micro-batches per rank each time."""
    log_every_n_steps: int = 10
    """Log training metrics every this many optimiser steps."""
    seed: int = 1234
    """Seed of initialisation and dropout."""
    process_group_timeout_s: int = 600
    """A collective that waits longer than this fails the job instead of hanging (a dead rank)."""
    compile: bool = False
    """``torch.compile`` the model (worth it on GPUs for long runs)."""


@dataclass
class CheckpointConfig:
    """When checkpoints are written and how many are kept."""

    every_n_steps: int = 500
    """Write a checkpoint every this many optimiser steps (and at the end)."""
    keep_last: int = 3
    """Keep this many most recent checkpoints (older ones are deleted)."""


@dataclass
class LoggingConfig:
    """Weights & Biases and throughput logging."""

    wandb: bool = True
    """Log to W&B (offline automatically when no API key is set; ``wandb sync`` uploads later)."""
    project: str = "bertgpt-pretrain"
    """W&B project."""
    entity: str | None = None
    """W&B entity (team or user); ``None`` = your default."""
    name: str | None = None
    """Run name; ``None`` = the run folder's name."""
    tags: list[str] = field(default_factory=list)
    """W&B tags."""
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    """``auto`` = online when ``WANDB_API_KEY`` is set (or you are logged in), else offline."""
    peak_flops: float | None = None
    """Peak FLOP/s of one device for MFU; ``None`` = look it up from the device name (measured on the CPU)."""


@dataclass
class PretrainRecipe:
    """A pretraining run (``recipes/<name>.yaml``)."""

    run_dir: str
    """Folder of the run: checkpoints, ``metrics.csv``, the resolved recipe and the W&B folder."""
    data: DataConfig
    """The data to train on."""
    model: str = "bert-tiny"
    """A named size from ``recipes/models/`` (``bert-base``, ``gpt2-small``, ...) or a path to a model YAML."""
    model_overrides: dict[str, Any] = field(default_factory=dict)
    """Fields of the model config to change, e.g. ``{vocab_size: 8000, hidden_dropout: 0.0}``."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimiser and schedule."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """Steps, batches, precision, strategy."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpointing."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """W&B and throughput."""
