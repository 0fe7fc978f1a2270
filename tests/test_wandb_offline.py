"""A training run's W&B offline folder exists and holds the logged metrics (read back with pipeline.wandb_offline)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

wandb = pytest.importorskip("wandb")

from pipeline.wandb_offline import (  # noqa: E402
    find_offline_runs,
    read_config,
    read_history,
    read_records,
    read_summary,
    wait_for_run,
    wandb_file,
)

LOSSES = [1.5, 1.25, 1.0, 0.75]
BLOB = "x" * 70_000  # a config value larger than a 32 KiB block: FIRST/MIDDLE/LAST chunks and block padding


def _offline_env(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    mp.setenv("WANDB_DISABLE_CODE", "true")
    for var, sub in [
        ("WANDB_CONFIG_DIR", "config"),
        ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_DATA_DIR", "data"),
    ]:
        mp.setenv(var, str(tmp / sub))


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of a plain ``wandb.init(mode="offline")`` run that logged LOSSES."""
    root = tmp_path_factory.mktemp("wandb_plain")
    with pytest.MonkeyPatch.context() as mp:
        _offline_env(mp, root)
        run = wandb.init(mode="offline", dir=root, project="t", config={"lr": 0.1, "model": {"layers": 2}})
        for i, loss in enumerate(LOSSES):
            wandb.log({"train/loss": loss, "step": i})
        run.config.update({"blob": BLOB})
        run.finish()
    runs = find_offline_runs(root)
    assert len(runs) == 1, runs
    # wandb-core writes the file's last partial block when it closes the stream, just after finish() returns.
    wait_for_run(runs[0])
    return runs[0]


def test_plain_offline_run_history(plain_run: Path) -> None:
    assert plain_run.name.startswith("offline-run-")
    assert wandb_file(plain_run).stat().st_size > 32 * 1024  # spans blocks

    history = read_history(plain_run)
    assert [row["train/loss"] for row in history] == LOSSES
    assert [row["step"] for row in history] == list(range(len(LOSSES)))
    assert [row["_step"] for row in history] == list(range(len(LOSSES)))
    assert read_history(wandb_file(plain_run)) == history  # folder or file

    config = read_config(plain_run)
    assert config == {"lr": 0.1, "model": {"layers": 2}, "blob": BLOB}
    assert read_summary(plain_run)["train/loss"] == LOSSES[-1]
    kinds = [r.WhichOneof("record_type") for r in read_records(plain_run)]
    assert kinds[0] == "header" and "run" in kinds and kinds[-1] == "exit"


def test_lightning_wandb_logger_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lightning as L
    import torch
    from lightning.pytorch.loggers import WandbLogger

    _offline_env(monkeypatch, tmp_path)

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("train/loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 4, generator=g), torch.randn(32, 1, generator=g))
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="t")
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=5,
        log_every_n_steps=1,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=4))
    logger.experiment.finish()

    runs = find_offline_runs(tmp_path)
    assert len(runs) == 1
    wait_for_run(runs[-1])
    rows = [row for row in read_history(runs[-1]) if "train/loss" in row]
    assert len(rows) == 5
    assert all(isinstance(row["train/loss"], float) for row in rows)
    assert [row["trainer/global_step"] for row in rows] == [0, 1, 2, 3, 4]


def test_corrupt_files_raise_naming_the_file(plain_run: Path, tmp_path: Path) -> None:
    good = wandb_file(plain_run).read_bytes()

    truncated = tmp_path / "run-truncated.wandb"
    truncated.write_bytes(good[: len(good) - 10])
    with pytest.raises(ValueError, match="run-truncated.wandb"):
        read_history(truncated)
    # A run that is still writing (or crashed): strict=False keeps the complete records.
    assert [r["train/loss"] for r in read_history(truncated, strict=False)] == LOSSES
    with pytest.raises(TimeoutError):
        wait_for_run(truncated, timeout=0.1)

    flipped = bytearray(good)
    flipped[200] ^= 0xFF  # inside an early chunk's payload
    bad_crc = tmp_path / "run-flipped.wandb"
    bad_crc.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match=r"run-flipped\.wandb.*checksum"):
        list(read_records(bad_crc))

    not_wandb = tmp_path / "run-other.wandb"
    not_wandb.write_bytes(b"LEVELDB" + good[7:])
    with pytest.raises(ValueError, match=r"run-other\.wandb.*header"):
        list(read_records(not_wandb))

    empty = tmp_path / "empty"
    shutil.copytree(plain_run, empty, ignore=shutil.ignore_patterns("*.wandb"))
    with pytest.raises(FileNotFoundError):
        read_history(empty)
