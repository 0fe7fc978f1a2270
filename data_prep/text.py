"""Cleaning raw text and splitting it into sentences.

Both functions are rule-based and dependency-free so that extraction is reproducible and fast on any machine
(no model downloads, no nltk data). ``split_sentences`` is lossless: the pieces join back to the exact input,
which lets the GPT packer rebuild documents byte-for-byte while the BERT pair builder strips the pieces.
"""

from __future__ import annotations

import re
import unicodedata

# Control characters (C0, DEL, C1) other than \t and \n are dropped; the BOM and zero-width space as well,
# because they are invisible and only fragment tokens. Odd spaces become a plain space.
_NEWLINES = {"\r\n": "\n", "\r": "\n", "\x85": "\n", "\u2028": "\n", "\u2029": "\n\n"}
_NEWLINE_RE = re.compile("|".join(map(re.escape, _NEWLINES)))
_DROP_RE = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f\ufeff\u200b]+")
_SPACE_RE = re.compile("[\t\v\f\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_TRAILING_SPACES = re.compile(r" +(?=\n)")
_MANY_NEWLINES = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    """Normalise a document so that equal text gives equal tokens and invisible junk never reaches the model.

    NFC normalisation; ``\\r\\n``/``\\r`` and Unicode line separators become ``\\n``; control characters other
    than newline are dropped; tabs and odd spaces (no-break, em, ideographic...) become ``" "``; spaces at
    line ends are removed; three or more newlines become two (a paragraph break); both ends are stripped.
    """
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    if "\r" in text or not text.isascii():
        text = _NEWLINE_RE.sub(lambda m: _NEWLINES[m.group()], text)
    # Regex scans run in C and are much faster than str.translate with a dict when hits are rare.
    text = _SPACE_RE.sub(" ", _DROP_RE.sub("", text))
    if " \n" in text:
        text = _TRAILING_SPACES.sub("", text)
    if "\n\n\n" in text:
        text = _MANY_NEWLINES.sub("\n\n", text)
    return text.strip()


# Abbreviations after which a full stop does not end a sentence (compared lowercased, without the last dot).
_ABBREVIATION_WORDS = """
    mr mrs ms dr prof st vs etc inc ltd jr sr fig figs approx co corp dept est mt gen col lt sgt
    capt rev hon gov sen rep jan feb mar apr jun jul aug sep sept oct nov dec cf al ed eds vol vols
    pp ca resp e.g i.e u.s u.k a.m p.m u.s.a ph.d
"""
ABBREVIATIONS = frozenset(_ABBREVIATION_WORDS.split())
# "No." is only an abbreviation before a number ("No. 5"); "He said no. Then..." ends a sentence.
_BEFORE_NUMBER = frozenset({"no", "nos", "nr", "p"})
_OPENERS = "\"'“‘«„‚([{¿¡—–"
_CLOSERS = "\"'”’»)]}"
# Candidates only: sentence punctuation then same-line spaces, or any whitespace run holding a newline.
# Both must be followed by a non-space character, so a piece never ends up whitespace-only.
_CANDIDATE = re.compile(
    r"(?P<punct>[.!?…‽]+)(?P<close>[" + re.escape(_CLOSERS) + r"]*)(?P<ws>[^\S\n]+)(?=\S)"
    r"|(?P<nl>[^\S\n]*\n\s*)(?=\S)"
)
_DOTTED = re.compile(r"^(?:[^\W\d_]{1,2}\.)+[^\W\d_]{1,2}$")  # U.S, e.g, т.е (the last dot is not included)


def _starts_sentence(ch: str) -> bool:
    """Could ``ch`` begin a new sentence? Uppercase/titlecase (any script), digit, opener, or uncased letter."""
    if ch.isupper() or ch.istitle() or ch.isdigit() or ch in _OPENERS:
        return True
    return ch.isalpha() and not ch.islower()  # scripts without case (Arabic, Devanagari, CJK...)


def _is_abbreviation(text: str, dot: int, next_char: str) -> bool:
    """Is the ``.`` at index ``dot`` the end of an abbreviation or an initial rather than of a sentence?"""
    start = dot
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    word = text[start:dot].lstrip(_OPENERS)
    if not word:
        return False
    low = word.lower()
    if low in _BEFORE_NUMBER and next_char.isdigit():
        return True
    if len(word) == 1:
        return word.isupper()  # an initial: "J. R. R. Tolkien", "А. С. Пушкин"
    if low in ABBREVIATIONS:
        return True
    return bool(_DOTTED.match(word))


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences such that ``"".join(pieces) == text`` exactly.

    Each piece after the first begins with the whitespace that preceded it (GPT-2 style ``" Word"``), and no
    piece is whitespace-only: trailing whitespace stays on the last piece. Boundaries are newlines and
    ``. ! ?`` (with optional closing quotes/brackets) followed by spaces and a character that can start a
    sentence, except after common abbreviations, single-letter initials and dotted acronyms. Decimals like
    ``3.14`` never split because no space follows the dot. Whitespace-only input is returned as one piece
    (``[]`` for ``""``) so that the join invariant always holds.
    """
    if not text:
        return []
    pieces: list[str] = []
    last = 0
    for m in _CANDIDATE.finditer(text):
        if m.group("nl") is not None:
            cut = m.start("nl")
        else:
            cut = m.start("ws")
            next_char = text[m.end()]
            if not _starts_sentence(next_char):
                continue
            punct = m.group("punct")
            if punct == "." and not m.group("close") and _is_abbreviation(text, m.start("punct"), next_char):
                continue
        if cut > last:
            pieces.append(text[last:cut])
            last = cut
    pieces.append(text[last:])
    if len(pieces) > 1 and not pieces[0].strip():
        # Leading whitespace (only possible when the text starts with it) goes with the first sentence.
        pieces[1] = pieces[0] + pieces[1]
        del pieces[0]
    return pieces


def merge_short_sentences(pieces: list[str], min_chars: int) -> list[str]:
    """Merge pieces whose stripped length is below ``min_chars`` into the previous one (the first into the next).

    Keeps ``"".join`` unchanged, so the lossless invariant of :func:`split_sentences` still holds.
    """
    if min_chars <= 1 or len(pieces) <= 1:
        return list(pieces)
    out: list[str] = []
    carry = ""  # short leading pieces waiting for a following piece
    for piece in pieces:
        if len(piece.strip()) < min_chars:
            if out:
                out[-1] += piece
            else:
                carry += piece
            continue
        out.append(carry + piece)
        carry = ""
    if carry:  # every piece was short: keep them together as one
        out.append(carry)
    return out
