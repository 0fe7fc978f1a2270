"""Indexed shards: the binary format, rollover, corruption checks, and tokenizing real documents into splits."""

from __future__ import annotations

import json
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from data_prep.config import ShardConfig, TokenizerConfig
from data_prep.errors import UserError
from data_prep.manifest import file_entry, read_manifest, verify_checksums, write_manifest
from data_prep.shards import IndexedShards, ShardWriter, dtype_for_vocab, open_split
from data_prep.tokenize import split_of, tokenize_to_shards
from data_prep.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer


def _read_jsonl(folder: str | Path) -> Iterator[dict]:
    with open(Path(folder) / "documents.jsonl", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


@pytest.fixture(autouse=True)
def _documents_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    """Use the real ``data_prep.extract.read_documents`` when it exists; a plain JSONL reader until then."""
    try:
        import data_prep.extract  # noqa: F401
    except ImportError:
        stub = types.ModuleType("data_prep.extract")
        stub.read_documents = _read_jsonl  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "data_prep.extract", stub)


def _random_docs(rng: np.random.Generator, n: int, high: int) -> list[list[np.ndarray]]:
    return [
        [rng.integers(0, high, size=int(rng.integers(1, 40))) for _ in range(int(rng.integers(1, 6)))]
        for _ in range(n)
    ]


def _assert_same(reader: IndexedShards, docs: list[list[np.ndarray]]) -> None:
    assert reader.num_documents == len(docs) == len(reader)
    assert reader.num_sentences == sum(len(d) for d in docs)
    assert reader.num_tokens == sum(s.size for d in docs for s in d)
    for i, doc in enumerate(docs):
        got = reader.document_sentences(i)
        assert len(got) == len(doc)
        for a, b in zip(got, doc):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(reader.document_tokens(i), np.concatenate(doc))
        np.testing.assert_array_equal(reader.sentence_lengths(i), [s.size for s in doc])
    for got, doc in zip(reader.iter_documents(), docs, strict=True):
        np.testing.assert_array_equal(got, np.concatenate(doc))


def test_dtype_choice() -> None:
    assert dtype_for_vocab(30522) == np.uint16
    assert dtype_for_vocab(65535) == np.uint16
    assert dtype_for_vocab(65536) == np.uint32
    assert dtype_for_vocab(200_000) == np.uint32


@pytest.mark.parametrize("vocab", [30522, 100_000])
def test_writer_reader_round_trip(tmp_path: Path, vocab: int) -> None:
    rng = np.random.default_rng(vocab)
    docs = _random_docs(rng, 200, vocab)
    docs[7].insert(1, np.zeros(0, dtype=np.int64))  # an empty sentence is kept as an empty view
    dtype = dtype_for_vocab(vocab)
    writer = ShardWriter(tmp_path, dtype, shard_tokens=10**9)
    for d in docs:
        writer.add_document(d)
    shards = writer.close()
    assert [s["name"] for s in shards] == ["shard_00000"]
    assert (tmp_path / "shard_00000.bin").stat().st_size == sum(
        s.size for d in docs for s in d
    ) * dtype.itemsize
    reader = IndexedShards(tmp_path)
    assert reader.dtype == dtype
    if vocab > 65535:
        assert max(int(reader.document_tokens(i).max()) for i in range(len(docs))) > 65535
    _assert_same(reader, docs)
    with pytest.raises(IndexError):
        reader.document_tokens(len(docs))


def test_uint16_rejects_ids_that_do_not_fit(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path, dtype_for_vocab(1000), shard_tokens=100)
    with pytest.raises(ValueError, match="65535"):
        writer.add_document([np.array([1, 70000])])


def test_rollover_keeps_documents_whole(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    docs = _random_docs(rng, 120, 500)
    writer = ShardWriter(tmp_path, np.dtype(np.uint16), shard_tokens=300)
    for d in docs:
        writer.add_document(d)
    shards = writer.close()
    # Expected layout: a shard closes right after the document that takes it to >= 300 tokens.
    expected, cur = [], [0, 0]
    for d in docs:
        cur = [cur[0] + 1, cur[1] + sum(s.size for s in d)]
        if cur[1] >= 300:
            expected.append(cur)
            cur = [0, 0]
    if cur[0]:
        expected.append(cur)
    assert [[s["documents"], s["tokens"]] for s in shards] == expected
    assert len(shards) > 5
    assert sorted(p.name for p in tmp_path.glob("shard_*.bin")) == [f"{s['name']}.bin" for s in shards]
    _assert_same(IndexedShards(tmp_path), docs)

    # Rewriting the folder with fewer documents removes the stale shards of the longer run.
    writer = ShardWriter(tmp_path, np.dtype(np.uint16), shard_tokens=300)
    writer.add_document(docs[0])
    assert len(writer.close()) == 1
    _assert_same(IndexedShards(tmp_path), docs[:1])


def test_empty_writer_gives_readable_empty_split(tmp_path: Path) -> None:
    assert ShardWriter(tmp_path, np.dtype(np.uint16), 100).close() == [
        {"name": "shard_00000", "documents": 0, "sentences": 0, "tokens": 0}
    ]
    reader = IndexedShards(tmp_path)
    assert (reader.num_documents, reader.num_tokens) == (0, 0)
    assert list(reader.iter_documents()) == []


def test_corrupt_or_missing_shards_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no shard"):
        IndexedShards(tmp_path)
    docs = _random_docs(np.random.default_rng(1), 20, 1000)
    writer = ShardWriter(tmp_path, np.dtype(np.uint16), 10**6)
    for d in docs:
        writer.add_document(d)
    writer.close()
    idx, bin_ = tmp_path / "shard_00000.idx", tmp_path / "shard_00000.bin"
    good_idx, good_bin = idx.read_bytes(), bin_.read_bytes()

    idx.write_bytes(good_idx[:-8])  # truncated index
    with pytest.raises(UserError, match="truncated"):
        IndexedShards(tmp_path)
    idx.write_bytes(b"NOTSHARD" + good_idx[8:])  # wrong magic
    with pytest.raises(UserError, match="header"):
        IndexedShards(tmp_path)
    idx.write_bytes(good_idx)
    bin_.write_bytes(good_bin[:-2])  # truncated tokens
    with pytest.raises(UserError, match="offsets do not match"):
        IndexedShards(tmp_path)
    bin_.write_bytes(good_bin)
    n_sents = sum(len(d) for d in docs)
    end = 32 + 8 * n_sents  # sentence_offsets[-1]: the index claims more tokens than the .bin holds
    broken = bytearray(good_idx)
    broken[end : end + 8] = np.array([10**6], dtype="<i8").tobytes()
    idx.write_bytes(bytes(broken))
    with pytest.raises(UserError, match="offsets do not match"):
        IndexedShards(tmp_path)
    idx.unlink()
    with pytest.raises(UserError, match="index missing"):
        IndexedShards(tmp_path)


def test_split_of_is_deterministic_and_near_the_fraction() -> None:
    a = [split_of(i, 7, 0.1) for i in range(20_000)]
    assert a == [split_of(i, 7, 0.1) for i in range(20_000)]
    assert 0.09 < a.count("valid") / len(a) < 0.11
    assert a != [split_of(i, 8, 0.1) for i in range(20_000)]
    assert all(split_of(i, 7, 0.0) == "train" for i in range(1000))


# --- tokenize_to_shards on real text --------------------------------------------------------------------


def _sentences(text: str) -> list[str]:
    """Split after . ! ? with the following whitespace leading the next sentence, so "".join gives the text."""
    return [s for s in re.split(r"(?<=[.!?])(?=\s)", text) if s]


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory, lee_corpus: Path) -> Path:
    folder = tmp_path_factory.mktemp("documents")
    lines = [line for line in lee_corpus.read_text(encoding="utf-8").splitlines() if line.strip()][:150]
    docs = [{"source": f"lee:{i + 1}", "sentences": _sentences(line)} for i, line in enumerate(lines)]
    docs.insert(
        3, {"source": "extra:1", "sentences": ["Café naïve — 日本語 🎉.", "\n\tSecond line, Ünïcödé!"]}
    )
    docs.insert(10, {"source": "extra:2", "sentences": ["Kept sentence.", "", " Another one."]})
    docs.insert(20, {"source": "extra:3", "sentences": [""]})  # nothing to tokenize
    with open(folder / "documents.jsonl", "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    counts = {"documents": len(docs), "sentences": sum(len(d["sentences"]) for d in docs)}
    write_manifest(folder, "documents", counts=counts, files=[file_entry(folder / "documents.jsonl", folder)])
    return folder


@pytest.fixture(scope="module")
def doc_list(documents: Path) -> list[dict]:
    return list(_read_jsonl(documents))


def _train(doc_list: list[dict], kind: str, out: Path) -> Path:
    # Trained on the Lee news text only, so the hand-made unicode document has characters outside the vocab.
    texts = ["".join(d["sentences"]) for d in doc_list if d["source"].startswith("lee:")]
    tok = train_tokenizer(iter(texts), TokenizerConfig(kind=kind, vocab_size=1500))
    return save_tokenizer(tok, out, TokenizerConfig(kind=kind, vocab_size=1500))


@pytest.fixture(scope="module")
def bpe_file(tmp_path_factory: pytest.TempPathFactory, doc_list: list[dict]) -> Path:
    return _train(doc_list, "bpe", tmp_path_factory.mktemp("bpe"))


@pytest.fixture(scope="module")
def wp_file(tmp_path_factory: pytest.TempPathFactory, doc_list: list[dict]) -> Path:
    return _train(doc_list, "wordpiece", tmp_path_factory.mktemp("wp"))


def _check_manifest(out: Path, manifest: dict) -> None:
    assert manifest == read_manifest(out, "shards")
    verify_checksums(out, manifest)
    for split in ("train", "valid"):
        reader = open_split(out, split)
        info = manifest["splits"][split]
        assert (info["documents"], info["sentences"], info["tokens"]) == (
            reader.num_documents,
            reader.num_sentences,
            reader.num_tokens,
        )
    c = manifest["counts"]
    assert c["documents"] == sum(manifest["splits"][s]["documents"] for s in ("train", "valid"))
    assert c["tokens"] == sum(manifest["splits"][s]["tokens"] for s in ("train", "valid"))


def test_bpe_shards_reproduce_every_document(
    tmp_path: Path, documents: Path, doc_list: list[dict], bpe_file: Path
) -> None:
    cfg = ShardConfig(valid_fraction=0.2, shard_tokens=2000, workers=1, batch_documents=16, seed=3)
    m = tokenize_to_shards(documents, bpe_file, tmp_path, cfg, progress=False)
    _check_manifest(tmp_path, m)
    tok = load_tokenizer(tmp_path / "tokenizer.json")
    assert (tmp_path / "tokenizer.json").read_bytes() == bpe_file.read_bytes()
    assert m["dtype"] == "uint16" and m["tokenizer"]["kind"] == "bpe"
    assert m["skipped"]["empty_sentence"]["count"] == 2
    assert m["skipped"]["empty_document"] == {"count": 1, "examples": ["extra:3"]}
    assert m["counts"]["documents_read"] == len(doc_list) and m["counts"]["documents"] == len(doc_list) - 1
    assert len(m["splits"]["train"]["shards"]) > 1 and m["splits"]["valid"]["documents"] > 10
    checked = 0
    readers = {s: open_split(tmp_path, s) for s in ("train", "valid")}
    positions = {"train": 0, "valid": 0}
    for i, doc in enumerate(doc_list):
        text = "".join(doc["sentences"])
        if not text:
            continue
        split = split_of(i, cfg.seed, cfg.valid_fraction)
        j = positions[split]
        positions[split] += 1
        assert tok.decode(readers[split].document_tokens(j).tolist()) == text
        sentences = [tok.decode(s.tolist()) for s in readers[split].document_sentences(j)]
        assert sentences == [s for s in doc["sentences"] if s]
        checked += 1
    assert checked == len(doc_list) - 1
    assert positions == {s: readers[s].num_documents for s in readers}


def test_wordpiece_shards_match_normalised_text(
    tmp_path: Path, documents: Path, doc_list: list[dict], wp_file: Path
) -> None:
    cfg = ShardConfig(valid_fraction=0.1, shard_tokens=10**6, workers=1, batch_documents=64, seed=11)
    m = tokenize_to_shards(documents, wp_file, tmp_path, cfg, progress=False)
    _check_manifest(tmp_path, m)
    tok = load_tokenizer(wp_file)
    unk_id = tok.token_to_id("[UNK]")
    readers = {s: open_split(tmp_path, s) for s in ("train", "valid")}
    positions = {"train": 0, "valid": 0}
    unk = 0
    for i, doc in enumerate(doc_list):
        kept = [s.strip() for s in doc["sentences"] if s.strip()]
        if not kept:
            continue
        split = split_of(i, cfg.seed, cfg.valid_fraction)
        got = readers[split].document_sentences(positions[split])
        positions[split] += 1
        assert len(got) == len(kept)
        for ids, sentence in zip(got, kept):
            assert not {0, 2, 3, 4} & set(ids.tolist())  # no [PAD] [CLS] [SEP] [MASK] inside shards
            unk += int((ids == unk_id).sum())
            pieces = [tok.id_to_token(int(t)) for t in ids]
            words: list[str] = []
            for p in pieces:
                if p.startswith("##"):
                    words[-1] += p[2:]
                else:
                    words.append(p)
            normal = [
                w for w, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(sentence))
            ]
            assert len(words) == len(normal)
            assert all(w == n or w == "[UNK]" for w, n in zip(words, normal))
    assert m["counts"]["unk_tokens"] == unk > 0  # the CJK/emoji document has characters the vocab lacks
    assert m["tokenizer"]["lowercase"] is True


def test_workers_do_not_change_output(tmp_path: Path, documents: Path, bpe_file: Path) -> None:
    base = dict(valid_fraction=0.2, shard_tokens=3000, batch_documents=5, seed=5)
    one = tokenize_to_shards(
        documents, bpe_file, tmp_path / "one", ShardConfig(workers=1, **base), progress=False
    )
    two = tokenize_to_shards(
        documents, bpe_file, tmp_path / "two", ShardConfig(workers=2, **base), progress=False
    )
    assert one["files"] == two["files"]
    assert one["splits"] == two["splits"] and one["skipped"] == two["skipped"]
    assert len(one["splits"]["train"]["shards"]) > 1


def test_split_depends_on_seed_only(
    tmp_path: Path, documents: Path, doc_list: list[dict], bpe_file: Path
) -> None:
    def valid_texts(seed: int, batch: int, name: str) -> list[str]:
        cfg = ShardConfig(valid_fraction=0.25, workers=1, batch_documents=batch, seed=seed)
        tokenize_to_shards(documents, bpe_file, tmp_path / name, cfg, progress=False)
        tok = load_tokenizer(bpe_file)
        return [tok.decode(d.tolist()) for d in open_split(tmp_path / name, "valid").iter_documents()]

    a = valid_texts(1, 7, "a")
    assert a == valid_texts(1, 100, "b")
    assert a != valid_texts(2, 7, "c")
    texts = ["".join(d["sentences"]) for d in doc_list]
    expected = [t for i, t in enumerate(texts) if t and split_of(i, 1, 0.25) == "valid"]
    assert a == expected


def test_empty_valid_split_warns_and_is_recorded(tmp_path: Path, bpe_file: Path) -> None:
    docs_dir = tmp_path / "docs"
    docs_dir.mkdir()
    docs = [{"source": f"x:{i}", "sentences": ["First one.", " Second one."]} for i in range(3)]
    (docs_dir / "documents.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    write_manifest(docs_dir, "documents", counts={"documents": 3})
    seed = next(s for s in range(100) if all(split_of(i, s, 0.01) == "train" for i in range(3)))
    cfg = ShardConfig(valid_fraction=0.01, workers=1, seed=seed)
    with pytest.warns(UserWarning, match="valid split is empty"):
        m = tokenize_to_shards(docs_dir, bpe_file, tmp_path / "out", cfg, progress=False)
    assert m["splits"]["valid"]["documents"] == 0 and m["splits"]["train"]["documents"] == 3
    assert any("valid split is empty" in w for w in m["warnings"])
    assert open_split(tmp_path / "out", "valid").num_documents == 0


def test_bad_inputs(tmp_path: Path, documents: Path, bpe_file: Path) -> None:
    with pytest.raises(UserError, match="valid_fraction"):
        tokenize_to_shards(documents, bpe_file, tmp_path, ShardConfig(valid_fraction=1.0), progress=False)
    with pytest.raises(UserError, match="manifest"):
        tokenize_to_shards(tmp_path, bpe_file, tmp_path / "o", ShardConfig(workers=1), progress=False)
    with pytest.raises(UserError, match="nope"):
        tokenize_to_shards(
            documents, tmp_path / "nope", tmp_path / "o", ShardConfig(workers=1), progress=False
        )
    with pytest.raises(UserError, match="split"):
        open_split(tmp_path, "test")
