"""``make demo``: the main job, end to end on the CPU, on the real Wikipedia slice that the gensim wheel ships.

Today it prepares BERT and GPT data (WordPiece + instances, byte-level BPE + windows) and shows samples exactly
as the training loader will see them. Everything goes under ``runs/demo/``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from data_prep.config import DataRecipe
from data_prep.errors import UserError
from data_prep.inspect import inspect
from data_prep.recipe import load
from data_prep.run import run_recipe

ROOT = Path(__file__).resolve().parent.parent
RECIPES = {"bert": ROOT / "recipes/data/demo-bert.yaml", "gpt": ROOT / "recipes/data/demo-gpt.yaml"}


def _banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def run_demo(out_root: Path, samples: int = 2, force: bool = False) -> dict[str, dict[str, Path]]:
    """Prepare the demo data under ``out_root`` and print a few samples of each kind."""
    folders: dict[str, dict[str, Path]] = {}
    for kind, recipe_path in RECIPES.items():
        recipe = load(DataRecipe, recipe_path)
        recipe.out_dir = str(out_root / "data" / kind)
        _banner(f"data prep ({kind}): {recipe_path.relative_to(ROOT)}")
        t0 = time.perf_counter()
        folders[kind] = run_recipe(recipe, force=force)
        print(f"[{kind}] data ready in {time.perf_counter() - t0:.1f}s")
        _banner(f"python -m data_prep inspect {folders[kind][kind]} --n {samples}")
        inspect(folders[kind][kind], n=samples, seed=0, stream=sys.stdout)
    return folders


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", default=str(ROOT / "runs" / "demo"), help="output folder (default: runs/demo)"
    )
    parser.add_argument("--samples", type=int, default=2, help="samples to show per dataset")
    parser.add_argument("--force", action="store_true", help="re-run stages that are up to date")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t0 = time.perf_counter()
    try:
        folders = run_demo(Path(args.out), samples=args.samples, force=args.force)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _banner(f"demo finished in {time.perf_counter() - t0:.0f}s; everything is under {args.out}")
    for kind, stages in folders.items():
        for stage, folder in stages.items():
            print(f"  {kind:4s} {stage:10s} {folder}  (manifest.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
