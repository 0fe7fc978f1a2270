"""The command line as a user meets it: whole recipes, `inspect --json`, and one-line errors on bad input."""

from __future__ import annotations

import bz2
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "data_prep", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=300,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Non-zero exit, exactly one line on stderr starting with 'error:', no traceback."""
    assert proc.returncode != 0, proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def write_recipe(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory, lee_corpus: Path) -> Path:
    """120 real news documents (one per line in the source), as a blank-line separated text file."""
    docs = [ln.strip() for ln in lee_corpus.read_text(encoding="utf-8").splitlines() if ln.strip()][:120]
    path = tmp_path_factory.mktemp("corpus") / "news.txt"
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory: pytest.TempPathFactory, small_corpus: Path) -> Path:
    out = tmp_path_factory.mktemp("bert_run")
    recipe = write_recipe(
        out / "r.yaml",
        f"""
out_dir: {out / "data"}
source: {{inputs: ["{small_corpus}"]}}
tokenizer: {{kind: wordpiece, vocab_size: 1500, min_frequency: 1}}
shards: {{valid_fraction: 0.1, workers: 2, batch_documents: 16}}
bert: {{max_seq_len: 64, dupe_factor: 1}}
""",
    )
    proc = cli("run", str(recipe), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return out / "data"


def test_help_for_every_stage() -> None:
    for stage in ["extract", "tokenizer", "shards", "bert", "gpt", "inspect", "run"]:
        proc = cli(stage, "--help")
        assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr
    assert "--vocab-size" in cli("tokenizer", "--help").stdout
    assert "--masking-mlm-probability" in cli("bert", "--help").stdout


def test_run_writes_every_stage_with_a_manifest(bert_run: Path) -> None:
    for stage in ["documents", "tokenizer", "shards", "bert"]:
        manifest = json.loads((bert_run / stage / "manifest.json").read_text())
        assert manifest["format_version"] == 1
    bert = json.loads((bert_run / "bert" / "manifest.json").read_text())
    assert bert["splits"]["train"]["instances"] > 0
    assert bert["tokenizer"]["vocab_size"] == 1500


def test_rerun_skips_stages_that_are_up_to_date(bert_run: Path, tmp_path: Path) -> None:
    recipe = bert_run.parent / "r.yaml"
    proc = cli("run", str(recipe), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("up to date") == 4
    # Changing only the BERT section re-runs only that stage.
    proc = cli("run", str(recipe), "--quiet", "bert.short_seq_prob=0.2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("up to date") == 3 and "[bert] ->" in proc.stdout


def test_inspect_json_gives_the_loader_fields(bert_run: Path) -> None:
    proc = cli("inspect", str(bert_run / "bert"), "--n", "4", "--seed", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(records) == 4
    for r in records:
        n = len(r["input_ids"])
        assert n == 64
        for key in ["token_type_ids", "attention_mask", "labels", "tokens"]:
            assert len(r[key]) == n, key
        assert all(isinstance(x, int) for x in r["input_ids"] + r["labels"])
        assert r["next_sentence_label"] in (0, 1)
        length = sum(r["attention_mask"])
        assert r["tokens"][0] == "[CLS]" and r["tokens"][length - 1] == "[SEP]"
        assert r["tokens"].count("[SEP]") == 2
        masked = [i for i, lab in enumerate(r["labels"]) if lab != -100]
        assert masked and all(0 < i < length for i in masked)
    # The same seed shows the same samples with the same masks: what the loader yields for (epoch, index).
    again = cli("inspect", str(bert_run / "bert"), "--n", "4", "--seed", "3", "--json")
    assert again.stdout == proc.stdout


def test_inspect_text_shows_specials_segments_and_masks(bert_run: Path) -> None:
    proc = cli("inspect", str(bert_run / "bert"), "--n", "2")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "[CLS]" in out and "[SEP]" in out and "next_sentence_label" in out
    assert "token_type_ids" in out and "masked (" in out


def test_gpt_chain_and_inspect(tmp_path: Path, small_corpus: Path) -> None:
    recipe = write_recipe(
        tmp_path / "g.yaml",
        f"""
out_dir: {tmp_path / "data"}
source: {{inputs: ["{small_corpus}"]}}
tokenizer: {{kind: bpe, vocab_size: 600, min_frequency: 1}}
shards: {{valid_fraction: 0.1, workers: 1}}
gpt: {{seq_len: 32}}
""",
    )
    proc = cli("run", str(recipe), "--quiet")
    assert proc.returncode == 0, proc.stderr
    proc = cli("inspect", str(tmp_path / "data" / "gpt"), "--n", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    for line in proc.stdout.splitlines():
        r = json.loads(line)
        assert len(r["input_ids"]) == len(r["labels"]) == len(r["tokens"]) == 32
        assert r["labels"][:-1] == r["input_ids"][1:]


# ---- bad input: one clear line, never a traceback ----------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    proc = cli("extract", "--input", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o"))
    assert_one_line_error(proc, "nope.txt", "not found")


def test_empty_corpus(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    proc = cli("extract", "--input", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "o"))
    assert_one_line_error(proc, "empty.txt")


def test_truncated_bz2(tmp_path: Path, enwiki_dump: Path) -> None:
    data = enwiki_dump.read_bytes()
    cut = tmp_path / "cut.xml.bz2"
    cut.write_bytes(data[: len(data) // 3])
    proc = cli("extract", "--input", str(cut), "--out", str(tmp_path / "o"))
    assert_one_line_error(proc, "cut.xml.bz2")


def test_invalid_utf8_is_counted_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(b"A fine first document here.\n\nSecond \xff\xfe document, broken bytes.\n")
    proc = cli("extract", "--input", str(path), "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["skipped"]["invalid_utf8"]["count"] == 1
    assert manifest["skipped"]["invalid_utf8"]["examples"] == [f"{path}:3"]
    assert manifest["counts"]["documents"] == 2


def test_vocab_smaller_than_specials(tmp_path: Path, small_corpus: Path) -> None:
    proc = cli(
        "tokenizer", "--input", str(small_corpus), "--kind", "wordpiece", "--vocab-size", "3", "--out", "x"
    )
    assert_one_line_error(proc, "vocab")


def test_unknown_recipe_key(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "bad.yaml", "out_dir: x\nshards:\n  valid_fractoin: 0.1\n")
    proc = cli("run", str(recipe))
    assert_one_line_error(proc, "bad.yaml", "valid_fractoin")


def test_data_read_with_another_tokenizer(tmp_path: Path, bert_run: Path, small_corpus: Path) -> None:
    other = tmp_path / "other_tok"
    proc = cli(
        "tokenizer",
        "--input",
        str(small_corpus),
        "--kind",
        "wordpiece",
        "--vocab-size",
        "900",
        "--out",
        str(other),
    )
    assert proc.returncode == 0, proc.stderr
    proc = cli("inspect", str(bert_run / "bert"), "--tokenizer", str(other))
    assert_one_line_error(proc, "tokenizer")


def test_bz2_text_source_is_read(tmp_path: Path) -> None:
    path = tmp_path / "docs.txt.bz2"
    path.write_bytes(bz2.compress(b"One document. With two sentences.\n\nAnother one here.\n"))
    proc = cli("extract", "--input", str(path), "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["counts"]["documents"] == 2
