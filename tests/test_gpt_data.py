"""The ``gpt`` stage and ``GptDataset`` on real data: Lee news corpus -> tiny byte-level BPE -> shards -> windows."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from data_prep.config import GptPackingConfig, ShardConfig, TokenizerConfig
from data_prep.datasets import check_data_manifest, open_dataset
from data_prep.errors import UserError
from data_prep.gpt_data import GptDataset, pack_gpt_windows
from data_prep.manifest import read_manifest, verify_checksums, write_manifest
from data_prep.packing import dropped_tail, num_windows, pack_documents, window
from data_prep.shards import IndexedShards
from data_prep.text import split_sentences
from data_prep.tokenize import split_of, tokenize_to_shards
from data_prep.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

N_DOCS = 60
SEQ = 48
EOT = "<|endoftext|>"
SHARD_CFG = ShardConfig(valid_fraction=0.1, workers=1)


def _texts(lee_corpus: Path) -> list[str]:
    lines = [ln.strip() for ln in lee_corpus.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return lines[:N_DOCS]


@pytest.fixture(scope="session")
def gpt_root(tmp_path_factory: pytest.TempPathFactory, lee_corpus: Path) -> Path:
    """documents folder + BPE (600) and WordPiece (1000) tokenizers + shards of each."""
    root = tmp_path_factory.mktemp("gpt_corpus")
    texts = _texts(lee_corpus)
    doc_dir = root / "documents"
    doc_dir.mkdir()
    with open(doc_dir / "documents.jsonl", "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            sents = split_sentences(t)
            assert "".join(sents) == t
            f.write(json.dumps({"source": f"lee:{i}", "sentences": sents}) + "\n")
    write_manifest(doc_dir, "documents", counts={})
    for kind, vocab in (("bpe", 600), ("wordpiece", 1000)):
        cfg = TokenizerConfig(kind=kind, vocab_size=vocab)
        save_tokenizer(train_tokenizer(texts, cfg), root / f"tok_{kind}", cfg)
        tokenize_to_shards(doc_dir, root / f"tok_{kind}", root / f"shards_{kind}", SHARD_CFG, progress=False)
    return root


@pytest.fixture(scope="session")
def gpt_folder(gpt_root: Path) -> Path:
    out = gpt_root / "gpt"
    pack_gpt_windows(gpt_root / "shards_bpe", out, GptPackingConfig(seq_len=SEQ), progress=False)
    return out


def test_pack_documents_and_windows_unit() -> None:
    docs = [
        np.array([5, 6, 7], dtype=np.uint16),
        np.array([], dtype=np.uint16),
        np.array([8], dtype=np.uint16),
    ]
    packed = list(pack_documents(iter(docs), eot_id=0))
    assert [p.tolist() for p in packed] == [[5, 6, 7, 0], [0], [8, 0]]
    assert packed[0].dtype == np.uint16
    stream = np.concatenate(packed)  # 7 tokens
    assert num_windows(7, 3) == 2 and dropped_tail(7, 3) == 0
    assert num_windows(6, 3) == 1 and dropped_tail(6, 3) == 2
    assert num_windows(1, 3) == 0 and dropped_tail(1, 3) == 0 and dropped_tail(0, 3) == 0
    x, y = window(stream, 1, 3)
    assert x.tolist() == [0, 0, 8] and y.tolist() == [0, 8, 0] and x.dtype == np.int64
    assert window(stream, -1, 3)[0].tolist() == x.tolist()
    with pytest.raises(IndexError):
        window(stream, 2, 3)


def test_windows_round_trip_every_document(gpt_root: Path, gpt_folder: Path, lee_corpus: Path) -> None:
    texts = _texts(lee_corpus)
    tok = load_tokenizer(gpt_folder)
    m = read_manifest(gpt_folder, "gpt")
    verify_checksums(gpt_folder, m)
    assert m["eot_id"] == tok.token_to_id(EOT) == m["special_ids"]["eot"]
    seen = []
    for split in ("train", "valid"):
        ds = GptDataset(gpt_folder, split)
        s = m["splits"][split]
        assert len(ds) == s["windows"] > 0
        ids = []
        for i in range(len(ds)):
            r = ds.get(i)
            x, y = r["input_ids"], r["labels"]
            assert x.dtype == y.dtype == np.int64 and x.shape == y.shape == (SEQ,)
            assert (y[:-1] == x[1:]).all()  # labels are the inputs shifted by one
            if i + 1 < len(ds):
                assert y[-1] == ds.get(i + 1)["input_ids"][0]
            ids.extend(x.tolist())
        ids.append(int(r["labels"][-1]))
        tail = ds.tokens[len(ids) :]
        assert len(tail) == s["dropped_tail_tokens"] < SEQ
        assert (
            len(ids) + s["dropped_tail_tokens"]
            == s["tokens"]
            == s["windows"] * SEQ + 1 + s["dropped_tail_tokens"]
        )
        text = tok.decode(ids + tail.tolist(), skip_special_tokens=False)
        expected = [
            t for i, t in enumerate(texts) if split_of(i, SHARD_CFG.seed, SHARD_CFG.valid_fraction) == split
        ]
        assert s["documents"] == len(expected) and text == "".join(t + EOT for t in expected)
        assert s["tokens"] == IndexedShards(gpt_root / "shards_bpe" / split).num_tokens + len(expected)
        seen.extend(expected)
    assert sorted(seen) == sorted(texts)
    assert m["seq_len"] == SEQ and m["settings"] == {"seq_len": SEQ} and "shuffle" in m["order"]


def test_dataset_interface_and_checks(gpt_root: Path, gpt_folder: Path) -> None:
    ds = open_dataset(gpt_folder, "train", seed=5)
    assert isinstance(ds, GptDataset)
    again = pickle.loads(pickle.dumps(ds))
    assert (again.get(3)["input_ids"] == ds.get(3)["input_ids"]).all()
    ds.set_epoch(2)
    assert (ds[3]["labels"] == ds.get(3, 0)["labels"]).all()  # windows do not depend on the epoch
    with pytest.raises(IndexError):
        ds.get(len(ds))
    GptDataset(gpt_folder, tokenizer=gpt_root / "tok_bpe")
    with pytest.raises(UserError, match="built with tokenizer"):
        GptDataset(gpt_folder, tokenizer=gpt_root / "tok_wordpiece")
    m = ds.manifest
    check_data_manifest(m, vocab_size=m["vocab_size"], special_ids={"eot": 0}, seq_len=SEQ)
    with pytest.raises(UserError, match="seq_len 48 in the data manifest but 1024 in the model config"):
        check_data_manifest(m, seq_len=1024, where="gpt")
    with pytest.raises(UserError, match="vocab_size"):
        check_data_manifest(m, vocab_size=50257)
    with pytest.raises(UserError, match="special_ids\\['eot'\\]"):
        check_data_manifest(m, special_ids={"eot": 50256})


def test_refuses_wordpiece_and_bad_folders(gpt_root: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="wordpiece tokenizer"):
        pack_gpt_windows(
            gpt_root / "shards_wordpiece", tmp_path / "x", GptPackingConfig(seq_len=SEQ), progress=False
        )
    with pytest.raises(UserError, match="not found"):
        pack_gpt_windows(tmp_path / "missing", tmp_path / "y", GptPackingConfig(), progress=False)
    with pytest.raises(UserError, match="seq_len"):
        pack_gpt_windows(gpt_root / "shards_bpe", tmp_path / "z", GptPackingConfig(seq_len=0), progress=False)


def test_truncated_tokens_file_is_refused(gpt_folder: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(gpt_folder, copy)
    path = copy / "train" / "tokens.bin"
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(UserError, match="bytes"):
        GptDataset(copy)
