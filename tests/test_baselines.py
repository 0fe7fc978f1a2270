"""Language-model baselines (vanilla RNN, LSTM, GRU, Transformer-LM): shapes, counts, gradients, training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from baseline_data import ROOT, gpt_windows, lm_recipe
from torch import nn

from data_prep.recipe import from_dict
from pipeline.callbacks import read_metrics
from pipeline.config import PretrainRecipe
from pipeline.flops import GATES, flops_per_token, num_parameters
from pipeline.gradients import input_gradient_norms
from pipeline.models import build_model
from pipeline.models.config import ModelConfig, load_model_config
from pipeline.models.gpt import GPTOutput
from pipeline.train import pretrain

ARCHS = ["rnn", "lstm", "gru", "transformer-lm"]


def tiny(arch: str, **kw: object) -> ModelConfig:
    base = dict(
        arch=arch, vocab_size=50, max_position_embeddings=64, hidden_size=16, num_layers=2, num_heads=2
    )
    base.update(kw)
    return ModelConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_loss_and_counts(arch: str) -> None:
    torch.manual_seed(0)
    cfg = tiny(arch, embedding_size=8) if arch != "transformer-lm" else tiny(arch)
    model = build_model(cfg)
    ids = torch.randint(0, 50, (3, 11))
    out = model(ids, labels=torch.roll(ids, -1, 1))
    assert isinstance(out, GPTOutput) and out.logits.shape == (3, 11, 50)
    assert out.loss is not None and abs(float(out.loss) - np.log(50)) < 1.0  # near uniform at init
    assert num_parameters(cfg) == sum(p.numel() for p in model.parameters())
    assert model.lm_head.weight is (model.wte.weight if arch != "transformer-lm" else model.embed.wte.weight)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_untied_rnn_and_causality() -> None:
    cfg = tiny("gru", tie_embeddings=False, embedding_size=8, hidden_dropout=0.0)
    model = build_model(cfg).eval()
    assert model.lm_head.weight is not model.wte.weight
    assert num_parameters(cfg) == sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, 50, (1, 10))
    changed = ids.clone()
    changed[0, 7] = (changed[0, 7] + 1) % 50
    a, b = model(ids).logits, model(changed).logits
    assert torch.allclose(a[:, :7], b[:, :7]) and not torch.allclose(a[:, 7:], b[:, 7:])


def test_rnn_flops_count_the_gate_matmuls() -> None:
    E, H, V = 8, 16, 50
    for arch in ("rnn", "lstm", "gru"):
        cfg = tiny(arch, embedding_size=E)
        g = GATES[arch]
        forward = 2 * g * (E * H + H * H) + 2 * g * (H * H + H * H) + 2 * H * E + 2 * E * V
        assert flops_per_token(cfg, 32) == 3 * forward
    assert flops_per_token(tiny("transformer-lm"), 32) == flops_per_token(tiny("gpt"), 32)


def test_presets_load() -> None:
    for name in ("rnn-tiny", "lstm-tiny", "gru-tiny", "transformer-lm-tiny"):
        cfg = load_model_config(name)
        assert cfg.vocab_size == 8000 and flops_per_token(cfg, 128) > 0


class LinearRNN(nn.Module):
    """h_t = a h_{t-1} + x_t on scalar embeddings; logits = [h_t, 0]: dL_T/dx_{T-k} = a^k dL_T/dh_T."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = a
        self.wte = nn.Embedding(5, 1)

    def forward(self, input_ids: torch.Tensor) -> GPTOutput:
        x = self.wte(input_ids)[..., 0]  # (B, T)
        h, states = torch.zeros(x.size(0)), []
        for t in range(x.size(1)):
            h = self.a * h + x[:, t]
            states.append(h)
        hs = torch.stack(states, 1)
        return GPTOutput(loss=None, logits=torch.stack([hs, torch.zeros_like(hs)], -1))


@pytest.mark.parametrize("a", [0.5, 0.9, 1.2])
def test_gradient_norm_of_a_linear_rnn_is_a_to_the_k(a: float) -> None:
    torch.manual_seed(0)
    model = LinearRNN(a)
    ids = torch.randint(0, 5, (4, 12))
    norms = input_gradient_norms(model, ids, torch.zeros_like(ids))
    assert norms.shape == (12,)
    expected = a ** torch.arange(12, dtype=torch.float32)
    assert torch.allclose(norms / norms[0], expected, rtol=1e-4)


def test_gradients_vanish_in_a_tanh_rnn_with_small_weights() -> None:
    torch.manual_seed(0)
    model = build_model(tiny("rnn", hidden_dropout=0.0, num_layers=1))
    with torch.no_grad():
        for name, p in model.rnn.named_parameters():
            if name.startswith("weight_hh"):
                p.mul_(0.5)
    ids = torch.randint(0, 50, (4, 30))
    norms = input_gradient_norms(model, ids, ids)
    assert norms[20] < 1e-3 * norms[0]


@pytest.mark.parametrize("model", ["lstm-tiny", "gru-tiny"])
def test_loss_falls_on_the_real_slice(
    model: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    data = gpt_windows(tmp_path_factory)
    recipe = lm_recipe(tmp_path / "run", data, model, steps=40, hidden_size=64, embedding_size=32)
    run = pretrain(from_dict(PretrainRecipe, recipe, "test"), progress=False)
    rows = read_metrics(run / "metrics.csv")
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5, (losses[:5], losses[-5:])
    assert any(r.get("perf/tflops_per_device", 0) > 0 for r in rows)  # the FLOP counter knows RNNs


def test_transformer_lm_trains_through_the_cli(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    data = gpt_windows(tmp_path_factory)
    recipe = lm_recipe(tmp_path / "run", data, "transformer-lm-tiny", steps=6, hidden_size=32)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "pretrain", "--config", str(path), "--quiet"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "run" / "checkpoints" / "step-0000006.ckpt").exists()


def test_lstm_trains_under_deepspeed_zero2_on_two_processes(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """The baselines take the production multi-process path too: ZeRO-2 over 2 gloo ranks, sharded checkpoint."""
    data = gpt_windows(tmp_path_factory)
    recipe = lm_recipe(tmp_path / "run", data, "lstm-tiny", steps=4, hidden_size=32, embedding_size=32)
    recipe["trainer"].update(micro_batch_size=4, devices=2, strategy="deepspeed", zero_stage=2)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "pretrain", "--config", str(path), "--quiet"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = tmp_path / "run" / "checkpoints" / "step-0000004.ckpt"
    assert ckpt.is_dir(), "DeepSpeed writes a sharded checkpoint folder"
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(losses) == 4 and all(np.isfinite(losses))
