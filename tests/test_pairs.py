"""NSP pair building: structure, true/random next, Google's rules (checked against a transcription), errors."""

from __future__ import annotations

import random

import numpy as np
import pytest

from data_prep.errors import UserError
from data_prep.pairs import (
    PairInstance,
    create_instances_from_document,
    special_positions,
    token_type_ids,
    truncate_seq_pair,
)

CLS, SEP = 2, 3
DOC_STRIDE = 100_000  # token = doc * DOC_STRIDE + position in the document: tells where every token came from


class ListSource:
    """A DocumentSource over in-memory lists of sentence arrays."""

    def __init__(self, docs: list[list[np.ndarray]]):
        self.docs = docs

    @property
    def num_documents(self) -> int:
        return len(self.docs)

    def document_sentences(self, i: int) -> list[np.ndarray]:
        return self.docs[i]


def make_corpus(
    n_docs=50, sentences=(5, 30), sent_len=(5, 20), seed=0, single_sentence_docs=()
) -> ListSource:
    rng = random.Random(seed)
    docs = []
    for d in range(n_docs):
        n_sent = 1 if d in single_sentence_docs else rng.randint(*sentences)
        pos, sents = 0, []
        for _ in range(n_sent):
            n = rng.randint(*sent_len)
            sents.append(np.arange(pos, pos + n, dtype=np.int64) + d * DOC_STRIDE + 10)
            pos += n
        docs.append(sents)
    return ListSource(docs)


def build(src, doc, seed=0, max_seq_len=128, short_seq_prob=0.1, rng=None) -> list[PairInstance]:
    return create_instances_from_document(
        src,
        doc,
        max_seq_len=max_seq_len,
        short_seq_prob=short_seq_prob,
        cls_id=CLS,
        sep_id=SEP,
        rng=rng or random.Random(seed),
    )


def split(inst: PairInstance) -> tuple[np.ndarray, np.ndarray]:
    t = inst.tokens
    return t[1 : inst.segment_a_len - 1], t[inst.segment_a_len : len(t) - 1]


def google_create_instances(all_documents, document_index, max_seq_length, short_seq_prob, rng):
    """Google's create_instances_from_document (google-research/bert), transcribed, masking left out."""
    document = all_documents[document_index]
    max_num_tokens = max_seq_length - 3
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)
    instances = []
    current_chunk = []
    current_length = 0
    i = 0
    while i < len(document):
        segment = document[i]
        current_chunk.append(segment)
        current_length += len(segment)
        if i == len(document) - 1 or current_length >= target_seq_length:
            if current_chunk:
                a_end = 1
                if len(current_chunk) >= 2:
                    a_end = rng.randint(1, len(current_chunk) - 1)
                tokens_a = []
                for j in range(a_end):
                    tokens_a.extend(current_chunk[j])
                tokens_b = []
                is_random_next = False
                if len(current_chunk) == 1 or rng.random() < 0.5:
                    is_random_next = True
                    target_b_length = target_seq_length - len(tokens_a)
                    for _ in range(10):
                        random_document_index = rng.randint(0, len(all_documents) - 1)
                        if random_document_index != document_index:
                            break
                    random_document = all_documents[random_document_index]
                    random_start = rng.randint(0, len(random_document) - 1)
                    for j in range(random_start, len(random_document)):
                        tokens_b.extend(random_document[j])
                        if len(tokens_b) >= target_b_length:
                            break
                    num_unused_segments = len(current_chunk) - a_end
                    i -= num_unused_segments
                else:
                    is_random_next = False
                    for j in range(a_end, len(current_chunk)):
                        tokens_b.extend(current_chunk[j])
                while len(tokens_a) + len(tokens_b) > max_num_tokens:  # truncate_seq_pair
                    trunc_tokens = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
                    if rng.random() < 0.5:
                        del trunc_tokens[0]
                    else:
                        trunc_tokens.pop()
                tokens = [CLS, *tokens_a, SEP, *tokens_b, SEP]
                instances.append((tokens, len(tokens_a) + 2, is_random_next))
            current_chunk = []
            current_length = 0
        i += 1
    return instances


@pytest.fixture(scope="module")
def corpus() -> ListSource:
    return make_corpus()


@pytest.fixture(scope="module")
def instances(corpus) -> list[tuple[int, PairInstance]]:
    rng = random.Random(123)
    return [
        (d, inst) for _ in range(5) for d in range(corpus.num_documents) for inst in build(corpus, d, rng=rng)
    ]


def test_matches_google_transcription(corpus):
    as_lists = [[s.tolist() for s in doc] for doc in corpus.docs]
    for seed in range(5):
        for max_len, short in ((128, 0.1), (32, 0.5), (64, 0.0)):
            ours_rng, google_rng = random.Random(seed), random.Random(seed)
            for d in range(corpus.num_documents):
                ours = build(corpus, d, max_seq_len=max_len, short_seq_prob=short, rng=ours_rng)
                ref = google_create_instances(as_lists, d, max_len, short, google_rng)
                assert len(ours) == len(ref)
                for inst, (tokens, seg_a, is_random) in zip(ours, ref):
                    assert inst.tokens.tolist() == tokens
                    assert inst.segment_a_len == seg_a and inst.is_random_next == is_random


def test_structure(instances):
    assert len(instances) > 600
    for _, inst in instances:
        t = inst.tokens
        assert t.dtype == np.int64 and 5 <= len(t) <= 128
        assert t[0] == CLS and t[inst.segment_a_len - 1] == SEP and t[-1] == SEP
        assert np.count_nonzero((t == CLS) | (t == SEP)) == 3
        a, b = split(inst)
        assert len(a) >= 1 and len(b) >= 1


def test_true_next_is_the_continuation_and_random_next_is_another_document(instances):
    n_untruncated = 0
    for d, inst in instances:
        a, b = split(inst)
        assert (a // DOC_STRIDE == d).all()
        assert (np.diff(a) == 1).all() and (np.diff(b) == 1).all()  # contiguous spans
        if inst.is_random_next:
            assert (b // DOC_STRIDE != d).all()
        else:
            assert (b // DOC_STRIDE == d).all()
            assert b[0] > a[-1]
            if len(a) + len(b) < 128 - 3:  # not truncated: B starts right where A ends
                assert b[0] == a[-1] + 1
                n_untruncated += 1
    assert n_untruncated > 100


def test_nsp_ratio_is_half():
    # Sentences shorter than the target: only a document's last sentence can make a one-sentence chunk
    # (always random next). A random last pair is that chunk (a random pair from a longer chunk gives its
    # unused sentences back, so more pairs follow); leaving it out, the rest show Google's fair coin.
    corpus = make_corpus(n_docs=100, sentences=(200, 300), sent_len=(4, 12), seed=1)
    rng = random.Random(5)
    labels = []
    for _ in range(2):
        for d in range(corpus.num_documents):
            insts = build(corpus, d, short_seq_prob=0.0, rng=rng)
            if insts[-1].is_random_next:
                insts = insts[:-1]
            labels += [inst.is_random_next for inst in insts]
    assert len(labels) > 3000
    assert 0.45 < np.mean(labels) < 0.55


def test_short_seq_prob_gives_shorter_instances():
    corpus = make_corpus(n_docs=40, sentences=(30, 60), seed=2)

    def lengths(p):
        rng = random.Random(3)
        return np.array(
            [len(i.tokens) for d in range(40) for i in build(corpus, d, short_seq_prob=p, rng=rng)]
        )

    never, sometimes = lengths(0.0), lengths(0.3)
    assert np.mean(never < 64) < 0.08
    assert np.mean(sometimes < 64) > 0.15
    assert (lengths(1.0) <= 128).all()


def test_deterministic(corpus):
    a = [build(corpus, d, seed=9) for d in range(10)]
    b = [build(corpus, d, seed=9) for d in range(10)]
    c = [build(corpus, d, seed=10) for d in range(10)]
    flat = lambda runs: [(i.tokens.tolist(), i.segment_a_len, i.is_random_next) for r in runs for i in r]  # noqa: E731
    assert flat(a) == flat(b)
    assert flat(a) != flat(c)


def test_single_sentence_document_gives_random_next_only():
    corpus = make_corpus(n_docs=10, single_sentence_docs=(4,))
    insts = [i for seed in range(50) for i in build(corpus, 4, seed=seed)]
    assert len(insts) == 50
    assert all(i.is_random_next for i in insts)


def test_one_document_corpus_is_an_error():
    with pytest.raises(UserError, match="at least 2 documents"):
        build(make_corpus(n_docs=1), 0)


def test_random_next_never_from_same_document_with_two_documents():
    # Two documents: Google's 10 tries fail 1 time in 1024; the fallback still picks the other one.
    corpus = make_corpus(n_docs=2, sentences=(20, 30))
    for seed in range(300):
        for inst in build(corpus, 0, seed=seed):
            if inst.is_random_next:
                assert (split(inst)[1] // DOC_STRIDE == 1).all()


def test_empty_sentences_and_documents_are_skipped():
    corpus = make_corpus(n_docs=3)
    empty = np.array([], dtype=np.int64)
    corpus.docs[0] = [empty, *corpus.docs[0][:3], empty]
    corpus.docs[1] = [empty]
    assert build(corpus, 1) == []
    for seed in range(30):
        for inst in build(corpus, 0, seed=seed):
            a, b = split(inst)
            assert len(a) and len(b)
            if inst.is_random_next:
                assert (b // DOC_STRIDE == 2).all()


def test_truncate_seq_pair():
    rng = random.Random(0)
    for _ in range(200):
        la, lb, m = rng.randint(1, 60), rng.randint(1, 60), rng.randint(2, 80)
        a, b = list(range(la)), list(range(100, 100 + lb))
        truncate_seq_pair(a, b, m, rng)
        assert len(a) + len(b) == min(m, la + lb)
        # The longer side is cut first: the two end up within one token of each other, or only the longer one is cut.
        if la + lb > m:
            if abs(la - lb) >= la + lb - m:
                assert (len(a), len(b)) == ((la, m - la) if lb > la else (m - lb, lb))
            else:
                assert abs(len(a) - len(b)) <= 1
        # What is left is a contiguous span of the original (cut from the front and/or the back).
        assert a == list(range(a[0], a[0] + len(a))) and b == list(range(b[0], b[0] + len(b)))
    fronts = set()
    for seed in range(20):
        a = list(range(50))
        truncate_seq_pair(a, [1], 11, random.Random(seed))
        fronts.add(a[0])
    assert len(fronts) > 3  # both ends are cut, at random


def test_token_type_ids_and_special_positions():
    tt = token_type_ids(7, 4, 10)
    assert tt.dtype == np.int64
    assert tt.tolist() == [0, 0, 0, 0, 1, 1, 1, 0, 0, 0]
    sp = special_positions(7, 4, 10)
    assert sp.dtype == bool
    assert np.flatnonzero(sp).tolist() == [0, 3, 6, 7, 8, 9]
    batch_tt = token_type_ids(np.array([7, 10]), np.array([4, 2]), 10)
    assert batch_tt.shape == (2, 10)
    assert batch_tt[0].tolist() == tt.tolist() and batch_tt[1].tolist() == [0, 0] + [1] * 8
    batch_sp = special_positions(np.array([7, 10]), np.array([4, 2]), 10)
    assert np.flatnonzero(batch_sp[1]).tolist() == [0, 1, 9]
    with pytest.raises(ValueError):
        token_type_ids(11, 4, 10)


def test_helpers_agree_with_instances(instances):
    for _, inst in instances[:300]:
        t = inst.tokens
        padded = np.zeros(128, dtype=np.int64)
        padded[: len(t)] = t
        sp = special_positions(len(t), inst.segment_a_len, 128)
        assert ((padded == CLS) | (padded == SEP) | (np.arange(128) >= len(t))).tolist() == sp.tolist()
        tt = token_type_ids(len(t), inst.segment_a_len, 128)
        assert tt.sum() == len(t) - inst.segment_a_len


class IndexedSource(ListSource):
    """A source that also offers sentence lengths and contiguous document tokens, like IndexedShards."""

    def sentence_lengths(self, i: int) -> np.ndarray:
        return np.array([len(s) for s in self.document_sentences(i)], dtype=np.int64)

    def document_tokens(self, i: int) -> np.ndarray:
        return np.concatenate(self.document_sentences(i))


def test_contiguous_fast_path_gives_the_same_instances(corpus):
    """The random-B fast path (one slice of the document) equals the sentence-list path, draw for draw."""
    fast = IndexedSource([corpus.document_sentences(i) for i in range(corpus.num_documents)])
    for seed in range(3):
        for doc in range(corpus.num_documents):
            a, b = build(corpus, doc, seed=seed), build(fast, doc, seed=seed)
            assert len(a) == len(b)
            for x, y in zip(a, b):
                assert np.array_equal(x.tokens, y.tokens) and x.segment_a_len == y.segment_a_len
                assert x.is_random_next == y.is_random_next
