"""Tokenizer training, saving and identification, on real text (gensim's Lee corpus and a Bulgarian wiki slice)."""

from __future__ import annotations

import bz2
import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from data_prep.config import TokenizerConfig
from data_prep.errors import UserError
from data_prep.manifest import read_manifest, verify_checksums
from data_prep.tokenizer import (
    SPECIAL_TOKENS,
    TOKENIZER_FILE,
    check_same_tokenizer,
    load_tokenizer,
    save_tokenizer,
    tokenizer_info,
    train_tokenizer,
)


@pytest.fixture(scope="module")
def lee_lines(lee_corpus: Path) -> list[str]:
    lines = [line for line in lee_corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(lines) > 250
    return lines


@pytest.fixture(scope="module")
def bulgarian_text(bgwiki_dump: Path) -> str:
    """About 40 KB of a real Bulgarian Wikipedia dump (Cyrillic, markup, newlines, tabs)."""
    with bz2.open(bgwiki_dump, "rb") as f:
        raw = f.read(40_000)
    return raw.decode("utf-8", errors="ignore")


@pytest.fixture(scope="module")
def wordpiece(lee_lines: list[str]) -> Tokenizer:
    return train_tokenizer(
        iter(lee_lines), TokenizerConfig(kind="wordpiece", vocab_size=2000), length=len(lee_lines)
    )


@pytest.fixture(scope="module")
def wordpiece_cased(lee_lines: list[str]) -> Tokenizer:
    return train_tokenizer(
        iter(lee_lines), TokenizerConfig(kind="wordpiece", vocab_size=2000, lowercase=False)
    )


@pytest.fixture(scope="module")
def bpe(lee_lines: list[str], bulgarian_text: str) -> Tokenizer:
    texts = [*lee_lines, *bulgarian_text.splitlines()]
    return train_tokenizer(iter(texts), TokenizerConfig(kind="bpe", vocab_size=2000))


def test_wordpiece_special_ids_vocab_and_pair_template(wordpiece: Tokenizer) -> None:
    info = tokenizer_info(wordpiece)
    assert info["kind"] == "wordpiece"
    assert info["vocab_size"] == 2000
    assert info["special_tokens"] == SPECIAL_TOKENS["wordpiece"]
    assert info["special_ids"] == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
    enc = wordpiece.encode("The fire spread.", "Residents left.")
    assert enc.tokens[0] == "[CLS]" and enc.tokens.count("[SEP]") == 2 and enc.tokens[-1] == "[SEP]"
    first_sep = enc.tokens.index("[SEP]")
    assert set(enc.type_ids[: first_sep + 1]) == {0} and set(enc.type_ids[first_sep + 1 :]) == {1}
    assert wordpiece.encode("The fire", add_special_tokens=False).tokens == ["the", "fire"]
    assert any(t.startswith("##") for t in wordpiece.get_vocab())


def test_lowercase_option(wordpiece: Tokenizer, wordpiece_cased: Tokenizer) -> None:
    text = "Australian Prime Minister John Howard visited Sydney."
    lower = wordpiece.encode(text, add_special_tokens=False).tokens
    cased = wordpiece_cased.encode(text, add_special_tokens=False).tokens
    assert all(t == t.lower() for t in lower)
    assert "Sydney" in cased and "Australian" in cased
    assert tokenizer_info(wordpiece)["lowercase"] is True
    assert tokenizer_info(wordpiece_cased)["lowercase"] is False
    # Lowercasing strips accents too (bert-base-uncased); the cased tokenizer keeps them.
    assert wordpiece.normalizer.normalize_str("Café") == "cafe"
    assert wordpiece_cased.normalizer.normalize_str("Café") == "Café"


def test_bpe_is_lossless_on_real_unicode_text(
    bpe: Tokenizer, lee_lines: list[str], bulgarian_text: str
) -> None:
    info = tokenizer_info(bpe)
    assert info["kind"] == "bpe" and info["special_ids"] == {"eot": 0} and info["lowercase"] is False
    samples = [
        bulgarian_text,
        "\n".join(lee_lines[:20]),
        "  leading spaces, trailing\t\n",
        "Café naïve — 日本語 🎉 Ünïcödé\r\n\u00a0nbsp",
        "",
    ]
    for text in samples:
        ids = bpe.encode(text).ids
        assert bpe.decode(ids) == text
    # Byte-level: no unknown token exists, so unseen scripts still encode.
    assert bpe.encode("ⴀⴁⴂ 𝔘𝔫𝔦").ids


def test_saved_file_loads_in_transformers_with_same_ids(
    tmp_path: Path, wordpiece: Tokenizer, bpe: Tokenizer, lee_lines: list[str]
) -> None:
    from transformers import PreTrainedTokenizerFast

    for name, tok, kind in (("wp", wordpiece, "wordpiece"), ("bpe", bpe, "bpe")):
        path = save_tokenizer(tok, tmp_path / name, TokenizerConfig(kind=kind, vocab_size=2000))
        hf = PreTrainedTokenizerFast(tokenizer_file=str(path))
        for line in lee_lines[:25]:
            assert hf(line)["input_ids"] == tok.encode(line).ids
    hf = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "wp" / TOKENIZER_FILE))
    ids = hf("The fire spread.", "Residents left.")["input_ids"]
    assert ids[0] == 2 and ids[-1] == 3 and ids.count(3) == 2
    assert hf.convert_ids_to_tokens(ids)[:3] == ["[CLS]", "the", "fire"]


def test_vocab_too_small_fails_before_training() -> None:
    def never() -> object:
        raise AssertionError("texts read before the vocab size was checked")
        yield ""

    with pytest.raises(UserError, match="at least 6"):
        train_tokenizer(never(), TokenizerConfig(kind="wordpiece", vocab_size=5))
    with pytest.raises(UserError, match="at least 257"):
        train_tokenizer(never(), TokenizerConfig(kind="bpe", vocab_size=256))


def test_empty_input_is_an_error() -> None:
    with pytest.raises(UserError, match="no text"):
        train_tokenizer(iter([]), TokenizerConfig(kind="wordpiece", vocab_size=100))
    with pytest.raises(UserError, match="no text"):
        train_tokenizer(iter(["", "  \n"]), TokenizerConfig(kind="bpe", vocab_size=300))


def test_info_hash_stable_across_save_and_load(
    tmp_path: Path, wordpiece: Tokenizer, lee_corpus: Path
) -> None:
    cfg = TokenizerConfig(kind="wordpiece", vocab_size=2000)
    path = save_tokenizer(wordpiece, tmp_path / "tok", cfg, inputs=[str(lee_corpus)])
    assert path == tmp_path / "tok" / TOKENIZER_FILE
    info = tokenizer_info(wordpiece)
    assert tokenizer_info(path) == info
    assert tokenizer_info(tmp_path / "tok") == info
    assert tokenizer_info(load_tokenizer(path)) == info
    # A compact copy of the same tokenizer has other bytes but the same identity.
    load_tokenizer(path).save(str(tmp_path / "compact.json"), pretty=False)
    assert (tmp_path / "compact.json").read_bytes() != path.read_bytes()
    assert tokenizer_info(tmp_path / "compact.json")["sha256"] == info["sha256"]

    manifest = read_manifest(tmp_path / "tok", "tokenizer")
    assert manifest["tokenizer"] == info
    assert manifest["settings"]["vocab_size"] == 2000 and manifest["settings"]["kind"] == "wordpiece"
    assert manifest["inputs"][0]["bytes"] == lee_corpus.stat().st_size
    verify_checksums(tmp_path / "tok", manifest)


def test_info_recovered_from_file_alone(tmp_path: Path, wordpiece_cased: Tokenizer) -> None:
    path = save_tokenizer(wordpiece_cased, tmp_path, TokenizerConfig(kind="wordpiece", lowercase=False))
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["model"]["type"] == "WordPiece"
    info = tokenizer_info(path)
    assert info["kind"] == "wordpiece" and info["lowercase"] is False and info["special_ids"]["mask"] == 4


def test_check_same_tokenizer(wordpiece: Tokenizer, wordpiece_cased: Tokenizer, bpe: Tokenizer) -> None:
    a = tokenizer_info(wordpiece)
    check_same_tokenizer(a, tokenizer_info(wordpiece), "shards/")
    for other in (wordpiece_cased, bpe):
        b = tokenizer_info(other)
        with pytest.raises(UserError) as err:
            check_same_tokenizer(a, b, "runs/x/shards")
        msg = str(err.value)
        assert msg.startswith("runs/x/shards was built with tokenizer " + a["sha256"][:12])
        assert b["sha256"][:12] in msg and "rebuild the data" in msg


def test_load_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="missing.json"):
        load_tokenizer(tmp_path / "missing.json")
    with pytest.raises(UserError, match=f"no {TOKENIZER_FILE}"):
        load_tokenizer(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a tokenizer"}', encoding="utf-8")
    with pytest.raises(UserError, match="bad.json"):
        load_tokenizer(bad)
    with pytest.raises(UserError, match="bad.json"):
        tokenizer_info(bad)
