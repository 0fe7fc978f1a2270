"""Training-step benchmark: our BERT / GPT-2 vs ``transformers``' on the same machine, in one process.

Both sides run the same training step on the same batches, fp32 on the CPU, in training mode (dropout on):
forward, backward, ``AdamW.step()``, ``zero_grad()``. The peers are ``transformers``' ``BertForPreTraining``
(with ``BertConfig`` matching ``recipes/models/bert-base.yaml``) and ``GPT2LMHeadModel`` (``GPT2Config``
matching ``gpt2-small.yaml``), both with ``attn_implementation="sdpa"``. The two models start from the same
weights (ours converted with ``bert_to_hf_state_dict`` / ``gpt_to_hf_state_dict``), and before timing one
dropout-free forward checks that both compute the same loss on the first batch.

Inputs:

* **BERT**: ``input_ids``, ``token_type_ids``, ``attention_mask``, MLM labels (the original token at the
  ~15% masked positions, Google's count ``min(20, max(1, round(0.15 n)))``, -100 elsewhere) and
  ``next_sentence_label``; the peer gets the same as ``labels`` / ``next_sentence_label``.
  ``--lengths full``: every row is 128 real tokens (``[CLS] A [SEP] B [SEP]``, random ids).
  ``--lengths real``: instances of the real Wikipedia slice built by ``python -m data_prep run
  recipes/data/demo-bert.yaml`` (``BertDataset``, dynamic masking), drawn at random; if that folder is
  missing, random rows with lengths drawn from ``REAL_LENGTH_HISTOGRAM`` (the same data's histogram).
  The peer gets every batch padded to ``--seq`` (what ``DataCollatorForLanguageModeling`` with
  ``pad_to_multiple_of``/``max_length`` padding or pre-padded instances give); ours gets each batch trimmed
  to its longest row (``--no-trim`` switches that off).
* **GPT**: random windows of ``seq + 1`` tokens. Both models get ``input_ids = window[:, :seq]``; the peer
  gets ``labels = input_ids`` (it shifts them itself), ours the pre-shifted ``window[:, 1:seq]`` with -100
  at the last position, so both predict exactly the same ``seq - 1`` targets per row.

Optimiser (``--optim``): ``fused`` (default) gives both sides ``torch.optim.AdamW(fused=True)``, what the
``transformers`` ``Trainer`` uses by default with torch >= 2.8 (``adamw_torch_fused``), with lr 1e-4,
betas (0.9, 0.999), eps 1e-6, weight decay 0.01: ours on ``pipeline.optim.param_groups``, the peer on the
``Trainer``'s decay/no-decay split. ``foreach`` / ``loop`` give both sides that implementation instead;
``pipeline`` gives ours ``pipeline.optim.build_optimizer`` as it stands and the peer the ``Trainer`` default.

Timing: ``--warmup`` untimed steps per side, then ``--rounds`` rounds of ``--steps`` timed steps per side,
alternating which side goes first, so both see the same machine load. Throughput is real (non-padding)
tokens per second, per round; the median round of each side is reported. ``--compile`` wraps both models
in ``torch.compile`` (reported separately from the eager headline). ``--profile`` prints
``torch.profiler`` tables of one step per side (nothing is timed then).

    python benchmarks/train_step.py --model bert-base
    python benchmarks/train_step.py --model bert-base --lengths real
    python benchmarks/train_step.py --model gpt2-small
    python benchmarks/train_step.py --model bert-base --profile

The last line printed is one JSON object: ``model``, ``ours_tokens_per_s``, ``hf_tokens_per_s``, ``ratio``
and the settings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere: `python benchmarks/train_step.py`
    sys.path.insert(0, str(REPO))

from pipeline.models import (  # noqa: E402
    GPT,
    BertForPreTraining,
    ModelConfig,
    bert_to_hf_state_dict,
    gpt_to_hf_state_dict,
    load_model_config,
)

REAL_DATA = REPO / "runs" / "demo" / "data" / "bert" / "bert"
# Instance lengths of that folder's train split (built 2026-11-22: 6,699 instances, max_seq_len 128) in bins of
# 16 tokens: [0, 16), [16, 32), ..., [112, 128), and exactly 128 last. Used only when the folder is missing.
REAL_LENGTH_HISTOGRAM = [2, 67, 166, 224, 244, 254, 166, 146, 5430]
LR, BETAS, EPS, WEIGHT_DECAY = 1e-4, (0.9, 0.999), 1e-6, 0.01
MASK_ID, FIRST_REGULAR_ID = 103, 999  # bert-base-uncased's [MASK] and its first ordinary WordPiece
CLS_ID, SEP_ID = 101, 102

Batch = dict[str, torch.Tensor]


# ------------------------------------------------------------------------------------------------ models


def build_pair(name: str, seed: int) -> tuple[torch.nn.Module, torch.nn.Module, ModelConfig]:
    """Our model and the ``transformers`` peer, with the same weights."""
    import transformers

    cfg = load_model_config(name)
    torch.manual_seed(seed)
    assert cfg.intermediate_size is not None and cfg.layer_norm_eps is not None
    if cfg.arch == "bert":
        ours: torch.nn.Module = BertForPreTraining(cfg)
        hf_cfg = transformers.BertConfig(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            intermediate_size=cfg.intermediate_size,
            max_position_embeddings=cfg.max_position_embeddings,
            type_vocab_size=cfg.type_vocab_size,
            hidden_act=cfg.activation,
            hidden_dropout_prob=cfg.hidden_dropout,
            attention_probs_dropout_prob=cfg.attention_dropout,
            layer_norm_eps=cfg.layer_norm_eps,
            pad_token_id=cfg.pad_token_id,
            attn_implementation="sdpa",
        )
        hf: torch.nn.Module = transformers.BertForPreTraining(hf_cfg)
        hf.load_state_dict(bert_to_hf_state_dict(ours.state_dict()), strict=True)
    else:
        ours = GPT(cfg)
        hf_cfg = transformers.GPT2Config(
            vocab_size=cfg.vocab_size,
            n_positions=cfg.max_position_embeddings,
            n_embd=cfg.hidden_size,
            n_layer=cfg.num_layers,
            n_head=cfg.num_heads,
            n_inner=cfg.intermediate_size,
            activation_function=cfg.activation,
            resid_pdrop=cfg.hidden_dropout,
            embd_pdrop=cfg.hidden_dropout,
            attn_pdrop=cfg.attention_dropout,
            layer_norm_epsilon=cfg.layer_norm_eps,
            attn_implementation="sdpa",
        )
        hf = transformers.GPT2LMHeadModel(hf_cfg)
        hf.load_state_dict(gpt_to_hf_state_dict(ours.state_dict()), strict=True)
    attn = getattr(hf.config, "_attn_implementation", None)
    if attn != "sdpa":
        raise RuntimeError(f"the transformers peer uses attention {attn!r}, expected 'sdpa'")
    return ours.train(), hf.train(), cfg


def hf_param_groups(model: torch.nn.Module) -> list[dict[str, Any]]:
    """The ``transformers`` ``Trainer``'s groups: no decay for biases and LayerNorm parameters."""
    from transformers.trainer_pt_utils import get_parameter_names

    forbidden = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]
    decay = set(get_parameter_names(model, [torch.nn.LayerNorm], forbidden))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if n in decay], "weight_decay": WEIGHT_DECAY},
        {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
    ]


def build_optimizers(
    ours: torch.nn.Module, hf: torch.nn.Module, kind: str
) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    from pipeline.config import OptimConfig
    from pipeline.optim import build_optimizer, param_groups

    def adamw(groups: list[dict[str, Any]], impl: str) -> torch.optim.Optimizer:
        flags = {"fused": {"fused": True}, "foreach": {"foreach": True}, "loop": {"foreach": False}}[impl]
        return torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS, **flags)

    if kind == "pipeline":
        cfg = OptimConfig(lr=LR, betas=list(BETAS), eps=EPS, weight_decay=WEIGHT_DECAY)
        return build_optimizer(ours, cfg), adamw(hf_param_groups(hf), "fused")
    return adamw(param_groups(ours, WEIGHT_DECAY), kind), adamw(hf_param_groups(hf), kind)


# ------------------------------------------------------------------------------------------------ batches


def _bert_rows(lengths: np.ndarray, seq: int, vocab: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random ``[CLS] A [SEP] B [SEP]`` rows of the given lengths, padded to ``seq``, masked as BERT does."""
    from data_prep.masking import mask_tokens
    from data_prep.pairs import special_positions, token_type_ids

    n = len(lengths)
    seg_a = np.array([int(rng.integers(2, max(3, length - 2))) for length in lengths])  # [CLS] A [SEP]
    ids = rng.integers(FIRST_REGULAR_ID, vocab, size=(n, seq))
    pos = np.arange(seq)
    ids[:, 0] = CLS_ID
    ids[pos == seg_a[:, None] - 1] = SEP_ID
    ids[pos == lengths[:, None] - 1] = SEP_ID
    ids[pos >= lengths[:, None]] = 0
    masked, labels = mask_tokens(
        ids,
        special_positions(lengths, seg_a, seq),
        rng,
        mask_id=MASK_ID,
        vocab_size=vocab,
        first_regular_id=FIRST_REGULAR_ID,
    )
    return {
        "input_ids": masked,
        "token_type_ids": token_type_ids(lengths, seg_a, seq),
        "attention_mask": (pos < lengths[:, None]).astype(np.int64),
        "labels": labels,
        "next_sentence_label": rng.integers(0, 2, size=n),
    }


def bert_batches(
    n_batches: int, batch: int, seq: int, vocab: int, lengths: str, seed: int
) -> tuple[list[Batch], str]:
    """``n_batches`` padded BERT batches and a description of where their lengths come from."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, np.ndarray]] = []
    if lengths == "full":
        source = f"synthetic, every row {seq} tokens"
        for _ in range(n_batches):
            rows.append(_bert_rows(np.full(batch, seq), seq, vocab, rng))
    elif REAL_DATA.is_dir():
        from data_prep.bert_data import BertDataset

        ds = BertDataset(REAL_DATA, "train", seed=seed)
        if ds.max_seq_len != seq:
            raise SystemExit(f"{REAL_DATA} has max_seq_len {ds.max_seq_len}; run with --seq {ds.max_seq_len}")
        source = f"{len(ds)} real instances of {REAL_DATA.relative_to(REPO)} (BertDataset, dynamic masking)"
        for _ in range(n_batches):
            items = [ds[int(i)] for i in rng.choice(len(ds), size=batch, replace=False)]
            rows.append({k: np.stack([it[k] for it in items]).astype(np.int64) for k in items[0]})
    else:
        if seq != 128:
            raise SystemExit("the built-in length histogram is for --seq 128")
        source = "synthetic rows, lengths from REAL_LENGTH_HISTOGRAM (the demo Wikipedia data's)"
        p = np.array(REAL_LENGTH_HISTOGRAM, dtype=float) / sum(REAL_LENGTH_HISTOGRAM)
        for _ in range(n_batches):
            b = rng.choice(len(p), size=batch, p=p)
            lens = np.where(b == len(p) - 1, seq, b * 16 + rng.integers(0, 16, size=batch))
            rows.append(_bert_rows(np.maximum(lens, 8), seq, vocab, rng))
    return [{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in r.items()} for r in rows], source


def trim(b: Batch) -> Batch:
    """Cut the padding columns that no row uses (right padding): what our collate can do per batch."""
    longest = int(b["attention_mask"].sum(dim=1).max())
    return {k: (v[:, :longest] if v.dim() == 2 else v) for k, v in b.items()}


def gpt_batches(n_batches: int, batch: int, seq: int, vocab: int, seed: int) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        window = torch.randint(0, vocab, (batch, seq + 1), generator=g)
        labels = window[:, 1 : seq + 1].clone()
        labels[:, -1] = -100  # the peer's internal shift predicts seq - 1 targets per row; so do we
        out.append({"input_ids": window[:, :seq].contiguous(), "labels": labels})
    return out


# ------------------------------------------------------------------------------------------------ steps


def loss_fns(arch: str) -> tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]:
    """(ours, peer): model, batch -> scalar training loss."""
    if arch == "bert":

        def ours(m: torch.nn.Module, b: Batch) -> torch.Tensor:
            return m(
                b["input_ids"],
                b["token_type_ids"],
                b["attention_mask"],
                b["labels"],
                b["next_sentence_label"],
            ).loss

        def hf(m: torch.nn.Module, b: Batch) -> torch.Tensor:
            return m(
                input_ids=b["input_ids"],
                token_type_ids=b["token_type_ids"],
                attention_mask=b["attention_mask"],
                labels=b["labels"],
                next_sentence_label=b["next_sentence_label"],
            ).loss

    else:

        def ours(m: torch.nn.Module, b: Batch) -> torch.Tensor:
            return m(b["input_ids"], b["labels"]).loss

        def hf(m: torch.nn.Module, b: Batch) -> torch.Tensor:
            return m(input_ids=b["input_ids"], labels=b["input_ids"]).loss

    return ours, hf


def make_step(
    model: torch.nn.Module, opt: torch.optim.Optimizer, loss_fn: Callable[..., torch.Tensor]
) -> Callable[[Batch], float]:
    def step(b: Batch) -> float:
        with torch.profiler.record_function("## forward"):
            loss = loss_fn(model, b)
        with torch.profiler.record_function("## backward"):
            loss.backward()
        with torch.profiler.record_function("## optimizer"):
            opt.step()
            opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


class Side:
    """One model's step, its batches (in the same order as the other side's) and its timings."""

    def __init__(self, name: str, step: Callable[[Batch], float], batches: list[Batch]) -> None:
        self.name, self.step, self.batches = name, step, batches
        self.next = 0
        self.rounds: list[tuple[int, float]] = []  # (tokens, seconds) per timed round
        self.cpu: list[float] = []  # process CPU seconds per timed step (all threads)
        self.losses: list[float] = []

    def run(self, n: int, timed: bool) -> None:
        tokens, seconds = 0, 0.0
        for _ in range(n):
            b = self.batches[self.next]
            self.next += 1
            t0, c0 = time.perf_counter(), time.process_time()
            self.losses.append(self.step(b))
            seconds += time.perf_counter() - t0
            if timed:
                self.cpu.append(time.process_time() - c0)
            tokens += int(b["attention_mask"].sum()) if "attention_mask" in b else b["input_ids"].numel()
        if timed:
            self.rounds.append((tokens, seconds))

    def tokens_per_s(self) -> float:
        return statistics.median(t / s for t, s in self.rounds)


def parity_check(ours: torch.nn.Module, hf: torch.nn.Module, fns: tuple, b_ours: Batch, b_hf: Batch) -> float:
    """Loss of both models on one batch without dropout: they start from the same weights, so they must agree."""
    ours.eval(), hf.eval()
    with torch.no_grad():
        lo, lh = float(fns[0](ours, b_ours)), float(fns[1](hf, b_hf))
    ours.train(), hf.train()
    if abs(lo - lh) > 1e-3 * max(1.0, abs(lh)):
        raise RuntimeError(
            f"the two models disagree before training: loss {lo:.6f} (ours) vs {lh:.6f} (peer)"
        )
    return abs(lo - lh)


def profile(sides: list[Side], rows: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for side in sides:
        with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            side.run(1, timed=False)
        avg = prof.key_averages()
        print(f"\n==== {side.name}: one step, by self CPU time", file=sys.stderr)
        print(avg.table(sort_by="self_cpu_time_total", row_limit=rows), file=sys.stderr)
        print(f"\n==== {side.name}: phases and ops by shape", file=sys.stderr)
        by_shape = prof.key_averages(group_by_input_shape=True)
        print(by_shape.table(sort_by="cpu_time_total", row_limit=rows), file=sys.stderr)


# ------------------------------------------------------------------------------------------------ main


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["bert-base", "gpt2-small"], default="bert-base")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=1, help="timed steps per side in each round")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of timed steps (sides alternate)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per side first")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: one per core)")
    ap.add_argument("--lengths", choices=["full", "real"], default="full", help="BERT only: row lengths")
    ap.add_argument("--no-trim", action="store_true", help="BERT: give ours the padded batches too")
    ap.add_argument("--optim", choices=["fused", "foreach", "loop", "pipeline"], default="fused")
    ap.add_argument("--compile", action="store_true", help="torch.compile both models")
    ap.add_argument("--profile", action="store_true", help="print torch.profiler tables, time nothing")
    ap.add_argument("--profile-rows", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    import transformers

    if args.model.startswith("gpt") and args.lengths == "real":
        ap.error("--lengths real is for BERT (GPT trains on packed full windows)")
    ours_m, hf_m, cfg = build_pair(args.model, args.seed)
    n_batches = args.warmup + args.rounds * args.steps + (1 if args.profile else 0)
    if cfg.arch == "bert":
        hf_batches, source = bert_batches(
            n_batches, args.batch, args.seq, cfg.vocab_size, args.lengths, args.seed + 1
        )
        ours_batches = hf_batches if args.no_trim else [trim(b) for b in hf_batches]
    else:
        hf_batches = ours_batches = gpt_batches(
            n_batches, args.batch, args.seq, cfg.vocab_size, args.seed + 1
        )
        source = f"random windows of {args.seq + 1} tokens"
    fns = loss_fns(cfg.arch)
    diff = parity_check(ours_m, hf_m, fns, ours_batches[0], hf_batches[0])

    opt_ours, opt_hf = build_optimizers(ours_m, hf_m, args.optim)
    run_ours, run_hf = ours_m, hf_m
    if args.compile:
        run_ours, run_hf = torch.compile(ours_m), torch.compile(hf_m)
    ours = Side("ours", make_step(run_ours, opt_ours, fns[0]), ours_batches)
    hf = Side("transformers", make_step(run_hf, opt_hf, fns[1]), hf_batches)

    real_tokens = sum(int(b["attention_mask"].sum()) for b in hf_batches) if cfg.arch == "bert" else None
    mean_len = real_tokens / (len(hf_batches) * args.batch) if real_tokens else float(args.seq)
    mean_cols = statistics.mean(b["input_ids"].shape[1] for b in ours_batches)
    print(
        f"# {args.model} train step | batch {args.batch} x seq {args.seq} | lengths {args.lengths}: {source} "
        f"| mean real length {mean_len:.1f}, ours' mean batch width {mean_cols:.1f} | optim {args.optim} "
        f"| threads {threads} | torch {torch.__version__}, transformers {transformers.__version__} "
        f"| {cpu_model()} | no-dropout loss diff at start {diff:.2e}",
        flush=True,
    )

    t_start = time.perf_counter()
    for i in range(args.warmup):
        for side in (ours, hf) if i % 2 == 0 else (hf, ours):
            side.run(1, timed=False)
    if args.profile:
        profile([ours, hf], args.profile_rows)
        return {}
    for r in range(args.rounds):
        for side in (ours, hf) if r % 2 == 0 else (hf, ours):
            side.run(args.steps, timed=True)
            tokens, seconds = side.rounds[-1]
            print(
                f"round {r + 1}: {side.name:>12}: {tokens / seconds:8.1f} tokens/s "
                f"({seconds / args.steps:.2f} s/step, loss {side.losses[-1]:.3f})",
                flush=True,
            )

    o, h = ours.tokens_per_s(), hf.tokens_per_s()
    result = {
        "model": args.model,
        "ours_tokens_per_s": round(o, 1),
        "hf_tokens_per_s": round(h, 1),
        "ratio": round(o / h, 3),
        "round_ratio_median": round(
            statistics.median((to / so) / (th / sh) for (to, so), (th, sh) in zip(ours.rounds, hf.rounds)), 3
        ),
        "lengths": args.lengths,
        "batch": args.batch,
        "seq": args.seq,
        "steps": args.steps,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "optim": args.optim,
        "compile": args.compile,
        "trim": cfg.arch == "bert" and not args.no_trim,
        "threads": threads,
        "mean_real_length": round(mean_len, 1),
        "ours_mean_width": round(mean_cols, 1),
        "ours_cpu_s_per_step": round(statistics.median(ours.cpu), 2),
        "hf_cpu_s_per_step": round(statistics.median(hf.cpu), 2),
        "ours_round_tokens_per_s": [round(t / s, 1) for t, s in ours.rounds],
        "hf_round_tokens_per_s": [round(t / s, 1) for t, s in hf.rounds],
        "wall_s": round(time.perf_counter() - t_start, 1),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu": cpu_model(),
    }
    print(f"ours {o:.1f} tokens/s, transformers {h:.1f} tokens/s: ratio {o / h:.2f}")
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
