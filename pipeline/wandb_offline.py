"""Read a W&B offline run back without a server.

With ``WANDB_MODE=offline`` (or ``WandbLogger(offline=True)``) wandb writes every run to
``DIR/wandb/offline-run-<YYYYmmdd_HHMMSS>-<id>/run-<id>.wandb`` and uploads nothing; ``wandb sync`` sends
the folder later. wandb ships no Python reader for that file (its writer lives in the Go ``wandb-core``
binary), so this module is a small one: tests use it to prove that a training run really logged its
metrics, and users can check a run on a cluster node with no network before syncing it.

The ``.wandb`` file (checked against wandb 0.31) is a LevelDB-style log:

* A 7-byte file header: ``b":W&B"``, the magic ``0xBEE1`` as little-endian uint16, and a version byte ``0``.
* The file is cut into 32 KiB blocks counted from the start of the file (the header sits in block 0).
  Chunks never cross a block boundary; when fewer than 7 bytes are left in a block they are zero padding.
* Each chunk: a 7-byte header - checksum (uint32 LE), payload length (uint16 LE), type (1 byte:
  FULL=1, FIRST=2, MIDDLE=3, LAST=4) - then the payload. The checksum is W&B's variant of the LevelDB one:
  plain, unmasked CRC-32 (IEEE, ``zlib.crc32``) over the type byte followed by the payload (not LevelDB's
  masked CRC-32C). The last block may be short: the file ends right after the last chunk.
* A record is one FULL chunk, or FIRST, any number of MIDDLE, LAST; its bytes are a serialized
  ``wandb.proto.wandb_internal_pb2.Record`` (``history``, ``config``, ``summary``, ``run``, ``exit``, ...).

wandb-core writes the file a whole 32 KiB block at a time and writes the last, partial block only when it
closes the run's stream, which can be a moment *after* ``run.finish()`` returns (the service process
outlives the run). A live run's file therefore lags by up to 32 KiB, and a reader in the same process
should call ``wait_for_run`` first: it returns once the file ends with the run's ``exit`` record.
"""

from __future__ import annotations

import json
import re
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "find_offline_runs",
    "read_config",
    "read_history",
    "read_records",
    "read_summary",
    "wait_for_run",
    "wandb_file",
]

HEADER_IDENT = b":W&B"
HEADER_MAGIC = 0xBEE1
HEADER_VERSION = 0
_FILE_HEADER = struct.Struct("<4sHB")  # ident, magic, version: 7 bytes
_CHUNK_HEADER = struct.Struct("<IHB")  # checksum, length, type: 7 bytes
BLOCK_SIZE = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4

_RUN_DIR = re.compile(r"^offline-run-(\d{8}_\d{6})-(.+)$")


def find_offline_runs(root: str | Path) -> list[Path]:
    """The ``offline-run-*`` folders under ``root/wandb/`` (or ``root`` itself if it is that folder), oldest first.

    Runs are ordered by the start time in the folder name, then by the modification time of their
    ``.wandb`` file (two runs can start in the same second), so the newest run is ``[-1]``.
    """
    root = Path(root)
    base = root / "wandb"
    if not base.is_dir() and root.name == "wandb":
        base = root
    if not base.is_dir():
        return []
    runs = []
    for d in base.iterdir():
        m = _RUN_DIR.match(d.name)
        if m is None or d.is_symlink() or not d.is_dir():
            continue
        files = list(d.glob("run-*.wandb"))
        mtime = files[0].stat().st_mtime if files else d.stat().st_mtime
        runs.append((m.group(1), mtime, d.name, d))
    return [d for *_, d in sorted(runs)]


def wandb_file(run: str | Path) -> Path:
    """The ``run-<id>.wandb`` file of a run folder (or ``run`` itself if it is a file)."""
    run = Path(run)
    if run.is_file():
        return run
    if not run.is_dir():
        raise FileNotFoundError(f"no W&B run folder or .wandb file at {run}")
    files = sorted(run.glob("run-*.wandb"))
    if len(files) != 1:
        what = "no" if not files else f"{len(files)}"
        raise FileNotFoundError(
            f"{what} run-*.wandb file(s) in {run}; pass a run folder from find_offline_runs() or the file itself"
        )
    return files[0]


def _records_bytes(data: bytes, name: str, strict: bool) -> Iterator[bytes]:
    """Yield each record's payload: check the file header, walk the blocks, join FIRST/MIDDLE/LAST chunks."""
    if len(data) < _FILE_HEADER.size:
        raise ValueError(f"{name}: too short for a W&B header ({len(data)} bytes)")
    ident, magic, version = _FILE_HEADER.unpack_from(data, 0)
    if ident != HEADER_IDENT or magic != HEADER_MAGIC:
        raise ValueError(f"{name}: not a W&B transaction log (header {data[:7]!r})")
    if version != HEADER_VERSION:
        raise ValueError(f"{name}: unsupported W&B log version {version}")

    pos = _FILE_HEADER.size
    end = len(data)
    parts: list[bytes] | None = None  # chunks of a record begun by FIRST
    while pos < end:
        left = BLOCK_SIZE - pos % BLOCK_SIZE
        if left < _CHUNK_HEADER.size:  # block trailer: zero padding
            if data[pos : pos + left].strip(b"\0"):
                raise ValueError(f"{name}: non-zero block padding at offset {pos}")
            pos += left
            continue
        if end - pos < _CHUNK_HEADER.size:
            if strict:
                raise ValueError(f"{name}: truncated chunk header at offset {pos} (file ends at {end})")
            return
        checksum, length, kind = _CHUNK_HEADER.unpack_from(data, pos)
        if checksum == 0 and length == 0 and kind == 0 and parts is None:
            # A zeroed block tail (pre-allocated file): skip to the next block, as wandb's own reader does.
            pos += left
            continue
        start = pos + _CHUNK_HEADER.size
        stop = start + length
        if length > left - _CHUNK_HEADER.size:
            raise ValueError(f"{name}: chunk at offset {pos} overflows its block (length {length})")
        if stop > end:
            if strict:
                raise ValueError(
                    f"{name}: truncated chunk at offset {pos}: needs {length} bytes, has {end - start}"
                )
            return
        payload = data[start:stop]
        if zlib.crc32(payload, zlib.crc32(bytes([kind]))) != checksum:
            raise ValueError(f"{name}: checksum mismatch in chunk at offset {pos}")
        if kind in (FULL, FIRST):
            if parts is not None:
                raise ValueError(f"{name}: new record at offset {pos} while a multi-chunk record is open")
            if kind == FULL:
                yield payload
            else:
                parts = [payload]
        elif kind in (MIDDLE, LAST):
            if parts is None:
                raise ValueError(f"{name}: chunk type {kind} at offset {pos} without a FIRST chunk")
            parts.append(payload)
            if kind == LAST:
                yield b"".join(parts)
                parts = None
        else:
            raise ValueError(f"{name}: unknown chunk type {kind} at offset {pos}")
        pos = stop
    if parts is not None and strict:
        raise ValueError(f"{name}: file ends inside a multi-chunk record")


def read_records(path: str | Path, strict: bool = True) -> Iterator[Any]:
    """Yield the ``wandb_internal_pb2.Record`` messages of a ``.wandb`` file (or of a run folder's file).

    Raises ``ValueError`` naming the file on a bad header, corrupt framing or checksum, or an undecodable
    record. ``strict=False`` tolerates a truncated tail (a run that is still writing or crashed mid-write)
    and stops there; corruption before the tail still raises.
    """
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    path = wandb_file(path)
    data = path.read_bytes()
    for i, raw in enumerate(_records_bytes(data, str(path), strict)):
        record = wandb_internal_pb2.Record()
        try:
            record.ParseFromString(raw)
        except DecodeError as e:
            raise ValueError(f"{path}: record {i} is not a valid wandb Record: {e}") from e
        yield record


def wait_for_run(run: str | Path, timeout: float = 30.0, poll: float = 0.05) -> Path:
    """Wait until the run's ``.wandb`` file is complete - it parses and ends with the ``exit`` record - and return it.

    Raises ``TimeoutError`` (chained to the last read error, if any) when that does not happen in ``timeout``
    seconds: the run is still going, crashed before ``finish()``, or the file is corrupt.
    """
    deadline = time.monotonic() + timeout
    while True:
        error: Exception | None = None
        try:
            path = wandb_file(run)
            last = None
            for last in read_records(path):  # noqa: B007
                pass
            if last is not None and last.WhichOneof("record_type") == "exit":
                return path
        except (FileNotFoundError, ValueError) as e:
            error = e
        if time.monotonic() >= deadline:
            raise TimeoutError(f"W&B run {run} did not complete within {timeout:g} s") from error
        time.sleep(poll)


def _key(item: Any, sep: str) -> str:
    return item.key or sep.join(item.nested_key)


def read_history(run: str | Path, sep: str = "/", strict: bool = True) -> list[dict[str, Any]]:
    """One dict per ``wandb.log`` row, in order: ``{key: value}`` including ``_step``, ``_runtime``, ``_timestamp``.

    ``run`` is a run folder or its ``.wandb`` file. Keys of nested dicts (``wandb.log({"a": {"b": 1}})``) are
    joined with ``sep``: ``"a/b"``.
    """
    rows = []
    for record in read_records(run, strict=strict):
        if record.WhichOneof("record_type") != "history":
            continue
        row = {_key(item, sep): json.loads(item.value_json) for item in record.history.item}
        if "_step" not in row and record.history.HasField("step"):
            row["_step"] = record.history.step.num
        rows.append(row)
    return rows


def _apply_updates(out: dict[str, Any], updates: Any, removes: Any, sep: str) -> None:
    for item in updates:
        out[_key(item, sep)] = json.loads(item.value_json)
    for item in removes:
        out.pop(_key(item, sep), None)


def read_config(run: str | Path, sep: str = "/", include_internal: bool = False, strict: bool = True) -> dict:
    """The run's config: the config given to ``wandb.init`` plus later ``run.config`` updates.

    wandb's own bookkeeping key ``_wandb`` is left out unless ``include_internal``.
    """
    config: dict[str, Any] = {}
    for record in read_records(run, strict=strict):
        kind = record.WhichOneof("record_type")
        if kind == "run" and record.run.HasField("config"):
            _apply_updates(config, record.run.config.update, record.run.config.remove, sep)
        elif kind == "config":
            _apply_updates(config, record.config.update, record.config.remove, sep)
    if not include_internal:
        config.pop("_wandb", None)
    return config


def read_summary(run: str | Path, sep: str = "/", strict: bool = True) -> dict[str, Any]:
    """The run's final summary (last logged value of each metric unless overridden), as the W&B UI shows it."""
    summary: dict[str, Any] = {}
    for record in read_records(run, strict=strict):
        if record.WhichOneof("record_type") == "summary":
            _apply_updates(summary, record.summary.update, record.summary.remove, sep)
    return summary
