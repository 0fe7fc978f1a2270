"""BERT and GPT: shapes, masking, heads, tied weights, parity with ``transformers``, sampling, checkpointing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from data_prep.recipe import RecipeError, field_docs
from pipeline.models import (
    GPT,
    BertForPreTraining,
    ModelConfig,
    bert_from_hf_state_dict,
    bert_to_hf_state_dict,
    build_model,
    gpt_from_hf_state_dict,
    gpt_to_hf_state_dict,
    load_model_config,
    next_token_probs,
    top_k_filter,
    top_p_filter,
)

ROOT = Path(__file__).resolve().parent.parent
MODEL_RECIPES = sorted((ROOT / "recipes" / "models").glob("*.yaml"))
V, B, T = 97, 3, 12


def tiny(arch: str, **kw) -> ModelConfig:
    sizes = dict(vocab_size=V, max_position_embeddings=32, hidden_size=32, num_layers=2, num_heads=4)
    return ModelConfig(arch=arch, **{**sizes, "intermediate_size": 64, **kw})


def model(arch: str, seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(tiny(arch, **kw))


def ids(seed: int = 1, shape: tuple[int, int] = (B, T)) -> torch.Tensor:
    return torch.randint(1, V, shape, generator=torch.Generator().manual_seed(seed))


def mlm_labels(x: torch.Tensor, every: int = 4) -> torch.Tensor:
    labels = torch.full_like(x, -100)
    labels[:, 1::every] = x[:, 1::every]
    return labels


# ---------------------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("path", MODEL_RECIPES, ids=lambda p: p.stem)
def test_every_model_recipe_loads(path: Path) -> None:
    by_path = load_model_config(str(path))
    assert by_path == load_model_config(path.stem)
    assert by_path.intermediate_size and by_path.layer_norm_eps and by_path.activation  # defaults resolved
    assert path.read_text().startswith("#"), "each preset starts with a comment"


def test_model_recipes_exist() -> None:
    assert {p.stem for p in MODEL_RECIPES} >= {
        "bert-tiny",
        "bert-base",
        "bert-large",
        "gpt-tiny",
        "gpt2-small",
    }


def test_arch_defaults_and_overrides() -> None:
    bert = load_model_config("bert-base")
    assert (bert.layer_norm_eps, bert.activation, bert.intermediate_size) == (1e-12, "gelu", 3072)
    gpt = load_model_config("gpt2-small", vocab_size=8000, activation_checkpointing=True)
    assert (gpt.layer_norm_eps, gpt.activation, gpt.vocab_size, gpt.activation_checkpointing) == (
        1e-5,
        "gelu_new",
        8000,
        True,
    )


def test_config_errors_name_the_problem() -> None:
    with pytest.raises(RecipeError, match="bert-huge.*known: .*bert-base"):
        load_model_config("bert-huge")
    with pytest.raises(RecipeError, match="hidden_sise"):
        load_model_config("bert-tiny", hidden_sise=3)
    with pytest.raises(RecipeError, match="not divisible"):
        load_model_config("bert-tiny", num_heads=3)


def test_every_model_config_field_has_a_docstring() -> None:
    docs = field_docs(ModelConfig)
    assert [f.name for f in dataclasses.fields(ModelConfig) if not docs.get(f.name)] == []


def test_build_model_dispatches_on_arch() -> None:
    assert isinstance(model("bert"), BertForPreTraining)
    assert isinstance(model("gpt"), GPT)


# ---------------------------------------------------------------------------------------------------- shapes, masks


def test_shapes() -> None:
    x = ids()
    out = model("bert")(x, mlm_labels=mlm_labels(x), next_sentence_label=torch.tensor([0, 1, 0]))
    n_masked = int((mlm_labels(x) != -100).sum())
    assert out.mlm_logits.shape == (n_masked, V) and out.nsp_logits.shape == (B, 2)
    assert out.loss.shape == () and int(out.mlm_count) == n_masked
    assert torch.allclose(out.loss, out.mlm_loss + out.nsp_loss)
    assert model("bert")(x).mlm_logits.shape == (B, T, V)  # no labels: every position
    out = model("gpt")(x, labels=x)
    assert out.logits.shape == (B, T, V) and out.loss.shape == ()


def test_gpt_is_causal() -> None:
    m = model("gpt").eval()
    x = ids()
    y = x.clone()
    y[:, 7:] = ids(seed=9)[:, 7:]  # change every token after position 6
    with torch.no_grad():
        a, b = m(x).logits, m(y).logits
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_bert_padding_is_invisible() -> None:
    m = model("bert").eval()
    x = ids()
    mask = torch.ones_like(x)
    mask[:, 9:] = 0  # the last 3 positions are padding
    with torch.no_grad():
        ref = m.bert(x, attention_mask=mask)[0][:, :9]
        other_pad = x.clone()
        other_pad[:, 9:] = ids(seed=5)[:, 9:]
        torch.testing.assert_close(m.bert(other_pad, attention_mask=mask)[0][:, :9], ref)
        longer = torch.cat([x, torch.zeros(B, 5, dtype=x.dtype)], dim=1)
        longer_mask = torch.cat([mask, torch.zeros(B, 5, dtype=mask.dtype)], dim=1)
        torch.testing.assert_close(m.bert(longer, attention_mask=longer_mask)[0][:, :9], ref)
        # Without the mask the padding is attended to: the outputs do change.
        assert not torch.allclose(m.bert(other_pad)[0][:, :9], ref)


def test_attention_weights_match_the_fast_path() -> None:
    bert = model("bert").eval()
    x, mask = ids(), torch.ones(B, T, dtype=torch.long)
    mask[:, 8:] = 0
    maps = bert.bert.attention_weights(x, attention_mask=mask)
    assert len(maps) == 2 and maps[0].shape == (B, 4, T, T)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(B, 4, T))
    assert maps[0][..., 8:].abs().max() == 0  # no weight on padded keys
    block, h = bert.bert.layers[0], bert.bert.embeddings(x)
    pad = mask.bool()[:, None, None, :]
    with torch.no_grad():
        torch.testing.assert_close(block.forward_with_weights(h, pad)[0], block(h, pad))
    gpt = model("gpt").eval()
    maps = gpt.attention_weights(x)
    assert torch.triu(maps[1], diagonal=1).abs().max() == 0  # no weight on future keys
    h = gpt.transformer.wte(x) + gpt.transformer.wpe(torch.arange(T))
    with torch.no_grad():
        torch.testing.assert_close(gpt.transformer.h[0].forward_with_weights(h)[0], gpt.transformer.h[0](h))


# ---------------------------------------------------------------------------------------------------- heads


def test_masked_only_mlm_head_equals_full_head() -> None:
    m = model("bert").eval()
    x = ids()
    labels = mlm_labels(x)
    out = m(x, mlm_labels=labels)
    with torch.no_grad():
        full = m.mlm_logits_full(m.bert(x)[0])  # (B, T, V)
    masked = labels != -100
    torch.testing.assert_close(out.mlm_logits, full[masked])
    torch.testing.assert_close(out.mlm_loss, F.cross_entropy(full.view(-1, V), labels.view(-1)))
    assert int(out.mlm_correct) == int((full[masked].argmax(-1) == labels[masked]).sum())


def test_bert_with_nothing_masked_has_a_zero_finite_loss() -> None:
    m = model("bert", nsp=False)
    out = m(ids(), mlm_labels=torch.full((B, T), -100))
    assert out.loss.item() == 0.0 and int(out.mlm_count) == 0
    out.loss.backward()  # the graph is intact


def test_nsp_false_is_mlm_only() -> None:
    m = model("bert", nsp=False)
    assert m.nsp_head is None and m.bert.pooler is None
    assert not any("nsp" in n or "pooler" in n for n, _ in m.named_parameters())
    x = ids()
    out = m(x, mlm_labels=mlm_labels(x), next_sentence_label=torch.zeros(B, dtype=torch.long))
    assert out.nsp_logits is None and out.nsp_loss is None
    torch.testing.assert_close(out.loss, out.mlm_loss)
    out.loss.backward()
    assert all(p.grad is not None for p in m.parameters())  # no unused parameters (DDP-safe)


@pytest.mark.parametrize("arch", ["bert", "gpt"])
def test_tied_weights_share_storage_and_sum_gradients(arch: str) -> None:
    def parts(m):
        if arch == "bert":
            return m.bert.embeddings.word_embeddings, m.mlm_head.decoder
        return m.transformer.wte, m.lm_head

    def loss(m, x):
        return m(x, mlm_labels=mlm_labels(x)).loss if arch == "bert" else m(x, labels=x).loss

    x = ids()
    tied = model(arch, hidden_dropout=0.0, attention_dropout=0.0)
    emb, out = parts(tied)
    assert emb.weight is out.weight and emb.weight.data_ptr() == out.weight.data_ptr()
    assert sum(p.numel() for p in tied.parameters()) < sum(p.numel() for p in tied.state_dict().values())
    loss(tied, x).backward()

    untied = model(arch, hidden_dropout=0.0, attention_dropout=0.0)
    emb2, out2 = parts(untied)
    out2.weight = torch.nn.Parameter(emb2.weight.detach().clone())
    loss(untied, x).backward()
    assert emb2.weight.grad.abs().sum() > 0 and out2.weight.grad.abs().sum() > 0  # both uses get gradient
    torch.testing.assert_close(emb.weight.grad, emb2.weight.grad + out2.weight.grad)


@pytest.mark.parametrize("arch", ["bert", "gpt"])
def test_activation_checkpointing_gives_the_same_loss_and_grads(arch: str) -> None:
    x = ids()
    results = []
    for ckpt in (False, True):
        m = model(arch, activation_checkpointing=ckpt).train()  # dropout on: the RNG must be replayed exactly
        torch.manual_seed(123)
        out = m(x, mlm_labels=mlm_labels(x)) if arch == "bert" else m(x, labels=x)
        out.loss.backward()
        results.append((out.loss.detach(), {n: p.grad for n, p in m.named_parameters()}))
    (loss0, g0), (loss1, g1) = results
    torch.testing.assert_close(loss0, loss1)
    for name in g0:
        torch.testing.assert_close(g0[name], g1[name], msg=name)


# ---------------------------------------------------------------------------------------------------- transformers parity


def test_bert_matches_transformers() -> None:
    transformers = pytest.importorskip("transformers")
    cfg = tiny("bert")
    hf_cfg = transformers.BertConfig(
        vocab_size=V,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    hf = transformers.BertForPreTraining(hf_cfg).eval()
    with torch.no_grad():  # weights well above init scale: a swapped name or a GELU variant would show
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ours = BertForPreTraining(cfg).eval()
    ours.load_state_dict(bert_from_hf_state_dict(hf.state_dict()), strict=True)

    x, tt = ids(), torch.randint(0, 2, (B, T))
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, 8:] = 0
    with torch.no_grad():
        ref = hf(input_ids=x, token_type_ids=tt, attention_mask=mask)
        seq, pooled = ours.bert(x, tt, mask)
        out = ours(x, tt, mask)
    assert (ours.mlm_logits_full(seq) - ref.prediction_logits).abs().max() < 1e-4  # padded rows too
    assert (out.nsp_logits - ref.seq_relationship_logits).abs().max() < 1e-4

    back = transformers.BertForPreTraining(hf_cfg).eval()
    back.load_state_dict(bert_to_hf_state_dict(ours.state_dict()), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(back(input_ids=x).prediction_logits, hf(input_ids=x).prediction_logits)


def test_gpt_matches_transformers() -> None:
    transformers = pytest.importorskip("transformers")
    cfg = tiny("gpt")
    hf_cfg = transformers.GPT2Config(
        vocab_size=V,
        n_embd=cfg.hidden_size,
        n_layer=cfg.num_layers,
        n_head=cfg.num_heads,
        n_positions=cfg.max_position_embeddings,
        n_inner=cfg.intermediate_size,
        activation_function="gelu_new",
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ours = GPT(cfg).eval()
    ours.load_state_dict(gpt_from_hf_state_dict(hf.state_dict()), strict=True)
    x = ids()
    with torch.no_grad():
        diff = (ours(x).logits - hf(input_ids=x).logits).abs().max()
    assert diff < 1e-4

    back = transformers.GPT2LMHeadModel(hf_cfg).eval()
    back.load_state_dict(gpt_to_hf_state_dict(ours.state_dict()), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(back(input_ids=x).logits, hf(input_ids=x).logits)


# ---------------------------------------------------------------------------------------------------- sampling


def test_greedy_generate_is_the_argmax_loop() -> None:
    m = model("gpt").train()  # generate must switch dropout off by itself, and restore the mode
    prompt = ids(shape=(2, 5))
    out = m.generate(prompt, max_new_tokens=6, greedy=True)
    assert m.training and out.shape == (2, 11) and torch.equal(out[:, :5], prompt)
    assert torch.equal(out, m.generate(prompt, max_new_tokens=6, greedy=True))
    m.eval()
    seq = prompt
    with torch.no_grad():
        for _ in range(6):
            seq = torch.cat([seq, m(seq).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, seq)


def test_generate_sampling_is_reproducible_and_crops_the_context() -> None:
    m = model("gpt").eval()
    prompt = ids(shape=(2, 30))  # 30 + 10 > max_position_embeddings = 32
    a = m.generate(prompt, 10, top_k=5, top_p=0.9, generator=torch.Generator().manual_seed(0))
    b = m.generate(prompt, 10, top_k=5, top_p=0.9, generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, 40) and torch.equal(a, b)


def test_generate_stops_at_eos() -> None:
    m = model("gpt").eval()
    prompt = ids(shape=(1, 4))
    first = int(m.generate(prompt, 1, greedy=True)[0, -1])
    out = m.generate(prompt, 8, greedy=True, eos_token_id=first)
    assert out.shape == (1, 5) and int(out[0, -1]) == first


def test_top_k_keeps_the_k_largest() -> None:
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0], [0.5, 0.1, 0.9, 0.3, 0.7]])
    kept = top_k_filter(logits, 2).isfinite()
    assert kept.tolist() == [[False, True, False, True, False], [False, False, True, False, True]]
    assert top_k_filter(logits, 10).isfinite().all()


def test_top_p_keeps_the_minimal_nucleus() -> None:
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])  # sorted: 0.5, 0.3, 0.15, 0.05
    logits = probs.log()[None]

    def kept(p: float) -> list[bool]:
        return top_p_filter(logits, p).isfinite()[0].tolist()

    assert kept(0.4) == [False, True, False, False]  # the top token alone reaches 0.4
    assert kept(0.75) == [False, True, False, True]  # 0.5 + 0.3
    assert kept(0.79) == [False, True, False, True]  # 0.8 >= 0.79: a third token would be one too many
    assert kept(0.81) == [False, True, True, True]  # 0.8 < 0.81: the third one is needed
    assert kept(0.9) == [False, True, True, True]  # 0.5 + 0.3 + 0.15
    assert kept(0.99) == [True, True, True, True]


def test_temperature_scales_the_logits() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    torch.testing.assert_close(next_token_probs(logits, temperature=0.5), (logits / 0.5).softmax(-1))
    hot, cold = next_token_probs(logits, temperature=5.0), next_token_probs(logits, temperature=0.2)
    assert hot.max() < logits.softmax(-1).max() < cold.max()
    with pytest.raises(ValueError):
        next_token_probs(logits, temperature=0.0)


def test_bert_sparse_forward_equals_the_dense_path() -> None:
    """forward() with labels skips padding rows and the last layer's unread positions: same loss and grads."""
    import torch.nn.functional as F

    from pipeline.models import build_model
    from pipeline.models.config import ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(
        "bert", vocab_size=120, max_position_embeddings=32, hidden_size=32, num_layers=3, num_heads=4
    )
    model = build_model(cfg).eval()
    B, T = 4, 16
    x = torch.randint(5, 120, (B, T))
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 10:] = 0
    mask[3, 5:] = 0
    labels = torch.full_like(x, -100)
    labels[:, 2::5] = x[:, 2::5]
    labels[1, 12] = x[1, 12]  # a label on a padding position is still predicted, as in the dense path
    types = (torch.arange(T) >= 8).long().expand(B, T)
    nsp = torch.tensor([0, 1, 0, 1])

    out = model(x, token_type_ids=types, attention_mask=mask, mlm_labels=labels, next_sentence_label=nsp)
    out.loss.backward()
    sparse_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    seq, pooled = model.bert(x, types, mask)
    m = labels != -100
    dense = F.cross_entropy(model.mlm_head(seq[m]), labels[m]) + F.cross_entropy(model.nsp_head(pooled), nsp)
    dense.backward()
    torch.testing.assert_close(out.loss, dense, atol=1e-5, rtol=1e-5)
    for n, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(sparse_grads[n], p.grad, atol=1e-5, rtol=1e-4, msg=n)


def test_cpu_dropout_keep_rate() -> None:
    from pipeline.models.blocks import dropout

    torch.manual_seed(0)
    x = torch.ones(200_000, requires_grad=True)
    y = dropout(x, 0.1, True)
    kept = (y != 0).float().mean().item()
    assert abs(kept - 0.9) < 0.005
    torch.testing.assert_close(y[y != 0], torch.full_like(y[y != 0], 1 / 0.9))
    y.sum().backward()
    assert torch.equal(x.grad != 0, y != 0), "backward uses the same mask"
    assert torch.equal(dropout(x, 0.1, False), x)
