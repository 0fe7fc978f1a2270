"""Sequence-to-sequence recipes (``recipes/seq2seq/*.yaml``): data, model, decoding, and the shared sections.

``python -m pipeline seq2seq --config recipes/seq2seq/attention-tiny.yaml trainer.max_steps=50``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.config import CheckpointConfig, LoggingConfig, OptimConfig, TrainerConfig
from pipeline.denoise import NoiseConfig
from pipeline.models.seq2seq_config import Seq2SeqModelConfig


@dataclass
class Seq2SeqDataConfig:
    """Sentence pairs: denoising pairs built from a data-prep corpus (default), or a parallel TSV file."""

    path: str | None = None
    """A data-prep ``shards`` folder, or a ``gpt`` folder (its manifest names the shards it was packed from):
    each sentence becomes one pair (corrupted copy -> sentence). Ignored when ``tsv`` is given."""
    tsv: str | None = None
    """A parallel corpus: one ``source<TAB>target`` pair per line (UTF-8), tokenized with ``tokenizer``."""
    valid_tsv: str | None = None
    """Validation pairs for ``tsv``; ``None`` = the last ``valid_fraction`` of ``tsv``."""
    tokenizer: str | None = None
    """``tokenizer.json`` (or its folder) for ``tsv``; ``None`` = the one in the folder of ``path``."""
    valid_fraction: float = 0.05
    """Share of ``tsv`` held out for validation when there is no ``valid_tsv``."""
    min_tokens: int = 4
    """Denoising: sentences shorter than this many tokens are skipped."""
    max_tokens: int = 48
    """Longest source or target kept (longer sentences are skipped; TSV pairs are cut)."""
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    """Denoising: how the source copy is corrupted."""
    seed: int = 1234
    """Seed of the shuffling order and of the corruption (per sample: seed, epoch, index)."""


@dataclass
class DecodeConfig:
    """Decoding at validation time and in ``pipeline attention``."""

    beam_size: int = 1
    """1 = greedy; more = beam search."""
    max_len: int = 64
    """Longest output in tokens."""
    length_penalty: float = 0.0
    """Beam search: divide a hypothesis' log-probability by length^this (0 = plain sum)."""
    eval_batches: int = 1
    """Validation micro-batches that are also decoded, for ``val/exact_match`` (0 = none)."""


@dataclass
class Seq2SeqRecipe:
    """A sequence-to-sequence run (``recipes/seq2seq/<name>.yaml``)."""

    run_dir: str
    """Folder of the run: checkpoints, ``metrics.csv``, the resolved recipe and the W&B folder."""
    data: Seq2SeqDataConfig
    """The pairs to train on."""
    model: Seq2SeqModelConfig = field(default_factory=Seq2SeqModelConfig)
    """The encoder-decoder (RNN with or without attention, or Transformer)."""
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    """Greedy or beam decoding."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimiser and schedule."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """Steps, batches, precision, strategy."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpointing."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """W&B and throughput."""
