"""The pre-flight estimate against numbers worked out by hand for BERT-base on 8 x H100 (no cluster needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from data_prep.errors import UserError
from data_prep.recipe import from_dict
from pipeline.config import PretrainRecipe
from pipeline.preflight import estimate, estimate_recipe

ROOT = Path(__file__).resolve().parent.parent

# BERT-base by hand: L = 12 layers, C = 768, I = 3072, V = 30522, 512 positions, 2 token types, a = 12 heads.
L, C, I, V, A = 12, 768, 3072, 30522, 12
ATTENTION = 4 * (C * C + C)  # Q, K, V, output projection: weights + biases = 2,362,368
MLP = C * I + I + I * C + C  # 4,722,432
LAYER = ATTENTION + MLP + 2 * 2 * C  # + two LayerNorms = 7,087,872
TABLES = V * C + 512 * C + 2 * C  # word, position, token-type embeddings = 23,835,648
HEADS = (
    2 * C + (C * C + C + 2 * C + V) + (C * C + C + 2 * C + 2)
)  # emb LN + MLM transform/LN/bias + pooler/NSP
PARAMS = L * LAYER + TABLES + HEADS
assert PARAMS == 110_106_428  # what transformers reports for BertForPreTraining(bert-base-uncased)

# The run: 8 x H100 (2 nodes x 4), bf16-mixed, DeepSpeed ZeRO-2, micro-batch 32, global batch 256, seq 128.
WORLD, S, B, GLOBAL, STEPS, MFU = 8, 128, 32, 256, 100_000, 0.4

# FLOPs per token (pipeline.flops convention): 3 x forward; MLM head at every position (no data manifest).
FWD_LAYER = 2 * 4 * C * C + 2 * 2 * C * I + 2 * 2 * S * C  # 14,548,992
FWD = (
    L * FWD_LAYER + (2 * C * C + 2 * C * V) + (2 * C * C + 2 * C * 2) / S
)  # + MLM head + pooler/NSP per token
FLOPS_PER_TOKEN = 3 * FWD  # 667,975,752
FLOPS_PER_STEP = FLOPS_PER_TOKEN * GLOBAL * S  # 2.189e13
SECONDS = STEPS * FLOPS_PER_STEP / (WORLD * 989e12 * MFU)  # H100 SXM dense bf16 peak 989 TFLOP/s
GPU_HOURS = SECONDS / 3600 * WORLD

# Model states per GPU: 16-bit weights (2 B, not sharded by ZeRO-2), 16-bit grads (2 B / 8), fp32 master + m + v
# (12 B / 8).
WEIGHTS, GRADS, OPTIM = 2 * PARAMS, 2 * PARAMS / WORLD, 12 * PARAMS / WORLD
# Activations, Korthikanti et al.: s*b*h*(34 + 5*a*s/h) per layer; 5*12*128/768 = 10, so 44 * s*b*h.
SBH = S * B * C  # 3,145,728
ACT_LAYER = SBH * (34 + 5 * A * S / C)  # 138,412,032 bytes
ACT = L * ACT_LAYER  # 1.66 GB
ACT_CKPT = L * 2 * SBH + ACT_LAYER  # layer inputs + one layer recomputed: 0.21 GB


def bert_base_recipe(tmp_path: Path, **trainer: object) -> dict:
    return {
        "run_dir": str(tmp_path / "run"),
        "model": "bert-base",
        "data": {"path": str(tmp_path / "no-data-yet")},
        "trainer": {
            "max_steps": STEPS,
            "global_batch_size": GLOBAL,
            "micro_batch_size": B,
            "precision": "bf16-mixed",
            "strategy": "deepspeed",
            "zero_stage": 2,
            **trainer,
        },
    }


def test_bert_base_on_8_h100_by_hand(tmp_path: Path) -> None:
    recipe = from_dict(PretrainRecipe, bert_base_recipe(tmp_path), "test")
    est, seq = estimate_recipe(recipe, device="H100", nodes=2, gpus_per_node=4, mfu=MFU, seq_len=S)
    assert seq == S and est.world == WORLD and est.params == PARAMS
    assert est.model_states == pytest.approx({"weights": WEIGHTS, "gradients": GRADS, "optimizer": OPTIM})
    assert est.activations_no_ckpt == pytest.approx(ACT)
    assert est.activations_ckpt == pytest.approx(ACT_CKPT)
    assert est.activations == pytest.approx(ACT)  # the recipe does not checkpoint activations
    assert est.total == pytest.approx(WEIGHTS + GRADS + OPTIM + ACT)  # about 2.07 GB
    assert est.fits and est.gpu_memory == 80e9
    assert est.flops_per_step == pytest.approx(FLOPS_PER_STEP)
    assert est.tokens == STEPS * GLOBAL * S
    assert est.seconds == pytest.approx(SECONDS)  # 691 s: BERT-base at seq 128 is cheap on 8 H100s
    assert est.gpu_hours == pytest.approx(GPU_HOURS)


def test_zero_stages_and_plain_ddp_shard_as_the_zero_paper_says() -> None:
    common = dict(
        params=1000, flops_per_token=1.0, seq_len=8, hidden=8, heads=1, layers=1, device="H100", nodes=1,
        gpus_per_node=4, micro_batch=1, global_batch=4, max_steps=1, checkpointing=False, mfu=0.5,
        offload_optimizer=False,
    )  # fmt: skip
    states = {
        (strategy, stage): estimate(
            **common, precision="bf16-mixed", strategy=strategy, zero_stage=stage
        ).model_states
        for strategy, stage in [("ddp", 2), ("deepspeed", 1), ("deepspeed", 2), ("deepspeed", 3)]
    }
    assert states["ddp", 2] == {"weights": 2000, "gradients": 2000, "optimizer": 12000}
    assert states["deepspeed", 1] == {"weights": 2000, "gradients": 2000, "optimizer": 3000}
    assert states["deepspeed", 2] == {"weights": 2000, "gradients": 500, "optimizer": 3000}
    assert states["deepspeed", 3] == {"weights": 500, "gradients": 500, "optimizer": 3000}
    fp32 = estimate(**common, precision="32", strategy="ddp", zero_stage=2)
    assert fp32.model_states == {"weights": 4000, "gradients": 4000, "optimizer": 8000}
    with pytest.raises(UserError, match="V100 has no bf16"):
        estimate(**{**common, "device": "V100"}, precision="bf16-mixed", strategy="ddp", zero_stage=2)
    with pytest.raises(UserError, match="unknown"):
        estimate(**{**common, "device": "TPU"}, precision="bf16-mixed", strategy="ddp", zero_stage=2)


def test_dry_run_prints_the_script_and_the_estimate(tmp_path: Path) -> None:
    path = tmp_path / "bert-base.yaml"
    path.write_text(yaml.safe_dump(bert_base_recipe(tmp_path)))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "submit",
            "--config",
            str(path),
            "--nodes",
            "2",
            "--gpus-per-node",
            "4",
        ]
        + ["--partition", "gpu", "--time", "12:00:00", "--seq-len", "128", "--dry-run"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for line in [
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        '#SBATCH --partition="gpu"',
        '#SBATCH --time="12:00:00"',
        "#SBATCH --requeue",
        "#SBATCH --signal=USR1@300",
        "export TORCH_NCCL_ASYNC_ERROR_HANDLING=1",
        f"8 x H100 (bf16-mixed, deepspeed ZeRO-2, micro-batch {B}, seq {S})",
        f"parameters           {PARAMS / 1e6:10.1f} M",
        f"optimizer states     {OPTIM / 1e9:7.2f} GB per GPU",
        f"total                {(WEIGHTS + GRADS + OPTIM + ACT) / 1e9:7.2f} GB of 80 GB -> fits",
        f"GPU-hours            {GPU_HOURS:10.1f}",
        "dry run: nothing submitted",
    ]:
        assert line in text, line
    assert f"--config {path} --resume auto --quiet" in text
    assert not (tmp_path / "run").exists()  # a dry run writes nothing


def test_too_big_does_not_fit(tmp_path: Path) -> None:
    recipe = from_dict(
        PretrainRecipe, bert_base_recipe(tmp_path, micro_batch_size=1024, strategy="ddp"), "test"
    )
    est, _ = estimate_recipe(recipe, device="A100-40GB", nodes=1, gpus_per_node=1, mfu=0.4, seq_len=512)
    assert not est.fits
