"""``python -m pipeline``: pretrain, finetune, export, generate, consolidate, submit, compare, attention, seq2seq.

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


def _cmd_finetune(args: argparse.Namespace) -> None:
    from data_prep.recipe import load
    from pipeline.finetune.config import FinetuneRecipe
    from pipeline.finetune.run import finetune

    recipe = load(FinetuneRecipe, args.config, args.overrides)
    run_dir = finetune(recipe, checkpoint=args.checkpoint, resume=args.resume, progress=not args.quiet)
    print(f"run folder: {run_dir}  (eval.json, predictions/, release/, best.ckpt, metrics.csv)")


def _cmd_export(args: argparse.Namespace) -> None:
    from data_prep.errors import UserError
    from pipeline.export import export_hf, import_hf

    for given in (args.to_hf, args.from_hf):
        if given and given[0] != "hf":
            raise UserError(f"export: unknown format {given[0]!r} (only hf)")
    if args.to_hf and not args.from_hf and args.checkpoint:
        out = export_hf(args.checkpoint, args.to_hf[1])
        print(f"transformers folder: {out}  (config.json, model.safetensors, tokenizer.json)")
    elif args.from_hf and not args.to_hf and not args.checkpoint:
        _, src, out = args.from_hf
        print(f"release folder: {import_hf(src, out)}  (model.safetensors, config.json, tokenizer.json)")
    else:
        raise UserError("use `export --checkpoint DIR --to hf OUT` or `export --from hf DIR OUT`")


def _cmd_generate(args: argparse.Namespace) -> None:
    from pipeline.generate import generate_text

    for text in generate_text(
        args.checkpoint,
        args.prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        num_samples=args.num_samples,
    ):
        print(text)


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

    from pipeline.cli_baselines import add_commands as add_baseline_commands

    add_baseline_commands(sub)  # seq2seq, compare, attention

    p = sub.add_parser("finetune", help="fine-tune a pretrained (or transformers) model on a task recipe")
    p.add_argument("--config", required=True, metavar="RECIPE", help="recipes/finetune/<task>.yaml")
    p.add_argument(
        "--checkpoint", metavar="DIR", help="release folder, transformers folder, run folder or checkpoint"
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. task.epochs=2 optim.lr=3e-5")
    p.add_argument(
        "--resume", metavar="PATH|auto", help="a checkpoint, or auto = the latest in the run folder"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser("export", help="write a transformers folder (--to hf), or import one (--from hf)")
    p.add_argument(
        "--checkpoint", metavar="DIR", help="release folder, fine-tuned release, run or checkpoint"
    )
    p.add_argument("--to", dest="to_hf", nargs=2, metavar=("hf", "OUT"), help="--to hf OUT")
    p.add_argument("--from", dest="from_hf", nargs=3, metavar=("hf", "DIR", "OUT"), help="--from hf DIR OUT")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("generate", help="sample text from a GPT release")
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="GPT release, LM fine-tune, run folder")
    p.add_argument("--prompt", default="", help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=50)
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--num-samples", type=int, default=1)
    p.set_defaults(func=_cmd_generate)

    from pipeline.submit_cli import add_parsers

    add_parsers(sub)  # submit, submit-data (Slurm)
    return parser


def main(argv: list[str] | None = None) -> int:
    from data_prep.cli import run_cli
    from pipeline.cli_baselines import OVERRIDE_COMMANDS as BASELINE_OVERRIDES

    overrides = ("pretrain", "finetune", "submit", "submit-data", *BASELINE_OVERRIDES)
    return run_cli(build_parser(), argv, override_commands=overrides)


if __name__ == "__main__":
    sys.exit(main())
