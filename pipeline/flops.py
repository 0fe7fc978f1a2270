"""Counting a model's parameters and training FLOPs, and turning throughput into MFU.

Convention (PaLM appendix B, nanoGPT's ``estimate_mfu``): count only matrix multiplies, 2 FLOPs per
multiply-add; the backward pass costs twice the forward, so training = 3 x forward. Per token and per layer the
forward pass does:

- Q, K, V and output projections: 2 * 4C^2
- the MLP: 2 * 2CI
- attention scores Q K^T and the weighted sum of V: 2 * 2TC, counted over the *full* T x T square for GPT too
  (causal attention could skip half; PaLM and nanoGPT count it all, and so do we, so MFU numbers compare)

plus the output projection to the vocabulary (2CV per predicted token). For GPT this is exactly
6N + 12 L C T with N the parameters of the matmuls (blocks + the tied vocabulary projection). Embedding lookups,
LayerNorm, softmax, GELU and biases are not counted.

The recurrent baselines (``rnn``/``lstm``/``gru``) do per token and per layer g gate matrix multiplies on the
layer's input and on the previous state, 2 * g * (D_in * H + H * H) with g = 1 (tanh RNN), 4 (LSTM), 3 (GRU),
plus the H -> E projection when tied and E != H, and the vocabulary projection. ``transformer-lm`` counts as
GPT (the same matmuls).
"""

from __future__ import annotations

import re
import time

import torch

from pipeline.models.config import RNN_ARCHS, ModelConfig

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
"""Gate matrix multiplies per recurrent step."""


def _sizes(config: ModelConfig) -> tuple[int, int, int, int]:
    assert config.intermediate_size is not None
    return config.hidden_size, config.intermediate_size, config.num_layers, config.vocab_size


def flops_per_token(config: ModelConfig, seq_len: int, *, mlm_fraction: float | None = None) -> float:
    """Training FLOPs (forward + backward) per input token at sequence length ``seq_len``.

    ``mlm_fraction`` (BERT only): fraction of tokens the MLM head predicts when it runs only at masked positions
    (e.g. 20 predictions / 128 tokens); None = the head runs at every position. BERT's pooler and NSP head run
    once per sequence and are spread over its ``seq_len`` tokens."""
    if config.arch in RNN_ARCHS:
        if mlm_fraction is not None:
            raise ValueError("mlm_fraction applies to BERT only")
        return 3.0 * _rnn_forward_flops(config)
    C, I, L, V = _sizes(config)
    T = seq_len
    per_layer = 2 * 4 * C * C + 2 * 2 * C * I + 2 * 2 * T * C
    forward = L * per_layer
    if config.arch != "bert":
        if mlm_fraction is not None:
            raise ValueError("mlm_fraction applies to BERT only")
        forward += 2 * C * V  # lm_head at every position
    else:
        predicted = 1.0 if mlm_fraction is None else mlm_fraction
        forward += predicted * (2 * C * C + 2 * C * V)  # MLM transform dense + vocabulary projection
        if config.nsp:
            forward += (2 * C * C + 2 * C * 2) / T  # pooler + NSP head, once per sequence
    return 3.0 * forward


def _rnn_forward_flops(config: ModelConfig) -> float:
    """Forward FLOPs per token of an ``rnn``/``lstm``/``gru`` language model."""
    H, L, V = config.hidden_size, config.num_layers, config.vocab_size
    E = config.embedding_size or H
    g = GATES[config.arch]
    recurrent = sum(2 * g * ((E if i == 0 else H) * H + H * H) for i in range(L))
    tied = config.tie_embeddings
    proj = 2 * H * E if tied and E != H else 0
    return recurrent + proj + 2 * (E if tied else H) * V


def _rnn_parameters(config: ModelConfig, embeddings: bool) -> int:
    H, L, V = config.hidden_size, config.num_layers, config.vocab_size
    E = config.embedding_size or H
    g = GATES[config.arch]
    total = sum(g * ((E if i == 0 else H) * H + H * H + 2 * H) for i in range(L))  # torch keeps two biases
    tied = config.tie_embeddings
    if tied and E != H:
        total += H * E + E
    if not tied:
        total += H * V  # its own output projection
    return total + V * E if embeddings else total


def num_parameters(config: ModelConfig, *, embeddings: bool = True) -> int:
    """Parameter count computed from the config (tied weights counted once).

    ``embeddings=False`` leaves out the lookup tables (word, position and token-type embeddings; Kaplan et al.'s
    "non-embedding" count). The word embedding doubles as the output projection, so it is left out entirely."""
    if config.arch in RNN_ARCHS:
        return _rnn_parameters(config, embeddings)
    C, I, L, V = _sizes(config)
    attention = 4 * (C * C + C)  # Q, K, V, output: weight + bias
    mlp = C * I + I + I * C + C
    layer_norms = 2 * 2 * C
    total = L * (attention + mlp + layer_norms)
    tables = V * C + config.max_position_embeddings * C
    if config.arch == "transformer-lm":
        tables = V * C  # sinusoidal positions are not parameters; no final LayerNorm (post-LN)
    elif config.arch == "gpt":
        total += 2 * C  # ln_f; lm_head is the word embedding
    else:
        tables += config.type_vocab_size * C
        total += 2 * C  # embedding LayerNorm
        total += C * C + C + 2 * C + V  # MLM transform dense, its LayerNorm, the vocabulary bias
        if config.nsp:
            total += C * C + C + 2 * C + 2  # pooler + NSP head
    return total + tables if embeddings else total


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the hardware's peak (0..1)."""
    return tokens_per_s * flops_per_token / peak_flops


# Dense (no sparsity) peak FLOP/s per device, from NVIDIA's datasheets. "fp32" is the plain CUDA-core rate; with
# torch.backends.cuda.matmul.allow_tf32 / set_float32_matmul_precision("high") matmuls run at the "tf32" rate.
PEAK_FLOPS: dict[str, dict[str, float] | None] = {
    "H100-SXM": {"bf16": 989e12, "fp16": 989e12, "tf32": 494.5e12, "fp32": 67e12},
    "H100-PCIe": {"bf16": 756e12, "fp16": 756e12, "tf32": 378e12, "fp32": 51e12},
    # Same compute as H100 SXM (more and faster memory). Lightning's table lists 2x: those are sparsity figures.
    "H200": {"bf16": 989e12, "fp16": 989e12, "tf32": 494.5e12, "fp32": 67e12},
    "A100-40GB": {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    "A100-80GB": {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    "V100": {"fp16": 125e12, "fp32": 15.7e12},  # SXM2; no bf16
    "L40S": {"bf16": 362.05e12, "fp16": 362.05e12, "tf32": 183e12, "fp32": 91.6e12},
    "L4": {"bf16": 121e12, "fp16": 121e12, "tf32": 60e12, "fp32": 30.3e12},
    # The A10 datasheet's figures; the A10G (AWS g5) is clocked lower, so its MFU reads a little low.
    "A10G": {"bf16": 125e12, "fp16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12},
    "cpu": None,  # measure it: estimate_cpu_peak_flops()
}

_PRECISIONS = {
    "bf16": "bf16", "bf16-mixed": "bf16", "bf16-true": "bf16", "bfloat16": "bf16",
    "fp16": "fp16", "16": "fp16", "16-mixed": "fp16", "16-true": "fp16", "float16": "fp16", "half": "fp16",
    "fp32": "fp32", "32": "fp32", "32-true": "fp32", "float32": "fp32",
    "tf32": "tf32",
}  # fmt: skip


def device_key(device_name: str) -> str | None:
    """A ``torch.cuda.get_device_name()`` string -> its row of ``PEAK_FLOPS`` (None when unknown)."""
    name = device_name.lower()
    if name == "cpu":
        return "cpu"
    if "nvl" in name:  # H100/H200 NVL: different clocks, not in the table
        return None
    if "h200" in name:
        return "H200"
    if "h100" in name:
        return "H100-PCIe" if ("pcie" in name or "hbm2e" in name) else "H100-SXM"  # "H100 80GB HBM3" is SXM
    if "a100" in name:
        return "A100-80GB" if "80gb" in name else "A100-40GB"
    if "v100" in name:
        return "V100"
    if "a10g" in name:
        return "A10G"
    if "l40s" in name:
        return "L40S"
    if re.search(r"\bl4\b", name):  # not L40 / L40S
        return "L4"
    return None


def peak_flops_for(device_name: str, precision: str) -> float | None:
    """Peak FLOP/s of a device (``torch.cuda.get_device_name()`` or "cpu") at a precision ("bf16", "fp16",
    "fp32", "tf32" or a Lightning precision string such as "bf16-mixed"); None when unknown or unsupported."""
    key = device_key(device_name)
    precision_key = _PRECISIONS.get(str(precision).lower())
    if key is None or precision_key is None:
        return None
    row = PEAK_FLOPS.get(key)
    return None if row is None else row.get(precision_key)


def estimate_cpu_peak_flops(seconds: float = 0.5, n: int = 1024) -> float:
    """Measured fp32 FLOP/s of this CPU: repeated (n x n) @ (n x n) matmuls for about ``seconds``."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    c = torch.empty(n, n)
    torch.mm(a, b, out=c)  # warm-up: thread pool, caches
    done, start = 0, time.perf_counter()
    while True:
        torch.mm(a, b, out=c)
        done += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done * 2 * n**3 / elapsed
