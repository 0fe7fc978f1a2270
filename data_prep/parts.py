"""The ``shards`` stage split over a Slurm array: each task tokenizes a part, a last step merges the parts.

``python -m pipeline submit-data --config recipes/data/NAME.yaml --tasks N`` submits three jobs that run this
module (``python -m data_prep.parts STEP RECIPE``):

1. ``prep``: the extract and tokenizer stages (skipped when up to date).
2. ``part`` (an array of N tasks, ``--task-index $SLURM_ARRAY_TASK_ID --num-tasks N``): task i tokenizes the
   i-th of N contiguous ranges of ``documents.jsonl`` into ``OUT/shards.parts/part-0000i``. The train/valid
   split hashes each document's *global* index (``data_prep.tokenize.split_of``), so it does not depend on N.
3. ``merge`` (``--dependency=afterok:<array>``): re-writes the parts' documents, in order, through the same
   ``ShardWriter`` into ``OUT/shards``: the same shard files, byte for byte, and the same manifest counts as a
   single-process run; marks the stage up to date for ``data_prep run``, then runs the remaining stages
   (BERT instances / GPT windows) and removes the parts.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.config import DataRecipe, ShardConfig
from data_prep.errors import UserError
from data_prep.manifest import SkipLog, read_manifest, write_manifest
from data_prep.shards import SPLITS, IndexedShards, ShardWriter
from data_prep.tokenizer import TOKENIZER_FILE

PARTS = "shards.parts"


def part_range(doc_manifest: dict[str, Any], part: tuple[int, int]) -> tuple[int, int]:
    """Documents ``[start, end)`` of part ``i`` of ``n``: contiguous, sizes differing by at most one."""
    i, n = part
    if n < 1 or not 0 <= i < n:
        raise UserError(f"--task-index {i} --num-tasks {n}: need 0 <= index < tasks")
    total = (doc_manifest.get("counts") or {}).get("documents")
    if not isinstance(total, int):
        raise UserError("documents manifest has no document count; re-run the extract stage")
    return total * i // n, total * (i + 1) // n


def write_part_manifest(
    out_dir: Path,
    documents_dir: Path,
    tok_file: Path,
    info: dict[str, Any],
    dtype: np.dtype,
    cfg: ShardConfig,
    shard_lists: dict[str, list[dict[str, Any]]],
    doc_range: tuple[int, int],
    skips: SkipLog,
    unk: int,
    part: tuple[int, int],
) -> dict[str, Any]:
    """The manifest of one part (stage ``shards-part``): its document range, shards, skips and UNK count."""
    shutil.copyfile(tok_file, out_dir / TOKENIZER_FILE)
    write_manifest(
        out_dir,
        "shards-part",
        part={"index": part[0], "num_parts": part[1], "documents": list(doc_range)},
        documents_dir=str(Path(documents_dir).resolve()),
        tokenizer=info,
        dtype=dtype.name,
        settings=dataclasses.asdict(cfg),
        splits={s: sh for s, sh in shard_lists.items()},
        skipped=skips.to_dict(),
        unk_tokens=unk,
    )
    return read_manifest(out_dir, "shards-part")


def merge_parts(parts_dir: str | Path, out_dir: str | Path, cfg: ShardConfig) -> dict[str, Any]:
    """Join ``parts_dir/part-*`` into ``out_dir``: identical to ``tokenize_to_shards`` over all documents."""
    from data_prep.tokenize import write_shards_manifest

    parts = sorted(Path(parts_dir).glob("part-*"))
    if not parts:
        raise UserError(f"{parts_dir}: no part-* folders; did the array tasks run?")
    manifests = [read_manifest(p, "shards-part") for p in parts]
    n = manifests[0]["part"]["num_parts"]
    if [m["part"]["index"] for m in manifests] != list(range(n)):
        raise UserError(f"{parts_dir}: expected parts 0..{n - 1}, found {[p.name for p in parts]}")
    for p, m in zip(parts, manifests):
        if m["settings"] != dataclasses.asdict(cfg) or m["tokenizer"] != manifests[0]["tokenizer"]:
            raise UserError(f"{p}: made with other shard settings or another tokenizer; re-run the array")
    ranges = [m["part"]["documents"] for m in manifests]
    if ranges[0][0] != 0 or any(a[1] != b[0] for a, b in zip(ranges, ranges[1:])):
        raise UserError(f"{parts_dir}: the parts' document ranges {ranges} do not join up")

    out_dir = Path(out_dir)
    dtype = np.dtype(manifests[0]["dtype"])
    writers = {s: ShardWriter(out_dir / s, dtype, cfg.shard_tokens) for s in SPLITS}
    skips, unk = SkipLog(), 0
    for p, m in zip(parts, manifests):
        for split in SPLITS:
            shards = IndexedShards(p / split)
            for i in range(len(shards)):
                writers[split].add_document(shards.document_sentences(i))
        skips.merge(m["skipped"])
        unk += m["unk_tokens"]
    shard_lists = {s: w.close() for s, w in writers.items()}
    return write_shards_manifest(
        out_dir,
        Path(manifests[0]["documents_dir"]),
        parts[0] / TOKENIZER_FILE,
        manifests[0]["tokenizer"],
        dtype,
        cfg,
        shard_lists,
        ranges[-1][1],
        skips,
        unk,
    )


def _folders(recipe: DataRecipe) -> tuple[Path, Path, Path]:
    root = Path(recipe.out_dir)
    return root / "documents", root / "tokenizer", root / "shards"


def run_step(step: str, recipe: DataRecipe, task: int | None = None, tasks: int | None = None) -> None:
    """One step of the array data prep (see the module docstring)."""
    from data_prep.run import STAMP, _fingerprint, run_recipe

    docs, tok_dir, shards = _folders(recipe)
    parts = Path(recipe.out_dir) / PARTS
    if step == "prep":
        run_recipe(recipe, progress=False, until="tokenizer")
    elif step == "part":
        if task is None or tasks is None:
            raise UserError("part needs --task-index and --num-tasks")
        from data_prep.tokenize import tokenize_to_shards

        out = parts / f"part-{task:05d}"
        m = tokenize_to_shards(
            docs, tok_dir / TOKENIZER_FILE, out, recipe.shards, progress=False, part=(task, tasks)
        )
        print(f"part {task}/{tasks}: documents {m['part']['documents']} -> {out}")
    elif step == "merge":
        if shards.exists():
            shutil.rmtree(shards)
        m = merge_parts(parts, shards, recipe.shards)
        (shards / STAMP).write_text(_fingerprint(dataclasses.asdict(recipe.shards), [docs, tok_dir]))
        shutil.rmtree(parts)
        for split, s in m["splits"].items():
            print(f"{split}: {s['documents']} documents, {s['tokens']} tokens")
        run_recipe(recipe, progress=False)  # extract, tokenizer and shards are up to date: the rest runs
    else:
        raise UserError(f"unknown step {step!r}")


def main(argv: list[str] | None = None) -> int:
    from data_prep.cli import run_cli
    from data_prep.recipe import load

    parser = argparse.ArgumentParser(prog="python -m data_prep.parts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("command", choices=["prep", "part", "merge"])
    parser.add_argument("recipe", metavar="RECIPE")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    parser.add_argument("--task-index", type=int)
    parser.add_argument("--num-tasks", type=int)
    parser.set_defaults(
        func=lambda a: run_step(a.command, load(DataRecipe, a.recipe, a.overrides), a.task_index, a.num_tasks)
    )
    return run_cli(parser, argv, override_commands=("prep", "part", "merge"))


if __name__ == "__main__":
    sys.exit(main())
