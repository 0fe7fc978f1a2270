"""Settings of the data-prep stages, one dataclass per stage; a data recipe (``recipes/data/*.yaml``) holds them all.

Each field has its docstring right under it. The command-line subcommands take the same names as flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SourceFormat = Literal["auto", "text", "jsonl", "wiki", "hf"]
TokenizerKind = Literal["wordpiece", "bpe"]


@dataclass
class SourceConfig:
    """Where the raw text comes from, and how documents are cleaned and split into sentences."""

    inputs: list[str] = field(default_factory=list)
    """Input files or folders. ``pkg:NAME/rel/path`` resolves a file inside an installed package (the demo's corpus)."""
    format: SourceFormat = "auto"
    """``text`` (documents separated by blank lines), ``jsonl``, ``wiki`` (XML dump, ``.xml`` or ``.xml.bz2``),
    ``hf`` (a ``datasets`` folder saved with ``save_to_disk``), or ``auto`` to detect it from each path."""
    text_field: str = "text"
    """JSONL and ``datasets`` sources: the field that holds a document's text."""
    one_doc_per_line: bool = False
    """Text sources: treat every non-empty line as a document instead of splitting on blank lines."""
    max_line_bytes: int = 10_000_000
    """Text and JSONL sources: longer lines are skipped and counted in the manifest (memory stays bounded)."""
    min_sentence_chars: int = 1
    """Sentences shorter than this (after cleaning) are merged into their neighbour."""
    min_document_chars: int = 1
    """Documents shorter than this after cleaning are skipped and counted."""


@dataclass
class TokenizerConfig:
    """Training a tokenizer with the ``tokenizers`` library."""

    kind: TokenizerKind = "wordpiece"
    """``wordpiece`` for BERT (``[PAD] [UNK] [CLS] [SEP] [MASK]``) or ``bpe`` (byte-level) for GPT (``<|endoftext|>``)."""
    vocab_size: int = 30522
    """Target vocabulary size, special tokens included."""
    lowercase: bool = True
    """WordPiece only: lowercase and strip accents (``bert-base-uncased`` style)."""
    min_frequency: int = 2
    """Merges/pieces seen fewer times than this are not learned."""
    path: str | None = None
    """Use this existing ``tokenizer.json`` (or folder holding one) instead of training a new one."""


@dataclass
class ShardConfig:
    """Tokenizing documents into memory-mapped shards with a document and sentence index."""

    valid_fraction: float = 0.01
    """Fraction of documents held out for validation (chosen by document, deterministic by ``seed``)."""
    shard_tokens: int = 50_000_000
    """A shard is closed once it holds this many tokens; memory is bounded by this, not by the corpus."""
    workers: int = 0
    """Tokenizer processes; 0 means one per CPU core."""
    batch_documents: int = 256
    """Documents per unit of work sent to a tokenizer process."""
    seed: int = 1234
    """Seed of the train/validation split."""


@dataclass
class MaskingConfig:
    """The masked-LM rule (used statically in data prep or dynamically by the loader)."""

    mlm_probability: float = 0.15
    """Fraction of non-special tokens selected for prediction."""
    max_predictions_per_seq: int = 20
    """At most this many predictions per sequence (at least one is always chosen)."""
    mask_token_prob: float = 0.8
    """Of the selected tokens, the fraction replaced with ``[MASK]``."""
    random_token_prob: float = 0.1
    """Of the selected tokens, the fraction replaced with a random non-special token (the rest are kept)."""
    whole_word: bool = False
    """Select whole words: a ``##`` continuation piece is masked together with the piece that starts its word."""


@dataclass
class BertInstanceConfig:
    """BERT pretraining instances ``[CLS] A [SEP] B [SEP]``, following Google's ``create_pretraining_data.py``."""

    max_seq_len: int = 128
    """Length of every instance, special tokens included (the target length is ``max_seq_len - 3``)."""
    short_seq_prob: float = 0.1
    """Probability of using a random shorter target length, so the model also sees short inputs."""
    dupe_factor: int = 1
    """Passes over the corpus, each with different pairs (and different masks when masking statically)."""
    static_masking: bool = False
    """Mask in data prep (Google's way, ``dupe_factor`` copies); otherwise the loader masks dynamically (RoBERTa)."""
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    """The masking rule: stored in the manifest and used by the loader for dynamic masking."""
    seed: int = 12345
    """Seed of pair building and static masking."""


@dataclass
class GptPackingConfig:
    """GPT windows: documents joined by the end-of-text token, cut into fixed-length windows with no padding."""

    seq_len: int = 1024
    """Tokens per training window (the labels are the same window shifted by one)."""


@dataclass
class DataRecipe:
    """A whole data-prep chain (``python -m data_prep run recipes/data/NAME.yaml``)."""

    out_dir: str
    """Folder for everything this recipe writes: ``documents/``, ``tokenizer/``, ``shards/``, ``bert/`` or ``gpt/``."""
    source: SourceConfig = field(default_factory=SourceConfig)
    """Raw text sources, cleaning and sentence splitting."""
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    """The tokenizer to train (or reuse)."""
    shards: ShardConfig = field(default_factory=ShardConfig)
    """Tokenize-to-shards settings and the train/validation split."""
    bert: BertInstanceConfig | None = None
    """Build BERT instances from the shards (omit for GPT data)."""
    gpt: GptPackingConfig | None = None
    """Pack GPT windows from the shards (omit for BERT data)."""
