"""Opening prepared training data, and checking it against the model it is about to train.

``open_dataset`` reads a folder's manifest and returns the matching loader-side dataset, so the CLI's
``inspect`` and the training DataModule never guess the data kind from file names. ``check_data_manifest``
is the last guard before training: a model with a different vocabulary, special-token ids or sequence length
than the data would train silently on garbage, so any mismatch stops the run with a message naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from data_prep.errors import UserError
from data_prep.manifest import read_manifest

if TYPE_CHECKING:
    from data_prep.bert_data import BertDataset
    from data_prep.gpt_data import GptDataset

DATA_STAGES = ("bert", "gpt")


def open_dataset(folder: str | Path, split: str = "train", **kwargs: Any) -> BertDataset | GptDataset:
    """The dataset of ``folder`` (written by the ``bert`` or ``gpt`` stage); ``kwargs`` go to its constructor."""
    manifest = read_manifest(folder, DATA_STAGES)
    if manifest["stage"] == "bert":
        from data_prep.bert_data import BertDataset

        return BertDataset(folder, split, **kwargs)
    from data_prep.gpt_data import GptDataset

    return GptDataset(folder, split, **kwargs)


def check_data_manifest(
    manifest: dict[str, Any],
    *,
    vocab_size: int | None = None,
    special_ids: dict[str, int] | None = None,
    seq_len: int | None = None,
    where: str = "",
) -> None:
    """Raise ``UserError`` on the first field where the data manifest and the model config disagree.

    ``seq_len`` is the training sequence length and is compared with the bert manifest's ``max_seq_len`` or
    the gpt manifest's ``seq_len``: the instances were cut to that length, so any other value means the data
    was built for another model. ``special_ids`` entries are compared one by one (e.g. ``{"mask": 4}``).
    """
    prefix = f"{where}: " if where else ""
    stage = manifest.get("stage")
    if stage not in DATA_STAGES:
        raise UserError(f"{prefix}manifest of stage {stage!r}, expected training data ('bert' or 'gpt')")
    if vocab_size is not None and manifest.get("vocab_size") != vocab_size:
        raise UserError(
            f"{prefix}vocab_size {manifest.get('vocab_size')} in the data manifest but {vocab_size} in the model config"
        )
    if special_ids is not None:
        found = manifest.get("special_ids", {})
        for name, expected in special_ids.items():
            if found.get(name) != expected:
                raise UserError(
                    f"{prefix}special_ids[{name!r}] {found.get(name)} in the data manifest "
                    f"but {expected} in the model config"
                )
    if seq_len is not None:
        field = "max_seq_len" if stage == "bert" else "seq_len"
        if manifest.get(field) != seq_len:
            raise UserError(
                f"{prefix}{field} {manifest.get(field)} in the data manifest but {seq_len} in the model config"
            )


def read_split_manifest(folder: str | Path, stage: str, split: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(manifest, manifest["splits"][split])`` of a data folder, with errors that name the folder."""
    manifest = read_manifest(folder, stage)
    splits = manifest.get("splits", {})
    if split not in splits:
        raise UserError(
            f"{folder}: no split {split!r} (this folder has {', '.join(sorted(splits)) or 'none'})"
        )
    return manifest, splits[split]


def check_tokenizer(folder: str | Path, manifest: dict[str, Any], tokenizer: str | Path | None) -> None:
    """When the caller names a tokenizer, refuse data made with another one (ids would mean other tokens)."""
    if tokenizer is None:
        return
    from data_prep.tokenizer import check_same_tokenizer, tokenizer_info

    check_same_tokenizer(manifest["tokenizer"], tokenizer_info(tokenizer), str(folder))


def readonly_memmap(path: Path, dtype: np.dtype | str, shape: tuple[int, ...]) -> np.ndarray:
    """A read-only memory map of ``path`` with ``shape``; checks the size, and handles empty files (mmap cannot)."""
    dtype = np.dtype(dtype)
    expected = int(np.prod(shape)) * dtype.itemsize
    if not path.is_file():
        raise UserError(f"{path}: missing (rebuild the folder)")
    size = path.stat().st_size
    if size != expected:
        raise UserError(f"{path}: {size} bytes, the manifest implies {expected} (file truncated or changed)")
    if expected == 0:
        return np.empty(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)
