"""Attention maps: BERT self-attention, GPT causal attention and seq2seq alignments, as PNGs with token labels."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from baseline_data import ROOT, SEQ, VOCAB, gpt_windows, lm_recipe

from data_prep.errors import UserError
from data_prep.recipe import from_dict
from pipeline.attention import attention_map, load_for_attention, main
from pipeline.checkpoint import write_release
from pipeline.config import PretrainRecipe
from pipeline.models import BertForPreTraining, ModelConfig, build_model
from pipeline.seq2seq_recipe import Seq2SeqRecipe
from pipeline.tasks.seq2seq import train_seq2seq
from pipeline.train import pretrain

TEXT = "The history of the world is long."


def test_gpt_map_from_a_run_folder(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    data = gpt_windows(tmp_path_factory)
    recipe = lm_recipe(
        tmp_path / "gpt", data, "gpt-tiny", steps=2, hidden_size=32, max_position_embeddings=SEQ
    )
    run = pretrain(from_dict(PretrainRecipe, recipe, "test"), progress=False)
    loaded = load_for_attention(run)
    w, rows, cols, title = attention_map(loaded, TEXT, layer=0, head=1)
    n = len(rows)
    assert rows == cols and w.shape == (n, n) and "causal" in title
    assert torch.allclose(w.sum(-1), torch.ones(n), atol=1e-5)
    assert float(w.triu(1).abs().max()) == 0.0  # nothing attends to the future
    png = main(str(run), TEXT, out=str(tmp_path / "gpt.png"), layer=-1, head=None, target=None)
    assert png.read_bytes()[:4] == b"\x89PNG"
    rnn = pretrain(
        from_dict(PretrainRecipe, lm_recipe(tmp_path / "rnn", data, "rnn-tiny", steps=1), "t"), progress=False
    )
    with pytest.raises(UserError, match="no attention"):
        attention_map(load_for_attention(rnn), TEXT)


def test_bert_map_from_a_release_folder(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    data = gpt_windows(tmp_path_factory)
    cfg = ModelConfig(
        arch="bert", vocab_size=VOCAB, max_position_embeddings=64, hidden_size=32, num_layers=2, num_heads=4
    )
    model = build_model(cfg)
    assert isinstance(model, BertForPreTraining)
    release = write_release(model, cfg, tmp_path / "release", tokenizer=data)
    w, rows, cols, title = attention_map(load_for_attention(release), TEXT, layer=1, head=3)
    assert w.shape == (len(rows), len(cols)) and "BERT" in title
    assert torch.allclose(w.sum(-1), torch.ones(len(rows)), atol=1e-5)
    assert float(w.triu(1).abs().max()) > 0  # bidirectional
    with pytest.raises(UserError, match="--layer"):
        attention_map(load_for_attention(release), TEXT, layer=5)


@pytest.mark.parametrize("arch", ["rnn", "transformer"])
def test_seq2seq_alignment_through_the_cli(
    arch: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    data = gpt_windows(tmp_path_factory)
    recipe = from_dict(
        Seq2SeqRecipe,
        {
            "run_dir": str(tmp_path / "run"),
            "data": {"path": str(data), "max_tokens": 16},
            "model": {
                "arch": arch,
                "embedding_size": 16,
                "hidden_size": 32,
                "num_heads": 2,
                "encoder_layers": 1,
                "decoder_layers": 1,
            },  # fmt: skip
            "trainer": {
                "max_steps": 2,
                "global_batch_size": 4,
                "micro_batch_size": 4,
                "val_every_n_steps": 0,
            },
            "checkpoint": {"every_n_steps": 2},
            "logging": {"wandb": False},
        },
        "test",
    )
    run = train_seq2seq(recipe, progress=False)
    w, rows, cols, title = attention_map(load_for_attention(run), TEXT, target="The history")
    assert "target x source" in title and w.shape == (len(rows), len(cols)) and rows[-1] == "<eos>"
    assert torch.allclose(w.sum(-1), torch.ones(len(rows)), atol=1e-5)
    out = tmp_path / "align.png"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "attention", "--checkpoint", str(run), "--text", TEXT, "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_bytes()[:4] == b"\x89PNG"
