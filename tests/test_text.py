"""Cleaning and sentence splitting: the lossless join invariant, the split rules, and speed on real text."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep.text import clean_text, merge_short_sentences, split_sentences


def check_invariant(text: str) -> list[str]:
    """The contract the GPT packer and the BERT pair builder rely on."""
    pieces = split_sentences(text)
    assert "".join(pieces) == text
    if text.strip():
        assert all(p.strip() for p in pieces), pieces
    for piece in pieces[1:]:
        assert piece[0].isspace(), pieces
    return pieces


# --- clean_text ------------------------------------------------------------------------------------------


def test_clean_text_normalises_nfc() -> None:
    assert clean_text("Cafe\u0301") == "Café"  # combining accent composed


def test_clean_text_drops_control_chars_and_odd_spaces() -> None:
    raw = "a\x00b\x07c\u00a0d\te\u2003f\u3000g\ufeffh\u200bi"
    assert clean_text(raw) == "abc d e f ghi"


def test_clean_text_newlines_and_trailing_spaces() -> None:
    raw = "  Line one.  \r\nLine two.\t\n\n\n\n  \nPara two.\rEnd\u2028x  \n\n"
    assert clean_text(raw) == "Line one.\nLine two.\n\nPara two.\nEnd\nx"


def test_clean_text_keeps_cyrillic_and_is_idempotent() -> None:
    text = "Григорианският календар е въведен през 1582 г.\n\nТой поправя Юлианския календар."
    assert clean_text(text) == text
    assert clean_text(clean_text(" x \n\n\n y ")) == "x\n\n y"  # indentation is kept


# --- split_sentences: the rules --------------------------------------------------------------------------


def test_split_basic_and_leading_whitespace() -> None:
    pieces = check_invariant("Hello there. How are you? Fine! Thanks.")
    assert pieces == ["Hello there.", " How are you?", " Fine!", " Thanks."]


@pytest.mark.parametrize(
    "text",
    [
        "Mr. Smith met Mrs. Jones and Dr. Who.",
        "Prof. Brown lives on Baker St. London is big.",
        "Apples vs. Oranges is a debate.",
        "Fruit, e.g. Apples, i.e. Red ones, etc. Are tasty.",
        "Acme Inc. And Foo Ltd. Merged.",
        "Sammy Davis Jr. Sang.",
        "The U.S. Army landed.",
        "See Fig. 3 and No. 5 for approx. 20 cases.",
    ],
)
def test_split_does_not_break_after_abbreviations(text: str) -> None:
    assert check_invariant(text) == [text]


def test_split_initials() -> None:
    assert check_invariant("J. R. R. Tolkien wrote it. He was British.") == [
        "J. R. R. Tolkien wrote it.",
        " He was British.",
    ]


def test_split_decimals_and_numbers() -> None:
    text = "Pi is 3.14 roughly. The year 1582 was short. It cost 2.5 million."
    assert check_invariant(text) == [
        "Pi is 3.14 roughly.",
        " The year 1582 was short.",
        " It cost 2.5 million.",
    ]


def test_split_lowercase_continuation_is_not_a_boundary() -> None:
    assert check_invariant("Wait... what happened? nothing much.") == ["Wait... what happened? nothing much."]


def test_split_closing_quotes_and_brackets_stay_with_sentence() -> None:
    pieces = check_invariant(
        'He said "Stop." Then he left. (See above.) Next "one" came. \u201cQuoted.\u201d Done.'
    )
    assert pieces == [
        'He said "Stop."',
        " Then he left.",
        " (See above.)",
        ' Next "one" came.',
        " \u201cQuoted.\u201d",
        " Done.",
    ]


def test_split_at_newlines_and_paragraphs() -> None:
    text = "Title line\nFirst sentence. Second one.\n\nNew paragraph"
    assert check_invariant(text) == ["Title line", "\nFirst sentence.", " Second one.", "\n\nNew paragraph"]


def test_split_whitespace_edges() -> None:
    assert check_invariant("") == []
    assert check_invariant("   ") == ["   "]  # whitespace-only input: one piece, so the join still holds
    assert check_invariant("\n\nFoo. Bar.  \n ") == ["\n\nFoo.", " Bar.  \n "]
    assert check_invariant("Foo.   Bar.") == ["Foo.", "   Bar."]


def test_split_cyrillic() -> None:
    text = (
        "Григорианският календар е въведен през 1582 г. в Италия. Той поправя Юлианския календар! "
        "А. С. Пушкин е поет. — Здравей, каза той."
    )
    assert check_invariant(text) == [
        "Григорианският календар е въведен през 1582 г. в Италия.",
        " Той поправя Юлианския календар!",
        " А. С. Пушкин е поет.",
        " — Здравей, каза той.",
    ]


def test_merge_short_sentences_keeps_join() -> None:
    pieces = ["Ok.", " This is a long sentence.", " Yes.", " Another long sentence here.", " No."]
    merged = merge_short_sentences(pieces, 10)
    assert "".join(merged) == "".join(pieces)
    assert merged == ["Ok. This is a long sentence. Yes.", " Another long sentence here. No."]
    assert merge_short_sentences(["a", " b"], 10) == ["a b"]
    assert merge_short_sentences(pieces, 1) == pieces


# --- split_sentences: properties and real text -----------------------------------------------------------

_ALPHABET = list("abcXYZ019 .,!?\"'()[]«»\n\t\u00a0") + ["Mr.", "e.g.", "3.14", "Жа", "жа", "\u201d", "  "]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_ALPHABET), max_size=60).map("".join))
def test_split_invariant_property_on_sentence_like_text(text: str) -> None:
    check_invariant(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_split_invariant_property_on_any_text(text: str) -> None:
    check_invariant(text)


def test_split_real_corpus_is_lossless_and_fast(lee_corpus: Path) -> None:
    text = clean_text(lee_corpus.read_text(encoding="utf-8") * 5)
    start = time.perf_counter()
    pieces = check_invariant(text)
    elapsed = time.perf_counter() - start
    mb = len(text.encode()) / 1e6
    assert mb / elapsed > 1.0, f"{mb / elapsed:.2f} MB/s"
    # 1500 news documents average well over one sentence each
    assert len(pieces) > 5 * text.count("\n")
