"""``manifest.json``: the contract every data folder carries.

A manifest records what made the folder (stage, inputs with sizes, settings), the tokenizer's hash, vocab size
and special-token ids, counts, what was skipped and why, and a checksum of each output file. Later stages and
training read it and refuse to go on when it does not match what they are given.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from data_prep import __version__
from data_prep.errors import UserError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (memory does not grow with the file)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_entry(path: str | Path, root: str | Path | None = None) -> dict[str, Any]:
    """``{"path", "bytes", "sha256"}`` for one file; ``path`` is relative to ``root`` when given."""
    path = Path(path)
    name = str(path.relative_to(root)) if root is not None else str(path)
    return {"path": name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def input_entries(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Inputs as recorded in a manifest: resolved path and size (hashing a 20 GB dump is not worth it)."""
    out = []
    for p in paths:
        p = Path(p)
        size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
        out.append({"path": str(p.resolve()), "bytes": size})
    return out


def write_manifest(out_dir: str | Path, stage: str, **fields: Any) -> Path:
    """Write ``out_dir/manifest.json`` with the common header and ``fields``; returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "format_version": FORMAT_VERSION,
        "stage": stage,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data_prep_version": __version__,
        **fields,
    }
    path = out_dir / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_manifest(folder: str | Path, stage: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Read ``folder/manifest.json``; with ``stage``, check the folder was made by that stage."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.exists():
        raise UserError(f"{folder}: folder not found")
    if not path.is_file():
        raise UserError(f"{folder}: no {MANIFEST} here; is this a folder written by data_prep?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise UserError(
            f"{path}: format_version {version!r}, this code reads {FORMAT_VERSION}; rebuild the folder"
        )
    if stage is not None:
        stages = (stage,) if isinstance(stage, str) else stage
        if data.get("stage") not in stages:
            raise UserError(
                f"{path}: written by stage {data.get('stage')!r}, expected {' or '.join(map(repr, stages))}"
            )
    return data


def verify_checksums(folder: str | Path, manifest: dict[str, Any]) -> None:
    """Re-hash every file listed under ``manifest["files"]`` and fail on the first that differs."""
    folder = Path(folder)
    for entry in manifest.get("files", []):
        path = folder / entry["path"]
        if not path.is_file():
            raise UserError(f"{path}: listed in the manifest but missing")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise UserError(f"{path}: checksum does not match the manifest (file changed or corrupt)")


class SkipLog:
    """Counts what a stage skipped, by reason, with a few example locations: nothing is dropped silently."""

    def __init__(self, max_examples: int = 5) -> None:
        self.max_examples = max_examples
        self.reasons: dict[str, dict[str, Any]] = {}

    def add(self, reason: str, where: str, count: int = 1) -> None:
        """Record ``count`` items skipped for ``reason``; ``where`` is e.g. ``file.txt:12`` or ``dump.xml.bz2#Title``."""
        entry = self.reasons.setdefault(reason, {"count": 0, "examples": []})
        entry["count"] += count
        if len(entry["examples"]) < self.max_examples:
            entry["examples"].append(where)

    def merge(self, other: SkipLog | dict[str, dict[str, Any]]) -> None:
        """Fold another log (or its ``to_dict()``) into this one."""
        reasons = other.reasons if isinstance(other, SkipLog) else other
        for reason, entry in reasons.items():
            mine = self.reasons.setdefault(reason, {"count": 0, "examples": []})
            mine["count"] += entry["count"]
            room = self.max_examples - len(mine["examples"])
            mine["examples"].extend(entry["examples"][: max(room, 0)])

    def count(self, reason: str) -> int:
        return self.reasons.get(reason, {}).get("count", 0)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {k: {"count": v["count"], "examples": list(v["examples"])} for k, v in self.reasons.items()}

    def __bool__(self) -> bool:
        return bool(self.reasons)
