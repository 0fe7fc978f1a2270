"""Greedy and beam-search decoding for any sequence-to-sequence model with the incremental interface

``model.start(src_ids, src_mask) -> state`` (a dict of batch-first tensors) and
``model.step(state, tokens (B,)) -> (logits (B, V), state)``,

which ``RNNSeq2Seq`` and ``Seq2SeqTransformer`` both implement. Beams are rows of the batch: reordering a beam
is an ``index_select`` on dimension 0 of every state tensor.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _select(state: dict[str, Tensor], index: Tensor) -> dict[str, Tensor]:
    return {k: v.index_select(0, index) for k, v in state.items()}


@torch.no_grad()
def greedy_decode(
    model: nn.Module, src_ids: Tensor, src_mask: Tensor, *, bos_id: int, eos_id: int, max_len: int
) -> list[list[int]]:
    """The argmax token at every step, until ``eos_id`` or ``max_len`` tokens; one list per source (no EOS)."""
    state = model.start(src_ids, src_mask)
    B = src_ids.size(0)
    tokens = torch.full((B,), bos_id, dtype=torch.long, device=src_ids.device)
    out: list[list[int]] = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool)
    for _ in range(max_len):
        logits, state = model.step(state, tokens)
        tokens = logits.argmax(-1)
        for b in range(B):
            if not done[b]:
                if int(tokens[b]) == eos_id:
                    done[b] = True
                else:
                    out[b].append(int(tokens[b]))
        if bool(done.all()):
            break
    return out


@torch.no_grad()
def beam_search(
    model: nn.Module,
    src_ids: Tensor,
    src_mask: Tensor,
    *,
    bos_id: int,
    eos_id: int,
    max_len: int,
    beam_size: int = 4,
    length_penalty: float = 0.0,
) -> list[list[int]]:
    """The highest-scoring hypothesis per source, score = sum of log-probabilities / length^``length_penalty``.

    Each step extends every live beam by every token, keeps the ``beam_size`` best, and sets aside hypotheses
    that end with ``eos_id``; a source is finished when its best live beam can no longer beat its best
    finished one (scores only fall as hypotheses grow, when ``length_penalty`` is 0), or at ``max_len``.
    With ``beam_size`` 1 this is greedy decoding."""
    results = []
    for b in range(src_ids.size(0)):  # one source at a time: simple, and beams of a source share a batch
        results.append(_beam_one(model, src_ids[b : b + 1], src_mask[b : b + 1], bos_id, eos_id, max_len,
                                 beam_size, length_penalty))  # fmt: skip
    return results


def _beam_one(
    model: nn.Module,
    src_ids: Tensor,
    src_mask: Tensor,
    bos_id: int,
    eos_id: int,
    max_len: int,
    beam_size: int,
    length_penalty: float,
) -> list[int]:
    state = model.start(src_ids, src_mask)
    device = src_ids.device
    hyps: list[list[int]] = [[]]
    scores = torch.zeros(1, device=device)  # (k,)
    tokens = torch.full((1,), bos_id, dtype=torch.long, device=device)
    finished: list[tuple[float, list[int]]] = []

    def normalised(score: float, length: int) -> float:
        return score / max(length, 1) ** length_penalty

    for _ in range(max_len):
        logits, state = model.step(state, tokens)
        logp = logits.float().log_softmax(-1)  # (k, V)
        V = logp.size(-1)
        total = (scores[:, None] + logp).view(-1)  # (k * V,)
        top = total.topk(min(2 * beam_size, total.numel()))
        keep_rows, keep_tokens, keep_scores = [], [], []
        for score, flat in zip(top.values.tolist(), top.indices.tolist()):
            row, tok = divmod(flat, V)
            if tok == eos_id:
                finished.append((normalised(score, len(hyps[row]) + 1), hyps[row]))
            else:
                keep_rows.append(row)
                keep_tokens.append(tok)
                keep_scores.append(score)
            if len(keep_rows) == beam_size:
                break
        best_done = max((s for s, _ in finished), default=float("-inf"))
        if not keep_rows or (length_penalty == 0.0 and best_done >= keep_scores[0]):
            break
        index = torch.tensor(keep_rows, device=device)
        hyps = [hyps[r] + [t] for r, t in zip(keep_rows, keep_tokens)]
        scores = torch.tensor(keep_scores, device=device)
        tokens = torch.tensor(keep_tokens, device=device)
        state = _select(state, index)
    if not finished:  # ran out of length: the best live beam
        return hyps[0]
    return max(finished, key=lambda f: f[0])[1]
