"""Pre-flight estimate of a run on N nodes x G GPUs: memory per GPU, FLOPs per step, time and GPU-hours.

Pure functions of explicit numbers; ``estimate_recipe`` only gathers them from a recipe. The accounting:

* **Model states** (ZeRO paper, Rajbhandari et al. 2020, section 3.1) per parameter: under mixed precision
  2 bytes of 16-bit weights + 2 bytes of 16-bit gradients + 12 bytes of Adam states (fp32 master weights,
  momentum, variance); in fp32 4 + 4 + 8 (no master copy); ``bf16-true`` 2 + 2 + 4. DeepSpeed ZeRO stage 1
  divides the optimiser states by the world size, stage 2 also the gradients, stage 3 also the weights;
  ``offload_optimizer`` moves the optimiser states to CPU memory. DDP and a single device shard nothing.
* **Activations** (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models",
  eq. 1, no tensor/sequence parallelism): one Transformer layer stores ``s*b*h*(34 + 5*a*s/h)`` bytes for
  16-bit activations (s = sequence length, b = micro-batch, h = hidden size, a = heads; dropout masks
  included). We count ``L`` layers, doubled in fp32. With activation checkpointing only each layer's input,
  ``2*s*b*h`` bytes (x2 in fp32), is kept, plus one layer's full activations during its recomputation.
  Embeddings, logits and the loss are left out (small next to L layers for the sizes that matter).
* **Fits**: model states + activations <= 90% of the GPU's memory (the rest: CUDA context, allocator
  fragmentation, temporary buffers, NCCL).
* **Compute**: ``pipeline.flops.flops_per_token`` x tokens per step (global batch x sequence length); time =
  steps x FLOPs per step / (world x peak x MFU); GPU-hours = time x world.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_prep.errors import UserError
from pipeline.flops import PEAK_FLOPS, flops_per_token, num_parameters

GB = 1e9
FITS_FRACTION = 0.9
"""Model states + activations may use this fraction of a GPU's memory."""

# Device types for the estimate: (row of pipeline.flops.PEAK_FLOPS, memory in GB from the datasheet).
DEVICES: dict[str, tuple[str, float]] = {
    "H100": ("H100-SXM", 80),
    "H100-PCIe": ("H100-PCIe", 80),
    "H200": ("H200", 141),
    "A100-40GB": ("A100-40GB", 40),
    "A100-80GB": ("A100-80GB", 80),
    "V100": ("V100", 32),
    "L40S": ("L40S", 48),
    "L4": ("L4", 24),
    "A10G": ("A10G", 24),
}


def precision_key(precision: str) -> str:
    """A recipe precision -> ``bf16``, ``fp16`` or ``fp32`` (the peak FLOP/s column)."""
    return "bf16" if "bf16" in precision else ("fp16" if "16" in precision else "fp32")


def bytes_per_param(precision: str) -> tuple[int, int, int]:
    """(weights, gradients, optimiser states) bytes per parameter with Adam at a recipe precision."""
    if precision in ("bf16-mixed", "16-mixed"):
        return 2, 2, 12  # 16-bit weights and grads; fp32 master + m + v
    if precision == "bf16-true":
        return 2, 2, 4  # everything in bf16, m and v included
    return 4, 4, 8  # fp32: weights, grads, m, v


def model_state_bytes(
    params: int, precision: str, world: int, strategy: str, zero_stage: int, offload_optimizer: bool = False
) -> dict[str, float]:
    """Bytes per GPU of weights, gradients and optimiser states (ZeRO sharding under ``deepspeed``)."""
    w, g, o = (params * b for b in bytes_per_param(precision))
    if strategy == "deepspeed":
        o = 0 if offload_optimizer else o / world
        if zero_stage >= 2:
            g /= world
        if zero_stage >= 3:
            w /= world
    return {"weights": float(w), "gradients": float(g), "optimizer": float(o)}


def activation_bytes(
    seq_len: int, micro_batch: int, hidden: int, heads: int, layers: int, precision: str, checkpointing: bool
) -> float:
    """Activation bytes per GPU at one micro-batch (Korthikanti et al. eq. 1; see the module docstring)."""
    s, b, h, a = seq_len, micro_batch, hidden, heads
    scale = 2 if precision_key(precision) == "fp32" else 1
    per_layer = s * b * h * (34 + 5 * a * s / h)
    if checkpointing:
        return scale * (layers * 2 * s * b * h + per_layer)
    return scale * layers * per_layer


@dataclass
class Estimate:
    """The numbers ``--dry-run`` prints."""

    device: str
    """Device type (a key of ``DEVICES``)."""
    world: int
    """GPUs in all (nodes x GPUs per node)."""
    params: int
    """Parameters of the model."""
    model_states: dict[str, float]
    """Bytes per GPU: weights, gradients, optimizer."""
    activations: float
    """Activation bytes per GPU at the micro-batch, with the recipe's activation checkpointing setting."""
    activations_no_ckpt: float
    """Activation bytes without activation checkpointing."""
    activations_ckpt: float
    """Activation bytes with activation checkpointing."""
    gpu_memory: float
    """Bytes of memory of one GPU."""
    flops_per_step: float
    """Training FLOPs of one optimiser step (all GPUs)."""
    tokens: float
    """Tokens the run trains on: max_steps x global batch x sequence length."""
    seconds: float
    """Wall-clock time of the run at the assumed MFU."""
    mfu: float
    """Assumed model FLOPs utilisation."""

    @property
    def total(self) -> float:
        """Bytes per GPU: model states + activations."""
        return sum(self.model_states.values()) + self.activations

    @property
    def fits(self) -> bool:
        return self.total <= FITS_FRACTION * self.gpu_memory

    @property
    def gpu_hours(self) -> float:
        return self.seconds / 3600 * self.world


def estimate(
    *,
    params: int,
    flops_per_token: float,
    seq_len: int,
    hidden: int,
    heads: int,
    layers: int,
    device: str,
    nodes: int,
    gpus_per_node: int,
    precision: str,
    strategy: str,
    zero_stage: int,
    offload_optimizer: bool,
    micro_batch: int,
    global_batch: int,
    max_steps: int,
    checkpointing: bool,
    mfu: float,
) -> Estimate:
    """The pre-flight estimate from explicit numbers (see the module docstring for the formulas)."""
    if device not in DEVICES:
        raise UserError(f"--device {device}: unknown; one of {', '.join(DEVICES)}")
    if not 0 < mfu <= 1:
        raise UserError(f"--mfu {mfu}: must lie in (0, 1]")
    row, memory_gb = DEVICES[device]
    peak = (PEAK_FLOPS.get(row) or {}).get(precision_key(precision))
    if peak is None:
        raise UserError(f"--device {device} has no {precision_key(precision)} peak (precision {precision})")
    world = nodes * gpus_per_node
    acts = {
        ck: activation_bytes(seq_len, micro_batch, hidden, heads, layers, precision, ck)
        for ck in (False, True)
    }
    step_flops = flops_per_token * global_batch * seq_len
    return Estimate(
        device=device,
        world=world,
        params=params,
        model_states=model_state_bytes(params, precision, world, strategy, zero_stage, offload_optimizer),
        activations=acts[checkpointing],
        activations_no_ckpt=acts[False],
        activations_ckpt=acts[True],
        gpu_memory=memory_gb * GB,
        flops_per_step=step_flops,
        tokens=float(max_steps * global_batch * seq_len),
        seconds=max_steps * step_flops / (world * peak * mfu),
        mfu=mfu,
    )


def data_shape(data_path: str | Path) -> tuple[int | None, float | None]:
    """(sequence length, MLM fraction predicted) from a data folder's manifest; Nones when it is not there."""
    path = Path(data_path) / "manifest.json"
    if not path.is_file():
        return None, None
    m = json.loads(path.read_text())
    settings = m.get("settings") or {}
    seq = m.get("max_seq_len") or m.get("seq_len") or settings.get("max_seq_len") or settings.get("seq_len")
    masking = settings.get("masking") or {}
    mlm = float(masking.get("mlm_probability", 0.15)) if m.get("stage") == "bert" else None
    return (int(seq) if seq else None), mlm


def estimate_recipe(
    recipe: Any, *, device: str, nodes: int, gpus_per_node: int, mfu: float, seq_len: int | None = None
) -> tuple[Estimate, int]:
    """The estimate of a pretraining recipe; also returns the sequence length used.

    The sequence length is ``seq_len``, else the data folder's, else the model's longest position."""
    from pipeline.models.config import load_model_config

    cfg = load_model_config(recipe.model, **recipe.model_overrides)
    data_seq, mlm = data_shape(recipe.data.path)
    seq = seq_len or data_seq or cfg.max_position_embeddings
    tc = recipe.trainer
    est = estimate(
        params=num_parameters(cfg),
        flops_per_token=flops_per_token(cfg, seq, mlm_fraction=mlm if cfg.arch == "bert" else None),
        seq_len=seq,
        hidden=cfg.hidden_size,
        heads=cfg.num_heads,
        layers=cfg.num_layers,
        device=device,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        precision=tc.precision,
        strategy=tc.strategy,
        zero_stage=tc.zero_stage,
        offload_optimizer=tc.offload_optimizer,
        micro_batch=tc.micro_batch_size,
        global_batch=tc.global_batch_size,
        max_steps=tc.max_steps,
        checkpointing=cfg.activation_checkpointing,
        mfu=mfu,
    )
    return est, seq


def _gb(x: float) -> str:
    return f"{x / GB:7.2f} GB"


def format_estimate(est: Estimate, seq_len: int, recipe: Any) -> str:
    """The estimate as the text ``--dry-run`` prints."""
    tc = recipe.trainer
    shard = (
        f"deepspeed ZeRO-{tc.zero_stage}" if tc.strategy == "deepspeed" else f"{tc.strategy} (no sharding)"
    )
    ms = est.model_states
    ck = "on" if est.activations == est.activations_ckpt else "off"
    hours = est.seconds / 3600
    lines = [
        f"pre-flight estimate: {recipe.model} on {est.world} x {est.device} "
        f"({tc.precision}, {shard}, micro-batch {tc.micro_batch_size}, seq {seq_len})",
        f"  parameters           {est.params / 1e6:10.1f} M",
        f"  weights              {_gb(ms['weights'])} per GPU",
        f"  gradients            {_gb(ms['gradients'])} per GPU",
        f"  optimizer states     {_gb(ms['optimizer'])} per GPU"
        + (" (offloaded to CPU)" if tc.strategy == "deepspeed" and tc.offload_optimizer else ""),
        f"  activations          {_gb(est.activations_no_ckpt)} without / {_gb(est.activations_ckpt).strip()} "
        f"with activation checkpointing (recipe: {ck})",
        f"  total                {_gb(est.total)} of {est.gpu_memory / GB:.0f} GB -> "
        + ("fits" if est.fits else f"DOES NOT FIT (over {FITS_FRACTION:.0%} of memory)"),
        f"  FLOPs per step       {est.flops_per_step:10.3e}",
        f"  tokens               {est.tokens:10.3e} ({tc.max_steps} steps x {tc.global_batch_size} x {seq_len})",
        f"  time at {est.mfu:.0%} MFU     {hours:10.2f} h ({hours / 24:.2f} days)",
        f"  GPU-hours            {est.gpu_hours:10.1f}",
    ]
    return "\n".join(lines)
