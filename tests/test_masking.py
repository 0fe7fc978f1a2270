"""The masked-LM rule: counts, 80/10/10 split, specials, whole words, determinism, shapes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep.config import MaskingConfig
from data_prep.masking import IGNORE_INDEX, mask_tokens, masking_kwargs, num_to_predict

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
FIRST_REGULAR = 5
VOCAB = 1000
IDS = {"mask_id": MASK, "vocab_size": VOCAB, "first_regular_id": FIRST_REGULAR}


def make_batch(rows: int = 2000, length: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """BERT-like rows: [CLS] A [SEP] B [SEP] [PAD]..., random real lengths, regular ids >= FIRST_REGULAR."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(FIRST_REGULAR, VOCAB, size=(rows, length))
    lengths = rng.integers(8, length + 1, size=rows)
    seg_a = rng.integers(2, lengths - 1)
    pos = np.arange(length)
    ids[:, 0] = CLS
    ids[np.arange(rows), seg_a - 1] = SEP
    ids[np.arange(rows), lengths - 1] = SEP
    ids[pos >= lengths[:, None]] = PAD
    return ids, ids < FIRST_REGULAR


def expected_count(n: np.ndarray, p: float = 0.15, cap: int = 20) -> np.ndarray:
    """The per-row count, written out with Python's round (round-half-even), as Google's script."""
    return np.array([0 if k == 0 else min(cap, max(1, round(k * p))) for k in n.tolist()])


@pytest.fixture(scope="module")
def batch():
    ids, special = make_batch()
    masked, labels = mask_tokens(ids, special, np.random.default_rng(42), **IDS)
    return ids, special, masked, labels


def test_counts_follow_the_rule(batch):
    ids, special, masked, labels = batch
    selected = labels != IGNORE_INDEX
    n_eligible = (~special).sum(axis=1)
    np.testing.assert_array_equal(selected.sum(axis=1), expected_count(n_eligible))
    assert (selected.sum(axis=1) >= 1).all()
    assert (selected.sum(axis=1) <= 20).all()
    # Rows shorter than the cap (n * 0.15 < 19.5) predict ~15% of their eligible tokens.
    small = n_eligible * 0.15 < 19.5
    frac = selected[small].sum() / n_eligible[small].sum()
    assert abs(frac - 0.15) < 0.01, frac


def test_specials_never_selected_and_labels(batch):
    ids, special, masked, labels = batch
    selected = labels != IGNORE_INDEX
    assert not (selected & special).any()
    np.testing.assert_array_equal(labels[selected], ids[selected])
    assert (labels[~selected] == IGNORE_INDEX).all()
    np.testing.assert_array_equal(masked[~selected], ids[~selected])
    assert masked.dtype == np.int64 and labels.dtype == np.int64


def test_80_10_10_split(batch):
    ids, special, masked, labels = batch
    selected = labels != IGNORE_INDEX
    orig, new = ids[selected], masked[selected]
    n = selected.sum()
    assert n > 15_000
    is_mask = new == MASK
    kept = new == orig
    random_ = ~is_mask & ~kept
    assert abs(is_mask.mean() - 0.8) < 0.02
    # A random replacement can draw the original id (prob 1/995): it then counts as kept.
    assert abs(random_.mean() - 0.1) < 0.02
    assert abs(kept.mean() - 0.1) < 0.02
    assert (new[random_] >= FIRST_REGULAR).all() and (new[random_] < VOCAB).all()
    # Random tokens are spread over the regular vocabulary, not a constant.
    assert len(np.unique(new[random_])) > 500


def test_uses_the_given_probabilities():
    ids, special = make_batch(500)
    _, labels = mask_tokens(
        ids, special, np.random.default_rng(0), **IDS, mlm_probability=0.3, max_predictions=1000
    )
    n_eligible = (~special).sum(axis=1)
    np.testing.assert_array_equal((labels != IGNORE_INDEX).sum(axis=1), expected_count(n_eligible, 0.3, 1000))
    masked, labels = mask_tokens(
        ids, special, np.random.default_rng(0), **IDS, mask_token_prob=0.0, random_token_prob=0.0
    )
    np.testing.assert_array_equal(masked, ids)  # everything chosen is kept
    assert (labels != IGNORE_INDEX).any()
    masked, labels = mask_tokens(
        ids, special, np.random.default_rng(0), **IDS, mask_token_prob=1.0, random_token_prob=0.0
    )
    assert (masked[labels != IGNORE_INDEX] == MASK).all()


def test_max_predictions_caps():
    ids, special = make_batch(200, 512)
    _, labels = mask_tokens(ids, special, np.random.default_rng(1), **IDS, max_predictions=7)
    counts = (labels != IGNORE_INDEX).sum(axis=1)
    assert counts.max() == 7 and (counts >= 1).all()


def test_row_with_nothing_eligible():
    ids = np.array([[CLS, SEP, PAD, PAD], [CLS, 10, SEP, PAD]])
    special = ids < FIRST_REGULAR
    masked, labels = mask_tokens(ids, special, np.random.default_rng(0), **IDS)
    assert (labels[0] == IGNORE_INDEX).all()
    np.testing.assert_array_equal(labels[1], [IGNORE_INDEX, 10, IGNORE_INDEX, IGNORE_INDEX])
    assert (masked[0] == ids[0]).all()


def test_deterministic_and_seed_dependent():
    ids, special = make_batch(64)
    a = mask_tokens(ids, special, np.random.default_rng(7), **IDS)
    b = mask_tokens(ids, special, np.random.default_rng(7), **IDS)
    c = mask_tokens(ids, special, np.random.default_rng(8), **IDS)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_input_not_modified_and_any_int_dtype():
    ids, special = make_batch(32)
    ids32 = ids.astype(np.int32)
    before, special_before = ids32.copy(), special.copy()
    m32, l32 = mask_tokens(ids32, special, np.random.default_rng(3), **IDS)
    np.testing.assert_array_equal(ids32, before)
    np.testing.assert_array_equal(special, special_before)
    m64, l64 = mask_tokens(ids, special, np.random.default_rng(3), **IDS)
    np.testing.assert_array_equal(m32, m64)
    np.testing.assert_array_equal(l32, l64)
    assert m32.dtype == np.int64 and l32.dtype == np.int64
    with pytest.raises(ValueError):
        mask_tokens(ids.astype(np.float32), special, np.random.default_rng(3), **IDS)


def test_1d_matches_2d():
    ids, special = make_batch(1)
    for ws in (None, np.random.default_rng(5).random(ids.shape) < 0.6):
        m2, l2 = mask_tokens(ids, special, np.random.default_rng(11), **IDS, word_starts=ws)
        m1, l1 = mask_tokens(
            ids[0], special[0], np.random.default_rng(11), **IDS, word_starts=None if ws is None else ws[0]
        )
        assert m1.shape == ids[0].shape
        np.testing.assert_array_equal(m1, m2[0])
        np.testing.assert_array_equal(l1, l2[0])


def words_of(eligible: np.ndarray, starts: np.ndarray) -> list[list[int]]:
    """Reference word grouping of one row (a plain loop)."""
    words: list[list[int]] = []
    prev_eligible = False
    for j, (e, s) in enumerate(zip(eligible.tolist(), starts.tolist())):
        if e and (s or not prev_eligible):
            words.append([j])
        elif e:
            words[-1].append(j)
        prev_eligible = e
    return words


def test_whole_word_masking():
    ids, special = make_batch(1000, 128, seed=4)
    starts = np.random.default_rng(9).random(ids.shape) < 0.6  # words of ~1.7 pieces
    _, labels = mask_tokens(ids, special, np.random.default_rng(2), **IDS, word_starts=starts)
    selected = labels != IGNORE_INDEX
    assert not (selected & special).any()
    k = expected_count((~special).sum(axis=1))
    counts = selected.sum(axis=1)
    assert (counts <= k).all()
    assert counts.sum() > 0.95 * k.sum()  # skipping overflowing words rarely leaves much unused
    partial = 0
    for row in range(len(ids)):
        for word in words_of(~special[row], starts[row]):
            partial += len(set(selected[row, word].tolist())) > 1
    assert partial == 0
    # Whole words really span several pieces: some selected word has a non-start piece.
    assert (selected & ~starts).any()


def test_whole_word_skips_overflowing_words():
    # Two-piece words only and a count of 1: Google's rule skips every word, nothing is predicted.
    ids = np.array([[CLS] + list(range(10, 18)) + [SEP]])
    special = ids < FIRST_REGULAR
    starts = np.array([[False] + [True, False] * 4 + [False]])
    _, labels = mask_tokens(ids, special, np.random.default_rng(0), **IDS, word_starts=starts)
    assert (labels == IGNORE_INDEX).all()
    # A one-piece word among them is always the one taken.
    starts[0, 8] = True  # the last word (ids 16, 17 at positions 7, 8) becomes two one-piece words
    seen = set()
    for seed in range(20):
        _, labels = mask_tokens(ids, special, np.random.default_rng(seed), **IDS, word_starts=starts)
        seen.add(tuple(np.flatnonzero(labels != IGNORE_INDEX).tolist()))
    assert seen == {(7,), (8,)}


def test_whole_word_continuation_after_special_is_its_own_word():
    # A "##" piece right after [SEP] cannot join the word before [SEP].
    eligible = np.array([False, True, False, True, True, False])
    starts = np.array([False, True, False, False, False, False])
    assert words_of(eligible, starts) == [[1], [3, 4]]
    ids = np.array([CLS, 10, SEP, 11, 12, SEP])
    seen = set()
    for seed in range(40):
        _, labels = mask_tokens(
            ids, ~eligible, np.random.default_rng(seed), **IDS, mlm_probability=0.5, word_starts=starts
        )
        sel = tuple(np.flatnonzero(labels != IGNORE_INDEX).tolist())
        seen.add(sel)
    assert seen == {(1,), (3, 4)}  # count 2 (round(1.5)): one of the two words, never a piece of [3, 4]


def test_masking_kwargs():
    cfg = MaskingConfig(
        mlm_probability=0.2, max_predictions_per_seq=80, mask_token_prob=0.7, random_token_prob=0.2
    )
    kw = masking_kwargs(cfg)
    assert kw == {
        "mlm_probability": 0.2,
        "max_predictions": 80,
        "mask_token_prob": 0.7,
        "random_token_prob": 0.2,
    }
    ids, special = make_batch(4)
    mask_tokens(ids, special, np.random.default_rng(0), **IDS, **kw)


def test_num_to_predict_rounding():
    np.testing.assert_array_equal(
        num_to_predict(np.array([0, 1, 3, 10, 30, 50, 126, 1000])), [0, 1, 1, 2, 4, 8, 19, 20]
    )
    assert num_to_predict(np.array([2]), 1.0)[0] == 2


@settings(max_examples=150, deadline=None)
@given(
    rows=st.integers(1, 6),
    length=st.integers(1, 40),
    p=st.floats(0.01, 1.0),
    cap=st.integers(1, 50),
    mask_p=st.floats(0.0, 1.0),
    whole_word=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_invariants_property(rows, length, p, cap, mask_p, whole_word, seed):
    gen = np.random.default_rng(seed)
    ids = gen.integers(0, VOCAB, size=(rows, length))
    special = (ids < FIRST_REGULAR) | (gen.random((rows, length)) < 0.2)
    starts = gen.random((rows, length)) < 0.5 if whole_word else None
    rand_p = (1.0 - mask_p) / 2
    ids_before = ids.copy()
    masked, labels = mask_tokens(
        ids,
        special,
        np.random.default_rng(seed),
        **IDS,
        mlm_probability=p,
        max_predictions=cap,
        mask_token_prob=mask_p,
        random_token_prob=rand_p,
        word_starts=starts,
    )
    np.testing.assert_array_equal(ids, ids_before)
    selected = labels != IGNORE_INDEX
    assert not (selected & special).any()
    np.testing.assert_array_equal(labels[selected], ids[selected])
    np.testing.assert_array_equal(masked[~selected], ids[~selected])
    new = masked[selected]
    ok = (new == MASK) | (new == ids[selected]) | ((new >= FIRST_REGULAR) & (new < VOCAB))
    assert ok.all()
    k = np.array(
        [0 if n == 0 else min(cap, max(1, round(n * p)), n) for n in (~special).sum(axis=1).tolist()]
    )
    counts = selected.sum(axis=1)
    if whole_word:
        assert (counts <= k).all()
        for row in range(rows):
            for word in words_of(~special[row], starts[row]):
                assert len(set(selected[row, word].tolist())) == 1
    else:
        np.testing.assert_array_equal(counts, k)
