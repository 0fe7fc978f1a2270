"""Run a whole data recipe: extract -> tokenizer -> shards -> BERT instances and/or GPT windows.

Each stage writes its own folder under ``out_dir`` with a ``manifest.json``. A stage whose settings and inputs
have not changed since its last successful run is skipped ("up to date"), so re-running a recipe after editing
only the BERT section does not re-tokenize the corpus. ``force=True`` re-runs everything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from data_prep.config import DataRecipe
from data_prep.manifest import MANIFEST, sha256_file

log = logging.getLogger(__name__)
STAMP = ".stage_fingerprint"


def _fingerprint(settings: Any, upstream: list[Path]) -> str:
    """Hash of a stage's settings and the manifests of what it reads."""
    h = hashlib.sha256()
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for folder in upstream:
        h.update(sha256_file(folder / MANIFEST).encode())
    return h.hexdigest()


def _stage(name: str, out: Path, fingerprint: str, force: bool, work: Callable[[], Any]) -> Path:
    stamp = out / STAMP
    if not force and (out / MANIFEST).is_file() and stamp.is_file() and stamp.read_text() == fingerprint:
        print(f"[{name}] up to date: {out}")
        return out
    if out.exists():
        shutil.rmtree(out)
    print(f"[{name}] -> {out}")
    work()
    stamp.write_text(fingerprint)
    return out


def run_recipe(
    recipe: DataRecipe, *, force: bool = False, progress: bool = True, until: str | None = None
) -> dict[str, Path]:
    """Run every stage the recipe names (``until="tokenizer"``: stop after that stage); returns ``{stage: folder}``."""
    from data_prep.extract import extract
    from data_prep.tokenize import tokenize_to_shards
    from data_prep.tokenizer import save_tokenizer, train_tokenizer

    root = Path(recipe.out_dir)
    root.mkdir(parents=True, exist_ok=True)
    asdict = dataclasses.asdict
    out: dict[str, Path] = {}

    docs = root / "documents"
    out["documents"] = _stage(
        "extract",
        docs,
        _fingerprint(asdict(recipe.source), []),
        force,
        lambda: extract(recipe.source, docs, progress=progress),
    )

    tok_dir = root / "tokenizer"
    if recipe.tokenizer.path:
        from data_prep.tokenizer import load_tokenizer

        def copy_tokenizer() -> None:
            tok = load_tokenizer(recipe.tokenizer.path)
            save_tokenizer(tok, tok_dir, recipe.tokenizer, inputs=[str(recipe.tokenizer.path)])

        tok_work = copy_tokenizer
        tok_upstream: list[Path] = []
    else:

        def tok_work() -> None:
            from data_prep.extract import iter_texts

            tok = train_tokenizer(iter_texts([str(docs)]), recipe.tokenizer)
            save_tokenizer(tok, tok_dir, recipe.tokenizer, inputs=[str(docs)])

        tok_upstream = [docs]
    out["tokenizer"] = _stage(
        "tokenizer", tok_dir, _fingerprint(asdict(recipe.tokenizer), tok_upstream), force, tok_work
    )
    if until == "tokenizer":
        return out

    shards = root / "shards"
    out["shards"] = _stage(
        "shards",
        shards,
        _fingerprint(asdict(recipe.shards), [docs, tok_dir]),
        force,
        lambda: tokenize_to_shards(
            docs, tok_dir / "tokenizer.json", shards, recipe.shards, progress=progress
        ),
    )

    if recipe.bert is not None:
        from data_prep.bert_data import build_bert_instances

        bert = root / "bert"
        out["bert"] = _stage(
            "bert",
            bert,
            _fingerprint(asdict(recipe.bert), [shards]),
            force,
            lambda: build_bert_instances(shards, bert, recipe.bert, progress=progress),
        )
    if recipe.gpt is not None:
        from data_prep.gpt_data import pack_gpt_windows

        gpt = root / "gpt"
        out["gpt"] = _stage(
            "gpt",
            gpt,
            _fingerprint(asdict(recipe.gpt), [shards]),
            force,
            lambda: pack_gpt_windows(shards, gpt, recipe.gpt, progress=progress),
        )
    return out
