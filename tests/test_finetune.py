"""Fine-tuning end to end on small real files: every task type, metrics by hand, resume, and input errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml
from finetune_fixtures import CONLL, make_release, pang_lee, recipe, write_squad

from data_prep.errors import UserError
from data_prep.recipe import load
from data_prep.tokenizer import load_tokenizer
from pipeline.callbacks import read_metrics
from pipeline.finetune.config import FinetuneDataConfig, FinetuneRecipe
from pipeline.finetune.features import special_ids
from pipeline.finetune.metrics import classification_scores, regression_scores
from pipeline.finetune.ner import align_labels, entity_scores, read_conll, word_predictions
from pipeline.finetune.readers import holdout_split, read_examples
from pipeline.finetune.release import load_task_release
from pipeline.finetune.run import finetune
from pipeline.finetune.squad import (
    best_answers,
    exact_match,
    f1,
    normalize_answer,
    qa_features,
    squad_scores,
    windows,
)

ROOT = Path(__file__).resolve().parent.parent
PANG_LEE = "pkg:gensim/test/test_data/pang_lee_polarity.cor"


@pytest.fixture(scope="session")
def sentences(gensim_data: Path) -> list[tuple[str, str]]:
    return pang_lee(gensim_data)


@pytest.fixture(scope="session")
def bert_release(tmp_path_factory: pytest.TempPathFactory, sentences: list[tuple[str, str]]) -> Path:
    texts = [s for _, s in sentences] + [ln for ln in CONLL.splitlines()] * 3
    return make_release(tmp_path_factory.mktemp("bert") / "release", "bert", texts)


@pytest.fixture(scope="session")
def gpt_release(tmp_path_factory: pytest.TempPathFactory, sentences: list[tuple[str, str]]) -> Path:
    return make_release(tmp_path_factory.mktemp("gpt") / "release", "gpt", [s for _, s in sentences])


@pytest.fixture(scope="session")
def sentiment_run(tmp_path_factory: pytest.TempPathFactory, bert_release: Path) -> Path:
    """The bundled demo task (pang_lee, 160/40) fine-tuned for 2 epochs from the tiny release."""
    run = tmp_path_factory.mktemp("sentiment") / "run"
    r = load(FinetuneRecipe, ROOT / "recipes/finetune/demo-sentiment.yaml")
    r.run_dir, r.task.epochs, r.logging.wandb = str(run), 2, False
    r.data.max_seq_len = 48
    return finetune(r, checkpoint=str(bert_release), progress=False)


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------------------- sentence tasks


def test_sentiment_demo_task_end_to_end(sentiment_run: Path) -> None:
    ev = json.loads((sentiment_run / "eval.json").read_text())
    preds = jsonl(sentiment_run / "predictions/validation.jsonl")
    assert len(preds) == 40 and sum(p["label"] == "pos" for p in preds) == 20  # stratified hold-out
    acc = sum(p["prediction"] == p["label"] for p in preds) / len(preds)
    assert ev["validation"]["accuracy"] == pytest.approx(acc)
    rows = read_metrics(sentiment_run / "metrics.csv")
    val = [r["val/accuracy"] for r in rows if "val/accuracy" in r]
    assert len(val) == 2  # one validation per epoch
    assert ev["validation"]["accuracy"] == pytest.approx(max(val))  # the best epoch was kept
    assert any("train/loss" in r for r in rows)
    assert (sentiment_run / "best.ckpt").is_file()
    assert [p.name for p in (sentiment_run / "checkpoints").glob("*.ckpt")] == ["step-0000020.ckpt"]
    model, cfg, task = load_task_release(sentiment_run / "release")
    assert task["labels"] == ["neg", "pos"] and task["type"] == "classification"


def test_holdout_is_fixed_and_stratified(sentences: list[tuple[str, str]]) -> None:
    exs = [{"label": lab, "text": t} for lab, t in sentences]
    tr, va = holdout_split(exs, 40, seed=0)
    tr2, va2 = holdout_split(exs, 40, seed=0)
    assert va == va2 and len(tr) == 160 and len(va) == 40
    assert sum(e["label"] == "neg" for e in va) == 20
    assert not {e["text"] for e in va} & {e["text"] for e in tr}


def test_holdout_folds_partition_the_examples(sentences: list[tuple[str, str]]) -> None:
    exs = [{"label": lab, "text": t, "i": i} for i, (lab, t) in enumerate(sentences)]
    held = []
    for fold in range(5):
        tr, va = holdout_split(exs, 40, seed=3, fold=fold)
        assert len(va) == 40 and len(tr) == 160
        assert sum(e["label"] == "neg" for e in va) == 20  # stratified
        assert not {e["i"] for e in va} & {e["i"] for e in tr}
        assert va == holdout_split(exs, 40, seed=3, fold=fold)[1]  # fixed
        held += [e["i"] for e in va]
    assert sorted(held) == list(range(200))  # every example is held out exactly once
    assert holdout_split(exs, 40, seed=4, fold=0)[1] != holdout_split(exs, 40, seed=3, fold=0)[1]
    with pytest.raises(UserError, match="holdout_fold must be between 0 and 4"):
        holdout_split(exs, 40, seed=3, fold=5)


def test_holdout_fold_from_a_recipe(bert_release: Path, tmp_path: Path) -> None:
    from pipeline.finetune.data import FinetuneData

    r = recipe(tmp_path, {"train": PANG_LEE, "format": "fasttext", "holdout": 40, "holdout_fold": 2}, {})
    assert r.data.holdout_fold == 2
    r.task.labels = ["neg", "pos"]
    dm = FinetuneData(r.data, r.task, load_tokenizer(bert_release), "bert", micro_batch_size=8, seed=0)
    dm.load()
    every = read_examples(PANG_LEE, r.data, "classification", "train")
    assert dm.examples["validation"] == holdout_split(every, 40, 0, 2)[1]
    assert len(dm.features["train"]) == 160 and len(dm.features["validation"]) == 40


def _pair_tsv(path: Path, sentences: list[tuple[str, str]], n: int, offset: int) -> Path:
    """GLUE MRPC layout: Quality, #1 ID, #2 ID, #1 String, #2 String (quotes are text, not quoting)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n")
        for i in range(n):
            (la, a), (lb, b) = sentences[offset + i], sentences[(offset + 7 * i + 3) % len(sentences)]
            f.write(f'{int(la == lb)}\t{i}\t{i + 1000}\t{a}\t"{b}\n')
    return path


def test_pair_classification_tsv(
    tmp_path: Path, bert_release: Path, sentences: list[tuple[str, str]]
) -> None:
    train = _pair_tsv(tmp_path / "train.tsv", sentences, 48, 0)
    dev = _pair_tsv(tmp_path / "dev.tsv", sentences, 16, 100)
    data = {"train": str(train), "validation": str(dev), "text_column": "#1 String"}
    data.update(text_pair_column="#2 String", label_column="Quality")
    r = recipe(tmp_path / "run", data, {"type": "classification", "metric": "f1"})
    run = finetune(r, checkpoint=str(bert_release), progress=False)
    ev = json.loads((run / "eval.json").read_text())["validation"]
    assert set(ev) == {"accuracy", "f1", "mcc"}
    preds = jsonl(run / "predictions/validation.jsonl")
    assert len(preds) == 16 and preds[0]["text_pair"].startswith('"')  # TSV quotes are kept as text
    assert ev["accuracy"] == pytest.approx(sum(p["prediction"] == p["label"] for p in preds) / 16)


def test_pair_inputs_have_segments(bert_release: Path) -> None:
    tok = load_tokenizer(bert_release)
    sp = special_ids(tok, "bert")
    cfg = FinetuneDataConfig(train="x", max_seq_len=12)
    from pipeline.finetune.features import sentence_features

    ex = {
        "text": "a very long first sentence indeed here",
        "text_pair": "short one",
        "source": "s:1",
        "label": "1",
    }
    (f,) = sentence_features([ex], tok, "bert", "classification", ["0", "1"], cfg, True)
    ids, tt = f["input_ids"], f["token_type_ids"]
    assert len(ids) == 12 and ids[0] == sp["cls"] and ids[-1] == sp["sep"] and ids.count(sp["sep"]) == 2
    first_sep = ids.index(sp["sep"])
    assert tt == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
    b = tok.encode("short one", add_special_tokens=False).ids
    assert ids[first_sep + 1 : -1] == b  # longest-first truncation cut the long sentence only
    assert f["labels"] == 1


def test_regression_jsonl(tmp_path: Path, bert_release: Path, sentences: list[tuple[str, str]]) -> None:
    """STS-B style: a score per sentence pair (here: words in common, a real function of the text)."""

    def write(path: Path, rows: list[tuple[str, str]]) -> Path:
        with open(path, "w") as f:
            for a, b in rows:
                score = len(set(a.split()) & set(b.split())) / 5
                f.write(json.dumps({"sentence1": a, "sentence2": b, "score": score}) + "\n")
        return path

    texts = [s for _, s in sentences]
    train = write(tmp_path / "train.jsonl", list(zip(texts[:48], texts[1:49])))
    dev = write(tmp_path / "dev.jsonl", list(zip(texts[100:116], texts[101:117])))
    data = {"train": str(train), "validation": str(dev), "text_column": "sentence1"}
    data.update(text_pair_column="sentence2", label_column="score")
    run = finetune(
        recipe(tmp_path / "run", data, {"type": "regression"}), checkpoint=str(bert_release), progress=False
    )
    ev = json.loads((run / "eval.json").read_text())["validation"]
    assert set(ev) == {"pearson", "spearman", "mse"}
    preds = jsonl(run / "predictions/validation.jsonl")
    gold = torch.tensor([float(p["label"]) for p in preds])
    ours = torch.tensor([p["prediction"] for p in preds])
    assert ev["mse"] == pytest.approx(float(((ours - gold) ** 2).mean()), rel=1e-4)


def test_classification_metrics_by_hand() -> None:
    preds, gold = torch.tensor([1, 1, 0, 0, 1, 0]), torch.tensor([1, 0, 0, 0, 1, 1])
    m = classification_scores(preds, gold, 2)
    tp, fp, fn, tn = 2, 1, 1, 2
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    mcc = (tp * tn - fp * fn) / ((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)) ** 0.5
    assert m["mcc"] == pytest.approx(mcc)
    r = regression_scores(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([2.0, 4.0, 6.0, 9.0]))
    assert r["spearman"] == pytest.approx(1.0) and 0.98 < r["pearson"] < 1.0
    assert r["mse"] == pytest.approx((1 + 4 + 9 + 25) / 4)


# ---------------------------------------------------------------------------------------------------- NER


def test_first_subword_alignment() -> None:
    # words: [EU, rejects, German]; tokens: [CLS] EU re ##jects German [SEP]
    word_ids = [None, 0, 1, 1, 2, None]
    assert align_labels(word_ids, [3, 0, 7]) == [-100, 3, 0, -100, 7, -100]
    assert word_predictions([9, 3, 0, 5, 7, 9], [-100, 3, 0, -100, 7, -100], 4, outside=0) == [3, 0, 7, 0]


def test_entity_f1_by_hand() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"]]  # one of two entities right, one wrong type
    m = entity_scores(gold, pred)
    assert m["entity_precision"] == 0.5 and m["entity_recall"] == 0.5 and m["entity_f1"] == 0.5
    assert m["token_accuracy"] == 0.75


def test_ner_conll_end_to_end(tmp_path: Path, bert_release: Path) -> None:
    path = tmp_path / "eng.train"
    path.write_text(CONLL)
    sents = read_conll(path)
    assert len(sents) == 5 and sents[0]["words"][:2] == ["EU", "rejects"] and sents[0]["tags"][0] == "B-ORG"
    data = {"train": str(path), "validation": str(path), "format": "conll"}
    r = recipe(tmp_path / "run", data, {"type": "token_classification", "epochs": 2})
    run = finetune(r, checkpoint=str(bert_release), progress=False)
    ev = json.loads((run / "eval.json").read_text())["validation"]
    assert {"entity_f1", "entity_precision", "entity_recall", "token_accuracy"} <= set(ev)
    preds = jsonl(run / "predictions/validation.jsonl")
    assert [len(p["prediction"]) for p in preds] == [len(s["words"]) for s in sents]
    _, _, task = load_task_release(run / "release")
    assert task["labels"] == sorted({t for s in sents for t in s["tags"]})


def test_malformed_conll_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.conll"
    path.write_text("EU NNP B-NP B-ORG\nrejects\n")
    with pytest.raises(UserError, match=r"bad.conll: line 2: expected"):
        read_conll(path)


# ---------------------------------------------------------------------------------------------------- SQuAD


def test_squad_normalisation_and_scores_by_hand() -> None:
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert exact_match("the Proudhon", "Proudhon") == 1.0
    # pred tokens [pierre, proudhon], gold [pierrejoseph, proudhon]: 1 common -> P = R = 1/2
    assert f1("Pierre Proudhon", "Pierre-Joseph Proudhon") == pytest.approx(0.5)
    assert f1("in 1840", "1840") == pytest.approx(2 * (1 / 2) * 1 / (1 / 2 + 1))
    s = squad_scores(["1840", "nothing"], [["in 1840", "1840"], ["a thing"]])
    assert s["exact_match"] == 0.5 and s["f1"] == pytest.approx(0.5)


def test_doc_stride_windows_cover_the_context() -> None:
    assert windows(10, 4, 2) == [(0, 4), (2, 4), (4, 4), (6, 4)]
    assert windows(3, 4, 2) == [(0, 3)]
    assert windows(9, 4, 4) == [(0, 4), (4, 4), (8, 1)]


def test_qa_windows_map_answers_back(tmp_path: Path, bert_release: Path) -> None:
    tok = load_tokenizer(bert_release)
    sp = special_ids(tok, "bert")
    exs = read_examples(
        str(write_squad(tmp_path / "dev.json")), FinetuneDataConfig(train="x"), "qa", "validation"
    )
    feats = qa_features(exs, tok, sp, max_seq_len=32, doc_stride=8, max_query_len=12)
    assert len(feats) > len(exs)  # long contexts were split into windows
    for ex_i, ex in enumerate(exs):
        mine = [f for f in feats if f.example == ex_i]
        hits = [f for f in mine if f.start_position > 0]
        assert hits, ex["id"]  # some window holds the answer
        for f in hits:
            s, e = f.start_position - f.context_offset, f.end_position - f.context_offset
            text = ex["context"][f.offsets[s][0] : f.offsets[e][1]]
            assert normalize_answer(text) == normalize_answer(ex["answers"][0]["text"])
        # logits that point exactly at the labelled span decode to the gold answer
        starts = [[-10.0] * len(f.input_ids) for f in mine]
        ends = [[-10.0] * len(f.input_ids) for f in mine]
        k = mine.index(hits[0])
        starts[k][hits[0].start_position] = ends[k][hits[0].end_position] = 10.0
        (ans,) = best_answers([ex], [*[_reindex(f) for f in mine]], starts, ends)
        assert exact_match(ans, ex["answers"][0]["text"]) == 1.0


def _reindex(f: Any) -> Any:
    import dataclasses

    return dataclasses.replace(f, example=0)


def test_squad_end_to_end(tmp_path: Path, bert_release: Path) -> None:
    path = write_squad(tmp_path / "train-v1.1.json")
    data = {"train": str(path), "validation": str(path), "max_seq_len": 40, "doc_stride": 16}
    run = finetune(
        recipe(tmp_path / "run", data, {"type": "qa"}), checkpoint=str(bert_release), progress=False
    )
    ev = json.loads((run / "eval.json").read_text())["validation"]
    preds = jsonl(run / "predictions/validation.jsonl")
    assert [p["id"] for p in preds] == ["q1", "q2", "q3"]
    expect = squad_scores([p["prediction"] for p in preds], [p["answers"] for p in preds])
    assert ev == pytest.approx(expect)


# ---------------------------------------------------------------------------------------------------- GPT


def test_gpt_classification_and_lm(tmp_path: Path, gpt_release: Path, lee_corpus: Path) -> None:
    data = {"train": PANG_LEE, "format": "fasttext", "holdout": 40}
    run = finetune(
        recipe(tmp_path / "cls", data, {"type": "classification", "epochs": 1}),
        checkpoint=str(gpt_release),
        progress=False,
    )
    assert "accuracy" in json.loads((run / "eval.json").read_text())["validation"]

    text = tmp_path / "news.txt"  # real news documents, blank-line separated
    text.write_text("\n\n".join(lee_corpus.read_text(encoding="latin-1").splitlines()[:6]))
    data = {"train": str(text), "validation": str(text), "max_seq_len": 32}
    run = finetune(
        recipe(tmp_path / "lm", data, {"type": "lm", "epochs": 1}),
        checkpoint=str(gpt_release),
        progress=False,
    )
    ev = json.loads((run / "eval.json").read_text())["validation"]
    assert ev["ppl"] == pytest.approx(math.exp(ev["loss"]), rel=1e-5) and ev["loss"] > 0

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "generate",
            "--checkpoint",
            str(run / "release"),
            "--prompt",
            "the film",
            "--max-new-tokens",
            "8",
            "--seed",
            "3",
            "--top-k",
            "20",
            "--top-p",
            "0.9",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "generate",
            "--checkpoint",
            str(run / "release"),
            "--prompt",
            "the film",
            "--max-new-tokens",
            "8",
            "--seed",
            "3",
            "--top-k",
            "20",
            "--top-p",
            "0.9",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.stdout.startswith("the film") and out.stdout == again.stdout  # seeded: reproducible


# ---------------------------------------------------------------------------------------------------- resume, errors


class StopAfterFirstValidation(L.Callback):
    """Ends training after the first epoch's validation, as a job preempted right then would."""

    def on_validation_end(self, trainer: L.Trainer, *args: Any) -> None:
        trainer.should_stop = True


def test_resume_at_an_epoch_boundary_matches_the_uninterrupted_run(
    tmp_path: Path, bert_release: Path
) -> None:
    data = {"train": PANG_LEE, "format": "fasttext", "holdout": 40}
    kw = {"checkpoint": {"every_n_steps": 10, "keep_last": 5}, "trainer": {"micro_batch_size": 16}}
    full = finetune(
        recipe(tmp_path / "full", data, {"epochs": 2}, **kw), checkpoint=str(bert_release), progress=False
    )
    part = tmp_path / "part"
    finetune(
        recipe(part, data, {"epochs": 2}, **kw),
        checkpoint=str(bert_release),
        progress=False,
        callbacks=[StopAfterFirstValidation()],
    )  # 160 / 16 = 10 steps = one epoch
    finetune(
        recipe(part, data, {"epochs": 2}, **kw), checkpoint=str(bert_release), progress=False, resume="auto"
    )

    def curve(run: Path) -> dict[int, float]:
        return {
            int(r["step"]): r["train/loss"] for r in read_metrics(run / "metrics.csv") if "train/loss" in r
        }

    a, b = curve(full), curve(part)
    assert sorted(a) == sorted(b) and len(a) == 20
    for step in a:
        assert a[step] == pytest.approx(b[step], abs=1e-5), step
    pa, pb = jsonl(full / "predictions/validation.jsonl"), jsonl(part / "predictions/validation.jsonl")
    assert [x for p in pa for x in p["probs"]] == pytest.approx([x for p in pb for x in p["probs"]], abs=1e-4)


def test_bad_inputs_name_file_and_line(tmp_path: Path, bert_release: Path) -> None:
    train = tmp_path / "train.tsv"
    train.write_text("sentence\tlabel\ngood film\t1\nbad film\t0\n")
    dev = tmp_path / "dev.tsv"
    dev.write_text("sentence\tlabel\nfine film\t1\nodd film\tmaybe\n")
    r = recipe(tmp_path / "run", {"train": str(train), "validation": str(dev)}, {})
    with pytest.raises(UserError, match=rf"{dev}:3: unknown label 'maybe'"):
        finetune(r, checkpoint=str(bert_release), progress=False)

    r = recipe(tmp_path / "run2", {"train": str(train), "validation": str(dev), "text_column": "text"}, {})
    with pytest.raises(UserError, match=rf"{train}:2: no column 'text' \(columns: sentence, label\)"):
        finetune(r, checkpoint=str(bert_release), progress=False)

    short = tmp_path / "short.tsv"
    short.write_text("sentence\tlabel\ngood film\t1\nno label here\n")
    with pytest.raises(UserError, match=rf"{short}: line 3: 1 fields, expected 2"):
        read_examples(str(short), FinetuneDataConfig(train=str(short)), "classification", "train")
    rows = read_examples(
        str(short), FinetuneDataConfig(train="x", skip_bad_rows=True), "classification", "train"
    )
    assert len(rows) == 1

    # through the CLI: one line on stderr, exit code 2
    path = tmp_path / "r.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "run_dir": str(tmp_path / "run3"),
                "data": {"train": str(train), "validation": str(dev)},
                "logging": {"wandb": False},
            }
        )
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "finetune",
            "--config",
            str(path),
            "--checkpoint",
            str(bert_release),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0
    assert f"{dev}:3: unknown label 'maybe'" in out.stderr


def test_glue_cola_layout_without_header(tmp_path: Path) -> None:
    path = tmp_path / "train.tsv"
    path.write_text("gj04\t1\t\tOur friends won't buy this analysis.\ngj04\t0\t*\tThey drank the pub.\n")
    cfg = FinetuneDataConfig(train=str(path), has_header=False, text_column="3", label_column="1")
    rows = read_examples(str(path), cfg, "classification", "train")
    assert [(r["text"], r["label"]) for r in rows] == [
        ("Our friends won't buy this analysis.", "1"),
        ("They drank the pub.", "0"),
    ]


def test_hf_save_to_disk_folder(tmp_path: Path, sentences: list[tuple[str, str]]) -> None:
    datasets = pytest.importorskip("datasets")
    feats = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    rows = {"text": [s for _, s in sentences[:10]], "label": [int(lab == "pos") for lab, _ in sentences[:10]]}
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=feats)})
    dd.save_to_disk(str(tmp_path / "ds"))
    cfg = FinetuneDataConfig(train=str(tmp_path / "ds"), text_column="text")
    got = read_examples(str(tmp_path / "ds"), cfg, "classification", "train")
    assert [(g["label"], g["text"]) for g in got] == sentences[:10]
    assert read_examples(f"{tmp_path / 'ds'}:train", cfg, "classification", "validation") == got


def test_glue_recipes_name_the_glue_layout() -> None:
    for name in ("sst2", "cola", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte"):
        r = load(FinetuneRecipe, ROOT / f"recipes/finetune/{name}.yaml")
        assert r.data.train.startswith("data/glue/") and r.data.train.endswith("train.tsv")
    mnli = load(FinetuneRecipe, ROOT / "recipes/finetune/mnli.yaml")
    assert mnli.data.validation == "data/glue/MNLI/dev_matched.tsv"


@pytest.mark.slow
def test_finetune_under_deepspeed_zero2(tmp_path: Path, bert_release: Path) -> None:
    """The production strategy: ZeRO-2 on a CPU process; the best (sharded) checkpoint is released."""
    data = {"train": PANG_LEE, "format": "fasttext", "holdout": 40}
    r = recipe(tmp_path / "run", data, {"epochs": 1}, trainer={"strategy": "deepspeed", "zero_stage": 2})
    run = finetune(r, checkpoint=str(bert_release), progress=False)
    assert (run / "best.ckpt").is_dir()  # a DeepSpeed checkpoint folder
    model, _, _ = load_task_release(run / "release")
    preds = jsonl(run / "predictions/validation.jsonl")
    ev = json.loads((run / "eval.json").read_text())["validation"]
    assert len(preds) == 40 and ev["accuracy"] == pytest.approx(
        sum(p["prediction"] == p["label"] for p in preds) / 40
    )
