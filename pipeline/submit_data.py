"""``python -m pipeline submit-data``: a data recipe's ``shards`` stage as a Slurm array job.

Three jobs (see ``data_prep.parts``): ``prep`` (extract + tokenizer), an array of ``--tasks`` ``part`` jobs
after it, and ``merge`` (+ BERT instances / GPT windows) after the whole array (``--dependency=afterok``).
Logs go to ``OUT/slurm/``. The result is the folder ``python -m data_prep run`` writes, shard for shard.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from data_prep.errors import UserError
from pipeline.submit import PLACEHOLDER, ROOT, activate_line, sbatch_value

TEMPLATE = ROOT / "slurm" / "data.sbatch"


def render_step(
    step: str,
    config: str | Path,
    out_dir: str | Path,
    *,
    tasks: int,
    overrides: list[str],
    cpus_per_task: int,
    partition: str | None = None,
    account: str | None = None,
    time: str | None = None,
    python: str | None = None,
    workdir: str | Path = ".",
) -> str:
    """The sbatch script of one step (``prep``, ``part`` or ``merge``)."""
    workdir = Path(workdir).resolve()
    python = python or sys.executable
    logs = (workdir / out_dir / "slurm").resolve()
    config = (workdir / config).resolve()
    cmd = [python, "-m", "data_prep.parts", step, str(config), *overrides]
    launch = shlex.join(cmd)
    extra = []
    if step == "part":
        extra.append(f"#SBATCH --array=0-{tasks - 1}")
        launch += f' --task-index "$SLURM_ARRAY_TASK_ID" --num-tasks {tasks}'
    for flag, value in (("partition", partition), ("account", account), ("time", time)):
        if value is not None:
            extra.append(f'#SBATCH --{flag}="{sbatch_value(value, "--" + flag)}"')
    name = re.sub(r"[^\w.+-]", "_", Path(out_dir).name) or "data"
    log = sbatch_value(str(logs), "out_dir") + ("/part-%A_%a.out" if step == "part" else f"/{step}-%j.out")
    values = {
        "job_name": f"{step}-{name}",
        "cpus_per_task": str(cpus_per_task),
        "log": log,
        "extra_directives": "\n".join(extra),
        "workdir": shlex.quote(str(workdir)),
        "activate": activate_line(python),
        "launch": launch,
    }
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], TEMPLATE.read_text())


def sbatch(script: Path, dependency: str | None = None) -> str:
    """Submit a script; returns the job id."""
    cmd = [
        "sbatch",
        "--parsable",
        *([f"--dependency=afterok:{dependency}"] if dependency else []),
        str(script),
    ]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError("sbatch not found: not on a Slurm login node? (--dry-run only renders)") from None
    if out.returncode != 0:
        raise UserError(f"sbatch failed: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout.strip().split(";")[0]


def submit_all(scripts: dict[str, str], out_dir: Path) -> dict[str, str]:
    """Write ``OUT/slurm/{prep,part,merge}.sbatch`` and submit them chained by ``afterok``; returns job ids."""
    folder = out_dir / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    ids: dict[str, str] = {}
    previous = None
    for step in ("prep", "part", "merge"):
        path = folder / f"{step}.sbatch"
        path.write_text(scripts[step])
        ids[step] = previous = sbatch(path, previous)
    return ids
