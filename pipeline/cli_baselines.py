"""The ``seq2seq``, ``compare`` and ``attention`` commands of ``python -m pipeline`` (added by ``add_commands``)."""

from __future__ import annotations

import argparse

OVERRIDE_COMMANDS = ("seq2seq", "compare")
"""Commands that take KEY=VALUE recipe overrides."""


def _cmd_seq2seq(args: argparse.Namespace) -> None:
    from data_prep.recipe import load
    from pipeline.seq2seq_recipe import Seq2SeqRecipe
    from pipeline.tasks.seq2seq import train_seq2seq

    recipe = load(Seq2SeqRecipe, args.config, args.overrides)
    run_dir = train_seq2seq(recipe, resume=args.resume, progress=not args.quiet)
    print(f"run folder: {run_dir}  (metrics.csv, checkpoints/, recipe.yaml, wandb/)")


def _cmd_compare(args: argparse.Namespace) -> None:
    from data_prep.recipe import load
    from pipeline.compare import CompareRecipe, compare

    recipe = load(CompareRecipe, args.config, args.overrides)
    out = compare(recipe, progress=not args.quiet, report_only=args.report_only)
    print(f"report: {out / 'report.md'}  (PNG plots and results.json beside it)")


def _cmd_attention(args: argparse.Namespace) -> None:
    from pipeline.attention import main

    head = None if args.head == "mean" else int(args.head)
    path = main(args.checkpoint, args.text, out=args.out, layer=args.layer, head=head, target=args.target)
    print(f"attention map: {path}")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the three commands on ``python -m pipeline``'s sub-parsers."""
    p = sub.add_parser("seq2seq", help="train a sequence-to-sequence model (denoising or parallel TSV)")
    p.add_argument("--config", required=True, metavar="RECIPE", help="recipes/seq2seq/<name>.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. model.attention=dot")
    p.add_argument(
        "--resume", metavar="PATH|auto", help="a checkpoint, or auto = the latest in the run folder"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_seq2seq)

    p = sub.add_parser("compare", help="train baselines on the same data and budget, write a report")
    p.add_argument("--config", required=True, metavar="RECIPE", help="recipes/compare/<name>.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. budget.tokens=100000")
    p.add_argument("--report-only", action="store_true", help="no training: report on the runs already there")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("attention", help="plot attention maps (BERT, GPT, seq2seq alignment) as a PNG")
    p.add_argument(
        "--checkpoint", required=True, metavar="PATH", help="release folder, run folder or checkpoint"
    )
    p.add_argument("--text", required=True, help="the input text (seq2seq: the source)")
    p.add_argument("--target", help="seq2seq: the target text (default: the model's greedy output)")
    p.add_argument("--layer", type=int, default=-1, help="layer (default: the last)")
    p.add_argument("--head", default="0", help="head number, or 'mean' (default: 0)")
    p.add_argument(
        "--out", default="attention.png", metavar="PNG", help="PNG to write (default: attention.png)"
    )
    p.set_defaults(func=_cmd_attention)
