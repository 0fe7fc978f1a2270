"""Pretraining end to end on the real Wikipedia slice, on the CPU, through the production code path."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
import yaml

from data_prep.config import DataRecipe
from data_prep.errors import UserError
from data_prep.recipe import from_dict, load
from data_prep.run import run_recipe
from pipeline.callbacks import read_metrics
from pipeline.checkpoint import consolidate, latest_checkpoint, list_checkpoints, load_release
from pipeline.config import PretrainRecipe
from pipeline.train import pretrain

ROOT = Path(__file__).resolve().parent.parent
VOCAB = 2000


@pytest.fixture(scope="session")
def wiki_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """BERT instances (seq 64) and GPT windows (seq 64) from the real enwiki slice, vocab 2000."""
    out = tmp_path_factory.mktemp("wiki")
    folders = {}
    for kind in ("bert", "gpt"):
        recipe = load(DataRecipe, ROOT / f"recipes/data/demo-{kind}.yaml")
        recipe.out_dir = str(out / kind)
        recipe.tokenizer.vocab_size = VOCAB
        if kind == "bert":
            recipe.bert.max_seq_len = 64
        else:
            recipe.gpt.seq_len = 64
        folders[kind] = run_recipe(recipe, progress=False)[kind]
    return folders


def make_recipe(run_dir: Path, data: Path, arch: str, **sections: Any) -> dict[str, Any]:
    """A tiny pretraining recipe as a plain mapping (written to YAML for subprocess runs)."""
    recipe: dict[str, Any] = {
        "run_dir": str(run_dir),
        "model": f"{arch}-tiny",
        "model_overrides": {"vocab_size": VOCAB, "max_position_embeddings": 64},
        "data": {"path": str(data)},
        "optim": {"lr": 2e-3, "warmup_steps": 5},
        "trainer": {
            "max_steps": 20,
            "global_batch_size": 8,
            "micro_batch_size": 8,
            "val_every_n_steps": 0,
            "log_every_n_steps": 1,
        },
        "checkpoint": {"every_n_steps": 10, "keep_last": 5},
        "logging": {"wandb": False},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            recipe.setdefault(section, {}).update(values)
        else:
            recipe[section] = values
    return recipe


class StopAt(L.Callback):
    """Stops training after ``step`` optimiser steps, as a preempted job would (a checkpoint is written)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def train(recipe: dict[str, Any], resume: str | None = None, stop_at: int | None = None) -> Path:
    callbacks = [StopAt(stop_at)] if stop_at else None
    return pretrain(
        from_dict(PretrainRecipe, recipe, "test"), resume=resume, progress=False, callbacks=callbacks
    )


def losses(run_dir: Path) -> dict[int, float]:
    return {
        int(r["step"]): r["train/loss"] for r in read_metrics(run_dir / "metrics.csv") if "train/loss" in r
    }


def cli_pretrain(recipe: dict[str, Any], tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "pretrain", "--config", str(path), "--quiet", *extra],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )


@pytest.mark.parametrize("arch", ["bert", "gpt"])
def test_loss_falls_on_real_wikipedia(arch: str, wiki_data: dict[str, Path], tmp_path: Path) -> None:
    recipe = make_recipe(tmp_path / "run", wiki_data[arch], arch, trainer={"max_steps": 60})
    run = train(recipe)
    curve = losses(run)
    assert sorted(curve) == list(range(60))
    first, last = np.mean([curve[s] for s in range(5)]), np.mean([curve[s] for s in range(55, 60)])
    assert last < first - 0.5, (first, last)
    rows = read_metrics(run / "metrics.csv")
    assert any("perf/tokens_per_s" in r and r["perf/tokens_per_s"] > 0 for r in rows)
    assert any("perf/mfu" in r and 0 < r["perf/mfu"] < 1.5 for r in rows)
    if arch == "bert":
        assert any("train/mlm_acc" in r for r in rows) and any("train/nsp_acc" in r for r in rows)
    assert (run / "recipe.yaml").is_file()


def test_resume_matches_the_uninterrupted_run(wiki_data: dict[str, Path], tmp_path: Path) -> None:
    """Train 2k steps straight; train k, resume from k to 2k: the per-step losses after k are the same."""
    k = 8
    common = {"trainer": {"max_steps": 2 * k}, "checkpoint": {"every_n_steps": k, "keep_last": 5}}
    straight = train(make_recipe(tmp_path / "straight", wiki_data["bert"], "bert", **common))
    interrupted = make_recipe(tmp_path / "resumed", wiki_data["bert"], "bert", **common)
    run = train(interrupted, stop_at=k)
    assert [p.name for p in list_checkpoints(run)] == [f"step-{k:07d}.ckpt"]
    train(interrupted, resume="auto")
    a, b = losses(straight), losses(run)
    assert sorted(b) == list(range(2 * k)), "metrics.csv must read as one run"
    for step in range(k, 2 * k):
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6), step
    assert latest_checkpoint(run).name == f"step-{2 * k:07d}.ckpt"
    # The resolved recipe sits beside every checkpoint.
    for ckpt in list_checkpoints(run):
        assert yaml.safe_load(Path(str(ckpt) + ".recipe.yaml").read_text())["model"] == "bert-tiny"


def test_checkpoints_keep_the_last_k(wiki_data: dict[str, Path], tmp_path: Path) -> None:
    recipe = make_recipe(
        tmp_path / "run",
        wiki_data["gpt"],
        "gpt",
        trainer={"max_steps": 13},
        checkpoint={"every_n_steps": 3, "keep_last": 2},
    )
    run = train(recipe)
    assert [p.name for p in list_checkpoints(run)] == ["step-0000012.ckpt", "step-0000013.ckpt"]


def test_gradient_accumulation_equals_a_bigger_batch(wiki_data: dict[str, Path], tmp_path: Path) -> None:
    no_dropout = {
        "vocab_size": VOCAB,
        "max_position_embeddings": 64,
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
    }
    weights = []
    for name, micro in [("big", 8), ("accum", 4)]:
        recipe = make_recipe(
            tmp_path / name,
            wiki_data["bert"],
            "bert",
            model_overrides=no_dropout,
            trainer={"max_steps": 3, "micro_batch_size": micro, "global_batch_size": 8},
            optim={"grad_clip": 0.0},
        )
        run = train(recipe)
        release = consolidate(latest_checkpoint(run), tmp_path / f"{name}_release")
        weights.append(load_release(release)[0].state_dict())
    big, accum = weights
    for key in big:
        torch.testing.assert_close(accum[key], big[key], atol=2e-5, rtol=1e-4, msg=key)


def test_consolidated_weights_equal_the_live_model(wiki_data: dict[str, Path], tmp_path: Path) -> None:
    from pipeline.data import PretrainDataModule
    from pipeline.models.config import load_model_config
    from pipeline.tasks.pretrain import PretrainModule

    recipe = from_dict(PretrainRecipe, make_recipe(tmp_path / "run", wiki_data["gpt"], "gpt"), "test")
    model_cfg = load_model_config(recipe.model, **recipe.model_overrides)
    module = PretrainModule(model_cfg, recipe.optim, max_steps=3, recipe=asdict(recipe))
    dm = PretrainDataModule(recipe.data, model_cfg, micro_batch_size=4, grad_accumulation=1, val_batches=0)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(module, datamodule=dm)
    ckpt = tmp_path / "step-0000003.ckpt"
    trainer.save_checkpoint(ckpt, weights_only=False)
    release = consolidate(ckpt, tmp_path / "release")
    assert sorted(p.name for p in release.iterdir()) == [
        "config.json",
        "model.safetensors",
        "recipe.yaml",
        "tokenizer.json",
    ]
    loaded, cfg = load_release(release)
    assert cfg == model_cfg
    live = module.model.state_dict()
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, live[key], atol=0, rtol=0, msg=key)


def test_manifest_mismatch_errors(wiki_data: dict[str, Path], tmp_path: Path) -> None:
    recipe = make_recipe(tmp_path / "a", wiki_data["bert"], "bert", model_overrides={"vocab_size": 8000})
    with pytest.raises(UserError, match="vocab_size 2000 in the data manifest but 8000"):
        train(recipe)
    recipe = make_recipe(tmp_path / "b", wiki_data["gpt"], "bert")
    with pytest.raises(UserError, match="gpt data cannot train a bert model"):
        train(recipe)
    recipe = make_recipe(
        tmp_path / "c",
        wiki_data["bert"],
        "bert",
        model_overrides={"vocab_size": VOCAB, "max_position_embeddings": 32},
    )
    with pytest.raises(UserError, match="max_position_embeddings"):
        train(recipe)


def test_bad_batch_sizes_are_a_clear_cli_error(wiki_data: dict[str, Path], tmp_path: Path) -> None:
    recipe = make_recipe(
        tmp_path / "run", wiki_data["gpt"], "gpt", trainer={"global_batch_size": 12, "micro_batch_size": 8}
    )
    proc = cli_pretrain(recipe, tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: global_batch_size 12 is not a multiple")
    assert "Traceback" not in proc.stderr


# ---- DeepSpeed ZeRO on two CPU processes, through Lightning (the cluster's code path) ---------------------


def test_zero3_on_two_processes_matches_one_process(wiki_data: dict[str, Path], tmp_path: Path) -> None:
    """ZeRO-3 across 2 gloo ranks trains the same weights as one process on the same global batches."""
    no_dropout = {
        "vocab_size": VOCAB,
        "max_position_embeddings": 64,
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
    }
    common = {"model_overrides": no_dropout, "optim": {"grad_clip": 0.0}}
    single = make_recipe(
        tmp_path / "single",
        wiki_data["bert"],
        "bert",
        trainer={"max_steps": 4, "micro_batch_size": 8},
        **common,
    )
    zero3 = make_recipe(
        tmp_path / "zero3",
        wiki_data["bert"],
        "bert",
        trainer={
            "max_steps": 4,
            "micro_batch_size": 4,
            "devices": 2,
            "strategy": "deepspeed",
            "zero_stage": 3,
        },
        checkpoint={"every_n_steps": 4},
        **common,
    )
    train(single)
    proc = cli_pretrain(zero3, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = latest_checkpoint(tmp_path / "zero3")
    assert ckpt is not None and ckpt.is_dir(), "DeepSpeed writes a sharded checkpoint folder"
    assert (ckpt / "recipe.yaml").is_file()
    ours = load_release(consolidate(ckpt, tmp_path / "zero3_release"))[0].state_dict()
    ref = load_release(consolidate(latest_checkpoint(tmp_path / "single"), tmp_path / "single_release"))[
        0
    ].state_dict()
    for key in ref:
        torch.testing.assert_close(ours[key], ref[key], atol=5e-5, rtol=1e-3, msg=key)
    zero_losses, single_losses = losses(tmp_path / "zero3"), losses(tmp_path / "single")
    assert sorted(zero_losses) == [0, 1, 2, 3]
    # Rank 0 logs its own micro-batch's loss; the weights above prove both ranks' gradients were combined.
    assert all(np.isfinite(v) for v in zero_losses.values()) and single_losses


def test_zero2_bf16_on_two_processes_and_resume(wiki_data: dict[str, Path], tmp_path: Path) -> None:
    recipe = make_recipe(
        tmp_path / "run",
        wiki_data["gpt"],
        "gpt",
        trainer={
            "max_steps": 6,
            "micro_batch_size": 4,
            "devices": 2,
            "strategy": "deepspeed",
            "zero_stage": 2,
            "precision": "bf16-mixed",
        },
        checkpoint={"every_n_steps": 3},
    )
    proc = cli_pretrain(recipe, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-0000003.ckpt", "step-0000006.ckpt"]
    recipe["trainer"]["max_steps"] = 9
    proc = cli_pretrain(recipe, tmp_path, "--resume", "auto")
    assert proc.returncode == 0, proc.stderr[-3000:]
    curve = losses(tmp_path / "run")
    assert sorted(curve) == list(range(9)) and all(np.isfinite(v) for v in curve.values())


def test_wandb_offline_run_holds_the_logged_metrics(wiki_data: dict[str, Path], tmp_path: Path) -> None:
    from pipeline.wandb_offline import find_offline_runs, read_config, read_history, wait_for_run

    recipe = make_recipe(
        tmp_path / "run",
        wiki_data["gpt"],
        "gpt",
        trainer={"max_steps": 5},
        logging={"wandb": True, "tags": ["t"]},
    )
    run = train(recipe)
    runs = find_offline_runs(run)
    assert len(runs) == 1, "an offline W&B run folder in the run folder"
    wait_for_run(runs[0])
    history = [h for h in read_history(runs[0]) if "train/loss" in h]
    csv_losses = losses(run)
    assert [h["train/loss"] for h in history] == pytest.approx([csv_losses[s] for s in sorted(csv_losses)])
    assert read_config(runs[0])["trainer"]["max_steps"] == 5
    # A resumed run continues the same W&B run id.
    assert (run / "wandb_run_id").read_text().strip() in runs[0].name


def test_ddp_on_two_processes_with_mixed_precision_and_clipping(
    wiki_data: dict[str, Path], tmp_path: Path
) -> None:
    recipe = make_recipe(
        tmp_path / "run",
        wiki_data["bert"],
        "bert",
        trainer={
            "max_steps": 3,
            "micro_batch_size": 4,
            "devices": 2,
            "strategy": "ddp",
            "precision": "bf16-mixed",
        },
        checkpoint={"every_n_steps": 3},
    )
    proc = cli_pretrain(recipe, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-0000003.ckpt"]
    assert all(np.isfinite(v) for v in losses(tmp_path / "run").values())
