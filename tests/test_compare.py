"""The comparison command: budgets, training through the pretraining path, and the report with its plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from baseline_data import SEQ, VOCAB, gpt_windows

from data_prep.recipe import from_dict
from pipeline.compare import CompareRecipe, compare, run_recipes
from pipeline.flops import flops_per_token
from pipeline.models.config import load_model_config

SMALL = {"hidden_size": 32, "embedding_size": 16}


def recipe(out: Path, data: Path, budget: dict) -> CompareRecipe:
    return from_dict(
        CompareRecipe,
        {
            "out_dir": str(out),
            "data": {"path": str(data)},
            "models": [
                {"name": "rnn", "model": "rnn-tiny", "model_overrides": SMALL, "lr": 3e-3},
                {
                    "name": "gpt",
                    "model": "gpt-tiny",
                    "model_overrides": {"hidden_size": 32, "max_position_embeddings": SEQ},
                },
            ],
            "budget": budget,
            "optim": {"lr": 1e-3, "warmup_steps": 1},
            "trainer": {
                "global_batch_size": 8,
                "micro_batch_size": 8,
                "val_every_n_steps": 2,
                "val_batches": 1,
                "log_every_n_steps": 1,
            },  # fmt: skip
            "checkpoint": {"every_n_steps": 100, "keep_last": 1},
            "logging": {"wandb": False},
            "gradients": {"batches": 1},
        },
        "test",
    )


def test_budgets_become_steps(tmp_path: Path) -> None:
    r = recipe(tmp_path, tmp_path, {"tokens": 8 * SEQ * 5})
    runs = run_recipes(r, SEQ, VOCAB)
    assert [p.trainer.max_steps for _, p in runs] == [5, 5]
    assert [Path(p.run_dir).name for _, p in runs] == ["rnn", "gpt"]
    assert runs[0][1].optim.lr == 3e-3 and runs[1][1].optim.lr == 1e-3
    flops = 1e9
    runs = run_recipes(recipe(tmp_path, tmp_path, {"flops": flops}), SEQ, VOCAB)
    for _, p in runs:
        fpt = flops_per_token(load_model_config(p.model, **p.model_overrides), SEQ)
        assert p.trainer.max_steps == -(-flops // (fpt * 8 * SEQ))


def test_compare_writes_the_report(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    data = gpt_windows(tmp_path_factory)
    out = compare(recipe(tmp_path / "cmp", data, {"tokens": 8 * SEQ * 4}))
    for name in ("report.md", "val_loss.png", "val_ppl.png", "train_loss.png", "throughput.png", "params.png",
                 "grad_by_distance.png", "results.json"):  # fmt: skip
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "val_loss.png").read_bytes()[:4] == b"\x89PNG"
    results = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in results] == ["rnn", "gpt"]
    for r in results:
        assert r["max_steps"] == 4 and r["val_loss"] > 0 and len(r["grad_by_distance"]) == SEQ
        assert r["params"] > 0 and r["tokens_per_s"] > 0
    md = (out / "report.md").read_text()
    assert "| rnn | rnn |" in md and "grad_by_distance.png" in md
    ckpt = tmp_path / "cmp" / "runs" / "rnn" / "checkpoints" / "step-0000004.ckpt"
    mtime = ckpt.stat().st_mtime
    compare(recipe(tmp_path / "cmp", data, {"tokens": 8 * SEQ * 4}))  # finished runs are not retrained
    assert ckpt.stat().st_mtime == mtime
