"""GPT packing: documents joined by the end-of-text token into one stream, read back as fixed-length windows.

Packing instead of padding means every position of every window is a real training token. The stream is
written once; a window is a slice of it, so nothing per window is stored and the loader needs no index. Each
window has ``seq_len`` inputs and, as labels, the same span shifted by one, so consecutive windows overlap by
exactly one token (the last label of window ``i`` is the first input of window ``i + 1``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np


def pack_documents(documents: Iterable[np.ndarray], eot_id: int) -> Iterator[np.ndarray]:
    """Yield each document's tokens followed by ``eot_id``, in the document's dtype.

    Streaming (one document at a time) keeps memory flat however large the corpus is. Every document, the
    last one included, ends with the end-of-text token, so the model learns to emit it after any document and
    the stream decodes back to ``doc + eot + doc + eot ...``.
    """
    for doc in documents:
        doc = np.asarray(doc)
        out = np.empty(len(doc) + 1, dtype=doc.dtype if doc.dtype.kind in "iu" else np.int64)
        out[:-1] = doc
        out[-1] = eot_id
        yield out


def num_windows(num_tokens: int, seq_len: int) -> int:
    """Whole windows in a stream of ``num_tokens``: ``seq_len`` inputs plus one more token for the last label."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be at least 1, got {seq_len}")
    return max(0, (num_tokens - 1) // seq_len)


def dropped_tail(num_tokens: int, seq_len: int) -> int:
    """Tokens after the last label of the last whole window (they are counted in the manifest, not lost silently).

    ``num_windows * seq_len + 1 + dropped_tail == num_tokens`` for any non-empty stream; an empty stream drops 0.
    """
    if num_tokens <= 0:
        return 0
    return num_tokens - num_windows(num_tokens, seq_len) * seq_len - 1


def window(stream: np.ndarray, i: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, labels)`` of window ``i``: ``stream[i*L:(i+1)*L]`` and the same span shifted by one, int64."""
    n = num_windows(len(stream), seq_len)
    if i < 0:
        i += n
    if not 0 <= i < n:
        raise IndexError(f"window {i} out of range ({n} windows)")
    start = i * seq_len
    chunk = np.asarray(stream[start : start + seq_len + 1], dtype=np.int64)
    return chunk[:-1], chunk[1:]
