"""BERT next-sentence-prediction instances ``[CLS] A [SEP] B [SEP]`` (Devlin et al., 2019, section 3.1).

A faithful port of ``create_instances_from_document`` and ``truncate_seq_pair`` from Google's
``create_pretraining_data.py`` (google-research/bert): the same rules and the same sequence of calls to a
``random.Random``, so the same seed builds the same pairs as Google's script on the same sentences. Tokens
are numpy int arrays and sentences are joined with ``np.concatenate``; no step loops over tokens except the
truncation, which draws one random number per removed token as Google does.

Two deliberate differences, both only where Google's script would misbehave:

* Google tries 10 times to draw a random document other than the current one and then uses whatever it
  drew, which can label a true continuation as random; here, after 10 failed tries, another document is
  drawn from the others directly. Empty documents (no non-empty sentence) count as failed tries, as Google
  removes them from the corpus beforehand. Empty sentences are dropped, as Google drops lines that
  tokenize to nothing.
* A corpus of one document cannot make a random ``B``: :class:`~data_prep.errors.UserError`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from data_prep.errors import UserError


class DocumentSource(Protocol):
    """Random access to the documents of a corpus, each a list of tokenized sentences."""

    @property
    def num_documents(self) -> int:
        """Number of documents."""
        ...

    def document_sentences(self, i: int) -> list[np.ndarray]:
        """Token ids of each sentence of document ``i`` (no special tokens)."""
        ...


@dataclass
class PairInstance:
    """One NSP training pair, before masking and padding."""

    tokens: np.ndarray
    """int64 ``[CLS] A [SEP] B [SEP]``, length at most ``max_seq_len``."""
    segment_a_len: int
    """Tokens of segment A including ``[CLS]`` and the first ``[SEP]``: ``len(A) + 2`` (token type 0)."""
    is_random_next: bool
    """``next_sentence_label``: False (0) when B really follows A, True (1) when B is a random span."""


def _sentences(docs: DocumentSource, i: int) -> list[np.ndarray]:
    return [s for s in docs.document_sentences(i) if len(s)]


def _fast_lengths(docs: DocumentSource, i: int) -> np.ndarray | None:
    """Sentence lengths of document ``i`` when the source can give them (and its tokens) without slicing.

    Indexed shards can; the result lets the random-B path cut one contiguous slice instead of building the
    random document's whole sentence list. ``None`` (any source with empty sentences, or without the methods)
    means: use ``document_sentences``. Both paths draw the same random numbers and give the same tokens.
    """
    if not (hasattr(docs, "sentence_lengths") and hasattr(docs, "document_tokens")):
        return None
    lengths = docs.sentence_lengths(i)  # type: ignore[attr-defined]
    return lengths if bool(np.all(lengths > 0)) else None


def _num_sentences(docs: DocumentSource, i: int) -> int:
    lengths = _fast_lengths(docs, i)
    return len(lengths) if lengths is not None else len(_sentences(docs, i))


def _random_other_document(docs: DocumentSource, doc_index: int, rng: random.Random) -> int:
    """A random non-empty document other than ``doc_index`` (Google's 10 tries, then a fallback)."""
    n = docs.num_documents
    for _ in range(10):
        r = rng.randint(0, n - 1)
        if r != doc_index and _num_sentences(docs, r):
            return r
    # Google would go on with whatever it drew last; draw among the others instead, skipping empty ones.
    start = rng.randint(0, n - 2)
    for step in range(n - 1):
        r = (start + step) % (n - 1)
        r += r >= doc_index
        if _num_sentences(docs, r):
            return r
    raise UserError(f"NSP needs at least 2 non-empty documents; only document {doc_index} has sentences")


def _random_segment(docs: DocumentSource, r: int, target_b_length: int, rng: random.Random) -> np.ndarray:
    """Sentences of document ``r`` from a random start until ``target_b_length`` tokens are reached."""
    lengths = _fast_lengths(docs, r)
    if lengths is None:
        sentences = _sentences(docs, r)
        random_start = rng.randint(0, len(sentences) - 1)
        b_parts: list[np.ndarray] = []
        b_len = 0
        for j in range(random_start, len(sentences)):
            b_parts.append(sentences[j])
            b_len += len(sentences[j])
            if b_len >= target_b_length:
                break
        return np.concatenate(b_parts)
    random_start = rng.randint(0, len(lengths) - 1)
    cum = np.cumsum(lengths[random_start:])
    stop = min(int(np.searchsorted(cum, target_b_length)), len(cum) - 1)  # first sentence reaching the target
    first = int(lengths[:random_start].sum())
    return docs.document_tokens(r)[first : first + int(cum[stop])]  # type: ignore[attr-defined]


def _truncation(len_a: int, len_b: int, max_num_tokens: int, rng: random.Random) -> tuple[int, int, int, int]:
    """Google's truncation rule as counts: tokens to cut from the (front, back) of A and of B."""
    fa = ba = fb = bb = 0
    while len_a + len_b > max_num_tokens:
        if len_a > len_b:
            len_a -= 1
            if rng.random() < 0.5:
                fa += 1
            else:
                ba += 1
        else:
            len_b -= 1
            if rng.random() < 0.5:
                fb += 1
            else:
                bb += 1
    return fa, ba, fb, bb


def truncate_seq_pair(tokens_a: list, tokens_b: list, max_num_tokens: int, rng: random.Random) -> None:
    """Truncate a pair in place to at most ``max_num_tokens`` tokens in all (Google's ``truncate_seq_pair``).

    One token at a time is removed from the longer sequence (B when they are equal), from its front or its
    back with probability 0.5 each, which adds noise rather than always cutting the end.

    Args:
        tokens_a: segment A, a mutable sequence (a list); modified in place.
        tokens_b: segment B, likewise.
        max_num_tokens: the most tokens A and B may hold together (``max_seq_len - 3``).
        rng: random source of the front/back choices.
    """
    fa, ba, fb, bb = _truncation(len(tokens_a), len(tokens_b), max_num_tokens, rng)
    for toks, front, back in ((tokens_a, fa, ba), (tokens_b, fb, bb)):
        if back:
            del toks[len(toks) - back :]
        if front:
            del toks[:front]


def _make_instance(
    a: np.ndarray,
    b: np.ndarray,
    max_num_tokens: int,
    cls_id: int,
    sep_id: int,
    is_random: bool,
    rng: random.Random,
) -> PairInstance:
    fa, ba, fb, bb = _truncation(len(a), len(b), max_num_tokens, rng)
    a = a[fa : len(a) - ba]
    b = b[fb : len(b) - bb]
    if len(a) < 1 or len(b) < 1:  # Google asserts this; unreachable with non-empty sentences
        raise AssertionError(f"empty segment after truncation (len A {len(a)}, len B {len(b)})")
    la, lb = len(a), len(b)
    tokens = np.empty(la + lb + 3, dtype=np.int64)
    tokens[0] = cls_id
    tokens[1 : la + 1] = a
    tokens[la + 1] = sep_id
    tokens[la + 2 : la + 2 + lb] = b
    tokens[-1] = sep_id
    return PairInstance(tokens=tokens, segment_a_len=la + 2, is_random_next=is_random)


def create_instances_from_document(
    docs: DocumentSource,
    doc_index: int,
    *,
    max_seq_len: int,
    short_seq_prob: float,
    cls_id: int,
    sep_id: int,
    rng: random.Random,
) -> list[PairInstance]:
    """Build the NSP pairs of one document, as Google's ``create_instances_from_document``.

    Sentences are gathered into a chunk until it reaches the target length (or the document ends). A random
    number of the chunk's sentences (at least one) forms A. With probability 0.5, and always when the chunk
    holds a single sentence, B is a random span: sentences from a random start in another document, up to
    the remaining target length, and the chunk's unused sentences go back to be used by the next pair.
    Otherwise B is the rest of the chunk, the true continuation. The pair is then truncated to fit.

    The target length is ``max_seq_len - 3``, or, with probability ``short_seq_prob``, a random length in
    ``[2, max_seq_len - 3]`` to reduce the mismatch between pretraining and short fine-tuning inputs. As in
    Google's script it is drawn once per document, not per pair. A document with a single sentence only
    ever gives pairs with a random B (``is_random_next`` True), as in Google's script.

    Args:
        docs: the corpus (at least 2 documents, since a random B must come from another one).
        doc_index: the document to build pairs from.
        max_seq_len: length of an instance including ``[CLS]`` and two ``[SEP]`` (at least 5).
        short_seq_prob: probability of a shorter random target length.
        cls_id: id of ``[CLS]``.
        sep_id: id of ``[SEP]``.
        rng: random source; the same state gives the same pairs.

    Returns:
        The document's pairs in order (empty for an empty document).

    Raises:
        UserError: the corpus has fewer than 2 documents (or no other non-empty one).
    """
    n_docs = docs.num_documents
    if n_docs < 2:
        raise UserError(
            f"NSP needs at least 2 documents to draw random next sentences; the corpus has {n_docs}"
        )
    if not 0 <= doc_index < n_docs:
        raise IndexError(f"document {doc_index} is out of range (corpus of {n_docs})")
    if max_seq_len < 5:
        raise ValueError(
            f"max_seq_len must be at least 5 ([CLS] A [SEP] B [SEP] with 2 tokens), got {max_seq_len}"
        )
    document = _sentences(docs, doc_index)
    max_num_tokens = max_seq_len - 3
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)

    instances: list[PairInstance] = []
    current_chunk: list[np.ndarray] = []
    current_length = 0
    i = 0
    n_sent = len(document)
    while i < n_sent:
        segment = document[i]
        current_chunk.append(segment)
        current_length += len(segment)
        if i == n_sent - 1 or current_length >= target_seq_length:
            a_end = rng.randint(1, len(current_chunk) - 1) if len(current_chunk) >= 2 else 1
            tokens_a = np.concatenate(current_chunk[:a_end])
            if len(current_chunk) == 1 or rng.random() < 0.5:
                is_random_next = True
                target_b_length = target_seq_length - len(tokens_a)
                r = _random_other_document(docs, doc_index, rng)
                tokens_b = _random_segment(docs, r, target_b_length, rng)
                i -= len(current_chunk) - a_end  # the unused sentences go back
            else:
                is_random_next = False
                tokens_b = np.concatenate(current_chunk[a_end:])
            instances.append(
                _make_instance(tokens_a, tokens_b, max_num_tokens, cls_id, sep_id, is_random_next, rng)
            )
            current_chunk = []
            current_length = 0
        i += 1
    return instances


def token_type_ids(length: int | np.ndarray, segment_a_len: int | np.ndarray, max_seq_len: int) -> np.ndarray:
    """Segment ids of a padded instance: 0 for ``[CLS] A [SEP]``, 1 for ``B [SEP]``, 0 for padding.

    Args:
        length: tokens in the instance before padding (an int, or a ``[B]`` array for a batch).
        segment_a_len: ``PairInstance.segment_a_len`` (int or ``[B]`` array).
        max_seq_len: padded length.

    Returns:
        int64 ``[max_seq_len]`` (or ``[B, max_seq_len]`` for array arguments).
    """
    length, seg_a = _check_lengths(length, segment_a_len, max_seq_len)
    pos = np.arange(max_seq_len)
    return ((pos >= seg_a[..., None]) & (pos < length[..., None])).astype(np.int64)


def special_positions(
    length: int | np.ndarray, segment_a_len: int | np.ndarray, max_seq_len: int
) -> np.ndarray:
    """Positions that masking must never choose: ``[CLS]``, both ``[SEP]`` and the padding.

    Args:
        length: tokens in the instance before padding (an int, or a ``[B]`` array for a batch).
        segment_a_len: ``PairInstance.segment_a_len`` (int or ``[B]`` array).
        max_seq_len: padded length.

    Returns:
        bool ``[max_seq_len]`` (or ``[B, max_seq_len]``): True at 0, ``segment_a_len - 1``, ``length - 1``
        and every position ``>= length``.
    """
    length, seg_a = _check_lengths(length, segment_a_len, max_seq_len)
    pos = np.arange(max_seq_len)
    ln = length[..., None]
    return (pos == 0) | (pos == seg_a[..., None] - 1) | (pos >= ln - 1)


def _check_lengths(
    length: int | np.ndarray, segment_a_len: int | np.ndarray, max_seq_len: int
) -> tuple[np.ndarray, np.ndarray]:
    length = np.asarray(length, dtype=np.int64)
    seg_a = np.asarray(segment_a_len, dtype=np.int64)
    if length.ndim > 1 or length.shape != seg_a.shape:
        raise ValueError(
            f"length {length.shape} and segment_a_len {seg_a.shape} must be scalars or same-shape [B]"
        )
    if ((seg_a < 2) | (seg_a > length - 1) | (length > max_seq_len)).any():
        raise ValueError(
            f"need 2 <= segment_a_len < length <= max_seq_len; got segment_a_len {segment_a_len}, "
            f"length {length}, max_seq_len {max_seq_len}"
        )
    return length, seg_a
