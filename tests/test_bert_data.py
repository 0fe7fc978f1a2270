"""The ``bert`` stage and ``BertDataset`` on real data: Lee news corpus -> tiny WordPiece -> shards -> instances."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from data_prep.bert_data import BertDataset, build_bert_instances
from data_prep.config import BertInstanceConfig, MaskingConfig, ShardConfig, TokenizerConfig
from data_prep.datasets import check_data_manifest, open_dataset
from data_prep.errors import UserError
from data_prep.manifest import read_manifest, sha256_file, verify_checksums, write_manifest
from data_prep.shards import IndexedShards
from data_prep.text import split_sentences
from data_prep.tokenize import tokenize_to_shards
from data_prep.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

N_DOCS = 60
L = 64
SINGLE_SENTENCE_DOCS = 2


def _documents(lee_corpus: Path) -> list[list[str]]:
    """60 real news documents as sentence lists, plus two single-sentence documents."""
    lines = [ln.strip() for ln in lee_corpus.read_text(encoding="utf-8").splitlines() if ln.strip()]
    docs = [split_sentences(t) for t in lines[:N_DOCS]]
    singles = [[split_sentences(t)[0].strip()] for t in lines[N_DOCS : N_DOCS + SINGLE_SENTENCE_DOCS]]
    return docs + singles


def make_shards(
    root: Path, lee_corpus: Path, kind: str, vocab_size: int, valid_fraction: float = 0.1
) -> Path:
    """documents folder -> trained tokenizer -> shards folder; returns the shards folder."""
    docs = _documents(lee_corpus)
    doc_dir = root / "documents"
    if not (doc_dir / "manifest.json").exists():
        doc_dir.mkdir(parents=True)
        with open(doc_dir / "documents.jsonl", "w", encoding="utf-8") as f:
            for i, sents in enumerate(docs):
                f.write(json.dumps({"source": f"lee:{i}", "sentences": sents}) + "\n")
        write_manifest(doc_dir, "documents", counts={})
    cfg = TokenizerConfig(kind=kind, vocab_size=vocab_size, min_frequency=2)
    tok_dir = root / f"tok_{kind}"
    if not (tok_dir / "tokenizer.json").exists():
        save_tokenizer(train_tokenizer(("".join(s) for s in docs), cfg), tok_dir, cfg)
    out = root / f"shards_{kind}_{valid_fraction}"
    tokenize_to_shards(
        doc_dir, tok_dir, out, ShardConfig(valid_fraction=valid_fraction, workers=1), progress=False
    )
    return out


@pytest.fixture(scope="session")
def corpus_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bert_corpus")


@pytest.fixture(scope="session")
def wp_shards(corpus_root: Path, lee_corpus: Path) -> Path:
    return make_shards(corpus_root, lee_corpus, "wordpiece", 1000)


@pytest.fixture(scope="session")
def bpe_shards(corpus_root: Path, lee_corpus: Path) -> Path:
    return make_shards(corpus_root, lee_corpus, "bpe", 600)


BASE = BertInstanceConfig(max_seq_len=L, seed=7)


@pytest.fixture(scope="session")
def build(wp_shards: Path, tmp_path_factory: pytest.TempPathFactory):
    """Build (and cache by settings) a bert folder from the WordPiece shards."""
    cache: dict[str, Path] = {}

    def _build(cfg: BertInstanceConfig) -> Path:
        key = repr(cfg)
        if key not in cache:
            out = tmp_path_factory.mktemp("bert")
            build_bert_instances(wp_shards, out, cfg, progress=False)
            cache[key] = out
        return cache[key]

    return _build


def _rows(folder: Path, split: str = "train", **kw) -> list[dict[str, np.ndarray]]:
    ds = BertDataset(folder, split, **kw)
    return [ds.get(i) for i in range(len(ds))]


def _unmasked(row: dict[str, np.ndarray]) -> np.ndarray:
    return np.where(row["labels"] != -100, row["labels"], row["input_ids"])


def _find(hay: bytes, needle: np.ndarray) -> list[int]:
    """Token offsets where ``needle`` (uint32) occurs in ``hay`` (uint32 bytes)."""
    pat, out, start = needle.astype("<u4").tobytes(), [], 0
    while (k := hay.find(pat, start)) >= 0:
        if k % 4 == 0:
            out.append(k // 4)
        start = k + 1
    return out


def test_instances_are_cls_a_sep_b_sep_with_true_or_random_b(build, wp_shards: Path) -> None:
    folder = build(BASE)
    ds = BertDataset(folder, dynamic_masking=False)
    ids = ds.special_ids
    docs = IndexedShards(wp_shards / "train")
    hay = [np.asarray(docs.document_tokens(d)).astype("<u4").tobytes() for d in range(docs.num_documents)]
    assert len(ds) > 100
    labels_seen = set()
    for i in range(len(ds)):
        r = ds.get(i)
        assert all(v.dtype == np.int64 for v in r.values()) and r["next_sentence_label"].shape == ()
        n = int(r["attention_mask"].sum())
        assert r["attention_mask"].tolist() == [1] * n + [0] * (L - n)
        x, tt = r["input_ids"], r["token_type_ids"]
        assert (x[n:] == ids["pad"]).all() and (r["labels"] == -100).all()
        seps = np.flatnonzero(x[:n] == ids["sep"])
        assert x[0] == ids["cls"] and len(seps) == 2 and seps[1] == n - 1
        assert not np.isin(x[1:n], [ids["cls"], ids["pad"], ids["mask"]]).any()
        first = seps[0]
        assert tt.tolist() == [0] * (first + 1) + [1] * (n - first - 1) + [0] * (L - n)
        a, b = x[1:first], x[first + 1 : n - 1]
        assert len(a) and len(b)
        in_a = {d for d in range(len(hay)) if _find(hay[d], a)}
        in_b = {d for d in range(len(hay)) if _find(hay[d], b)}
        assert in_a and in_b  # both segments are real spans of the corpus
        label = int(r["next_sentence_label"])
        labels_seen.add(label)
        if label == 0:  # true continuation: B after A in the same document
            follows = any(
                pb >= pa + len(a) for d in in_a & in_b for pa in _find(hay[d], a) for pb in _find(hay[d], b)
            )
            assert follows, f"instance {i}: B does not follow A"
        else:
            assert any(da != db for da in in_a for db in in_b), (
                f"instance {i}: random B from A's own document"
            )
    assert labels_seen == {0, 1}


def test_manifest_counts_nsp_ratio_and_files(build, wp_shards: Path) -> None:
    folder = build(BASE)
    m = read_manifest(folder, "bert")
    verify_checksums(folder, m)
    assert m["settings"]["dupe_factor"] == 1 and m["max_seq_len"] == L and m["static_masking"] is False
    assert m["tokenizer"] == read_manifest(wp_shards, "shards")["tokenizer"]
    assert (folder / "tokenizer.json").read_bytes() == (wp_shards / "tokenizer.json").read_bytes()
    assert "shuffle" in m["order"]
    total_single = 0
    for split in ("train", "valid"):
        s = m["splits"][split]
        rows = _rows(folder, split, dynamic_masking=False)
        assert s["instances"] == len(rows) > 0
        assert s["random_next"] == sum(int(r["next_sentence_label"]) for r in rows)
        assert s["tokens"] == sum(int(r["attention_mask"].sum()) for r in rows)
        total_single += s["single_sentence_documents"]
    assert total_single == SINGLE_SENTENCE_DOCS
    train = m["splits"]["train"]
    # Google's rule is a fair coin per pair, but a one-sentence chunk always takes a random B and a random B
    # gives its unused sentences back for another pair, so the random share lands a little above one half.
    assert 0.45 < train["random_next"] / train["instances"] < 0.7


def test_static_masking_statistics(build) -> None:
    plain = _rows(build(BASE), dynamic_masking=False)
    folder = build(replace(BASE, static_masking=True))
    ds = BertDataset(folder)
    assert len(ds) == len(plain)  # masking does not touch pair building (separate random streams)
    with pytest.raises(UserError, match="statically"):
        BertDataset(folder, dynamic_masking=True)
    predicted = eligible = to_mask = kept = 0
    for i, p in enumerate(plain):
        r = ds.get(i)
        chosen = r["labels"] != -100
        special = (p["attention_mask"] == 0) | np.isin(
            p["input_ids"], [ds.special_ids["cls"], ds.special_ids["sep"]]
        )
        assert not (chosen & special).any() and chosen.any()
        assert (r["input_ids"][~chosen] == p["input_ids"][~chosen]).all()  # untouched outside predictions
        assert (r["labels"][chosen] == p["input_ids"][chosen]).all()  # labels are the original ids
        for k in ("token_type_ids", "attention_mask", "next_sentence_label"):
            assert (r[k] == p[k]).all()
        predicted += chosen.sum()
        eligible += (~special).sum()
        to_mask += (r["input_ids"][chosen] == ds.special_ids["mask"]).sum()
        kept += (r["input_ids"][chosen] == p["input_ids"][chosen]).sum()
    assert 0.13 < predicted / eligible < 0.17
    assert 0.72 < to_mask / predicted < 0.88 and 0.04 < kept / predicted < 0.17
    m = read_manifest(folder, "bert")
    assert m["splits"]["train"]["masked_predictions"] == predicted


def test_dupe_factor_two_passes_with_new_pairs_and_masks(build) -> None:
    one = build(replace(BASE, static_masking=True))
    two = build(replace(BASE, static_masking=True, dupe_factor=2))
    m1, m2 = read_manifest(one, "bert"), read_manifest(two, "bert")
    n1, n2 = m1["splits"]["train"]["instances"], m2["splits"]["train"]["instances"]
    assert 1.7 * n1 < n2 < 2.3 * n1 and m2["settings"]["dupe_factor"] == 2
    a, b = BertDataset(one), BertDataset(two)
    for i in range(n1):  # pass 0 is seeded the same as the single-pass build
        assert all((a.get(i)[k] == b.get(i)[k]).all() for k in ("input_ids", "labels"))
    first = {}
    for i in range(n1):
        r = b.get(i)
        first[_unmasked(r).tobytes()] = r["labels"]
    same_pair = same_mask = 0
    for i in range(n1, n2):
        r = b.get(i)
        prev = first.get(_unmasked(r).tobytes())
        if prev is not None:
            same_pair += 1
            same_mask += bool((prev == r["labels"]).all())
    assert same_pair >= 3 and same_pair < n2 - n1  # some identical pairs recur, most are new
    assert same_mask < same_pair / 2  # and the recurring ones get different masks


def test_dynamic_masking_is_a_function_of_seed_epoch_index(build) -> None:
    folder = build(BASE)
    ds = BertDataset(folder, seed=3)
    assert ds.dynamic and not ds.static
    plain = BertDataset(folder, dynamic_masking=False)
    again = pickle.loads(pickle.dumps(BertDataset(folder, seed=3)))
    differ = predicted = eligible = 0
    for i in range(len(ds)):
        r0, r1 = ds.get(i, 0), ds.get(i, 1)
        r0b = again.get(i, 0)
        assert all((r0[k] == r0b[k]).all() for k in r0)
        differ += not (r0["labels"] == r1["labels"]).all()
        p = plain.get(i)
        chosen = r0["labels"] != -100
        assert (r0["labels"][chosen] == p["input_ids"][chosen]).all()
        assert (r0["input_ids"][~chosen] == p["input_ids"][~chosen]).all()
        assert not chosen[p["attention_mask"] == 0].any() and not chosen[0]
        predicted += chosen.sum()
        eligible += int(p["attention_mask"].sum()) - 3
    assert differ > 0.9 * len(ds)
    assert 0.13 < predicted / eligible < 0.17
    ds.set_epoch(1)
    assert (ds[5]["input_ids"] == ds.get(5, 1)["input_ids"]).all()
    other_seed = BertDataset(folder, seed=4)
    assert sum(not (other_seed.get(i)["labels"] == ds.get(i)["labels"]).all() for i in range(50)) > 40
    with pytest.raises(IndexError):
        ds.get(len(ds))


def _whole_word_violations(folder: Path, **kw) -> tuple[int, int]:
    """(continuation pieces predicted, of them predicted without the piece before them) over the train split."""
    ds = BertDataset(folder, **kw)
    is_cont = np.array([t.startswith("##") for t in _vocab_tokens(folder)])
    pieces = violations = 0
    for i in range(len(ds)):
        r = ds.get(i)
        orig, chosen = _unmasked(r), r["labels"] != -100
        cont = is_cont[orig] & (r["attention_mask"] == 1)
        cont[1:] &= ~np.isin(orig[:-1], [ds.special_ids["cls"], ds.special_ids["sep"]])  # cut by truncation
        pieces += (chosen & cont).sum()
        # a ## piece and the piece before it belong to one word: chosen together or not at all
        violations += (cont[1:] & (chosen[1:] != chosen[:-1])).sum()
    return int(pieces), int(violations)


def _vocab_tokens(folder: Path) -> list[str]:
    vocab = load_tokenizer(folder).get_vocab()
    out = [""] * len(vocab)
    for t, i in vocab.items():
        out[i] = t
    return out


def test_whole_word_masking_keeps_pieces_with_their_word(build) -> None:
    ww = MaskingConfig(whole_word=True)
    pieces, bad = _whole_word_violations(build(replace(BASE, static_masking=True, masking=ww)))
    assert pieces > 20 and bad == 0
    pieces, bad = _whole_word_violations(build(replace(BASE, masking=ww)), seed=1)  # dynamic
    assert pieces > 20 and bad == 0
    _, bad = _whole_word_violations(build(replace(BASE, static_masking=True)))
    assert bad > 0  # token-level masking splits words, so the check above is not vacuous


def test_same_seed_same_files_other_seed_other_files(build, wp_shards: Path, tmp_path: Path) -> None:
    cfg = replace(BASE, static_masking=True, dupe_factor=2)
    ref = read_manifest(build(cfg), "bert")
    again = build_bert_instances(wp_shards, tmp_path / "again", cfg, progress=False)
    assert again["files"] == ref["files"]
    other = build_bert_instances(wp_shards, tmp_path / "other", replace(cfg, seed=8), progress=False)
    ref_ids = sha256_file(build(cfg) / "train" / "input_ids.bin")
    assert sha256_file(tmp_path / "other" / "train" / "input_ids.bin") != ref_ids
    assert other["splits"]["train"]["instances"] != 0


def test_tokenizer_checks(
    build, wp_shards: Path, bpe_shards: Path, tmp_path: Path, corpus_root: Path
) -> None:
    folder = build(BASE)
    BertDataset(folder, tokenizer=wp_shards / "tokenizer.json")  # the matching tokenizer is accepted
    with pytest.raises(UserError, match="tokenizer"):
        BertDataset(folder, tokenizer=bpe_shards / "tokenizer.json")
    other_cfg = TokenizerConfig(kind="wordpiece", vocab_size=900)
    other = train_tokenizer([ln for ln in _documents_text(corpus_root)], other_cfg)
    save_tokenizer(other, tmp_path / "tok900", other_cfg)
    with pytest.raises(UserError, match="built with tokenizer"):
        BertDataset(folder, tokenizer=tmp_path / "tok900")
    with pytest.raises(UserError, match="WordPiece tokenizer with \\[CLS\\]/\\[SEP\\]/\\[MASK\\].*bpe"):
        build_bert_instances(bpe_shards, tmp_path / "bad", BASE, progress=False)
    with pytest.raises(UserError, match="not found"):
        build_bert_instances(tmp_path / "missing", tmp_path / "bad2", BASE, progress=False)
    with pytest.raises(UserError, match="stage"):
        build_bert_instances(folder, tmp_path / "bad3", BASE, progress=False)  # a bert folder, not shards


def _documents_text(corpus_root: Path) -> list[str]:
    with open(corpus_root / "documents" / "documents.jsonl", encoding="utf-8") as f:
        return ["".join(json.loads(line)["sentences"]) for line in f]


def test_check_data_manifest_and_open_dataset(build, wp_shards: Path) -> None:
    folder = build(BASE)
    m = read_manifest(folder, "bert")
    check_data_manifest(m, vocab_size=m["vocab_size"], special_ids={"mask": 4, "pad": 0}, seq_len=L)
    with pytest.raises(
        UserError, match=r"runs/x: vocab_size \d+ in the data manifest but 30522 in the model"
    ):
        check_data_manifest(m, vocab_size=30522, where="runs/x")
    with pytest.raises(UserError, match="special_ids\\['mask'\\] 4 in the data manifest but 103"):
        check_data_manifest(m, special_ids={"mask": 103})
    with pytest.raises(UserError, match="max_seq_len 64 in the data manifest but 128"):
        check_data_manifest(m, seq_len=128)
    with pytest.raises(UserError, match="expected training data"):
        check_data_manifest(read_manifest(wp_shards))
    ds = open_dataset(folder, "valid", seed=2)
    assert isinstance(ds, BertDataset) and ds.seed == 2 and len(ds) == m["splits"]["valid"]["instances"]
    with pytest.raises(UserError, match="stage"):
        open_dataset(wp_shards)
    with pytest.raises(UserError, match="no split 'test'"):
        BertDataset(folder, "test")


def test_empty_split_gives_zero_instances(corpus_root: Path, lee_corpus: Path, tmp_path: Path) -> None:
    shards = make_shards(corpus_root, lee_corpus, "wordpiece", 1000, valid_fraction=0.0)
    m = build_bert_instances(shards, tmp_path / "b", replace(BASE, static_masking=True), progress=False)
    assert m["splits"]["valid"]["instances"] == 0 and m["splits"]["valid"]["documents"] == 0
    assert m["splits"]["train"]["instances"] > 0
    ds = BertDataset(tmp_path / "b", "valid")
    assert len(ds) == 0
    with pytest.raises(IndexError):
        ds.get(0)
