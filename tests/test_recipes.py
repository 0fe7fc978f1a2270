"""Every YAML file under recipes/ parses into its config dataclass; the loader's errors name key and file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from data_prep.config import DataRecipe, TokenizerConfig
from data_prep.recipe import RecipeError, apply_overrides, field_docs, from_dict, load
from pipeline.compare import CompareRecipe
from pipeline.config import PretrainRecipe
from pipeline.finetune.config import FinetuneRecipe
from pipeline.models.config import ModelConfig
from pipeline.seq2seq_recipe import Seq2SeqRecipe

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))

# Which dataclass reads which folder of recipes/. A recipe in a folder not listed here fails the test.
RECIPE_CLASSES = {"data": DataRecipe, "models": ModelConfig, ".": PretrainRecipe, "finetune": FinetuneRecipe}
RECIPE_CLASSES.update(baselines=PretrainRecipe, seq2seq=Seq2SeqRecipe, compare=CompareRecipe)  # issue 6


def _recipe_class(path: Path) -> type:
    parts = path.relative_to(ROOT / "recipes").parts
    folder = parts[0] if len(parts) > 1 else "."
    assert folder in RECIPE_CLASSES, f"{path}: no config dataclass is registered for recipes/{folder}/"
    return RECIPE_CLASSES[folder]


def test_there_are_recipes() -> None:
    assert RECIPES, "recipes/ holds no YAML file"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_recipe_parses(path: Path) -> None:
    cfg = load(_recipe_class(path), path)
    assert dataclasses.is_dataclass(cfg)


def _all_dataclasses(cls: type, seen: set[type] | None = None) -> set[type]:
    import typing

    seen = seen if seen is not None else set()
    seen.add(cls)
    for tp in typing.get_type_hints(cls).values():
        for cand in (tp, *typing.get_args(tp)):
            if dataclasses.is_dataclass(cand) and cand not in seen:
                _all_dataclasses(cand, seen)
    return seen


@pytest.mark.parametrize("cls", sorted(set().union(*map(_all_dataclasses, RECIPE_CLASSES.values())), key=str))
def test_every_config_field_has_a_docstring(cls: type) -> None:
    docs = field_docs(cls)
    missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
    assert not missing, f"{cls.__name__}: fields without a docstring: {missing}"


def test_unknown_key_names_the_key_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("out_dir: x\ntokenizer:\n  kind: bpe\n  vocab_sise: 100\n")
    with pytest.raises(RecipeError) as err:
        load(DataRecipe, path)
    msg = str(err.value)
    assert str(path) in msg and "vocab_sise" in msg and "tokenizer" in msg


def test_wrong_type_and_bad_choice_are_errors(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="vocab_size: expected an integer"):
        from_dict(TokenizerConfig, {"vocab_size": "big"}, "r.yaml")
    with pytest.raises(RecipeError, match="'sentencepiece' is not one of"):
        from_dict(TokenizerConfig, {"kind": "sentencepiece"}, "r.yaml")
    with pytest.raises(RecipeError, match="missing required key 'out_dir'"):
        from_dict(DataRecipe, {}, "r.yaml")


def test_yaml_ints_become_floats_and_nested_sections_build() -> None:
    cfg = from_dict(
        DataRecipe, {"out_dir": "o", "shards": {"valid_fraction": 0}, "bert": {"masking": {}}}, "r"
    )
    assert cfg.shards.valid_fraction == 0.0 and isinstance(cfg.shards.valid_fraction, float)
    assert cfg.bert is not None and cfg.bert.masking.mlm_probability == 0.15
    assert cfg.gpt is None


def test_overrides_apply_before_checking(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("out_dir: x\n")
    cfg = load(DataRecipe, path, ["tokenizer.vocab_size=500", "bert.max_seq_len=64"])
    assert cfg.tokenizer.vocab_size == 500 and cfg.bert is not None and cfg.bert.max_seq_len == 64
    with pytest.raises(RecipeError, match="unknown key 'nope'"):
        load(DataRecipe, path, ["tokenizer.nope=1"])
    assert apply_overrides({}, ["a.b=[1, 2]"]) == {"a": {"b": [1, 2]}}


def test_invalid_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("out_dir: x\nsource: [unclosed\n")
    with pytest.raises(RecipeError, match=r"broken.yaml: line \d+ invalid YAML"):
        load(DataRecipe, path)
