"""Tiny releases and small real task files for the fine-tuning and export tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from data_prep.config import TokenizerConfig
from data_prep.recipe import from_dict
from data_prep.tokenizer import train_tokenizer
from pipeline.checkpoint import write_release
from pipeline.finetune.config import FinetuneRecipe
from pipeline.models import build_model, load_model_config

TINY = {
    "hidden_size": 32,
    "num_layers": 1,
    "num_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}


def pang_lee(gensim_data: Path) -> list[tuple[str, str]]:
    """(label, sentence) of the 200 polarity sentences (Windows-1252 text)."""
    rows = []
    for line in (gensim_data / "pang_lee_polarity.cor").read_bytes().decode("cp1252").splitlines():
        tag, _, text = line.strip().partition(" ")
        rows.append((tag.removeprefix("__label__"), text.strip()))
    return rows


def make_release(out: Path, arch: str, texts: list[str], seed: int = 0) -> Path:
    """A release folder: a tokenizer trained on ``texts`` and a tiny model with random weights."""
    kind = "wordpiece" if arch == "bert" else "bpe"
    tok = train_tokenizer(texts, TokenizerConfig(kind=kind, vocab_size=600 if arch == "bert" else 400))
    out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(out.parent / "tokenizer.json"))
    cfg = load_model_config(f"{arch}-tiny", **{**TINY, "vocab_size": tok.get_vocab_size()})
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():  # weights well above init scale, so a wrong mapping would show in parity tests
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return write_release(
        model, cfg, out, tokenizer=out.parent / "tokenizer.json", recipe={"model": f"{arch}-tiny"}
    )


def recipe(run_dir: Path, data: dict[str, Any], task: dict[str, Any], **extra: Any) -> FinetuneRecipe:
    base: dict[str, Any] = {
        "run_dir": str(run_dir),
        "data": {"max_seq_len": 48, **data},
        "task": {"epochs": 2, **task},
        "optim": {"lr": 2e-3, "warmup_steps": 0},
        "trainer": {"global_batch_size": 16, "micro_batch_size": 16, "log_every_n_steps": 1},
        "logging": {"wandb": False},
    }
    for key, value in extra.items():
        base.setdefault(key, {}).update(value) if isinstance(value, dict) else base.__setitem__(key, value)
    return from_dict(FinetuneRecipe, base, "test")


# Real CoNLL-2003 sentences (the first ones of eng.train), in the original four-column format.
CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
to TO B-VP O
boycott VB I-VP O
British JJ B-NP B-MISC
lamb NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O

The DT B-NP O
European NNP I-NP B-ORG
Commission NNP I-NP I-ORG
said VBD B-VP O
on IN B-PP O
Thursday NNP B-NP O
it PRP B-NP O
disagreed VBD B-VP O
with IN B-PP O
German JJ B-NP B-MISC
advice NN I-NP O
to TO B-PP O
consumers NNS B-NP O
to TO B-VP O
shun VB I-VP O
British JJ B-NP B-MISC
lamb NN I-NP O
. . O O

Germany NNP B-NP B-LOC
's POS B-NP O
representative NN I-NP O
to TO B-PP O
the DT B-NP O
European NNP I-NP B-ORG
Union NNP I-NP I-ORG
's POS B-NP O
veterinary JJ I-NP O
committee NN I-NP O
Werner NNP I-NP B-PER
Zwingmann NNP I-NP I-PER
said VBD B-VP O
on IN B-PP O
Wednesday NNP B-NP O
. . O O
"""

# SQuAD v1.1 layout; contexts are sentences of Wikipedia's "Anarchism" and "Autism" articles.
SQUAD = {
    "version": "1.1",
    "data": [
        {
            "title": "Anarchism",
            "paragraphs": [
                {
                    "context": "Anarchism is a political philosophy that advocates self-governed societies "
                    "based on voluntary institutions. These are often described as stateless societies, "
                    "although several authors have defined them more specifically as institutions based on "
                    "non-hierarchical free associations. The term was first used by Pierre-Joseph Proudhon "
                    "in 1840.",
                    "qas": [
                        {
                            "id": "q1",
                            "question": "What does anarchism advocate?",
                            "answers": [{"text": "self-governed societies", "answer_start": 51}],
                        },
                        {
                            "id": "q2",
                            "question": "Who first used the term?",
                            "answers": [{"text": "Pierre-Joseph Proudhon", "answer_start": 307}],
                        },
                    ],
                }
            ],
        },
        {
            "title": "Autism",
            "paragraphs": [
                {
                    "context": "Autism is a neurodevelopmental disorder characterized by impaired social "
                    "interaction, verbal and non-verbal communication, and restricted and repetitive "
                    "behavior. Parents usually notice signs in the first two years of their child's life.",
                    "qas": [
                        {
                            "id": "q3",
                            "question": "When do parents usually notice signs?",
                            "answers": [{"text": "in the first two years", "answer_start": 192}],
                        }
                    ],
                }
            ],
        },
    ],
}


def write_squad(path: Path) -> Path:
    for art in SQUAD["data"]:
        for p in art["paragraphs"]:
            for qa in p["qas"]:
                a = qa["answers"][0]
                assert p["context"][a["answer_start"] :].startswith(a["text"]), a
    path.write_text(json.dumps(SQUAD))
    return path
