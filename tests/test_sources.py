"""Raw sources: format detection, text/JSONL/datasets readers, and the real Wikipedia dump slices."""

from __future__ import annotations

import bz2
import gzip
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from data_prep.config import SourceConfig
from data_prep.errors import UserError
from data_prep.manifest import SkipLog
from data_prep.sources import Document, detect_format, iter_documents, resolve_input, wiki_to_text

MARKUP = ("{{", "}}", "[[", "]]", "<ref", "{|", "|}")


def read_all(tmp_inputs: list[str | Path], **kw: object) -> tuple[list[Document], SkipLog]:
    skips = SkipLog()
    cfg = SourceConfig(inputs=[str(p) for p in tmp_inputs], **kw)  # type: ignore[arg-type]
    return list(iter_documents(cfg, skips)), skips


# --- resolve_input / detect_format -----------------------------------------------------------------------


def test_resolve_input_pkg_and_missing(enwiki_dump: Path, tmp_path: Path) -> None:
    path = resolve_input(f"pkg:gensim/test/test_data/{enwiki_dump.name}")
    assert path.samefile(enwiki_dump)
    with pytest.raises(UserError, match="input file not found: .*nope.txt"):
        resolve_input(str(tmp_path / "nope.txt"))
    with pytest.raises(UserError, match=r"input file not found.*pip install -e \.\[demo\]"):
        resolve_input("pkg:no_such_package_xyz/data.txt")
    with pytest.raises(UserError, match="input file not found"):
        resolve_input("pkg:gensim/test/test_data/does-not-exist.bz2")


def test_detect_format_on_real_files(
    enwiki_dump: Path, bgwiki_dump: Path, lee_corpus: Path, gensim_data: Path
) -> None:
    assert detect_format(enwiki_dump) == "wiki"  # no .xml.bz2 suffix: recognised by content
    assert detect_format(bgwiki_dump) == "wiki"  # UTF-16 encoded dump
    assert detect_format(lee_corpus) == "text"
    assert detect_format(gensim_data / "head500.noblanks.cor.bz2") == "text"  # bz2 of plain text


def test_detect_format_jsonl_hf_and_folders(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "b.json").write_text('{"text": "x"}\n')
    with gzip.open(tmp_path / "c.txt.gz", "wt") as f:
        f.write("plain text\n")
    hf_dir = tmp_path / "hf"
    datasets.Dataset.from_dict({"text": ["a", "b"]}).save_to_disk(str(hf_dir))
    assert detect_format(tmp_path / "a.jsonl") == "jsonl"
    assert detect_format(tmp_path / "b.json") == "jsonl"
    assert detect_format(tmp_path / "c.txt.gz") == "text"
    assert detect_format(hf_dir) == "hf"
    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    assert detect_format(plain_dir) == "text"


# --- text and JSONL --------------------------------------------------------------------------------------


def test_text_documents_split_on_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text(
        "Doc one line one.\nDoc one line two.\n\n   \n\nDoc two.\n\n\nDoc three.", encoding="utf-8"
    )
    docs, skips = read_all([path])
    assert [d.text for d in docs] == ["Doc one line one.\nDoc one line two.", "Doc two.", "Doc three."]
    assert [d.source for d in docs] == ["corpus.txt:1", "corpus.txt:6", "corpus.txt:9"]
    assert not skips


def test_text_one_doc_per_line_on_lee_corpus(lee_corpus: Path) -> None:
    lines = [line for line in lee_corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    docs, _ = read_all([lee_corpus], one_doc_per_line=True)
    assert len(docs) == len(lines) == 300
    assert docs[0].text == lines[0] and docs[0].source == "lee_background.cor:1"
    assert docs[-1].text == lines[-1]
    # without the flag the file (no blank lines) is one document
    assert len(read_all([lee_corpus])[0]) == 1


def test_compressed_text_and_folder_walk(tmp_path: Path, gensim_data: Path) -> None:
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("From b.\n\nSecond of b.")
    (folder / "a.txt").write_text("From a.")
    with bz2.open(folder / "sub" / "c.txt.bz2", "wt") as f:
        f.write("From c, compressed.")
    (folder / ".hidden").write_text("not read")
    docs, _ = read_all([folder])
    assert [d.text for d in docs] == ["From a.", "From b.", "Second of b.", "From c, compressed."]
    assert docs[0].source == "corpus/a.txt:1" and docs[3].source == "corpus/sub/c.txt.bz2:1"

    head500 = read_all([gensim_data / "head500.noblanks.cor.bz2"], one_doc_per_line=True)[0]
    plain = (gensim_data / "head500.noblanks.cor").read_text(encoding="utf-8").splitlines()
    assert [d.text for d in head500] == [line for line in plain if line.strip()]


def test_jsonl_field_invalid_lines_and_missing_fields(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    lines = [
        json.dumps({"body": "First document.", "id": 1}),
        "{not json",
        json.dumps({"other": "no body field"}),
        "",
        json.dumps({"body": 42}),
        json.dumps(["a list"]),
        json.dumps({"body": "Ünïcode document."}, ensure_ascii=False),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    docs, skips = read_all([path], text_field="body")
    assert [(d.text, d.source) for d in docs] == [
        ("First document.", "data.jsonl:1"),
        ("Ünïcode document.", "data.jsonl:7"),
    ]
    assert skips.count("invalid_json") == 1
    assert skips.to_dict()["invalid_json"]["examples"] == [f"{path}:2"]
    assert skips.count("missing_text_field") == 3


def test_invalid_utf8_is_counted_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(b"Good line.\nBad \xff\xfe bytes here.\n\nNext doc.\n")
    docs, skips = read_all([path])
    assert docs[0].text == "Good line.\nBad \ufffd\ufffd bytes here."
    assert docs[1].text == "Next doc."
    assert skips.to_dict()["invalid_utf8"] == {"count": 1, "examples": [f"{path}:2"]}


def test_long_line_skipped_and_ends_document(tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    path.write_bytes(b"Before.\n" + b"y" * 5000 + b"\nAfter.\n" + b"z" * 100 + b"\n")
    docs, skips = read_all([path], max_line_bytes=100)
    assert [d.text for d in docs] == ["Before.", "After.\n" + "z" * 100]  # exactly max_line_bytes is kept
    assert skips.to_dict()["line_too_long"] == {"count": 1, "examples": [f"{path}:2"]}


# --- datasets folders ------------------------------------------------------------------------------------


def test_hf_dataset_and_dataset_dict(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    single = tmp_path / "single"
    datasets.Dataset.from_dict({"content": ["Row zero.", None, "Row two."]}).save_to_disk(str(single))
    docs, skips = read_all([single], text_field="content")
    assert [(d.text, d.source) for d in docs] == [("Row zero.", "single[0]"), ("Row two.", "single[2]")]
    assert skips.count("missing_text_field") == 1

    dd = datasets.DatasetDict(
        {
            "test": datasets.Dataset.from_dict({"text": ["test row"]}),
            "train": datasets.Dataset.from_dict({"text": ["train row 0", "train row 1"]}),
        }
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    docs, _ = read_all([tmp_path / "dd"])
    assert [d.text for d in docs] == ["train row 0", "train row 1"]
    assert docs[1].source == "dd/train[1]"

    no_train = datasets.DatasetDict(
        {
            "b": datasets.Dataset.from_dict({"text": ["b0"]}),
            "a": datasets.Dataset.from_dict({"text": ["a0"]}),
        }
    )
    no_train.save_to_disk(str(tmp_path / "nt"))
    assert [d.text for d in read_all([tmp_path / "nt"])[0]] == ["b0", "a0"]

    with pytest.raises(UserError, match=r"single.*'body'.*\['content'\]"):
        read_all([single], text_field="body")


# --- Wikipedia dumps -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def enwiki_docs(enwiki_dump: Path) -> tuple[list[Document], SkipLog]:
    return read_all([enwiki_dump])


def _raw_pages(dump: Path) -> list[tuple[str, bool]]:
    """(title, is_redirect) of every page, read independently of the code under test."""
    pages = []
    with bz2.open(dump) as f:
        for _, elem in ET.iterparse(f):
            if elem.tag.endswith("}page"):
                ns = elem.tag[: -len("page")]
                pages.append((elem.findtext(f"{ns}title"), elem.find(f"{ns}redirect") is not None))
                elem.clear()
    return pages


def test_enwiki_articles_redirects_and_markup(
    enwiki_dump: Path, enwiki_docs: tuple[list[Document], SkipLog]
) -> None:
    docs, skips = enwiki_docs
    pages = _raw_pages(enwiki_dump)
    redirects = {title for title, is_redirect in pages if is_redirect}
    assert len(pages) == 206 and len(redirects) == 100
    assert skips.count("wiki_redirect") == 100
    assert len(docs) == 106
    titles = [d.source.split("#", 1)[1] for d in docs]
    assert not redirects & set(titles)
    assert all(d.source.startswith(enwiki_dump.name + "#") for d in docs)

    anarchism = docs[titles.index("Anarchism")].text
    assert len(anarchism) > 20_000
    assert anarchism.startswith("Anarchism is a political philosophy")
    assert "\n\n" in anarchism  # paragraphs kept
    for doc in docs:
        found = [m for m in MARKUP if m in doc.text]
        assert not found, f"{doc.source}: {found}"
        assert "''" not in doc.text and "<div" not in doc.text


def test_bgwiki_yields_cyrillic(bgwiki_dump: Path) -> None:
    docs, skips = read_all([bgwiki_dump])
    assert [d.source for d in docs] == [f"{bgwiki_dump.name}#Григориански календар"]
    text = docs[0].text
    cyrillic = sum("\u0400" <= ch <= "\u04ff" for ch in text)
    assert cyrillic > 0.5 * sum(ch.isalpha() for ch in text)
    assert text.startswith("Григорианският календар")
    assert skips.count("wiki_non_article") == 2  # two Уикипедия: pages
    assert not any(m in text for m in MARKUP)


def test_wiki_to_text_markup_rules() -> None:
    markup = """{{Infobox thing|name=X}}__NOTOC__
'''Bold''' and ''italic'' with [[Target|link text]] and [[Plain]].<ref name="a">Cite {{cite web|url=x}}</ref>
Another [http://example.com external text] link.<!-- hidden comment --><ref name="b"/>
[[File:Pic.jpg|thumb|A [[caption]]]]
[[Category:Things]]
[[de:Ding]]

== Heading ==
* Item [[one]]
* Item two
{| class="wikitable"
|-
| cell || {{tpl}}
|}
Last <math>x^2</math> line."""
    assert wiki_to_text(markup) == (
        "Bold and italic with link text and Plain.\nAnother external text link.\n\nItem one\nItem two\nLast  line."
    )


def _corrupt_dump(enwiki_dump: Path, tmp_path: Path) -> Path:
    data = enwiki_dump.read_bytes()
    bad = tmp_path / "truncated-dump.bz2"
    bad.write_bytes(data[: len(data) // 2])
    return bad


def test_truncated_bz2_dump_is_one_line_user_error(enwiki_dump: Path, tmp_path: Path) -> None:
    bad = _corrupt_dump(enwiki_dump, tmp_path)
    with pytest.raises(UserError) as info:
        read_all([bad])
    message = str(info.value)
    assert "\n" not in message
    assert str(bad) in message
    assert re.search(r"truncated or corrupt \.bz2 stream after page \d+ \('.+'\); re-download", message)


def test_broken_xml_is_user_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.xml"
    page = "<page><title>{t}</title><ns>0</ns><revision><text>Body of {t}.</text></revision></page>"
    path.write_text(
        f"<mediawiki>{page.format(t='One')}<page><title>Two</title><ns>0</oops>", encoding="utf-8"
    )
    assert detect_format(path) == "wiki"
    with pytest.raises(UserError, match=r"broken\.xml: broken XML after page 1 \('One'\); re-download"):
        read_all([path])


def test_truncated_compressed_text_is_user_error(gensim_data: Path, tmp_path: Path) -> None:
    data = (gensim_data / "head500.noblanks.cor.bz2").read_bytes()
    bad = tmp_path / "head.cor.bz2"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"head\.cor\.bz2: truncated or corrupt file after line \d+"):
        read_all([bad])
