"""Does pretraining help? Fine-tuned demo-pretrained tiny BERT vs the same architecture from scratch.

The task is the bundled sentiment demo (``recipes/finetune/demo-sentiment.yaml``: 200 Pang & Lee polarity
sentences, a stratified 160 train / 40 validation split, 10 epochs). For every seed the split
(``data.holdout_seed``) and the training seed (``trainer.seed``) change together, so the mean is over different
splits as well as initialisations. Pretraining budgets are checkpoints of pretraining runs (``NAME=RUN:STEP``,
e.g. ``demo=runs/demo/bert-tiny:200``); the scratch baseline is the same model config and tokenizer with
random weights. Results are cached in ``OUT/results.jsonl`` (re-runs only add what is missing); the script prints
a table and one JSON line.

    python benchmarks/finetune_vs_scratch.py --budget demo=runs/demo/bert-tiny:200 \\
        --budget 1000=runs/bench/ft-pretrain-2000:1000 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _release(run: Path, step: int, out: Path) -> Path:
    from pipeline.checkpoint import consolidate

    ckpt = run / "checkpoints" / f"step-{step:07d}.ckpt"
    if not ckpt.exists():
        raise SystemExit(f"{ckpt}: no such checkpoint (pretrain further, or pick another step)")
    if not (out / "model.safetensors").is_file():
        consolidate(ckpt, out)
    return out


def _finetune(start: str, run_dir: Path, seed: int, epochs: int, lr: float | None) -> dict[str, float]:
    from data_prep.recipe import load
    from pipeline.finetune.config import FinetuneRecipe
    from pipeline.finetune.run import finetune

    recipe = load(FinetuneRecipe, ROOT / "recipes/finetune/demo-sentiment.yaml")
    recipe.run_dir = str(run_dir)
    recipe.trainer.seed = seed
    recipe.data.holdout_seed = seed
    recipe.task.epochs = epochs
    if lr is not None:
        recipe.optim.lr = lr
    recipe.logging.wandb = False
    finetune(recipe, checkpoint=start, progress=False)
    return json.loads((run_dir / "eval.json").read_text())["validation"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", action="append", required=True, metavar="NAME=RUN:STEP")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=None, help="fine-tuning lr (default: the recipe's 1e-3)")
    p.add_argument("--out", type=Path, default=ROOT / "runs/bench/finetune_vs_scratch")
    args = p.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    args.out.mkdir(parents=True, exist_ok=True)
    cache_path = args.out / "results.jsonl"
    cache = {}
    if cache_path.is_file():
        for line in cache_path.read_text().splitlines():
            r = json.loads(line)
            cache[(r["start"], r["seed"])] = r
    starts: dict[str, str] = {}
    scratch_from = None
    for spec in args.budget:
        name, _, rest = spec.partition("=")
        run, _, step = rest.rpartition(":")
        release = _release(Path(run), int(step), args.out / "releases" / name)
        starts[f"pretrained@{name}"] = str(release)
        scratch_from = scratch_from or release
    starts["scratch"] = f"scratch:{scratch_from}"
    for label, start in starts.items():
        for seed in args.seeds:
            if (label, seed) in cache:
                continue
            t0 = time.perf_counter()
            run_dir = args.out / "runs" / f"{label.replace('@', '-')}-seed{seed}"
            m = _finetune(start, run_dir, seed, args.epochs, args.lr)
            row = {"start": label, "seed": seed, **m, "seconds": round(time.perf_counter() - t0, 1)}
            cache[(label, seed)] = row
            with open(cache_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{label:22s} seed {seed}: accuracy {m['accuracy']:.3f}", flush=True)
    summary = {}
    print(f"\n{'start':24s} {'accuracy (mean ± sd)':>22s} {'F1':>7s}  per seed")
    for label in starts:
        accs = [cache[(label, s)]["accuracy"] for s in args.seeds]
        f1s = [cache[(label, s)]["f1"] for s in args.seeds]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        summary[label] = {"accuracy": statistics.mean(accs), "accuracy_sd": sd, "f1": statistics.mean(f1s)}
        per = " ".join(f"{a:.3f}" for a in accs)
        print(f"{label:24s} {statistics.mean(accs):>14.3f} ± {sd:.3f} {statistics.mean(f1s):7.3f}  {per}")
    print(
        json.dumps(
            {"benchmark": "finetune_vs_scratch", "seeds": args.seeds, "epochs": args.epochs, **summary}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
