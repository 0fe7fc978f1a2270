"""FLOP and parameter counts, checked against the real models and PyTorch's own FLOP counter."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from pipeline.flops import (
    estimate_cpu_peak_flops,
    flops_per_token,
    mfu,
    num_parameters,
    peak_flops_for,
)
from pipeline.models import ModelConfig, build_model, load_model_config

PRESETS = sorted(
    p.stem for p in (Path(__file__).resolve().parent.parent / "recipes" / "models").glob("*.yaml")
)


@pytest.mark.parametrize("name", PRESETS)
def test_num_parameters_matches_the_model(name: str) -> None:
    for nsp in (True, False):
        config = load_model_config(name, nsp=nsp)
        with torch.device("meta"):  # no memory for bert-large's weights
            model = build_model(config)
        assert num_parameters(config) == sum(p.numel() for p in model.parameters())  # tied weights once
        tables = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
        assert num_parameters(config, embeddings=False) == num_parameters(config) - tables


def test_known_parameter_counts() -> None:
    # transformers' bert-base-uncased BertForPreTraining and gpt2 checkpoints.
    assert num_parameters(load_model_config("bert-base")) == 110_106_428
    assert num_parameters(load_model_config("gpt2-small")) == 124_439_808


def test_gpt2_small_flops_per_token_is_6n_plus_attention() -> None:
    config = load_model_config("gpt2-small")
    L, C, T, V = 12, 768, 1024, 50257
    n_matmul = L * 12 * C * C + C * V  # attention 4C^2 + MLP 8C^2 per layer, plus the tied lm_head
    assert flops_per_token(config, T) == 6 * n_matmul + 12 * L * C * T == 854_438_400


@pytest.mark.parametrize("arch", ["bert", "gpt"])
def test_flops_match_pytorch_flop_counter(arch: str) -> None:
    config = ModelConfig(
        arch, vocab_size=97, max_position_embeddings=32, hidden_size=32, num_layers=2, num_heads=4
    )
    model = build_model(config)
    B, T = 3, 16
    x = torch.randint(1, 97, (B, T))
    with FlopCounterMode(display=False) as counter:
        if arch == "bert":
            # The dense computation the formula describes: every position through every layer, the MLM head
            # at the masked positions only. (BertForPreTraining.forward skips even more: padding rows and the
            # last layer's unread positions, so it runs fewer FLOPs than the model FLOPs that MFU counts.)
            labels = torch.full_like(x, -100)
            labels[:, ::4] = x[:, ::4]  # a quarter of the tokens predicted
            masked = labels != -100
            seq, pooled = model.bert(x)
            loss = F.cross_entropy(model.mlm_head(seq[masked]), labels[masked])
            loss = loss + F.cross_entropy(model.nsp_head(pooled), torch.zeros(B, dtype=torch.long))
        else:
            loss = model(x, labels=x).loss
        loss.backward()
    fraction = 0.25 if arch == "bert" else None
    expected = flops_per_token(config, T, mlm_fraction=fraction) * B * T
    assert counter.get_total_flops() == pytest.approx(expected)


def test_mlm_fraction_lowers_bert_flops_by_the_head_cost() -> None:
    config = load_model_config("bert-base")
    C, V = 768, 30522
    full, masked = flops_per_token(config, 128), flops_per_token(config, 128, mlm_fraction=0.15)
    assert masked < full
    assert full - masked == pytest.approx(3 * 0.85 * (2 * C * C + 2 * C * V))
    assert (full - masked) / full > 0.15  # bert-base at T=128: the head is ~22% of the FLOPs
    tiny = load_model_config("bert-tiny")
    assert flops_per_token(tiny, 128, mlm_fraction=20 / 128) < 0.5 * flops_per_token(tiny, 128)  # most of it
    with pytest.raises(ValueError):
        flops_per_token(load_model_config("gpt-tiny"), 128, mlm_fraction=0.15)


def test_mfu() -> None:
    assert mfu(tokens_per_s=1000.0, flops_per_token=1e9, peak_flops=4e12) == 0.25


@pytest.mark.parametrize(
    ("device", "precision", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989e12),
        ("NVIDIA H100 80GB HBM3", "bf16-mixed", 989e12),
        ("NVIDIA H100 PCIe", "bf16", 756e12),
        ("NVIDIA H200", "fp32", 67e12),
        ("NVIDIA A100-SXM4-80GB", "bf16", 312e12),
        ("NVIDIA A100-SXM4-40GB", "32-true", 19.5e12),
        ("Tesla V100-SXM2-16GB", "16-mixed", 125e12),
        ("Tesla V100-SXM2-16GB", "bf16", None),  # Volta has no bf16
        ("NVIDIA L4", "bf16", 121e12),
        ("NVIDIA L40S", "bf16", 362.05e12),  # not mistaken for an L4
        ("NVIDIA A10G", "tf32", 62.5e12),
        ("cpu", "fp32", None),
        ("Some Future GPU", "bf16", None),
        ("NVIDIA H100 80GB HBM3", "int3", None),
    ],
)
def test_peak_flops_for(device: str, precision: str, expected: float | None) -> None:
    assert peak_flops_for(device, precision) == expected


def test_estimate_cpu_peak_flops() -> None:
    measured = estimate_cpu_peak_flops(seconds=0.05, n=256)
    assert math.isfinite(measured) and 1e8 < measured < 1e14
