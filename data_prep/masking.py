"""The masked-LM rule of BERT (Devlin et al., 2019, section 3.1 and appendix A.1), as one pure, vectorised function.

For every sequence, 15% of the tokens that are not special (``[CLS]``, ``[SEP]``, ``[PAD]``) are chosen, at
least one and at most ``max_predictions``; each chosen token is replaced with ``[MASK]`` 80% of the time,
with a random token 10% of the time, and kept unchanged 10% of the time. The model predicts the original
token at the chosen positions only (labels hold ``-100`` elsewhere, the value PyTorch's cross-entropy
ignores).

The count follows Google's ``create_pretraining_data.py``: ``min(max_predictions, max(1, round(n * p)))``,
with ``n`` the number of non-special tokens of the row (Google counts ``[CLS]``/``[SEP]`` too; here they
are never eligible, so they are not counted). Whole-word masking (Google's ``--do_whole_word_mask``)
selects every piece of a word together and skips a word that would overflow the count, as Google does.

The same function serves static masking in data prep (Google's way, a fixed mask per copy of the data) and
dynamic masking in the training loader (RoBERTa's way, a fresh mask per batch). Nothing loops over rows or
tokens in Python on the token path; the whole-word path loops over word ranks only (vectorised over rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from data_prep.config import MaskingConfig

IGNORE_INDEX = -100
"""Label of positions that are not predicted (``torch.nn.CrossEntropyLoss``'s default ``ignore_index``)."""


def masking_kwargs(cfg: MaskingConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`mask_tokens` that a :class:`MaskingConfig` sets.

    ``cfg.whole_word`` is not among them: the caller applies it by passing ``word_starts``.

    Args:
        cfg: the masking settings of a data recipe (or of a manifest).

    Returns:
        ``{"mlm_probability", "max_predictions", "mask_token_prob", "random_token_prob"}``.
    """
    return {
        "mlm_probability": float(cfg.mlm_probability),
        "max_predictions": int(cfg.max_predictions_per_seq),
        "mask_token_prob": float(cfg.mask_token_prob),
        "random_token_prob": float(cfg.random_token_prob),
    }


def num_to_predict(
    n_eligible: np.ndarray, mlm_probability: float = 0.15, max_predictions: int = 20
) -> np.ndarray:
    """Number of predictions per row: ``min(max_predictions, max(1, round(n * p)))``, and 0 when ``n == 0``.

    ``round`` is round-half-to-even, as Python's ``round`` in Google's script.

    Args:
        n_eligible: int array, the number of non-special tokens of each row.
        mlm_probability: fraction of the eligible tokens to predict (BERT: 0.15).
        max_predictions: upper bound per row (Google's ``max_predictions_per_seq``).

    Returns:
        int64 array of the same shape.
    """
    n = np.asarray(n_eligible, dtype=np.int64)
    k = np.rint(n * mlm_probability).astype(np.int64)
    k = np.minimum(max_predictions, np.maximum(1, k))
    k = np.minimum(k, n)  # never more than there are (only matters for mlm_probability near 1)
    return np.where(n > 0, k, 0)


def _check_args(
    ids: np.ndarray,
    special: np.ndarray,
    word_starts: np.ndarray | None,
    mask_id: int,
    vocab_size: int,
    first_regular_id: int,
    mlm_probability: float,
    max_predictions: int,
    mask_token_prob: float,
    random_token_prob: float,
) -> None:
    if ids.ndim not in (1, 2):
        raise ValueError(f"input_ids must be [L] or [B, L], got shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"input_ids must hold integers, got dtype {ids.dtype}")
    if special.shape != ids.shape:
        raise ValueError(f"special_mask shape {special.shape} != input_ids shape {ids.shape}")
    if word_starts is not None and word_starts.shape != ids.shape:
        raise ValueError(f"word_starts shape {word_starts.shape} != input_ids shape {ids.shape}")
    if not 0 <= first_regular_id < vocab_size:
        raise ValueError(f"need 0 <= first_regular_id ({first_regular_id}) < vocab_size ({vocab_size})")
    if not 0 <= mask_id < vocab_size:
        raise ValueError(f"mask_id {mask_id} is outside the vocabulary of {vocab_size}")
    if not 0.0 < mlm_probability <= 1.0:
        raise ValueError(f"mlm_probability must be in (0, 1], got {mlm_probability}")
    if max_predictions < 1:
        raise ValueError(f"max_predictions must be >= 1, got {max_predictions}")
    if mask_token_prob < 0 or random_token_prob < 0 or mask_token_prob + random_token_prob > 1.0 + 1e-12:
        raise ValueError(
            f"mask_token_prob ({mask_token_prob}) and random_token_prob ({random_token_prob}) must be "
            "non-negative and sum to at most 1"
        )


def _select_tokens(eligible: np.ndarray, k: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Choose ``k[row]`` eligible positions of each row uniformly at random (without replacement)."""
    b, length = eligible.shape
    selected = np.zeros((b, length), dtype=bool)
    kmax = int(k.max(initial=0))
    if kmax == 0:
        return selected
    keys = rng.random((b, length))
    keys[~eligible] = 2.0  # ineligible positions sort after every eligible one
    if kmax < length:
        cand = np.argpartition(keys, kmax - 1, axis=1)[:, :kmax]  # the kmax smallest keys, unordered
    else:
        cand = np.broadcast_to(np.arange(length), (b, length))
    order = np.argsort(np.take_along_axis(keys, cand, axis=1), axis=1)
    cand = np.take_along_axis(cand, order, axis=1)  # ranked: cand[:, j] has the j-th smallest key
    take = np.arange(kmax) < k[:, None]
    rows = np.broadcast_to(np.arange(b)[:, None], cand.shape)
    selected[rows[take], cand[take]] = True
    return selected


def _select_whole_words(
    eligible: np.ndarray, word_starts: np.ndarray, k: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Whole-word selection: words in random order, each taken whole if it still fits within ``k[row]``.

    A word is a start token plus the eligible non-start tokens that follow it; an eligible non-start token
    right after a special token (or at the start of the row) starts a word of its own. A word that would
    overflow the count is skipped and the next one tried (Google's rule), so a row can end with fewer than
    ``k[row]`` predictions, even none when every word is longer than ``k[row]``.
    """
    b, length = eligible.shape
    prev_ineligible = np.ones((b, length), dtype=bool)
    prev_ineligible[:, 1:] = ~eligible[:, :-1]
    starts = eligible & (word_starts | prev_ineligible)
    n_words = starts.sum(axis=1)
    wmax = int(n_words.max(initial=0))
    if wmax == 0 or int(k.max(initial=0)) == 0:
        return np.zeros((b, length), dtype=bool)
    wid = np.cumsum(starts, axis=1) - 1  # word index within the row (valid at eligible positions)
    rows = np.broadcast_to(np.arange(b)[:, None], (b, length))
    flat = (rows * wmax + wid)[eligible]
    sizes = np.bincount(flat, minlength=b * wmax).reshape(b, wmax)

    keys = rng.random((b, wmax))
    keys[np.arange(wmax) >= n_words[:, None]] = 2.0  # absent words go last (and have size 0)
    order = np.argsort(keys, axis=1)
    ranked_sizes = np.take_along_axis(sizes, order, axis=1)
    ranked_take = np.zeros((b, wmax), dtype=bool)
    count = np.zeros(b, dtype=np.int64)
    for j in range(wmax):  # over word ranks, vectorised over rows
        s = ranked_sizes[:, j]
        fits = (s > 0) & (count + s <= k)
        ranked_take[:, j] = fits
        count += np.where(fits, s, 0)
        if (count >= k).all():
            break
    word_take = np.zeros((b, wmax), dtype=bool)
    np.put_along_axis(word_take, order, ranked_take, axis=1)
    return eligible & np.take_along_axis(word_take, np.maximum(wid, 0), axis=1)


def mask_tokens(
    input_ids: np.ndarray,
    special_mask: np.ndarray,
    rng: np.random.Generator,
    *,
    mask_id: int,
    vocab_size: int,
    first_regular_id: int,
    mlm_probability: float = 0.15,
    max_predictions: int = 20,
    mask_token_prob: float = 0.8,
    random_token_prob: float = 0.1,
    word_starts: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply BERT's masked-LM corruption to one sequence or a batch.

    Per row: ``n`` = number of positions where ``special_mask`` is False; ``num_to_predict = min(
    max_predictions, max(1, round(n * mlm_probability)))`` of them are chosen uniformly at random (none
    when ``n == 0``). Each chosen token, independently, becomes ``mask_id`` with probability
    ``mask_token_prob``, a random token drawn uniformly from ``[first_regular_id, vocab_size)`` with
    probability ``random_token_prob``, and is otherwise kept (Google's per-token rule; the paper's
    80/10/10).

    Args:
        input_ids: ``[L]`` or ``[B, L]`` token ids, any integer dtype. Not modified.
        special_mask: bool, same shape: True where a token must never be chosen ([CLS], [SEP], [PAD]).
        rng: the random generator; the same state gives the same output.
        mask_id: id of ``[MASK]``.
        vocab_size: size of the vocabulary.
        first_regular_id: random replacements are drawn from ``[first_regular_id, vocab_size)``, so they are
            never special tokens (the specials must have ids below it).
        mlm_probability: fraction of the eligible tokens to predict (paper: 15%).
        max_predictions: at most this many predictions per row (Google's ``max_predictions_per_seq``).
        mask_token_prob: of the chosen tokens, the fraction replaced with ``[MASK]`` (paper: 80%).
        random_token_prob: of the chosen tokens, the fraction replaced with a random token (paper: 10%).
        word_starts: optional bool, same shape: True at the first piece of each word. When given, whole
            words are chosen (a ``##`` piece goes with the piece that starts its word); a word that would
            overflow ``num_to_predict`` is skipped, so a row may get fewer predictions (Google's rule).

    Returns:
        ``(masked_ids, labels)``, both int64 of the input's shape: the corrupted ids, and the original id at
        the chosen positions with ``-100`` everywhere else.
    """
    ids = np.asarray(input_ids)
    special = np.asarray(special_mask, dtype=bool)
    starts = None if word_starts is None else np.asarray(word_starts, dtype=bool)
    _check_args(
        ids,
        special,
        starts,
        mask_id,
        vocab_size,
        first_regular_id,
        mlm_probability,
        max_predictions,
        mask_token_prob,
        random_token_prob,
    )
    shape = ids.shape
    ids2 = ids.reshape(1, -1) if ids.ndim == 1 else ids
    eligible = ~special.reshape(ids2.shape)
    k = num_to_predict(eligible.sum(axis=1), mlm_probability, max_predictions)

    if starts is None:
        selected = _select_tokens(eligible, k, rng)
    else:
        selected = _select_whole_words(eligible, starts.reshape(ids2.shape), k, rng)

    masked = ids2.astype(np.int64, copy=True)
    labels = np.full(ids2.shape, IGNORE_INDEX, dtype=np.int64)
    labels[selected] = masked[selected]

    n_sel = int(np.count_nonzero(selected))
    if n_sel:
        u = rng.random(n_sel)
        to_mask = u < mask_token_prob
        to_random = (u >= mask_token_prob) & (u < mask_token_prob + random_token_prob)
        values = masked[selected]
        values[to_mask] = mask_id
        n_random = int(np.count_nonzero(to_random))
        if n_random:
            values[to_random] = rng.integers(first_regular_id, vocab_size, size=n_random, dtype=np.int64)
        masked[selected] = values
    return masked.reshape(shape), labels.reshape(shape)
