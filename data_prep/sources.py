"""Reading raw text sources (plain text, JSONL, MediaWiki XML dumps, ``datasets`` folders) into documents.

Every reader streams: memory is bounded by one line (``max_line_bytes``) or one wiki page, never by the
corpus. Nothing is dropped silently: every skipped line, page or record is counted in a :class:`SkipLog`
with its location, so the manifest says what was lost and where.
"""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from data_prep.config import SourceConfig
from data_prep.errors import UserError
from data_prep.manifest import SkipLog

if TYPE_CHECKING:
    from mwparserfromhell.wikicode import Wikicode

HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_BZ2_MAGIC = b"BZh"
_GZIP_MAGIC = b"\x1f\x8b"
_SNIFF_BYTES = 4096
_CHUNK = 1 << 20


@dataclass
class Document:
    """One raw document and where it came from (used in skip logs and manifests)."""

    text: str
    """Raw document text, before cleaning."""
    source: str
    """Location, e.g. ``corpus.txt:12`` (first line), ``dump.xml.bz2#Anarchism``, ``data.jsonl:7``, ``hf_dir[3]``."""


def resolve_input(spec: str) -> Path:
    """Turn an input spec into a path; ``pkg:NAME/rel/path`` points inside an installed package.

    The ``pkg:`` form lets recipes name the demo corpus shipped in the gensim wheel without hard-coding the
    virtual environment's location. The package is located with ``find_spec`` (it is not imported).
    """
    if spec.startswith("pkg:"):
        package, _, rel = spec[len("pkg:") :].partition("/")
        found = importlib.util.find_spec(package) if package else None
        if found is None or not found.submodule_search_locations:
            raise UserError(
                f"input file not found: {spec}: package {package!r} is not installed "
                "(for the demo corpus, install the demo extra: pip install -e .[demo])"
            )
        path = Path(next(iter(found.submodule_search_locations))) / rel
    else:
        path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"input file not found: {path}")
    return path


def _compression(path: Path) -> str | None:
    """``"bz2"``, ``"gz"`` or ``None``, from the file's magic bytes (dump names do not always say)."""
    with open(path, "rb") as f:
        magic = f.read(3)
    if magic.startswith(_BZ2_MAGIC):
        return "bz2"
    return "gz" if magic.startswith(_GZIP_MAGIC) else None


def _open_binary(path: Path) -> IO[bytes]:
    """Open a file for binary reading, decompressing ``.bz2``/``.gz`` transparently."""
    kind = _compression(path)
    if kind == "bz2":
        return bz2.open(path, "rb")
    if kind == "gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def _head_text(path: Path) -> str:
    """The first few KB of a file, decompressed and decoded loosely (UTF-16 with a BOM or UTF-8)."""
    try:
        with _open_binary(path) as f:
            head = f.read(_SNIFF_BYTES)
    except (OSError, EOFError) as exc:
        raise UserError(f"{path}: cannot read the start of the file ({exc})") from None
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return head.decode("utf-16", errors="ignore")
    return head.decode("utf-8", errors="ignore")


def detect_format(path: Path) -> str:
    """Guess ``text``, ``jsonl``, ``wiki`` or ``hf`` for one input.

    Wiki dumps are recognised by content (``<mediawiki`` near the start) because dump names vary, e.g.
    gensim's ``...xml-p000000010p000030302-shortened.bz2``; a ``.bz2`` of plain text stays ``text``.
    A folder is ``hf`` when it holds a ``datasets`` marker file, otherwise a folder of text files.
    """
    path = Path(path)
    if path.is_dir():
        return "hf" if any((path / m).is_file() for m in HF_MARKERS) else "text"
    name = path.name.lower()
    for ext in (".bz2", ".gz"):
        name = name.removesuffix(ext)
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    return "wiki" if "<mediawiki" in _head_text(path) else "text"


def _iter_lines(path: Path, max_bytes: int, skips: SkipLog) -> Iterator[tuple[int, str | None]]:
    """Yield ``(lineno, line)`` without the line ending; ``line`` is ``None`` for a line that was too long.

    ``readline(max_bytes + 1)`` bounds memory: the rest of an over-long line is consumed in chunks and
    discarded. Invalid UTF-8 is decoded with U+FFFD and counted, so the rest of the line is kept.
    """
    lineno = 0
    try:
        with _open_binary(path) as f:
            while raw := f.readline(max_bytes + 1):
                lineno += 1
                if len(raw) > max_bytes and not (len(raw) == max_bytes + 1 and raw.endswith(b"\n")):
                    while raw and not raw.endswith(b"\n"):
                        raw = f.readline(_CHUNK)
                    skips.add("line_too_long", f"{path}:{lineno}")
                    yield lineno, None
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    line = raw.decode("utf-8", errors="replace")
                    skips.add("invalid_utf8", f"{path}:{lineno}")
                if lineno == 1:
                    line = line.removeprefix("\ufeff")
                yield lineno, line.rstrip("\r\n")
    except (EOFError, OSError) as exc:
        raise UserError(f"{path}: truncated or corrupt file after line {lineno} ({exc})") from None


def _read_text(path: Path, label: str, cfg: SourceConfig, skips: SkipLog) -> Iterator[Document]:
    """Documents separated by blank lines (or one per line); an over-long line also ends a document."""
    lines: list[str] = []
    start = 0
    for lineno, line in _iter_lines(path, cfg.max_line_bytes, skips):
        if line is None or not line.strip():
            if lines:
                yield Document("\n".join(lines), f"{label}:{start}")
                lines = []
            continue
        if cfg.one_doc_per_line:
            yield Document(line, f"{label}:{lineno}")
            continue
        if not lines:
            start = lineno
        lines.append(line)
    if lines:
        yield Document("\n".join(lines), f"{label}:{start}")


def _read_jsonl(path: Path, label: str, cfg: SourceConfig, skips: SkipLog) -> Iterator[Document]:
    """One JSON object per line; ``cfg.text_field`` holds the text. Blank lines are ignored."""
    for lineno, line in _iter_lines(path, cfg.max_line_bytes, skips):
        if line is None or not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            skips.add("invalid_json", f"{path}:{lineno}")
            continue
        text = record.get(cfg.text_field) if isinstance(record, dict) else None
        if not isinstance(text, str):
            skips.add("missing_text_field", f"{path}:{lineno}")
            continue
        yield Document(text, f"{label}:{lineno}")


# --- MediaWiki dumps -------------------------------------------------------------------------------------

_DROP_TAG_NAMES = """
    ref references table gallery math chem ce score timeline imagemap graph syntaxhighlight source
    pre templatedata templatestyles categorytree inputbox mapframe maplink hiero
"""
_DROP_TAGS = frozenset(_DROP_TAG_NAMES.split())
# Namespaces whose links are not part of the running text (English and Bulgarian names).
_DROP_LINK_PREFIXES = frozenset(
    ["file", "image", "media", "category", "файл", "картинка", "изображение", "медия", "категория"]
)
_LANG_PREFIX = re.compile(r"^[a-z]{2,3}(?:-[a-z]{2,8})*$")  # interlanguage links: [[de:Anarchismus]]
_MAGIC_WORD = re.compile(r"__[A-ZА-Я_]+__")
_RESIDUE_LINE = re.compile(r"^[\s*#:;|!{}\-]*$")  # list bullets, table pipes, stray braces


def _drop_link(title: str) -> bool:
    title = title.strip()
    if title.startswith(":"):  # [[:Category:X]] is a visible link to the category page
        return False
    prefix, sep, _ = title.partition(":")
    if not sep:
        return False
    return prefix.strip().lower() in _DROP_LINK_PREFIXES or bool(_LANG_PREFIX.match(prefix.strip()))


def _prune(code: Wikicode) -> None:
    """Remove templates, headings, comments, refs/tables/math tags and file/category/language links in place."""
    from mwparserfromhell import nodes as n

    kept = []
    for node in code.nodes:
        if isinstance(node, (n.Template, n.Heading, n.Comment, n.Argument)):
            continue
        if isinstance(node, n.Tag):
            if str(node.tag).strip().lower() in _DROP_TAGS:
                continue
            if node.contents is not None:
                _prune(node.contents)
        elif isinstance(node, n.Wikilink):
            if _drop_link(str(node.title)):
                continue
            if node.text is not None:
                _prune(node.text)
        elif isinstance(node, n.ExternalLink) and node.title is not None:
            _prune(node.title)
        kept.append(node)
    code.nodes = kept


_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
# A paired ref may not contain another "<ref": an unclosed "<ref name=x>" must not swallow the text after it.
_REF = re.compile(r"<ref\b[^>]*?/>|<ref\b[^>]*>(?:(?!<ref\b).)*?</ref\s*>", re.S | re.I)
_STYLE_QUOTES = re.compile(r"'{2,}")
_HTML_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]*)?/?>")  # tags the parser left as text
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_TABLE_OPEN = re.compile(r"^\s*(?::\s*)*\{\|")
_TABLE_CLOSE = re.compile(r"^\s*\|\}")


def _drop_tables(markup: str) -> str:
    """Remove ``{| ... |}`` tables line by line, nesting included; cheaper and sturdier than the parser."""
    if "{|" not in markup:
        return markup
    out, depth = [], 0
    for line in markup.split("\n"):
        if _TABLE_OPEN.match(line):
            depth += 1
        elif depth and _TABLE_CLOSE.match(line):
            depth -= 1
        elif not depth:
            out.append(line)
    return "\n".join(out)


def _drop_templates(markup: str) -> str:
    """Remove ``{{...}}`` innermost-first with a C-speed regex; the parser handles whatever is left.

    Templates are most of the parse time of an article and are dropped anyway.
    """
    while "{{" in markup:
        markup, n = _TEMPLATE.subn("", markup)
        if not n:
            break
    return markup


def wiki_to_text(markup: str) -> str:
    """Plain article text from wikitext: link text kept, markup and non-prose parts dropped.

    Comments, ``<ref>``, templates and tables go first with regexes: it is faster, and an unbalanced ``''``
    inside a ref makes the parser give up on the ref and leave it as text. Bold/italic quotes are not parsed
    (same reason) but deleted.
    Paragraphs are separated by one blank line; lines left empty or holding only list/table residue are
    dropped, so the text contains no ``{{``, ``[[``, ``<ref`` or ``{|``.
    """
    import mwparserfromhell

    markup = _drop_tables(_drop_templates(_REF.sub("", _COMMENT.sub("", markup))))
    code = mwparserfromhell.parse(markup, skip_style_tags=True)
    _prune(code)
    text = _STYLE_QUOTES.sub("", code.strip_code(normalize=True, collapse=True))
    text = _HTML_TAG.sub("", _MAGIC_WORD.sub("", text))
    paragraphs: list[list[str]] = [[]]
    for line in text.split("\n"):
        line = line.strip()
        if _RESIDUE_LINE.match(line):
            if paragraphs[-1]:
                paragraphs.append([])
            continue
        paragraphs[-1].append(line.lstrip("*#:; ").strip())
    return "\n\n".join("\n".join(p) for p in paragraphs if p)


def _read_wiki(path: Path, label: str, cfg: SourceConfig, skips: SkipLog) -> Iterator[Document]:
    """Stream articles of a MediaWiki XML dump (plain or .bz2) with ``iterparse``, one page in memory."""
    from mwparserfromhell.parser import ParserError

    pages, last_title = 0, None
    title, ns, redirect, body = "", "0", False, ""
    kind = _compression(path)
    stream = f".{kind} stream" if kind else "file"
    try:
        with _open_binary(path) as f:
            root = None
            for event, elem in ET.iterparse(f, events=("start", "end")):
                if root is None:
                    root = elem
                if event == "start":
                    continue
                tag = elem.tag.rpartition("}")[2]  # any export namespace version
                if tag == "title":
                    title = elem.text or ""
                elif tag == "ns":
                    ns = (elem.text or "0").strip()
                elif tag == "redirect":
                    redirect = True
                elif tag == "text":
                    body = elem.text or ""
                elif tag == "page":
                    where = f"{path}#{title}"
                    if redirect or body.lstrip()[:9].upper() == "#REDIRECT":
                        skips.add("wiki_redirect", where)
                    elif ns != "0":
                        skips.add("wiki_non_article", where)
                    else:
                        try:
                            text = wiki_to_text(body)
                        except (ParserError, RecursionError):
                            skips.add("wiki_parse_error", where)
                            text = None
                        if text:
                            yield Document(text, f"{label}#{title}")
                        elif text is not None:
                            skips.add("wiki_empty_after_markup", where)
                    pages, last_title = pages + 1, title
                    title, ns, redirect, body = "", "0", False, ""
                    root.clear()  # drop finished pages so memory stays at one page
    except (EOFError, OSError, ET.ParseError) as exc:
        after = f"after page {pages} ({last_title!r})" if pages else "before the first page"
        problem = "broken XML" if isinstance(exc, ET.ParseError) else f"truncated or corrupt {stream}"
        raise UserError(f"{path}: {problem} {after}; re-download the dump ({exc})") from None


# --- datasets folders ------------------------------------------------------------------------------------


def _read_hf(path: Path, label: str, cfg: SourceConfig, skips: SkipLog) -> Iterator[Document]:
    """Rows of a ``save_to_disk`` folder; a DatasetDict uses ``train`` if present, else every split in order."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise UserError(f"{path}: cannot load the datasets folder ({exc})") from None
    if isinstance(loaded, datasets.DatasetDict):
        names = ["train"] if "train" in loaded else list(loaded)
        splits = [(f"{label}/{name}", loaded[name]) for name in names]
    else:
        splits = [(label, loaded)]
    for split_label, ds in splits:
        if cfg.text_field not in ds.column_names:
            raise UserError(
                f"{path}: no column {cfg.text_field!r} (text_field); available columns: {ds.column_names}"
            )
        index = 0
        for batch in ds.select_columns([cfg.text_field]).iter(batch_size=1000):
            for text in batch[cfg.text_field]:
                where = f"{split_label}[{index}]"
                index += 1
                if not isinstance(text, str):
                    skips.add("missing_text_field", where)
                    continue
                yield Document(text, where)


_READERS = {"text": _read_text, "jsonl": _read_jsonl, "wiki": _read_wiki, "hf": _read_hf}


def _folder_files(folder: Path) -> list[Path]:
    """Files under ``folder`` in sorted order, hidden files and folders left out."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    return sorted(p for p in files if not any(part.startswith(".") for part in p.relative_to(folder).parts))


def iter_documents(cfg: SourceConfig, skips: SkipLog) -> Iterator[Document]:
    """All documents of ``cfg.inputs`` in order; folders of files are walked in sorted order.

    ``cfg.format == "auto"`` detects the format of each file separately, so a folder may mix text, JSONL and
    dumps. Missing inputs raise :class:`UserError` before anything is read.
    """
    paths = [resolve_input(spec) for spec in cfg.inputs]
    for path in paths:
        fmt = detect_format(path) if cfg.format == "auto" else cfg.format
        if path.is_dir() and fmt != "hf":
            for file in _folder_files(path):
                file_fmt = detect_format(file) if cfg.format == "auto" else cfg.format
                label = f"{path.name}/{file.relative_to(path).as_posix()}"
                yield from _READERS[file_fmt](file, label, cfg, skips)
        else:
            yield from _READERS[fmt](path, path.name, cfg, skips)
