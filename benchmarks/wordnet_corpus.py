"""A second English pretraining corpus for a closed machine: WordNet 3.0's glosses and example sentences.

The demo's Wikipedia slice (~450k words) hardly contains the words that carry sentiment in movie reviews
("boring" 0 times, "funny" once, "tedious" twice), so no amount of pretraining on it can teach their meaning.
WordNet, which Debian packages for ``dictd`` (``apt-get install dict-wn``: ``/usr/share/dictd/wn.dict.dz``), is a
general English lexical database with no sentiment labels: every sense has a definition, usage examples and its
synonyms. This script turns it into a JSONL corpus for ``python -m data_prep`` (one sense per sentence, its
repeated copies under every synonym dropped, ``--senses-per-doc`` senses per document in dictionary order):

    python benchmarks/wordnet_corpus.py --out runs/bench/wordnet/wordnet.jsonl
    python -m data_prep run recipes/data/wordnet-bert.yaml
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

DEFAULT = Path("/usr/share/dictd/wn.dict.dz")
POS = r"(?:n|v|adj|adv)"


def entries(path: Path) -> Iterator[tuple[str, str]]:
    """(headword, body) of every entry of a dictd ``wn.dict.dz`` (gzip-compatible dictzip)."""
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        head, body = None, []
        for line in f:
            if line and not line[0].isspace():
                if head is not None and not head.startswith("00-database"):
                    yield head, " ".join(body)
                head, body = line.strip(), []
            elif head is not None:
                body.append(line.strip())
        if head is not None:
            yield head, " ".join(body)


def senses(head: str, body: str) -> Iterator[str]:
    """One sentence per sense: ``word: definition. example. example. synonyms: a, b.``"""
    # Senses start with "adj 1:" or "2:"; split before each sense number.
    for part in re.split(rf"(?:^|\s)(?:{POS}\s+)?\d+:\s", body):
        part = part.strip()
        if not part or re.fullmatch(POS, part):
            continue
        syn = re.search(r"\[syn: (.*?)\]", part)
        synonyms = re.findall(r"\{(.*?)\}", syn.group(1)) if syn else []
        part = re.sub(r"\[(?:syn|ant|also|see also): .*?\]", "", part)
        part = re.sub(r"\s+(?:n|v|adj|adv)$", "", part.strip())
        pieces = [p.strip().strip('"').strip() for p in part.split(";")]
        pieces = [re.sub(r'"-\s*[A-Z][\w. ]*$', "", p).strip('" ') for p in pieces if p]
        text = f"{head}: " + ". ".join(p for p in pieces if p)
        if synonyms:
            text += ". synonyms: " + ", ".join(synonyms)
        yield re.sub(r"\s+", " ", text).strip() + "."


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dict", type=Path, default=DEFAULT, help="dictd WordNet file (Debian: dict-wn)")
    p.add_argument("--out", type=Path, required=True, help="JSONL corpus to write (field: text)")
    p.add_argument("--senses-per-doc", type=int, default=40)
    args = p.parse_args()
    if not args.dict.is_file():
        raise SystemExit(f"{args.dict}: not found (install it with: apt-get install dict-wn)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    doc: list[str] = []
    docs = n_senses = words = 0
    with open(args.out, "w", encoding="utf-8") as f:
        for head, body in entries(args.dict):
            for s in senses(head, body):
                key = s.split(": ", 1)[1] if ": " in s else s
                if key in seen:  # the same sense listed again under each of its synonyms
                    continue
                seen.add(key)
                doc.append(s)
                n_senses += 1
                words += len(s.split())
                if len(doc) == args.senses_per_doc:
                    f.write(json.dumps({"text": "\n".join(doc)}) + "\n")
                    docs, doc = docs + 1, []
        if doc:
            f.write(json.dumps({"text": "\n".join(doc)}) + "\n")
            docs += 1
    print(f"{args.out}: {docs} documents, {n_senses} senses, {words} words")
    return 0


if __name__ == "__main__":
    sys.exit(main())
