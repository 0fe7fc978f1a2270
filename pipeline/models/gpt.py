"""GPT-2 (Radford et al. 2019): a pre-LN causal Transformer decoder with an output projection tied to the input.

Read top to bottom: token + position embeddings -> blocks -> final LayerNorm -> logits; then sampling.
Parameter names are ``transformers``' ``GPT2LMHeadModel`` names (nanoGPT's too): ``gpt_from_hf_state_dict``
only transposes the ``Conv1D`` weights, which ``transformers`` stores as (in, out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models.blocks import Block, Dropout, init_weights
from pipeline.models.config import ModelConfig
from pipeline.models.vocab import VocabLinear

IGNORE_INDEX = -100


@dataclass
class GPTOutput:
    """What ``GPT.forward`` returns."""

    loss: Tensor | None
    """Mean next-token cross-entropy over labels != -100; None without labels."""
    logits: Tensor
    """(B, T, V): logits[:, t] predicts the token after position t. On the CPU it is a view into rows padded
    past V (see ``vocab.vocab_logits``), so not contiguous: use ``reshape`` rather than ``view``."""


class GPT(nn.Module):
    """wte + wpe -> dropout -> pre-LN blocks -> ln_f -> lm_head (tied to wte)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        C = config.hidden_size
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, C),
                wpe=nn.Embedding(config.max_position_embeddings, C),
                drop=Dropout(config.hidden_dropout),
                h=nn.ModuleList(
                    Block(config, pre_ln=True, causal=True, fused_qkv=True) for _ in range(config.num_layers)
                ),
                ln_f=nn.LayerNorm(C, eps=config.layer_norm_eps),
            )
        )
        self.lm_head = VocabLinear(C, config.vocab_size, bias=False)
        # Tied: one Parameter is both the input embedding and the output projection; gradients from both add up.
        self.transformer.wte.weight = self.lm_head.weight

        self.apply(lambda m: init_weights(m, config.initializer_range))
        # GPT-2: every block adds two projections (attention, MLP) to the residual stream; scale them by
        # 1/sqrt(2 * n_layer) so the stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=config.initializer_range / math.sqrt(2 * config.num_layers))

    def hidden_states(self, input_ids: Tensor) -> Tensor:
        """input_ids (B, T) -> the final normalised hidden states (B, T, C)."""
        T = input_ids.size(1)
        if T > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence of {T} tokens > max_position_embeddings {self.config.max_position_embeddings}"
            )
        positions = torch.arange(T, device=input_ids.device)  # (T,)
        x = self.transformer.wte(input_ids) + self.transformer.wpe(positions)  # (B, T, C)
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x)  # causal: no mask tensor, SDPA's is_causal does it
        return self.transformer.ln_f(x)

    def forward(self, input_ids: Tensor, labels: Tensor | None = None) -> GPTOutput:
        """input_ids (B, T); labels (B, T), already shifted by the data: labels[:, t] is the token after t."""
        h = self.hidden_states(input_ids)  # (B, T, C)
        B, T, C = h.shape
        V = self.config.vocab_size
        # lm_head, with rows padded to Vp >= V columns of -inf (faster on the CPU; see vocab_logits)
        padded = self.lm_head(h.reshape(B * T, C), padded=True)  # (B*T, Vp)
        logits = padded[:, :V].view(B, T, V)
        loss = None
        if labels is not None:
            # The -inf padding adds exp(-inf) = 0 to each softmax: the same loss as over the V columns.
            loss = F.cross_entropy(padded, labels.reshape(-1), ignore_index=IGNORE_INDEX)
        return GPTOutput(loss=loss, logits=logits)

    @torch.no_grad()
    def attention_weights(self, input_ids: Tensor) -> list[Tensor]:
        """Each layer's attention weights (B, nh, T, T), computed explicitly with the causal mask (for plots)."""
        T = input_ids.size(1)
        x = self.transformer.wte(input_ids) + self.transformer.wpe(torch.arange(T, device=input_ids.device))
        maps = []
        for block in self.transformer.h:
            x, weights = block.forward_with_weights(x)
            maps.append(weights)
        return maps

    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        greedy: bool = False,
        eos_token_id: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Extend input_ids (B, T) by up to ``max_new_tokens`` tokens -> (B, T + n).

        Sampling from softmax(logits / temperature) after top-k then top-p filtering, or argmax with ``greedy``
        (or ``temperature == 0``). Once a row emits ``eos_token_id`` it is padded with it; generation stops when
        every row has. The context is cropped to the last ``max_position_embeddings`` tokens. Runs in eval mode
        (no dropout) and restores the previous mode. No KV cache: each step re-reads the whole context."""
        was_training = self.training
        self.eval()
        finished = torch.zeros(input_ids.size(0), dtype=torch.bool, device=input_ids.device)  # (B,)
        for _ in range(max_new_tokens):
            context = input_ids[:, -self.config.max_position_embeddings :]
            logits = self.lm_head(
                self.hidden_states(context)[:, -1]
            )  # (B, V): only the last position matters
            if greedy or temperature == 0:
                next_token = logits.argmax(dim=-1)  # (B,)
            else:
                probs = next_token_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p)
                next_token = torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)  # (B,)
            if eos_token_id is not None:
                next_token = torch.where(finished, torch.full_like(next_token, eos_token_id), next_token)
                finished |= next_token == eos_token_id
            input_ids = torch.cat([input_ids, next_token[:, None]], dim=1)
            if eos_token_id is not None and bool(finished.all()):
                break
        self.train(was_training)
        return input_ids


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the k largest logits of each row (ties with the k-th are kept too); the rest become -inf."""
    k = min(k, logits.size(-1))
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filtering (Holtzman et al. 2019): keep the smallest set of most likely tokens whose probability
    adds up to at least p (always at least the top token); the rest become -inf."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
    drop_sorted = mass_before >= p  # the nucleus is already complete without this token
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def next_token_probs(
    logits: Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> Tensor:
    """(..., V) logits -> sampling probabilities: divide by the temperature, then top-k, then top-p."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0 for sampling (use greedy=True for argmax)")
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None and top_p < 1.0:
        logits = top_p_filter(logits, top_p)
    return logits.softmax(dim=-1)


# ----------------------------------------------------------------------------------------------------------------
# transformers <-> ours: same names; Conv1D weights are (in, out), nn.Linear's are (out, in).

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def gpt_from_hf_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """A ``transformers`` ``GPT2LMHeadModel`` state dict -> ours (Conv1D weights transposed)."""
    out = {}
    for key, value in sd.items():
        if key.endswith((".attn.bias", ".attn.masked_bias")):  # causal-mask buffers of older transformers
            continue
        out[key] = value.t().contiguous() if key.endswith(_CONV1D) else value
    return out


def gpt_to_hf_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our ``GPT`` state dict -> ``transformers``' ``GPT2LMHeadModel`` (loads with ``strict=True``)."""
    return {k: (v.t().contiguous() if k.endswith(_CONV1D) else v) for k, v in sd.items()}
