"""Export to / import from ``transformers`` folders: logits on real text match ours, both ways, and tokenizers too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from finetune_fixtures import make_release, pang_lee, recipe

from data_prep.tokenizer import load_tokenizer
from pipeline.checkpoint import load_release
from pipeline.export import export_hf, import_hf
from pipeline.finetune.release import load_task_release
from pipeline.finetune.run import finetune

transformers = pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parent.parent
PANG_LEE = "pkg:gensim/test/test_data/pang_lee_polarity.cor"


@pytest.fixture(scope="module")
def texts(gensim_data: Path) -> list[str]:
    return [s for _, s in pang_lee(gensim_data)]


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("exp")
    return {arch: make_release(tmp / arch / "release", arch, texts) for arch in ("bert", "gpt")}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, cwd=ROOT)


def _hf_batch(folder: Path, a: list[str], b: list[str] | None = None) -> dict[str, torch.Tensor]:
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    return dict(tok(a, b, padding=True, truncation=True, max_length=48, return_tensors="pt"))


def test_bert_export_loads_in_transformers_with_the_same_logits(
    tmp_path: Path, releases: dict[str, Path], texts: list[str]
) -> None:
    out = tmp_path / "hf"
    r = _cli("export", "--checkpoint", str(releases["bert"]), "--to", "hf", str(out))
    assert r.returncode == 0, r.stderr
    hf = transformers.BertForPreTraining.from_pretrained(str(out), attn_implementation="eager").eval()
    batch = _hf_batch(out, texts[:4], texts[4:8])
    # the exported tokenizer is ours: same ids, [CLS] A [SEP] B [SEP], segment ids
    ours_tok = load_tokenizer(releases["bert"])
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
    for a, b in zip(texts[:4], texts[4:8]):
        enc, hf_enc = ours_tok.encode(a, b), hf_tok(a, b)
        assert hf_enc["input_ids"] == enc.ids and hf_enc["token_type_ids"] == enc.type_ids
    ours, _ = load_release(releases["bert"])
    with torch.no_grad():
        ref = hf(**batch)
        got = ours.eval()(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    assert (ref.prediction_logits - got.mlm_logits).abs().max() < 1e-4
    assert (ref.seq_relationship_logits - got.nsp_logits).abs().max() < 1e-4

    # round trip: import the transformers folder, export it again -> the same tensors
    back = import_hf(out, tmp_path / "imported")
    again = export_hf(back, tmp_path / "hf2")
    from safetensors.torch import load_file

    a, b = load_file(str(out / "model.safetensors")), load_file(str(again / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    imported, _ = load_release(back)
    with torch.no_grad():
        got2 = imported.eval()(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    assert (ref.prediction_logits - got2.mlm_logits).abs().max() < 1e-4


def test_gpt_export_loads_as_gpt2lmheadmodel(
    tmp_path: Path, releases: dict[str, Path], texts: list[str]
) -> None:
    out = export_hf(releases["gpt"], tmp_path / "hf")
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(out), attn_implementation="eager").eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    ids = tok(texts[0], return_tensors="pt")["input_ids"]
    assert ids[0].tolist() == load_tokenizer(releases["gpt"]).encode(texts[0]).ids
    assert tok.decode(ids[0]) == texts[0]
    ours, _ = load_release(releases["gpt"])
    with torch.no_grad():
        assert (hf(input_ids=ids).logits - ours.eval()(ids).logits).abs().max() < 1e-4
    back = import_hf(out, tmp_path / "imported")
    again, _ = load_release(back)
    with torch.no_grad():
        assert (again.eval()(ids).logits - ours(ids).logits).abs().max() < 1e-5


def test_finetuning_starts_from_a_transformers_folder(tmp_path: Path, releases: dict[str, Path]) -> None:
    """A classifier fine-tuned from an HF folder exports to BertForSequenceClassification with equal logits."""
    hf_dir = export_hf(releases["bert"], tmp_path / "hf")
    data = {"train": PANG_LEE, "format": "fasttext", "holdout": 40}
    run = finetune(recipe(tmp_path / "run", data, {"epochs": 1}), checkpoint=str(hf_dir), progress=False)
    assert (run / "imported" / "model.safetensors").is_file()
    out = tmp_path / "cls-hf"
    r = _cli("export", "--checkpoint", str(run), "--to", "hf", str(out))  # a fine-tuning run folder
    assert r.returncode == 0, r.stderr
    hf = transformers.BertForSequenceClassification.from_pretrained(
        str(out), attn_implementation="eager"
    ).eval()
    assert hf.config.id2label == {0: "neg", 1: "pos"}
    preds = [json.loads(x) for x in (run / "predictions/validation.jsonl").read_text().splitlines()]
    batch = _hf_batch(out, [p["text"] for p in preds[:8]])
    model, _, _ = load_task_release(run / "release")
    with torch.no_grad():
        ref, got = hf(**batch).logits, model.eval()(batch)["logits"]
    assert (ref - got).abs().max() < 1e-4
    # and the probabilities in predictions/ are those of the released (best) model
    assert ref.softmax(-1)[:, 1].tolist() == pytest.approx([p["probs"][1] for p in preds[:8]], abs=1e-4)


@pytest.mark.parametrize("kind", ["token_classification", "qa", "regression"])
def test_bert_task_heads_export(
    tmp_path: Path, releases: dict[str, Path], texts: list[str], kind: str
) -> None:
    from pipeline.finetune.heads import build_task_model, load_backbone
    from pipeline.finetune.release import write_task_release

    base, cfg = load_release(releases["bert"])
    n = {"token_classification": 5, "qa": 2, "regression": 1}[kind]
    model = build_task_model(cfg, kind, n)
    load_backbone(model, base.state_dict(), "bert")
    labels = [f"L{i}" for i in range(n)] if kind == "token_classification" else []
    folder = write_task_release(
        model,
        cfg,
        tmp_path / "rel",
        tokenizer=releases["bert"] / "tokenizer.json",
        task={"type": kind, "labels": labels, "num_labels": n},
    )
    out = export_hf(folder, tmp_path / "hf")
    cls = {
        "token_classification": transformers.BertForTokenClassification,
        "qa": transformers.BertForQuestionAnswering,
        "regression": transformers.BertForSequenceClassification,
    }[kind]
    hf = cls.from_pretrained(str(out), attn_implementation="eager").eval()
    batch = _hf_batch(out, texts[:3], texts[3:6])
    with torch.no_grad():
        ref, got = hf(**batch), model.eval()(batch)
    mask = batch["attention_mask"].bool()
    if kind == "qa":
        assert (ref.start_logits - got["start_logits"])[mask].abs().max() < 1e-4
        assert (ref.end_logits - got["end_logits"])[mask].abs().max() < 1e-4
    else:
        assert (ref.logits - got["logits"]).abs().max() < 1e-4


def test_gpt_classifier_exports_to_gpt2_for_sequence_classification(
    tmp_path: Path, releases: dict[str, Path], texts: list[str]
) -> None:
    from pipeline.finetune.heads import build_task_model, load_backbone
    from pipeline.finetune.release import write_task_release

    base, cfg = load_release(releases["gpt"])
    model = build_task_model(cfg, "classification", 2)
    load_backbone(model, base.state_dict(), "gpt")
    folder = write_task_release(
        model,
        cfg,
        tmp_path / "rel",
        tokenizer=releases["gpt"] / "tokenizer.json",
        task={"type": "classification", "labels": ["neg", "pos"], "num_labels": 2},
    )
    out = export_hf(folder, tmp_path / "hf")
    hf = transformers.GPT2ForSequenceClassification.from_pretrained(
        str(out), attn_implementation="eager"
    ).eval()
    batch = _hf_batch(out, texts[:3])  # right-padded with <|endoftext|>: HF reads the last non-pad token
    with torch.no_grad():
        assert (hf(**batch).logits - model.eval()(batch)["logits"]).abs().max() < 1e-4


def test_export_errors_are_one_line(tmp_path: Path) -> None:
    r = _cli("export", "--checkpoint", str(tmp_path / "nope"), "--to", "hf", str(tmp_path / "out"))
    assert r.returncode == 2 and "nope: not found" in r.stderr and r.stderr.count("\n") == 1
    r = _cli("export", "--from", "onnx", str(tmp_path), str(tmp_path / "out"))
    assert r.returncode == 2 and "only hf" in r.stderr
    r = _cli("export", "--from", "hf", str(tmp_path), str(tmp_path / "out"))
    assert r.returncode == 2 and "no config.json" in r.stderr
