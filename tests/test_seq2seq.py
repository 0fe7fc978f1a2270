"""Sequence-to-sequence: denoising functions, attention, the Transformer's masks, decoding, training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from baseline_data import gpt_windows

from data_prep.recipe import from_dict
from pipeline.callbacks import read_metrics
from pipeline.decoding import beam_search, greedy_decode
from pipeline.denoise import NoiseConfig, corrupt, delete_tokens, local_shuffle, span_mask
from pipeline.models.seq2seq import RNNSeq2Seq, build_seq2seq
from pipeline.models.seq2seq_config import Seq2SeqModelConfig
from pipeline.models.transformer import Seq2SeqTransformer
from pipeline.seq2seq_data import collate_pairs
from pipeline.seq2seq_recipe import Seq2SeqRecipe
from pipeline.tasks.seq2seq import train_seq2seq

MASK = 99


def test_span_mask_covers_the_ratio_and_merges_spans() -> None:
    tokens = np.arange(1, 101)
    out = span_mask(tokens, 0.3, 3.0, MASK, seed=1)
    assert np.array_equal(out, span_mask(tokens, 0.3, 3.0, MASK, seed=1))  # pure: same seed, same output
    assert not np.array_equal(out, span_mask(tokens, 0.3, 3.0, MASK, seed=2))
    kept = out[out != MASK]
    assert 100 - len(kept) == 30  # exactly the covered tokens are gone
    assert not np.any((out[1:] == MASK) & (out[:-1] == MASK))  # one mask per span
    assert np.all(np.diff(kept) > 0)  # the survivors keep their order
    assert np.array_equal(span_mask(tokens, 0.0, 3.0, MASK, seed=1), tokens)


def test_deletion_and_local_shuffle() -> None:
    tokens = np.arange(200)
    kept = delete_tokens(tokens, 0.25, seed=3)
    assert 120 < len(kept) < 180 and np.all(np.diff(kept) > 0)
    assert len(delete_tokens(np.arange(3), 1.0, seed=0)) == 1  # never empty
    shuffled = local_shuffle(tokens, 3, seed=4)
    assert sorted(shuffled.tolist()) == tokens.tolist() and not np.array_equal(shuffled, tokens)
    assert np.abs(shuffled - tokens).max() <= 2  # moves fewer than 3 places
    assert np.array_equal(local_shuffle(tokens, 1, seed=4), tokens)


def test_corrupt_is_reproducible_per_seed() -> None:
    tokens = np.arange(1, 41)
    cfg = NoiseConfig()
    a, b = corrupt(tokens, cfg, MASK, (1, 0, 7)), corrupt(tokens, cfg, MASK, (1, 0, 7))
    assert np.array_equal(a, b) and not np.array_equal(a, corrupt(tokens, cfg, MASK, (1, 1, 7)))
    assert MASK in a and len(a) < len(tokens)


def test_collate_pairs_layout() -> None:
    batch = collate_pairs(
        [{"source": np.array([5, 6, 7]), "target": np.array([8, 9])}, {"source": np.array([4]), "target": np.array([3])}],
        pad_id=0, bos_id=1, eos_id=2,
    )  # fmt: skip
    assert batch["input_ids"].tolist() == [[5, 6, 7], [4, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["decoder_input_ids"].tolist() == [[1, 8, 9], [1, 3, 0]]
    assert batch["labels"].tolist() == [[8, 9, 2], [3, 2, -100]]


def small(arch: str = "rnn", **kw: object) -> Seq2SeqModelConfig:
    base: dict = dict(arch=arch, vocab_size=20, embedding_size=16, hidden_size=32, dropout=0.0,
                      num_heads=4, encoder_layers=2, decoder_layers=2, attention_dropout=0.0, max_len=64)  # fmt: skip
    base.update(kw)
    return Seq2SeqModelConfig(**base)


def batch(B: int = 3, S: int = 7, T: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    src = torch.randint(3, 20, (B, S))
    mask = torch.ones_like(src)
    mask[0, 4:] = 0
    return src, mask, torch.randint(3, 20, (B, T))


@pytest.mark.parametrize(
    "cfg",
    [
        small(attention="additive"),
        small(attention="dot", cell="gru", bidirectional=False),
        small("transformer"),
    ],
    ids=["additive", "dot", "transformer"],
)
def test_attention_weights_sum_to_one_and_skip_padding(cfg: Seq2SeqModelConfig) -> None:
    torch.manual_seed(0)
    model = build_seq2seq(cfg).eval()
    src, mask, tgt = batch()
    out = model(src, mask, tgt, labels=tgt, return_attention=True)
    assert out.logits.shape == (3, 5, 20) and out.loss is not None
    w = out.cross_attention
    assert w is not None and w.shape[0] == 3 and w.shape[-2:] == (5, 7)
    assert torch.allclose(w.sum(-1), torch.ones(w.shape[:-1]), atol=1e-5)
    assert float(w[0, ..., 4:].abs().max()) == 0.0  # padded source tokens get no weight
    if isinstance(model, Seq2SeqTransformer):
        for layer in model.cross_attention_weights(src, mask, tgt):
            assert torch.allclose(layer.sum(-1), torch.ones(layer.shape[:-1]), atol=1e-5)


def test_no_attention_variant_has_no_alignment() -> None:
    model = build_seq2seq(small(attention="none")).eval()
    src, mask, tgt = batch()
    out = model(src, mask, tgt, return_attention=True)
    assert out.cross_attention is None and out.logits.shape == (3, 5, 20)
    assert not any("attn" in n for n, _ in model.named_parameters())


def test_transformer_decoder_is_causal() -> None:
    torch.manual_seed(0)
    model = Seq2SeqTransformer(small("transformer")).eval()
    src, mask, tgt = batch(T=8)
    changed = tgt.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 20
    a, b = model(src, mask, tgt).logits, model(src, mask, changed).logits
    assert torch.allclose(a[:, :5], b[:, :5], atol=1e-6)
    assert not torch.allclose(a[:, 5:], b[:, 5:])
    src2 = src.clone()
    src2[:, 0] = (src2[:, 0] + 1) % 20  # every target position sees the whole source
    assert not torch.allclose(model(src2, mask, tgt).logits[:, 0], a[:, 0])


@pytest.mark.parametrize("arch", ["rnn", "transformer"])
def test_beam_of_one_is_greedy(arch: str) -> None:
    torch.manual_seed(1)
    model = build_seq2seq(small(arch)).eval()
    src, mask, _ = batch(B=4)
    greedy = greedy_decode(model, src, mask, bos_id=1, eos_id=2, max_len=9)
    assert greedy == beam_search(model, src, mask, bos_id=1, eos_id=2, max_len=9, beam_size=1)
    wide = beam_search(model, src, mask, bos_id=1, eos_id=2, max_len=9, beam_size=3)
    assert len(wide) == 4 and all(len(h) <= 9 for h in wide)


def _reverse_task(n: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    src = torch.randint(3, 12, (n, 6), generator=gen)
    tgt = src.flip(1)
    dec_in = torch.cat([torch.ones(n, 1, dtype=torch.long), tgt], 1)  # BOS = 1
    labels = torch.cat([tgt, torch.full((n, 1), 2)], 1)  # EOS = 2
    return src, torch.ones_like(src), dec_in, labels


def test_attention_model_learns_to_reverse() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = RNNSeq2Seq(small(vocab_size=12, cell="gru", attention="additive", hidden_size=48))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(250):
        src, mask, dec_in, labels = _reverse_task(32, gen)
        loss = model(src, mask, dec_in, labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    src, mask, dec_in, labels = _reverse_task(64, gen)
    with torch.no_grad():
        assert float(model(src, mask, dec_in, labels).loss) < 0.3
    hyps = greedy_decode(model, src, mask, bos_id=1, eos_id=2, max_len=10)
    assert np.mean([h == s.flip(0).tolist() for h, s in zip(hyps, src)]) > 0.5


def _recipe(run_dir: Path, data: dict, model: dict) -> Seq2SeqRecipe:
    return from_dict(
        Seq2SeqRecipe,
        {
            "run_dir": str(run_dir),
            "data": {"min_tokens": 4, "max_tokens": 16, **data},
            "model": {"embedding_size": 32, "hidden_size": 32, **model},
            "decode": {"max_len": 20},
            "optim": {"lr": 3e-3, "warmup_steps": 2},
            "trainer": {
                "max_steps": 12,
                "global_batch_size": 8,
                "micro_batch_size": 8,
                "val_every_n_steps": 6,
                "val_batches": 1,
                "log_every_n_steps": 1,
            },  # fmt: skip
            "checkpoint": {"every_n_steps": 6, "keep_last": 1},
            "logging": {"wandb": False},
        },
        "test",
    )


def test_denoising_run_on_the_real_slice(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    data = gpt_windows(tmp_path_factory)
    run = train_seq2seq(
        _recipe(tmp_path / "rnn", {"path": str(data)}, {"teacher_forcing": 0.8}), progress=False
    )
    rows = read_metrics(run / "metrics.csv")
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(losses) == 12 and losses[-1] < losses[0]
    val = [r for r in rows if "val/exact_match" in r]
    assert len(val) == 2 and all(0 <= r["val/acc"] <= 1 for r in val)
    assert (run / "checkpoints" / "step-0000012.ckpt").exists()


def test_parallel_tsv_with_the_transformer(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    data = gpt_windows(tmp_path_factory)
    tsv = tmp_path / "pairs.tsv"
    words = ["the cat", "a dog", "red house", "blue sky", "old tree", "new car"]
    tsv.write_text("".join(f"{w}\t{' '.join(reversed(w.split()))}\n" for w in words * 4))
    recipe = _recipe(
        tmp_path / "tf",
        {"tsv": str(tsv), "tokenizer": str(data), "valid_fraction": 0.25},
        {"arch": "transformer", "num_heads": 2, "encoder_layers": 1, "decoder_layers": 1},
    )
    recipe.decode.beam_size = 2
    run = train_seq2seq(recipe, progress=False)
    rows = read_metrics(run / "metrics.csv")
    assert any("val/exact_match" in r for r in rows) and any("train/loss" in r for r in rows)
