"""A small GPT-windows folder from the real enwiki slice, shared by the baseline tests (built once per session).

Not a test module: ``test_baselines``, ``test_seq2seq``, ``test_compare`` and ``test_attention`` call
``gpt_windows(tmp_path_factory)``; the folder is cached under pytest's base temp folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from data_prep.config import DataRecipe
from data_prep.recipe import load
from data_prep.run import run_recipe

ROOT = Path(__file__).resolve().parent.parent
VOCAB = 1000
SEQ = 32


def gpt_windows(factory: pytest.TempPathFactory) -> Path:
    """The ``gpt`` folder (32-token windows, BPE vocab 1000); its manifest names the shards folder."""
    out = factory.getbasetemp() / "baseline-gpt"
    folder = out / "gpt"
    if (folder / "manifest.json").is_file():
        return folder
    recipe = load(DataRecipe, ROOT / "recipes/data/demo-gpt.yaml")
    recipe.out_dir = str(out)
    recipe.tokenizer.vocab_size = VOCAB
    assert recipe.gpt is not None
    recipe.gpt.seq_len = SEQ
    return Path(run_recipe(recipe, progress=False)["gpt"])


def lm_recipe(run_dir: Path, data: Path, model: str, steps: int = 30, **overrides: object) -> dict:
    """A tiny pretraining recipe (as a mapping) for a preset, resized to the test data."""
    return {
        "run_dir": str(run_dir),
        "model": model,
        "model_overrides": {"vocab_size": VOCAB, **overrides},
        "data": {"path": str(data)},
        "optim": {"lr": 3e-3, "warmup_steps": 3},
        "trainer": {
            "max_steps": steps,
            "global_batch_size": 8,
            "micro_batch_size": 8,
            "val_every_n_steps": 0,
            "log_every_n_steps": 1,
        },
        "checkpoint": {"every_n_steps": steps, "keep_last": 1},
        "logging": {"wandb": False},
    }
