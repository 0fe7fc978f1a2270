"""Data-prep benchmark: our pipeline vs the anchor (Google's ``create_pretraining_data.py`` flow), same run.

Both sides get the same documents with the same sentence boundaries, the same WordPiece tokenizer and the
same settings (max_seq_len 128, short_seq_prob 0.1, masked_lm_prob 0.15, max_predictions_per_seq 20,
static masking, ``--dupe-factor``):

* **ours**: ``data_prep.tokenize.tokenize_to_shards`` (default workers: one per core) on a ``documents`` folder,
  then ``data_prep.bert_data.build_bert_instances(static_masking=True)``;
* **anchor**: ``benchmarks/google_create_pretraining_data.py`` (a pure-Python port of Google's script:
  everything in memory, one ``encode`` per line, instances as Python lists, a final shuffle) on the same
  documents written in Google's input format (one sentence per line, a blank line between documents).

Each side runs in its own child process (this script with ``--worker ours|anchor``); the parent samples the
resident memory of the child's whole process tree (our tokenizer pool included) every 0.2 s. The corpus is
real text from the gensim wheel (Lee news corpus, the text8-style ``head500`` and the articles of the enwiki
dump slice, extracted with ``data_prep.extract``) repeated up to the requested size, written once under
``--cache`` (default ``runs/bench/``) and reused.

    python benchmarks/data_prep.py                  # 100 MB and 1 GB for ours, the anchor on 20 MB (+100 MB if it fits)
    python benchmarks/data_prep.py --quick          # smoke check: 5 MB, scales 1 2, anchor on 2 MB (+5 MB)
    python benchmarks/data_prep.py --mb 100 --scales 1 10 --anchor-mb 20 --dupe-factor 5

Results are printed and written into ``BENCHMARKS.md`` (section ``## Data prep``; other sections are kept).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere: `python benchmarks/data_prep.py`
    sys.path.insert(0, str(REPO))

MB = 1_000_000
CORPUS_VERSION = 1  # bump when the corpus recipe changes, so cached corpora are rebuilt
SECTION = "## Data prep"
POLL_S = 0.2
SETTINGS = {
    "max_seq_len": 128,
    "short_seq_prob": 0.1,
    "masked_lm_prob": 0.15,
    "max_predictions_per_seq": 20,
    "vocab_size": 8000,
    "seed": 12345,
}
HEAD500_WORDS_PER_SENTENCE = 20
TOKENIZER_TRAIN_MB = 4


# --- corpus --------------------------------------------------------------------------------------------------


def _gensim_data() -> Path:
    import gensim

    return Path(gensim.__file__).parent / "test" / "test_data"


def _normalise(sentences: list[str]) -> list[str]:
    """Stripped, non-empty sentences; later ones get a single leading space (``"s1", " s2", ...``)."""
    out = [s.strip() for s in sentences]
    out = [s for s in out if s]
    return [s if i == 0 else " " + s for i, s in enumerate(out)]


def base_documents(cache: Path) -> list[dict[str, Any]]:
    """The unique documents the corpus repeats: Lee (one doc per line), head500 (pseudo-sentences), enwiki."""
    from data_prep.config import SourceConfig
    from data_prep.extract import extract, read_documents

    data = _gensim_data()
    docs: list[dict[str, Any]] = []
    extracted = [
        (
            "lee",
            SourceConfig(inputs=[str(data / "lee_background.cor")], format="text", one_doc_per_line=True),
        ),
        (
            "wiki",
            SourceConfig(
                inputs=[str(data / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")],
                format="wiki",
            ),
        ),
    ]
    for name, cfg in extracted:
        out = cache / "base" / name
        if not (out / "manifest.json").is_file():
            extract(cfg, out, progress=False)
        for d in read_documents(out):
            sents = _normalise(d["sentences"])
            if sents:
                docs.append({"source": d["source"], "sentences": sents})
    # head500: text8-style (lowercase, no punctuation), one document per line; cut into ~20-word sentences.
    with open(data / "head500.noblanks.cor", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            words = line.split()
            n = HEAD500_WORDS_PER_SENTENCE
            sents = _normalise([" ".join(words[i : i + n]) for i in range(0, len(words), n)])
            if sents:
                docs.append({"source": f"head500.noblanks.cor:{lineno}", "sentences": sents})
    return docs


def build_corpus(cache: Path, mb: float, docs: list[dict[str, Any]]) -> dict[str, Any]:
    """``cache/corpus_<mb>mb/``: ``google.txt`` (anchor input) and ``documents/`` (ours), the same documents.

    Documents are repeated in order until ``google.txt`` holds at least ``mb`` MB (whole documents only).
    """
    from data_prep.manifest import write_manifest

    folder = cache / f"corpus_{mb:g}mb"
    stamp = folder / "corpus.json"
    if stamp.is_file():
        info = json.loads(stamp.read_text())
        if info.get("version") == CORPUS_VERSION:
            return info
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "documents").mkdir(parents=True)
    target = int(mb * MB)
    size = n_docs = n_sents = rep = 0
    with (
        open(folder / "google.txt", "w", encoding="utf-8", newline="\n") as g,
        open(folder / "documents" / "documents.jsonl", "w", encoding="utf-8", newline="\n") as j,
    ):
        while size < target:
            for d in docs:
                if size >= target:
                    break
                block = "\n".join(s.strip() for s in d["sentences"]) + "\n\n"
                g.write(block)
                size += len(block.encode("utf-8"))
                j.write(json.dumps({"source": f"{d['source']}@{rep}", "sentences": d["sentences"]}))
                j.write("\n")
                n_docs += 1
                n_sents += len(d["sentences"])
            rep += 1
    counts = {"documents": n_docs, "sentences": n_sents}
    write_manifest(folder / "documents", "documents", counts=counts, inputs=[], note="benchmark corpus")
    info = {
        "version": CORPUS_VERSION,
        "mb": size / MB,
        "bytes": size,
        "documents": n_docs,
        "sentences": n_sents,
        "repeats": rep,
        "google_txt": str(folder / "google.txt"),
        "documents_dir": str(folder / "documents"),
        "jsonl_bytes": (folder / "documents" / "documents.jsonl").stat().st_size,
    }
    stamp.write_text(json.dumps(info, indent=2))
    return info


def build_tokenizer(cache: Path, docs: list[dict[str, Any]]) -> Path:
    """One lowercase WordPiece tokenizer (vocab 8000), trained once on the first few MB of the unique text."""
    from data_prep.config import TokenizerConfig
    from data_prep.tokenizer import save_tokenizer, train_tokenizer

    out = cache / "tokenizer"
    path = out / "tokenizer.json"
    if path.is_file():
        return path
    cfg = TokenizerConfig(kind="wordpiece", vocab_size=SETTINGS["vocab_size"], lowercase=True)

    def texts():
        seen = 0
        for d in docs:
            text = "".join(d["sentences"])
            yield text
            seen += len(text)
            if seen >= TOKENIZER_TRAIN_MB * MB:
                return

    tok = train_tokenizer(texts(), cfg)
    return save_tokenizer(tok, out, cfg, inputs=None)


# --- workers (run in a child process each) -------------------------------------------------------------------


def _cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _self_peak_mb() -> dict[str, float]:
    """ru_maxrss (KiB on Linux) of this process and of its largest reaped child."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"self_maxrss_mb": me.ru_maxrss * 1024 / MB, "children_maxrss_mb": kids.ru_maxrss * 1024 / MB}


def worker_ours(a: argparse.Namespace) -> dict[str, Any]:
    from data_prep.bert_data import build_bert_instances
    from data_prep.config import BertInstanceConfig, MaskingConfig, ShardConfig
    from data_prep.tokenize import tokenize_to_shards

    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    shard_cfg = ShardConfig(valid_fraction=0.0)  # default workers: one per core
    bert_cfg = BertInstanceConfig(
        max_seq_len=SETTINGS["max_seq_len"],
        short_seq_prob=SETTINGS["short_seq_prob"],
        dupe_factor=a.dupe_factor,
        static_masking=True,
        masking=MaskingConfig(
            mlm_probability=SETTINGS["masked_lm_prob"],
            max_predictions_per_seq=SETTINGS["max_predictions_per_seq"],
        ),
        seed=SETTINGS["seed"],
    )
    t0 = time.perf_counter()
    shards = tokenize_to_shards(a.documents, a.tokenizer, out / "shards", shard_cfg, progress=False)
    t1 = time.perf_counter()
    bert = build_bert_instances(out / "shards", out / "bert", bert_cfg, progress=False)
    t2 = time.perf_counter()
    train = bert["splits"]["train"]
    return {
        "documents": shards["counts"]["documents"],
        "sentences": shards["counts"]["sentences"],
        "tokens": shards["counts"]["tokens"],
        "instances": sum(s["instances"] for s in bert["splits"].values()),
        "random_next": train.get("random_next"),
        "masked_predictions": train.get("masked_predictions"),
        "tokenize_s": t1 - t0,
        "instances_s": t2 - t1,
        "total_s": t2 - t0,
        "workers": shard_cfg.workers or os.cpu_count(),
        "output_bytes": sum(f.stat().st_size for f in out.rglob("*") if f.is_file()),
        "cpu_s": _cpu_seconds(),
        **_self_peak_mb(),
    }


def worker_anchor(a: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import google_create_pretraining_data as g

    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    result = g.run(
        [a.input],
        str(out / "instances.bin"),
        a.tokenizer,
        max_seq_length=SETTINGS["max_seq_len"],
        max_predictions_per_seq=SETTINGS["max_predictions_per_seq"],
        random_seed=SETTINGS["seed"],
        dupe_factor=a.dupe_factor,
        masked_lm_prob=SETTINGS["masked_lm_prob"],
        short_seq_prob=SETTINGS["short_seq_prob"],
    )
    # Same phase as ours' build_bert_instances: pairs + masking (+ the final shuffle) + writing to disk.
    result["create_s"] = result["instances_s"]
    result["instances_s"] = result["create_s"] + result["write_s"]
    result["output_bytes"] = (out / "instances.bin").stat().st_size
    result["cpu_s"] = _cpu_seconds()
    result.update(_self_peak_mb())
    return result


# --- parent: run a worker and sample its memory ----------------------------------------------------------------


def _tree_memory(proc: Any) -> tuple[int, int]:
    """(RSS, RSS minus file-backed pages) summed over ``proc`` and all its descendants."""
    import psutil

    rss = anon = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    for p in procs:
        try:
            m = p.memory_info()
        except psutil.Error:
            continue
        rss += m.rss
        anon += m.rss - getattr(m, "shared", 0)
    return rss, anon


def run_worker(side: str, args: list[str], result_file: Path, log_file: Path) -> dict[str, Any]:
    """Run ``--worker side`` in a child process; returns its result plus the sampled peak memory (MB)."""
    import psutil

    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        side,
        "--result",
        str(result_file),
        *args,
    ]
    result_file.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_file, "w") as log:
        start = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        proc = psutil.Process(child.pid)
        peak_rss = peak_anon = 0
        loads: list[float] = []
        while child.poll() is None:
            rss, anon = _tree_memory(proc)
            peak_rss, peak_anon = max(peak_rss, rss), max(peak_anon, anon)
            loads.append(os.getloadavg()[0])
            time.sleep(POLL_S)
        wall = time.perf_counter() - start
    if child.returncode != 0 or not result_file.is_file():
        tail = log_file.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{side} worker failed (exit {child.returncode}); log {log_file}:\n{tail}")
    result = json.loads(result_file.read_text())
    result.update(
        {
            "side": side,
            "peak_rss_mb": peak_rss / MB,
            "peak_anon_mb": peak_anon / MB,
            "process_wall_s": wall,
            "mean_load": sum(loads) / len(loads) if loads else os.getloadavg()[0],
        }
    )
    return result


# --- report ------------------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    import numpy
    import psutil
    import tokenizers

    import data_prep

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": psutil.virtual_memory().total / 1024**3,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "tokenizers": tokenizers.__version__,
        "numpy": numpy.__version__,
        "psutil": psutil.__version__,
        "data_prep": getattr(data_prep, "__version__", "?"),
        "commit": commit or "?",
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _fmt(x: float, digits: int = 1) -> str:
    return f"{x:,.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| side | corpus MB | tokenize MB/s | instances | instances/s | end-to-end s | peak RSS MB "
        "| peak anon RSS MB | CPU s | load |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['side']} | {_fmt(r['corpus_mb'])} | {_fmt(r['corpus_mb'] / r['tokenize_s'], 2)} "
            f"| {r['instances']:,} | {_fmt(r['instances'] / r['instances_s'], 0)} | {_fmt(r['total_s'])} "
            f"| {_fmt(r['peak_rss_mb'], 0)} | {_fmt(r['peak_anon_mb'], 0)} | {_fmt(r['cpu_s'])} | {r['mean_load']:.1f} |"
        )
    return "\n".join(lines)


def ratios(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Speed-ups at the largest corpus size both sides ran; ours' RSS growth from the smallest to largest size."""
    ours = {r["corpus_key"]: r for r in rows if r["side"] == "ours"}
    anchor = {r["corpus_key"]: r for r in rows if r["side"] == "anchor"}
    out: dict[str, Any] = {}
    common = sorted(set(ours) & set(anchor))
    if common:
        o, a = ours[common[-1]], anchor[common[-1]]
        same = True
    elif ours and anchor:
        # No common size: compare rates, ours at its smallest size vs the anchor at its largest.
        o, a = ours[min(ours)], anchor[max(anchor)]
        same = False
    else:
        o = a = None
    if o and a:
        out["compared"] = {"ours_mb": o["corpus_mb"], "anchor_mb": a["corpus_mb"], "same_corpus": same}
        out["tokenize_speedup"] = (o["corpus_mb"] / o["tokenize_s"]) / (a["corpus_mb"] / a["tokenize_s"])
        out["instances_speedup"] = (o["instances"] / o["instances_s"]) / (a["instances"] / a["instances_s"])
        out["end_to_end_speedup"] = (a["total_s"] / a["corpus_mb"]) / (o["total_s"] / o["corpus_mb"])
        out["rss_ratio_anchor_over_ours"] = a["peak_rss_mb"] / o["peak_rss_mb"]
    if len(ours) >= 2:
        lo, hi = ours[min(ours)], ours[max(ours)]
        out["ours_rss_growth"] = {
            "corpus_growth": hi["corpus_mb"] / lo["corpus_mb"],
            "peak_rss": hi["peak_rss_mb"] / lo["peak_rss_mb"],
            "peak_anon_rss": hi["peak_anon_mb"] / lo["peak_anon_mb"],
        }
    if anchor:
        out["anchor_rss_mb_per_corpus_mb"] = {
            f"{r['corpus_mb']:.1f}": r["peak_rss_mb"] / r["corpus_mb"] for r in anchor.values()
        }
    return out


def render(rows, rat, info, args, command, notes) -> str:
    lines = [
        SECTION,
        "",
        "Our data prep (`data_prep.tokenize.tokenize_to_shards` + `data_prep.bert_data.build_bert_instances`, static "
        "masking) against the anchor, `benchmarks/google_create_pretraining_data.py`: a pure-Python port of "
        "google-research/bert `create_pretraining_data.py` (all documents in memory as token strings, "
        "`dupe_factor` passes, masking per instance, a final `rng.shuffle(instances)`, ids written per "
        "instance), run in the same session on the same documents with the same tokenizer.",
        "",
        "Reproduce:",
        "",
        "```",
        command,
        "```",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gb']:.1f} GiB RAM, {info['os']}. "
        f"Date: {info['date']}. Commit: {info['commit']}.",
        f"Versions: Python {info['python']}, tokenizers {info['tokenizers']}, numpy {info['numpy']}, "
        f"psutil {info['psutil']}, data_prep {info['data_prep']}.",
        "",
        f"Settings (both sides): WordPiece vocab {SETTINGS['vocab_size']} lowercase (trained once on "
        f"{TOKENIZER_TRAIN_MB} MB of the corpus), max_seq_len {SETTINGS['max_seq_len']}, short_seq_prob "
        f"{SETTINGS['short_seq_prob']}, masked_lm_prob {SETTINGS['masked_lm_prob']}, max_predictions_per_seq "
        f"{SETTINGS['max_predictions_per_seq']}, **dupe_factor {args.dupe_factor}**, static masking, "
        "no validation split (valid_fraction 0).",
        "",
        "Corpus: the Lee news corpus, `head500.noblanks.cor` (text8-style, cut into 20-word pseudo-sentences) and "
        "the articles of the enwiki dump slice shipped in the gensim wheel (extracted with `data_prep.extract`), "
        "repeated up to the size; MB = 10^6 bytes of the anchor's input text (one sentence per line). Ours reads "
        "the same documents and sentences from a `documents/` folder (`documents.jsonl`).",
        "",
        table(rows),
        "",
        "Columns: *tokenize MB/s* = corpus MB / (reading + tokenizing: ours `tokenize_to_shards` with its default "
        "worker pool, the anchor's read-all-lines-into-memory phase); *instances/s* = instances / (pair building + "
        "static masking + writing to disk: ours `build_bert_instances`, the anchor's create-instances loop, final "
        "shuffle and writer); *end-to-end* = from the same input to instances on disk; *peak RSS* = the largest "
        "sum of RSS over the worker's process tree, sampled every 0.2 s; *peak anon RSS* = the same without "
        "file-backed pages (memory-mapped shards and libraries); *CPU s* = user + system time of the tree; *load* = mean 1-minute load average during the run (the machine "
        f"has {os.cpu_count()} cores; above that, other processes competed for the CPU).",
        "",
    ]
    if "tokenize_speedup" in rat:
        c = rat["compared"]
        where = (
            f"same {c['ours_mb']:.1f} MB corpus"
            if c["same_corpus"]
            else f"ours on {c['ours_mb']:.1f} MB vs the anchor on {c['anchor_mb']:.1f} MB (rates compared)"
        )
        lines += [
            f"Speed-up of ours over the anchor ({where}): tokenize **{rat['tokenize_speedup']:.1f}x**, "
            f"instances/s **{rat['instances_speedup']:.1f}x**, end-to-end (s per MB) "
            f"**{rat['end_to_end_speedup']:.1f}x**; anchor peak RSS / ours: "
            f"**{rat['rss_ratio_anchor_over_ours']:.1f}x**.",
            "",
        ]
    if "ours_rss_growth" in rat:
        g = rat["ours_rss_growth"]
        lines += [
            f"Ours, corpus {g['corpus_growth']:.1f}x larger: peak RSS {g['peak_rss']:.2f}x "
            f"(anon {g['peak_anon_rss']:.2f}x).",
            "",
        ]
    if "anchor_rss_mb_per_corpus_mb" in rat:
        per = ", ".join(
            f"{v:.0f} MB per corpus MB at {k} MB" for k, v in rat["anchor_rss_mb_per_corpus_mb"].items()
        )
        lines += [f"Anchor memory: {per}.", ""]
    lines += [f"- {n}" for n in notes]
    if notes:
        lines.append("")
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    """Replace the ``## Data prep`` section of ``path`` (up to the next ``## `` heading), or append it."""
    old = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n\n"
    pattern = re.compile(r"^## Data prep[^\n]*\n.*?(?=^## |\Z)", re.S | re.M)
    body = text.rstrip("\n") + "\n\n"
    new = (
        pattern.sub(lambda _m: body, old, count=1)
        if pattern.search(old)
        else old.rstrip("\n") + "\n\n" + body
    )
    path.write_text(new.rstrip("\n") + "\n", encoding="utf-8")


# --- main ----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=float, default=100.0, help="1x corpus size in MB (10^6 bytes of text)")
    p.add_argument("--scales", type=float, nargs="+", default=[1, 10], help="corpus sizes for ours, x --mb")
    p.add_argument(
        "--anchor-mb", type=float, nargs="+", default=[20.0], help="corpus sizes the anchor always runs on"
    )
    p.add_argument(
        "--anchor-max-gb",
        type=float,
        default=14.0,
        help="the anchor also runs on the 1x corpus when its projected peak RSS is below this (and free memory)",
    )
    p.add_argument("--dupe-factor", type=int, default=5, help="passes over the corpus (both sides)")
    p.add_argument(
        "--cache", default=str(REPO / "runs" / "bench"), help="folder for corpora, tokenizer, outputs"
    )
    p.add_argument("--output", default=str(REPO / "BENCHMARKS.md"), help="markdown file to update")
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    p.add_argument("--keep-outputs", action="store_true", help="keep the instance files written by each run")
    p.add_argument("--quick", action="store_true", help="smoke check: --mb 5 --scales 1 2 --anchor-mb 2")
    p.add_argument(
        "--from-results",
        metavar="JSON",
        help="re-render the section from a saved run (CACHE/data_prep_results.json) without running anything",
    )
    # internal: one side in a child process
    p.add_argument("--worker", choices=["ours", "anchor"], help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--documents", help=argparse.SUPPRESS)
    p.add_argument("--input", help=argparse.SUPPRESS)
    p.add_argument("--tokenizer", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.quick:
        a.mb, a.scales, a.anchor_mb = 5.0, [1, 2], [2.0]
    return a


def main(argv: list[str] | None = None) -> int:
    raw_argv = sys.argv[1:] if argv is None else argv
    a = parse_args(argv)
    if a.worker:
        result = worker_ours(a) if a.worker == "ours" else worker_anchor(a)
        Path(a.result).write_text(json.dumps(result, indent=2))
        return 0

    if a.from_results:
        report(json.loads(Path(a.from_results).read_text()), a)
        return 0

    import psutil

    cache = Path(a.cache)
    cache.mkdir(parents=True, exist_ok=True)
    t_setup = time.perf_counter()
    print(f"[bench] building the base documents and the tokenizer under {cache} ...", flush=True)
    docs = base_documents(cache)
    tok = build_tokenizer(cache, docs)
    ours_sizes = [a.mb * s for s in a.scales]
    anchor_sizes = sorted(set(a.anchor_mb))
    corpora = {mb: build_corpus(cache, mb, docs) for mb in sorted(set(ours_sizes) | set(anchor_sizes))}
    print(
        f"[bench] setup {time.perf_counter() - t_setup:.0f} s; corpora: "
        + ", ".join(f"{c['mb']:.1f} MB ({c['documents']:,} docs)" for c in corpora.values()),
        flush=True,
    )

    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    runs = cache / "runs"
    runs.mkdir(exist_ok=True)

    def run(side: str, mb: float) -> dict[str, Any]:
        c = corpora[mb] if mb in corpora else corpora.setdefault(mb, build_corpus(cache, mb, docs))
        out = runs / f"{side}_{mb:g}mb"
        args = ["--tokenizer", str(tok), "--out", str(out), "--dupe-factor", str(a.dupe_factor)]
        args += ["--documents", c["documents_dir"]] if side == "ours" else ["--input", c["google_txt"]]
        print(f"[bench] {side} on {c['mb']:.1f} MB ...", flush=True)
        r = run_worker(side, args, runs / f"{side}_{mb:g}mb.json", runs / f"{side}_{mb:g}mb.log")
        r["corpus_mb"], r["corpus_key"] = c["mb"], mb
        if not a.keep_outputs:
            shutil.rmtree(out, ignore_errors=True)
        print(
            f"[bench]   {side} {c['mb']:.1f} MB: tokenize {r['tokenize_s']:.1f} s, instances {r['instances']:,} "
            f"in {r['instances_s']:.1f} s, total {r['total_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB",
            flush=True,
        )
        rows.append(r)
        return r

    anchor_rows = [run("anchor", mb) for mb in anchor_sizes]
    one_x = a.mb
    if one_x not in anchor_sizes and anchor_rows:
        largest = max(anchor_rows, key=lambda r: r["corpus_mb"])
        per_mb = largest["peak_rss_mb"] / largest["corpus_mb"]
        projected_gb = per_mb * corpora[one_x]["mb"] / 1000
        free_gb = psutil.virtual_memory().available / 1024**3
        limit = min(a.anchor_max_gb, free_gb - 4)
        if projected_gb < limit:
            run("anchor", one_x)
            notes.append(
                f"The anchor ran on the 1x corpus: projected peak RSS {projected_gb:.1f} GB "
                f"({per_mb:.0f} MB per corpus MB at {largest['corpus_mb']:.0f} MB) was under the "
                f"{limit:.1f} GB limit."
            )
        else:
            notes.append(
                f"The anchor did not run on the 1x corpus ({corpora[one_x]['mb']:.0f} MB): its projected peak RSS "
                f"{projected_gb:.1f} GB ({per_mb:.0f} MB per corpus MB) is over the limit of {limit:.1f} GB "
                "(min of --anchor-max-gb and free memory - 4 GB); its rows are on the smaller slices."
            )
    for mb in ours_sizes:
        run("ours", mb)

    order = {"anchor": 0, "ours": 1}
    rows.sort(key=lambda r: (r["corpus_key"], order[r["side"]]))
    command = "python benchmarks/data_prep.py" + (" " + shlex.join(raw_argv) if raw_argv else "")
    results = {
        "rows": rows,
        "run_notes": notes,
        "machine": machine_info(),
        "command": command,
        "dupe_factor": a.dupe_factor,
    }
    (cache / "data_prep_results.json").write_text(json.dumps(results, indent=2))
    report(results, a)
    return 0


def derived_notes(rows: list[dict[str, Any]]) -> list[str]:
    """Notes that follow from the rows: fidelity checks and where our time goes."""
    notes = [
        "The anchor tokenizes with the Rust `tokenizers` library (one `encode` call per line) instead of Google's "
        "pure-Python `FullTokenizer`, and writes fixed-size numpy records instead of TFRecord protos: both make "
        "it faster than the original script, never slower.",
        "Ours tokenizes with one process per core (default `workers`); the anchor is single-process, as Google's "
        "script is. The CPU s column shows the total work done.",
    ]
    loads = [r["mean_load"] for r in rows if "mean_load" in r]
    cores = os.cpu_count() or 1
    if loads and max(loads) > cores:
        notes.append(
            f"The machine was shared: the mean load average during the runs was {min(loads):.1f} to "
            f"{max(loads):.1f} on {cores} cores, so other processes took part of the CPU from both sides; "
            "absolute rates are lower than on an idle machine (ours, with a worker per core, loses the most)."
        )
    ours = {r["corpus_key"]: r for r in rows if r["side"] == "ours"}
    for r in rows:
        o = ours.get(r["corpus_key"]) if r["side"] == "anchor" else None
        if o is None:
            continue
        same = "the same" if o["tokens"] == r["tokens"] else "DIFFERENT"
        notes.append(
            f"Check at {r['corpus_mb']:.0f} MB: {same} token count on both sides ({r['tokens']:,} anchor, "
            f"{o['tokens']:,} ours; {r['documents']:,} documents), instances {r['instances']:,} vs "
            f"{o['instances']:,} ({100 * (o['instances'] / r['instances'] - 1):+.2f}%: same rules, different random "
            f"draws: Google shuffles the documents first, ours keeps document order and the loader shuffles), "
            f"masked predictions per instance {r['masked_predictions'] / r['instances']:.2f} vs "
            f"{o['masked_predictions'] / o['instances']:.2f}."
        )
    for r in rows:
        if r["side"] == "ours" and r["total_s"] > 0:
            notes.append(
                f"Ours on {r['corpus_mb']:.0f} MB: tokenize-to-shards {100 * r['tokenize_s'] / r['total_s']:.0f}% "
                f"of end-to-end, BERT instances {100 * r['instances_s'] / r['total_s']:.0f}%."
            )
    return notes


def report(results: dict[str, Any], a: argparse.Namespace) -> None:
    """Print the section and write it into ``--output`` (unless ``--no-write``)."""
    rows = results["rows"]
    a.dupe_factor = results.get("dupe_factor", a.dupe_factor)
    notes = list(results.get("run_notes", [])) + derived_notes(rows)
    text = render(rows, ratios(rows), results["machine"], a, results["command"], notes)
    print()
    print(text)
    if not a.no_write:
        write_section(Path(a.output), text)
        print(f"[bench] wrote the '{SECTION}' section of {a.output}")


if __name__ == "__main__":
    sys.exit(main())
