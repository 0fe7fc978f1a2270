"""The extract stage end to end: real Wikipedia slice, manifest, round trip, and bad input."""

from __future__ import annotations

import dataclasses
import json
import tracemalloc
from pathlib import Path

import pytest

from data_prep.config import SourceConfig
from data_prep.errors import UserError
from data_prep.extract import DOCUMENTS_FILE, extract, iter_texts, read_documents
from data_prep.manifest import read_manifest, verify_checksums
from data_prep.text import clean_text

MB = 1 << 20


@pytest.fixture(scope="module")
def enwiki_out(
    enwiki_dump: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict, SourceConfig]:
    out = tmp_path_factory.mktemp("enwiki_docs")
    cfg = SourceConfig(inputs=[str(enwiki_dump)], min_sentence_chars=3)
    manifest = extract(cfg, out, progress=False)
    return out, manifest, cfg


def test_enwiki_extract_manifest_and_round_trip(
    enwiki_out: tuple[Path, dict, SourceConfig], enwiki_dump: Path
) -> None:
    out, manifest, cfg = enwiki_out
    assert manifest == read_manifest(out, "documents")
    verify_checksums(out, manifest)
    assert manifest["settings"] == dataclasses.asdict(cfg)
    assert manifest["inputs"] == [{"path": str(enwiki_dump.resolve()), "bytes": enwiki_dump.stat().st_size}]
    assert manifest["skipped"]["wiki_redirect"]["count"] == 100
    assert sorted(p.name for p in out.iterdir()) == [DOCUMENTS_FILE, "manifest.json"]  # no temp file left

    docs = list(read_documents(out))
    counts = manifest["counts"]
    assert counts["documents"] == len(docs) == 106
    assert counts["sentences"] == sum(len(d["sentences"]) for d in docs)
    assert counts["characters"] == sum(len("".join(d["sentences"])) for d in docs)
    lines = (out / DOCUMENTS_FILE).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == docs

    by_title = {d["source"].split("#", 1)[1]: d for d in docs}
    anarchism = by_title["Anarchism"]
    assert (
        anarchism["sentences"][0]
        == "Anarchism is a political philosophy that advocates self-governed societies based on voluntary institutions."
    )
    assert len(anarchism["sentences"]) > 100
    for doc in docs:
        text = "".join(doc["sentences"])
        assert clean_text(text) == text  # stored text is already clean
        assert all(len(s.strip()) >= 3 for s in doc["sentences"][1:])
        assert all(s[0].isspace() for s in doc["sentences"][1:])
        assert not any(m in text for m in ("{{", "}}", "[[", "]]", "<ref", "{|"))


def test_iter_texts_from_extract_output_and_raw_source(
    enwiki_out: tuple[Path, dict, SourceConfig], lee_corpus: Path
) -> None:
    out, manifest, _ = enwiki_out
    texts = list(iter_texts([str(out)]))
    assert len(texts) == manifest["counts"]["documents"]
    assert sum(map(len, texts)) == manifest["counts"]["characters"]
    raw = list(iter_texts([str(lee_corpus)]))
    assert len(raw) == 1 and raw[0] == clean_text(lee_corpus.read_text(encoding="utf-8"))


def test_extract_bgwiki_cyrillic(bgwiki_dump: Path, tmp_path: Path) -> None:
    manifest = extract(SourceConfig(inputs=[str(bgwiki_dump)]), tmp_path, progress=False)
    assert manifest["counts"]["documents"] == 1
    (doc,) = read_documents(tmp_path)
    assert doc["sentences"][0].startswith("Григорианският календар")
    assert len(doc["sentences"]) > 10


def test_extract_pkg_input(lee_corpus: Path, tmp_path: Path) -> None:
    cfg = SourceConfig(inputs=[f"pkg:gensim/test/test_data/{lee_corpus.name}"], one_doc_per_line=True)
    manifest = extract(cfg, tmp_path, progress=True)
    assert manifest["counts"]["documents"] == 300


def test_min_document_and_sentence_chars(tmp_path: Path) -> None:
    src = tmp_path / "c.txt"
    src.write_text("Hi.\n\nThis one is long enough. Ok. It has sentences.\n\n\x00\x01\n\nTiny")
    cfg = SourceConfig(inputs=[str(src)], min_document_chars=10, min_sentence_chars=5)
    manifest = extract(cfg, tmp_path / "out", progress=False)
    docs = list(read_documents(tmp_path / "out"))
    assert [d["sentences"] for d in docs] == [["This one is long enough. Ok.", " It has sentences."]]
    assert manifest["skipped"]["document_too_short"]["count"] == 3
    assert manifest["skipped"]["document_too_short"]["examples"] == ["c.txt:1", "c.txt:5", "c.txt:7"]


# --- bad input -------------------------------------------------------------------------------------------


def test_missing_input(tmp_path: Path) -> None:
    missing = tmp_path / "missing.txt"
    with pytest.raises(UserError, match=f"input file not found: {missing}"):
        extract(SourceConfig(inputs=[str(missing)]), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_empty_corpus(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\t\n")
    with pytest.raises(UserError, match=r"no documents found in .*empty\.txt, .*blank\.txt \(empty corpus"):
        extract(SourceConfig(inputs=[str(empty), str(blank)]), tmp_path / "out", progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_empty_corpus_mentions_skips(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n[1]\n")
    with pytest.raises(UserError, match=r"invalid_json: 1, missing_text_field: 1"):
        extract(SourceConfig(inputs=[str(bad)]), tmp_path / "out", progress=False)


def test_invalid_utf8_counted(tmp_path: Path) -> None:
    src = tmp_path / "latin1.txt"
    src.write_bytes("First document, fine.\n\nCaf\u00e9 in Latin-1.\n\nLast one.\n".encode("latin-1"))
    manifest = extract(SourceConfig(inputs=[str(src)]), tmp_path / "out", progress=False)
    assert manifest["skipped"]["invalid_utf8"] == {"count": 1, "examples": [f"{src}:3"]}
    texts = ["".join(d["sentences"]) for d in read_documents(tmp_path / "out")]
    assert texts == ["First document, fine.", "Caf\ufffd in Latin-1.", "Last one."]


def test_invalid_json_lines_counted(tmp_path: Path) -> None:
    src = tmp_path / "data.jsonl"
    src.write_text('{"text": "Good one."}\n{"text": broken\n{"text": "Good two."}\nnot json at all\n')
    manifest = extract(SourceConfig(inputs=[str(src)]), tmp_path / "out", progress=False)
    assert manifest["counts"]["documents"] == 2
    assert manifest["skipped"]["invalid_json"] == {"count": 2, "examples": [f"{src}:2", f"{src}:4"]}


def test_100mb_line_is_skipped_with_bounded_memory(tmp_path: Path) -> None:
    src = tmp_path / "huge.txt"
    with open(src, "wb") as f:
        f.write(b"Before the huge line.\n\n")
        chunk = b"x" * MB
        for _ in range(100):
            f.write(chunk)
        f.write(b"\nAfter the huge line.\n")
    cfg = SourceConfig(inputs=[str(src)], max_line_bytes=1_000_000)
    tracemalloc.start()
    try:
        manifest = extract(cfg, tmp_path / "out", progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * MB, f"peak {peak / MB:.1f} MiB"
    assert manifest["skipped"]["line_too_long"] == {"count": 1, "examples": [f"{src}:3"]}
    texts = ["".join(d["sentences"]) for d in read_documents(tmp_path / "out")]
    assert texts == ["Before the huge line.", "After the huge line."]


def test_truncated_bz2_dump(enwiki_dump: Path, tmp_path: Path) -> None:
    data = enwiki_dump.read_bytes()
    bad = tmp_path / "enwiki-truncated.xml.bz2"
    bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    with pytest.raises(UserError) as info:
        extract(SourceConfig(inputs=[str(bad)]), out, progress=False)
    message = str(info.value)
    assert str(bad) in message and "truncated or corrupt .bz2 stream after page" in message
    assert "\n" not in message
    assert list(out.iterdir()) == []  # the temp file is removed, no manifest


def test_read_documents_corrupt_line(tmp_path: Path) -> None:
    path = tmp_path / DOCUMENTS_FILE
    path.write_text('{"source": "a:1", "sentences": ["A."]}\n{"source": "a:2", "sent\n')
    with pytest.raises(UserError, match=rf"{DOCUMENTS_FILE}:2: corrupt line"):
        list(read_documents(tmp_path))
    path.write_text('{"source": "a:1", "sentences": "not a list"}\n')
    with pytest.raises(UserError, match=rf"{DOCUMENTS_FILE}:1: corrupt line"):
        list(read_documents(tmp_path))
    with pytest.raises(UserError, match="not found"):
        list(read_documents(tmp_path / "nowhere"))
