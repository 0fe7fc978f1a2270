"""``python -m data_prep``: one subcommand per stage, plus ``run`` (a whole recipe) and ``inspect``.

Every stage writes a folder with a ``manifest.json``. A failing command prints one line, ``error: ...``, on
stderr and exits with status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import sys

from data_prep.cli_args import add_config_args, config_from_args
from data_prep.config import (
    BertInstanceConfig,
    DataRecipe,
    GptPackingConfig,
    ShardConfig,
    SourceConfig,
    TokenizerConfig,
)


def _cmd_extract(args: argparse.Namespace) -> None:
    from data_prep.extract import extract

    cfg = config_from_args(SourceConfig, args, inputs=args.input)
    m = extract(cfg, args.out, progress=not args.quiet)
    print(f"{m['counts']['documents']} documents, {m['counts']['sentences']} sentences -> {args.out}")


def _cmd_tokenizer(args: argparse.Namespace) -> None:
    from data_prep.extract import iter_texts
    from data_prep.tokenizer import save_tokenizer, tokenizer_info, train_tokenizer

    cfg = config_from_args(TokenizerConfig, args)
    tok = train_tokenizer(iter_texts(args.input, args.format, args.text_field), cfg)
    path = save_tokenizer(tok, args.out, cfg, inputs=list(args.input))
    info = tokenizer_info(path)
    print(
        f"{info['kind']} tokenizer, vocab {info['vocab_size']}, special ids {info['special_ids']} -> {path}"
    )


def _cmd_shards(args: argparse.Namespace) -> None:
    from data_prep.tokenize import tokenize_to_shards

    cfg = config_from_args(ShardConfig, args)
    m = tokenize_to_shards(args.documents, args.tokenizer, args.out, cfg, progress=not args.quiet)
    for split, s in m["splits"].items():
        print(f"{split}: {s['documents']} documents, {s['tokens']} tokens")


def _cmd_bert(args: argparse.Namespace) -> None:
    from data_prep.bert_data import build_bert_instances

    cfg = config_from_args(BertInstanceConfig, args)
    m = build_bert_instances(args.shards, args.out, cfg, progress=not args.quiet)
    for split, s in m["splits"].items():
        print(f"{split}: {s['instances']} instances")


def _cmd_gpt(args: argparse.Namespace) -> None:
    from data_prep.gpt_data import pack_gpt_windows

    cfg = config_from_args(GptPackingConfig, args)
    m = pack_gpt_windows(args.shards, args.out, cfg, progress=not args.quiet)
    for split, s in m["splits"].items():
        print(f"{split}: {s['windows']} windows of {cfg.seq_len} tokens")


def _cmd_run(args: argparse.Namespace) -> None:
    from data_prep.recipe import load
    from data_prep.run import run_recipe

    recipe = load(DataRecipe, args.recipe, args.overrides)
    folders = run_recipe(recipe, force=args.force, progress=not args.quiet)
    print("done:")
    for stage, folder in folders.items():
        print(f"  {stage:10s} {folder}")


def _cmd_inspect(args: argparse.Namespace) -> None:
    from data_prep.inspect import inspect

    inspect(
        args.dir,
        n=args.n,
        seed=args.seed,
        split=args.split,
        epoch=args.epoch,
        as_json=args.json,
        tokenizer=args.tokenizer,
        stream=sys.stdout,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_prep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        return p

    p = add("extract", "read raw sources, clean them and split documents into sentences")
    p.add_argument(
        "--input", nargs="+", required=True, metavar="PATH", help="files or folders (or pkg:NAME/path)"
    )
    p.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (documents.jsonl + manifest.json)"
    )
    add_config_args(p, SourceConfig, skip=("inputs",))
    p.set_defaults(func=_cmd_extract)

    p = add("tokenizer", "train a WordPiece (BERT) or byte-level BPE (GPT) tokenizer")
    p.add_argument(
        "--input", nargs="+", required=True, metavar="PATH", help="raw sources or an extract folder"
    )
    p.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (tokenizer.json + manifest.json)"
    )
    p.add_argument("--format", default="auto", choices=["auto", "text", "jsonl", "wiki", "hf"])
    p.add_argument("--text-field", default="text", help="JSONL / datasets field holding the text")
    add_config_args(p, TokenizerConfig, skip=("path",))
    p.set_defaults(func=_cmd_tokenizer)

    p = add("shards", "tokenize documents into memory-mapped shards with a train/validation split")
    p.add_argument("--documents", required=True, metavar="DIR", help="an extract output folder")
    p.add_argument("--tokenizer", required=True, metavar="PATH", help="tokenizer.json or its folder")
    p.add_argument("--out", required=True, metavar="DIR")
    add_config_args(p, ShardConfig)
    p.set_defaults(func=_cmd_shards)

    p = add("bert", "build BERT [CLS] A [SEP] B [SEP] instances (optionally masked statically)")
    p.add_argument("--shards", required=True, metavar="DIR", help="a shards output folder (WordPiece)")
    p.add_argument("--out", required=True, metavar="DIR")
    add_config_args(p, BertInstanceConfig)
    p.set_defaults(func=_cmd_bert)

    p = add("gpt", "pack GPT windows: documents joined by end-of-text, fixed length, no padding")
    p.add_argument("--shards", required=True, metavar="DIR", help="a shards output folder (byte-level BPE)")
    p.add_argument("--out", required=True, metavar="DIR")
    add_config_args(p, GptPackingConfig)
    p.set_defaults(func=_cmd_gpt)

    p = add("run", "run a whole data recipe (recipes/data/*.yaml); stages already up to date are skipped")
    p.add_argument("recipe", metavar="RECIPE", help="YAML data recipe")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. tokenizer.vocab_size=8000")
    p.add_argument("--force", action="store_true", help="re-run every stage")
    p.set_defaults(func=_cmd_run)

    p = add("inspect", "show samples exactly as the training loader yields them")
    p.add_argument("dir", metavar="DIR", help="a bert or gpt output folder")
    p.add_argument("--n", type=int, default=5, help="number of samples (default: 5)")
    p.add_argument("--seed", type=int, default=0, help="which samples, and the dynamic-masking seed")
    p.add_argument("--split", default="train", choices=["train", "valid"])
    p.add_argument("--epoch", type=int, default=0, help="epoch whose dynamic masks are shown")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--tokenizer", metavar="PATH", help="check the data was built with this tokenizer")
    p.set_defaults(func=_cmd_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    from data_prep.cli import run_cli

    return run_cli(build_parser(), argv, override_commands=("run",))


if __name__ == "__main__":
    sys.exit(main())
