"""Training, saving and identifying the tokenizer (``tokenizers`` library, ``tokenizer.json`` format).

Two kinds, matching the two model families:

* ``wordpiece`` (BERT): BERT normalizer and pre-tokenizer, ``##`` continuation pieces, special tokens
  ``[PAD] [UNK] [CLS] [SEP] [MASK]`` at ids 0..4, and a post-processor that adds ``[CLS] A [SEP] B [SEP]``.
* ``bpe`` (GPT): byte-level BPE with the 256-byte alphabet, ``<|endoftext|>`` at id 0, no normalizer and no
  post-processor, so ``decode(encode(text)) == text`` for any text (nothing is lost, nothing is added).

Everything later stages need to know (kind, lowercase, special ids, a hash) is recovered from the
``tokenizer.json`` file alone by :func:`tokenizer_info`, so a tokenizer trained elsewhere (``TokenizerConfig.path``)
is described the same way as one trained here. The hash is over the canonical ``Tokenizer.to_str()`` form, not
the file's bytes, so pretty-printed and compact copies of the same tokenizer compare equal.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from data_prep.config import TokenizerConfig
from data_prep.errors import UserError
from data_prep.manifest import file_entry, input_entries, write_manifest

SPECIAL_TOKENS: dict[str, dict[str, str]] = {
    "wordpiece": {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"},
    "bpe": {"eot": "<|endoftext|>"},
}
"""Special tokens by kind; the trainer gives them ids 0, 1, ... in this order."""

TOKENIZER_FILE = "tokenizer.json"

_BYTE_ALPHABET = 256
_MODEL_KINDS = {"WordPiece": "wordpiece", "BPE": "bpe"}


def min_vocab_size(kind: str) -> int:
    """Smallest useful ``vocab_size``: the specials plus one piece (wordpiece) or plus all 256 bytes (bpe)."""
    if kind == "wordpiece":
        return len(SPECIAL_TOKENS["wordpiece"]) + 1
    if kind == "bpe":
        return _BYTE_ALPHABET + len(SPECIAL_TOKENS["bpe"])
    raise UserError(f"tokenizer kind {kind!r} is not one of 'wordpiece', 'bpe'")


def _build(cfg: TokenizerConfig) -> tuple[Tokenizer, trainers.Trainer]:
    """An untrained tokenizer and its trainer, wired as described in the module docstring."""
    specials = list(SPECIAL_TOKENS[cfg.kind].values())
    if cfg.kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=SPECIAL_TOKENS["wordpiece"]["unk"]))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=cfg.lowercase, lowercase=cfg.lowercase
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(
            vocab_size=cfg.vocab_size,
            min_frequency=cfg.min_frequency,
            special_tokens=specials,
            continuing_subword_prefix="##",
            show_progress=sys.stderr.isatty(),
        )
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=cfg.vocab_size,
            min_frequency=cfg.min_frequency,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=sys.stderr.isatty(),
        )
    return tok, trainer


def _bert_post_processor(tok: Tokenizer) -> processors.TemplateProcessing:
    cls, sep = SPECIAL_TOKENS["wordpiece"]["cls"], SPECIAL_TOKENS["wordpiece"]["sep"]
    return processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))],
    )


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig, length: int | None = None) -> Tokenizer:
    """Train a new tokenizer on ``texts`` (streamed; ``length`` only sizes the progress bar).

    ``cfg.lowercase`` applies to wordpiece only: byte-level BPE must stay lossless.
    """
    minimum = min_vocab_size(cfg.kind)
    if cfg.vocab_size < minimum:
        what = "special tokens + 1" if cfg.kind == "wordpiece" else "256 bytes + special tokens"
        raise UserError(
            f"tokenizer vocab_size {cfg.vocab_size} is too small for {cfg.kind}: at least {minimum} ({what})"
        )
    tok, trainer = _build(cfg)
    seen = 0

    def counted() -> Iterator[str]:
        # The trainer accepts an empty stream and returns a vocabulary of specials only; catch that here.
        nonlocal seen
        for text in texts:
            if text and not text.isspace():
                seen += 1
            yield text

    tok.train_from_iterator(counted(), trainer, length=length)
    if seen == 0:
        raise UserError("no text to train the tokenizer on (the input gave no non-blank text)")
    if cfg.kind == "wordpiece":
        tok.post_processor = _bert_post_processor(tok)
    return tok


def save_tokenizer(
    tok: Tokenizer, out_dir: str | Path, cfg: TokenizerConfig, inputs: list[str] | None = None
) -> Path:
    """Write ``out_dir/tokenizer.json`` and its ``manifest.json`` (stage ``tokenizer``); returns the json path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / TOKENIZER_FILE
    tmp = path.with_suffix(".json.tmp")
    tok.save(str(tmp), pretty=True)
    tmp.replace(path)
    recorded = []
    for p in inputs or []:
        recorded.extend(input_entries([p]) if Path(p).exists() else [{"path": str(p)}])
    write_manifest(
        out_dir,
        "tokenizer",
        settings=asdict(cfg),
        tokenizer=tokenizer_info(tok),
        inputs=recorded,
        files=[file_entry(path, out_dir)],
    )
    return path


def tokenizer_path(path: str | Path) -> Path:
    """The ``tokenizer.json`` that ``path`` names: the file itself, or the one inside a folder."""
    path = Path(path)
    return path / TOKENIZER_FILE if path.is_dir() else path


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a ``tokenizer.json`` file, or the one in a folder; a ``UserError`` names the path on failure."""
    file = tokenizer_path(path)
    if not file.is_file():
        where = (
            f"{path}: no {TOKENIZER_FILE} in this folder"
            if Path(path).is_dir()
            else f"{path}: file not found"
        )
        raise UserError(f"{where} (expected a tokenizer.json or a folder holding one)")
    try:
        return Tokenizer.from_file(str(file))
    except Exception as exc:  # the Rust side raises plain Exception with a parse message
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{file}: not a readable tokenizer.json ({first})") from None


def _lowercases(normalizer: Any) -> bool:
    """Whether a serialized normalizer (possibly a ``Sequence``) lowercases."""
    if not isinstance(normalizer, dict):
        return False
    kind = normalizer.get("type")
    if kind == "BertNormalizer":
        return bool(normalizer.get("lowercase"))
    if kind == "Lowercase":
        return True
    if kind == "Sequence":
        return any(_lowercases(n) for n in normalizer.get("normalizers", []))
    return False


def tokenizer_info(path_or_tok: str | Path | Tokenizer) -> dict[str, Any]:
    """What a manifest records about a tokenizer: kind, vocab size, special tokens and ids, lowercase, hash."""
    tok = path_or_tok if isinstance(path_or_tok, Tokenizer) else load_tokenizer(path_or_tok)
    where = "tokenizer" if isinstance(path_or_tok, Tokenizer) else str(tokenizer_path(path_or_tok))
    text = tok.to_str()
    data = json.loads(text)
    model_type = (data.get("model") or {}).get("type")
    kind = _MODEL_KINDS.get(model_type)
    if kind is None:
        raise UserError(f"{where}: model type {model_type!r} is not supported (WordPiece or BPE)")
    specials = SPECIAL_TOKENS[kind]
    ids: dict[str, int] = {}
    for name, token in specials.items():
        token_id = tok.token_to_id(token)
        if token_id is None:
            raise UserError(f"{where}: {kind} tokenizer lacks the special token {token} ({name})")
        ids[name] = token_id
    return {
        "kind": kind,
        "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        "special_tokens": dict(specials),
        "special_ids": ids,
        "lowercase": _lowercases(data.get("normalizer")),
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
    }


def _describe(info: dict[str, Any]) -> str:
    return f"{info['sha256'][:12]} ({info.get('kind')}, vocab {info.get('vocab_size')})"


def check_same_tokenizer(expected: dict[str, Any], actual: dict[str, Any], where: str) -> None:
    """Refuse to mix data built with one tokenizer and a different tokenizer (ids would silently mean other words)."""
    if expected.get("sha256") != actual.get("sha256"):
        raise UserError(
            f"{where} was built with tokenizer {_describe(expected)} but tokenizer {_describe(actual)} was given; "
            "rebuild the data or pass the matching tokenizer"
        )
