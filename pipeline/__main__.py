"""``python -m pipeline``: pretrain, consolidate (and, as later issues land, finetune, export, submit).

A failing command prints one line, ``error: ...``, on stderr and exits non-zero (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys


def _cmd_pretrain(args: argparse.Namespace) -> None:
    from data_prep.recipe import load
    from pipeline.config import PretrainRecipe
    from pipeline.train import pretrain

    recipe = load(PretrainRecipe, args.config, args.overrides)
    run_dir = pretrain(recipe, resume=args.resume, progress=not args.quiet)
    print(f"run folder: {run_dir}  (metrics.csv, checkpoints/, recipe.yaml, wandb/)")


def _cmd_consolidate(args: argparse.Namespace) -> None:
    from pipeline.checkpoint import consolidate, latest_checkpoint

    ckpt = args.checkpoint
    if os.path.isdir(ckpt) and not os.path.exists(os.path.join(ckpt, "latest")):
        found = latest_checkpoint(ckpt)  # a run folder: take its newest checkpoint
        if found is None:
            from data_prep.errors import UserError

            raise UserError(f"{ckpt}: no checkpoints in this run folder")
        ckpt = str(found)
    out = consolidate(ckpt, args.out, tokenizer=args.tokenizer)
    print(f"release folder: {out}  (model.safetensors, config.json, tokenizer.json, recipe.yaml)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("pretrain", help="pretrain BERT or GPT from a recipe")
    p.add_argument("--config", required=True, metavar="RECIPE", help="recipes/<name>.yaml")
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="e.g. trainer.max_steps=100 optim.lr=3e-4"
    )
    p.add_argument(
        "--resume", metavar="PATH|auto", help="a checkpoint, or auto = the latest in the run folder"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser(
        "consolidate", help="turn a (ZeRO-sharded) checkpoint into a safetensors release folder"
    )
    p.add_argument(
        "checkpoint", metavar="CHECKPOINT", help="a checkpoint file/folder, or a run folder (newest)"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="release folder to write")
    p.add_argument(
        "--tokenizer", metavar="PATH", help="tokenizer.json (default: from the recipe's data folder)"
    )
    p.set_defaults(func=_cmd_consolidate)
    return parser


def main(argv: list[str] | None = None) -> int:
    from data_prep.cli import run_cli

    return run_cli(build_parser(), argv, override_commands=("pretrain",))


if __name__ == "__main__":
    sys.exit(main())
