"""Does pretraining help? Fine-tuned pretrained tiny BERT vs the same architecture from scratch.

The task is the bundled sentiment demo (``recipes/finetune/demo-sentiment.yaml``: 200 Pang & Lee polarity
sentences). Each seed runs stratified k-fold cross-validation (``data.holdout_fold``, default 5 folds of 40, the
demo's own split size), so every seed scores all 200 sentences once, and the pretrained model and the scratch
baseline see exactly the same splits and training seed (a paired comparison). Two scores per run:

* **last**: the model after the final epoch (a fixed budget; no choice is made on the scored sentences);
* **best**: the best epoch on the held-out fold (what ``finetune`` releases; optimistic, since the epoch is
  picked on the sentences it is scored on).

Pretraining budgets are checkpoints of pretraining runs (``NAME=RUN:STEP``, e.g. ``demo=runs/demo/bert-tiny:200``);
the scratch baseline is the same model config and tokenizer with random weights. The difference
pretrained - scratch is reported per seed with its mean and a 95% t-interval over seeds. Results are cached in
``OUT/results.jsonl`` (re-runs only add what is missing); the script prints a table and one JSON line.

    python benchmarks/finetune_vs_scratch.py --budget demo=runs/demo/bert-tiny:200 --seeds 0 1 2
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

HOLDOUT = 40  # the demo recipe's validation size: 5 folds of the 200 sentences


def _release(run: Path, step: int, out: Path) -> Path:
    from pipeline.checkpoint import consolidate

    ckpt = run / "checkpoints" / f"step-{step:07d}.ckpt"
    if not ckpt.exists():
        raise SystemExit(f"{ckpt}: no such checkpoint (pretrain further, or pick another step)")
    if not (out / "model.safetensors").is_file():
        consolidate(ckpt, out)
    return out


def _finetune(start: str, run_dir: Path, seed: int, fold: int, epochs: int, lr: float | None) -> dict:
    from data_prep.recipe import load
    from pipeline.callbacks import read_metrics
    from pipeline.finetune.config import FinetuneRecipe
    from pipeline.finetune.run import finetune

    recipe = load(FinetuneRecipe, ROOT / "recipes/finetune/demo-sentiment.yaml")
    recipe.run_dir = str(run_dir)
    recipe.trainer.seed = seed
    recipe.data.holdout = HOLDOUT
    recipe.data.holdout_seed = seed
    recipe.data.holdout_fold = fold
    recipe.task.epochs = epochs
    if lr is not None:
        recipe.optim.lr = lr
    recipe.logging.wandb = False
    recipe.checkpoint.keep_last = 1
    finetune(recipe, checkpoint=start, progress=False)
    accs = [r["val/accuracy"] for r in read_metrics(run_dir / "metrics.csv") if "val/accuracy" in r]
    if len(accs) != epochs:
        raise SystemExit(f"{run_dir}/metrics.csv: expected {epochs} validation rows, found {len(accs)}")
    return {"last": accs[-1], "best": max(accs), "curve": [round(a, 4) for a in accs]}


def _tokenizer_hash(release: Path) -> str:
    import hashlib

    return hashlib.sha256((release / "tokenizer.json").read_bytes()).hexdigest()


def _bag_of_words(seeds: list[int], folds: int) -> list[float]:
    """Reference: binary bag-of-words logistic regression (scikit-learn) on the same folds, per seed."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    from data_prep.recipe import load
    from pipeline.finetune.config import FinetuneRecipe
    from pipeline.finetune.readers import holdout_split, read_examples

    cfg = load(FinetuneRecipe, ROOT / "recipes/finetune/demo-sentiment.yaml").data
    examples = read_examples(cfg.train, cfg, "classification", "train")
    out = []
    for seed in seeds:
        correct = total = 0
        for fold in range(folds):
            train, valid = holdout_split(examples, HOLDOUT, seed, fold)
            vec = CountVectorizer(binary=True).fit([e["text"] for e in train])
            clf = LogisticRegression(max_iter=2000).fit(
                vec.transform([e["text"] for e in train]), [e["label"] for e in train]
            )
            pred = clf.predict(vec.transform([e["text"] for e in valid]))
            correct += sum(p == e["label"] for p, e in zip(pred, valid, strict=True))
            total += len(valid)
        out.append(correct / total)
    return out


def _word_counts(documents: Path, words: list[str]) -> dict[str, int]:
    """How often each word occurs in a data-prep ``documents.jsonl`` (lowercased word tokens)."""
    import re
    from collections import Counter

    counts: Counter[str] = Counter()
    wanted = set(words)
    with open(documents, encoding="utf-8") as f:
        for line in f:
            text = " ".join(json.loads(line)["sentences"])
            counts.update(w for w in re.findall(r"[a-z'-]+", text.lower()) if w in wanted)
    return {w: counts[w] for w in words}


SENTIMENT_WORDS = [
    "boring",
    "dull",
    "tedious",
    "silly",
    "funny",
    "awful",
    "bad",
    "mess",
    "delightful",
    "brilliant",
    "wonderful",
    "masterpiece",
]


def _mean_ci(xs: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval."""
    from scipy.stats import t

    if len(xs) < 2:
        return statistics.mean(xs), float("nan")
    return statistics.mean(xs), t.ppf(0.975, len(xs) - 1) * statistics.stdev(xs) / len(xs) ** 0.5


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", action="append", required=True, metavar="NAME=RUN:STEP")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds per seed (200 / 40 = 5)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=None, help="fine-tuning lr (default: the recipe's)")
    p.add_argument("--out", type=Path, default=ROOT / "runs/bench/finetune_vs_scratch")
    p.add_argument(
        "--corpus",
        type=Path,
        action="append",
        default=[],
        metavar="DOCUMENTS_JSONL",
        help="also print how often a few review sentiment words occur in this pretraining corpus",
    )
    args = p.parse_args()
    for docs in args.corpus:
        print(f"{docs}: " + ", ".join(f"{w} {n}" for w, n in _word_counts(docs, SENTIMENT_WORDS).items()))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    args.out.mkdir(parents=True, exist_ok=True)
    cache_path = args.out / "results.jsonl"
    proto = {"epochs": args.epochs, "lr": args.lr, "folds": args.folds}
    cache: dict[tuple, dict] = {}
    if cache_path.is_file():
        for line in cache_path.read_text().splitlines():
            r = json.loads(line)
            if all(r.get(k) == v for k, v in proto.items()):
                cache[(r["start"], r["seed"], r["fold"])] = r
    starts: dict[str, str] = {}
    scratch_from = None
    for spec in args.budget:
        name, _, rest = spec.partition("=")
        run, _, step = rest.rpartition(":")
        release = _release(Path(run), int(step), args.out / "releases" / name)
        starts[f"pretrained@{name}"] = str(release)
        scratch_from = scratch_from or release
        if _tokenizer_hash(release) != _tokenizer_hash(scratch_from):
            raise SystemExit(
                f"{spec}: another tokenizer than the first budget's (one scratch baseline per run)"
            )
    starts["scratch"] = f"scratch:{scratch_from}"
    tag = f"e{args.epochs}-lr{args.lr or 'recipe'}"
    for seed in args.seeds:
        for label, start in starts.items():
            for fold in range(args.folds):
                if (label, seed, fold) in cache:
                    continue
                t0 = time.perf_counter()
                run_dir = args.out / "runs" / tag / f"{label.replace('@', '-')}-seed{seed}-fold{fold}"
                m = _finetune(start, run_dir, seed, fold, args.epochs, args.lr)
                row = {"start": label, "seed": seed, "fold": fold, **proto, **m}
                row["seconds"] = round(time.perf_counter() - t0, 1)
                cache[(label, seed, fold)] = row
                with open(cache_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
            accs = [cache[(label, seed, k)]["last"] for k in range(args.folds)]
            print(f"{label:22s} seed {seed}: last-epoch accuracy {statistics.mean(accs):.3f}", flush=True)

    def per_seed(label: str, key: str) -> list[float]:
        # Every fold holds out the same number of sentences, so the mean over folds is the accuracy on all.
        return [statistics.mean(cache[(label, s, k)][key] for k in range(args.folds)) for s in args.seeds]

    summary: dict[str, dict] = {}
    print(f"\n{args.folds}-fold CV x {len(args.seeds)} seeds, {args.epochs} epochs, lr {args.lr or 'recipe'}")
    print(f"{'start':24s} {'last epoch':>16s} {'best epoch':>16s}  {'last - scratch (95% CI)':>26s}")
    for label in starts:
        row: dict = {}
        for key in ("last", "best"):
            accs = per_seed(label, key)
            row[key] = statistics.mean(accs)
            row[f"{key}_sd"] = statistics.stdev(accs) if len(accs) > 1 else 0.0
            row[f"{key}_per_seed"] = [round(a, 4) for a in accs]
            if label != "scratch":
                diff = [a - b for a, b in zip(accs, per_seed("scratch", key), strict=True)]
                row[f"{key}_diff"], row[f"{key}_diff_ci"] = _mean_ci(diff)
        summary[label] = row
        gap = "" if label == "scratch" else f"{row['last_diff']:+.3f} ± {row['last_diff_ci']:.3f}"
        print(
            f"{label:24s} {row['last']:.3f} ± {row['last_sd']:.3f}   {row['best']:.3f} ± {row['best_sd']:.3f}"
            f"  {gap:>26s}"
        )
    bow = _bag_of_words(args.seeds, args.folds)
    summary["bag_of_words"] = {"last": statistics.mean(bow), "last_per_seed": [round(a, 4) for a in bow]}
    print(f"{'bag-of-words LR (ref.)':24s} {statistics.mean(bow):.3f}   (scikit-learn, same folds)")
    print(json.dumps({"benchmark": "finetune_vs_scratch", "seeds": args.seeds, **proto, **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
