"""Fine-tuning recipes (``recipes/finetune/*.yaml``): the task, its data, and the sections pretraining uses.

Training runs by epochs (``task.epochs``), validating at the end of each one; the best checkpoint by
``task.metric`` is kept as ``RUN/best.ckpt`` and released to ``RUN/release``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.config import CheckpointConfig, LoggingConfig, OptimConfig, TrainerConfig

TaskType = Literal["classification", "regression", "token_classification", "qa", "lm"]
DataFormat = Literal["auto", "csv", "tsv", "jsonl", "fasttext", "conll", "squad", "text", "hf"]

# The metric that picks the best checkpoint when ``task.metric`` is empty, and whether higher is better.
DEFAULT_METRIC = {
    "classification": "accuracy",
    "regression": "pearson",
    "token_classification": "entity_f1",
    "qa": "f1",
    "lm": "loss",
}
LOWER_IS_BETTER = {"loss", "mse", "ppl"}


@dataclass
class TaskConfig:
    """What to predict, how long to train, and which metric picks the best checkpoint."""

    type: TaskType = "classification"
    """``classification`` (one or two texts -> a label), ``regression`` (-> a number, STS-B),
    ``token_classification`` (a label per word, NER), ``qa`` (SQuAD v1.1 answer spans, BERT) or ``lm``
    (GPT: causal LM on text)."""
    labels: list[str] = field(default_factory=list)
    """Class names in index order (classification, NER tags); empty = the sorted labels seen in training data."""
    epochs: int = 3
    """Passes over the training data; validation runs after each."""
    metric: str = ""
    """Validation metric that picks the best checkpoint (``accuracy``, ``f1``, ``mcc``, ``pearson``,
    ``spearman``, ``entity_f1``, ``exact_match``, ``loss``, ...); empty = the task's usual one."""
    classifier_dropout: float = 0.1
    """Dropout on the pooled / token features before the task head."""


@dataclass
class FinetuneDataConfig:
    """Where the task's examples are and how to read them."""

    train: str
    """Training file (CSV/TSV/JSONL/fastText/CoNLL/SQuAD JSON/text), a ``save_to_disk`` folder (``FOLDER`` or
    ``FOLDER:SPLIT``), or ``pkg:NAME/path`` inside an installed package."""
    validation: str | None = None
    """Validation file; ``None`` = hold out ``holdout`` examples of ``train`` (stratified, seeded)."""
    test: str | None = None
    """Optional extra split to predict (labels not needed, e.g. GLUE's unlabeled test.tsv)."""
    format: DataFormat = "auto"
    """File format; ``auto`` = from the extension (``.csv .tsv .jsonl .json .conll .txt``)."""
    text_column: str = "sentence"
    """Column (CSV/TSV header name, JSON key; a 0-based index as text without a header) of the first text."""
    text_pair_column: str | None = None
    """Column of the second text of sentence-pair tasks (MNLI, MRPC, ...); ``None`` = single sentence."""
    label_column: str = "label"
    """Column of the label (class name or number)."""
    has_header: bool = True
    """CSV/TSV: the first row names the columns (GLUE's CoLA files have none: use indexes as column names)."""
    skip_bad_rows: bool = False
    """CSV/TSV: skip rows with too few fields instead of failing (GLUE's QQP train.tsv has a few)."""
    holdout: int = 0
    """Examples of ``train`` to hold out as validation when ``validation`` is ``None``."""
    holdout_seed: int = 0
    """Seed of the stratified hold-out split (fixed: the same split on every machine)."""
    holdout_fold: int | None = None
    """k-fold cross-validation: hold out fold ``holdout_fold`` (0-based) of the ``len(train) // holdout``
    stratified folds of ``holdout_seed``'s order; ``None`` = a stratified sample of ``holdout`` examples."""
    max_seq_len: int = 128
    """Tokens per input, special tokens included; longer inputs are truncated (QA: split into windows)."""
    doc_stride: int = 128
    """QA: distance in tokens between the starts of consecutive windows over a long context."""
    max_query_len: int = 64
    """QA: questions are truncated to this many tokens."""
    max_answer_len: int = 30
    """QA: longest answer span, in tokens, that post-processing considers."""
    num_workers: int = 0
    """DataLoader worker processes."""


@dataclass
class FinetuneRecipe:
    """A fine-tuning run (``recipes/finetune/<task>.yaml``) started from a release or Hugging Face folder."""

    run_dir: str
    """Run folder: checkpoints, ``best.ckpt``, ``release/``, ``predictions/``, ``metrics.csv``, W&B."""
    data: FinetuneDataConfig
    """The task's data."""
    task: TaskConfig = field(default_factory=TaskConfig)
    """Task type, labels, epochs, metric."""
    checkpoint_path: str | None = None
    """Pretrained model to start from (release folder or HF folder); ``--checkpoint`` overrides it;
    ``scratch:MODEL`` (e.g. ``scratch:bert-tiny``) starts from random weights (baselines) with the tokenizer
    given by ``tokenizer``."""
    tokenizer: str | None = None
    """``tokenizer.json`` (or a folder holding one) for ``scratch:`` starts; default: the checkpoint's."""
    model_overrides: dict[str, Any] = field(default_factory=dict)
    """Model config fields to change for fine-tuning, e.g. ``{hidden_dropout: 0.1}`` (not sizes)."""
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=5e-5, warmup_steps=0, weight_decay=0.01)
    )
    """Optimiser and schedule (the schedule spans all epochs; ``warmup_steps`` counts optimiser steps)."""
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(
            global_batch_size=32, micro_batch_size=32, val_every_n_steps=0, log_every_n_steps=10
        )
    )
    """Batches, precision, strategy, seed. ``max_steps``, ``val_every_n_steps`` and ``val_batches`` are ignored:
    ``task.epochs`` decides the length, and the whole validation split is scored at the end of every epoch."""
    checkpoint: CheckpointConfig = field(
        default_factory=lambda: CheckpointConfig(every_n_steps=1000, keep_last=1)
    )
    """Step checkpoints for ``--resume auto`` (the best checkpoint is kept separately)."""
    logging: LoggingConfig = field(default_factory=lambda: LoggingConfig(project="bertgpt-finetune"))
    """W&B."""
