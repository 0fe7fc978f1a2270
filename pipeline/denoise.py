"""Corrupting a sentence for the denoising sequence-to-sequence objective: reconstruct it from a noisy copy.

Three pure functions of (tokens, settings, seed), composed by ``corrupt``: span masking (BART's text infilling:
each span becomes one mask token), token deletion, and local shuffling (Lample et al. 2018: no token moves
more than ``window - 1`` places). The seed is explicit (the data module passes (seed, epoch, index)), so a
sample's corruption is reproducible and changes from epoch to epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Seed = int | Sequence[int]


@dataclass
class NoiseConfig:
    """How the source sentence is corrupted (each step can be switched off with 0)."""

    mask_ratio: float = 0.15
    """Fraction of the tokens covered by masked spans; each span is replaced by a single mask token."""
    mean_span: float = 3.0
    """Mean span length (Poisson, at least 1 token)."""
    delete_prob: float = 0.1
    """Probability of deleting each token (at least one token is always kept)."""
    shuffle_window: int = 3
    """Local shuffle: each token moves fewer than this many places (0 or 1 = no shuffling)."""


def span_mask(tokens: np.ndarray, ratio: float, mean_span: float, mask_id: int, seed: Seed) -> np.ndarray:
    """Cover about ``ratio`` of the tokens with spans of Poisson(``mean_span``) length (>= 1); each maximal
    run of covered tokens becomes one ``mask_id``."""
    n = len(tokens)
    target = int(round(ratio * n))
    if n == 0 or target == 0:
        return np.asarray(tokens).copy()
    rng = np.random.default_rng(seed)
    covered = np.zeros(n, dtype=bool)
    for _ in range(10 * n):  # bounded: spans may overlap
        if covered.sum() >= target:
            break
        length = max(1, int(rng.poisson(mean_span)))
        length = min(length, target - int(covered.sum()))
        start = int(rng.integers(0, n))
        covered[start : start + length] = True
    out = np.asarray(tokens).copy()
    starts = covered & ~np.concatenate([[False], covered[:-1]])  # first token of each covered run
    keep = ~covered | starts
    out[starts] = mask_id
    return out[keep]


def delete_tokens(tokens: np.ndarray, prob: float, seed: Seed) -> np.ndarray:
    """Drop each token with probability ``prob``; at least one token survives."""
    n = len(tokens)
    if n == 0 or prob <= 0:
        return np.asarray(tokens).copy()
    rng = np.random.default_rng(seed)
    keep = rng.random(n) >= prob
    if not keep.any():
        keep[int(rng.integers(0, n))] = True
    return np.asarray(tokens)[keep]


def local_shuffle(tokens: np.ndarray, window: int, seed: Seed) -> np.ndarray:
    """Permute so that no token moves ``window`` or more places: sort positions i + U(0, window)."""
    n = len(tokens)
    if n < 2 or window <= 1:
        return np.asarray(tokens).copy()
    rng = np.random.default_rng(seed)
    keys = np.arange(n) + rng.uniform(0, window, n)
    return np.asarray(tokens)[np.argsort(keys, kind="stable")]


def corrupt(tokens: np.ndarray, cfg: NoiseConfig, mask_id: int, seed: Seed) -> np.ndarray:
    """Span masking, then deletion, then local shuffling, each with its own stream derived from ``seed``."""
    base = [seed] if isinstance(seed, int) else list(seed)
    x = span_mask(tokens, cfg.mask_ratio, cfg.mean_span, mask_id, [*base, 0])
    x = delete_tokens(x, cfg.delete_prob, [*base, 1])
    return local_shuffle(x, cfg.shuffle_window, [*base, 2])
