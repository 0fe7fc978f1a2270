"""``python -m pipeline submit``: render ``slurm/train.sbatch`` for a recipe and hand it to ``sbatch``.

Every value that comes from the recipe or the command line goes into the shell part of the script through
``shlex.quote``, and into ``#SBATCH`` lines double-quoted (sbatch's own parser), so a run folder with spaces or
``;`` neither breaks the script nor injects commands. The job runs ``python -m pipeline pretrain --config ...
--resume auto`` (or ``finetune``) under ``srun``, one task per GPU, logs to ``RUN/slurm-%j.out``, and asks for
``--signal=USR1@S --requeue`` (see ``pipeline.preemption``).
"""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_prep.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "slurm" / "train.sbatch"
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
_SBATCH_ARG = re.compile(r"^--[\w-]+(=[\w.,@:+/-]+)?$")


@dataclass
class SubmitOptions:
    """What ``python -m pipeline submit`` asks Slurm for."""

    config: str
    """The recipe file (``recipes/<name>.yaml``)."""
    nodes: int = 1
    """Nodes."""
    gpus_per_node: int = 1
    """GPUs per node = tasks per node (CPU processes per node with ``cpu``)."""
    command: str = "pretrain"
    """``pretrain`` or ``finetune``."""
    args: list[str] = field(default_factory=list)
    """Arguments passed on to the command: ``KEY=VALUE`` recipe overrides and options (``--checkpoint DIR``)."""
    partition: str | None = None
    """Slurm partition (``None`` = the cluster's default)."""
    account: str | None = None
    """Slurm account to charge."""
    time: str | None = None
    """Time limit, ``HH:MM:SS`` (or ``D-HH:MM:SS``); ``None`` = the partition's."""
    signal_seconds: int = 300
    """SIGUSR1 this many seconds before the time limit: checkpoint + requeue."""
    cpus_per_task: int = 8
    """CPU cores per task (data loading workers, OMP threads)."""
    cpu: bool = False
    """A CPU-only job: no ``--gpus-per-node``, gloo instead of NCCL."""
    sbatch_args: list[str] = field(default_factory=list)
    """Extra ``#SBATCH`` options, e.g. ``--constraint=h100`` or ``--qos=high``."""


def recipe_overrides(args: list[str]) -> list[str]:
    """The ``KEY=VALUE`` recipe overrides among the passed-on arguments."""
    return [a for a in args if "=" in a and not a.startswith("-")]


def sbatch_value(value: str, what: str) -> str:
    """A value for a double-quoted ``#SBATCH`` option; characters sbatch cannot carry there are refused."""
    bad = set(value) & set('"\n\r\\%')
    if bad:
        raise UserError(f"{what} {value!r}: {''.join(sorted(bad))!r} cannot be used in a Slurm option")
    return value


def _job_name(run_dir: Path) -> str:
    return re.sub(r"[^\w.+-]", "_", run_dir.name) or "train"


def launch_command(python: str, opts: SubmitOptions, config: Path) -> list[str]:
    """``python -m pipeline CMD --config RECIPE [--resume auto] --quiet ARGS`` as an argument list."""
    from pipeline.__main__ import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    parsers = sub.choices  # type: ignore[attr-defined]
    if opts.command not in parsers:
        raise UserError(f"--command {opts.command}: not a command of python -m pipeline")
    known = {s for a in parsers[opts.command]._actions for s in a.option_strings}
    cmd = [python, "-m", "pipeline", opts.command, "--config", str(config)]
    if "--resume" in known and not any(a.startswith("--resume") for a in opts.args):
        cmd += ["--resume", "auto"]
    if "--quiet" in known:
        cmd.append("--quiet")
    return cmd + list(opts.args)


def activate_line(python: str) -> str:
    """``source VENV/bin/activate`` (and a newline) when ``python`` lives in a virtual environment."""
    script = Path(python).parent / "activate"
    return f"source {shlex.quote(str(script))}\n" if script.is_file() else ""


def render(
    opts: SubmitOptions, run_dir: str | Path, *, python: str | None = None, workdir: str | Path = "."
) -> str:
    """The sbatch script for ``opts`` (a pure function of its arguments and the template)."""
    if opts.nodes < 1 or opts.gpus_per_node < 1:
        raise UserError(f"--nodes {opts.nodes} --gpus-per-node {opts.gpus_per_node}: both must be at least 1")
    if opts.time is not None and not _TIME.match(opts.time):
        raise UserError(f"--time {opts.time!r}: use HH:MM:SS, MM:SS or D-HH:MM:SS")
    workdir = Path(workdir).resolve()
    run = (workdir / run_dir).resolve() if not Path(run_dir).is_absolute() else Path(run_dir)
    python = python or sys.executable
    config = (workdir / opts.config).resolve() if not Path(opts.config).is_absolute() else Path(opts.config)
    activate = activate_line(python)
    gpu = "" if opts.cpu else f"#SBATCH --gpus-per-node={opts.gpus_per_node}\n"
    backend = (
        "# CPU processes: gloo (pipeline.train.build_strategy); DeepSpeed on its CPU accelerator\nexport DS_ACCELERATOR=cpu"
        if opts.cpu
        else "# GPUs: NCCL (pipeline.train.build_strategy); a failed collective raises instead of hanging\n"
        "export TORCH_NCCL_ASYNC_ERROR_HANDLING=1 NCCL_ASYNC_ERROR_HANDLING=1"
    )
    extra = []
    for flag, value in (("partition", opts.partition), ("account", opts.account), ("time", opts.time)):
        if value is not None:
            extra.append(f'#SBATCH --{flag}="{sbatch_value(value, "--" + flag)}"')
    for a in opts.sbatch_args:
        if not _SBATCH_ARG.match(a):
            raise UserError(
                f"--sbatch-arg {a!r}: give it as --option or --option=value (letters, digits, .,@:+/-)"
            )
        extra.append(f"#SBATCH {a}")
    values = {
        "job_name": _job_name(run),
        "nodes": str(opts.nodes),
        "tasks_per_node": str(opts.gpus_per_node),
        "cpus_per_task": str(opts.cpus_per_task),
        "gpu_directives": gpu,
        "log": sbatch_value(str(run), "run_dir") + "/slurm-%j.out",
        "signal_seconds": str(int(opts.signal_seconds)),
        "extra_directives": "\n".join(extra),
        "workdir": shlex.quote(str(workdir)),
        "activate": activate,
        "backend_env": backend,
        "run_dir": shlex.quote(str(run)),
        "launch": shlex.join(launch_command(python, opts, config)),
    }
    text = TEMPLATE.read_text()
    missing = set(PLACEHOLDER.findall(text)) - set(values)
    if missing:
        raise RuntimeError(f"{TEMPLATE}: no value for {sorted(missing)}")
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def load_run_recipe(opts: SubmitOptions) -> tuple[Any, Path]:
    """The recipe (a ``PretrainRecipe`` for pretrain, else the YAML mapping) and its run folder."""
    from data_prep.recipe import apply_overrides, load, load_yaml

    overrides = recipe_overrides(opts.args)
    if opts.command == "pretrain":
        from pipeline.config import PretrainRecipe

        recipe = load(PretrainRecipe, opts.config, overrides)
        return recipe, Path(recipe.run_dir)
    data = apply_overrides(load_yaml(opts.config), overrides)
    if not data.get("run_dir"):
        raise UserError(f"{opts.config}: run_dir missing")
    return data, Path(str(data["run_dir"]))


def wandb_id_for_job(run_dir: Path, job_id: str) -> str:
    """The W&B run id the job will log to (``pipeline.train.wandb_run_id`` inside the job)."""
    recorded = run_dir / "wandb_run_id"
    if recorded.is_file() and recorded.read_text().strip():
        return recorded.read_text().strip()
    return hashlib.sha1(job_id.encode()).hexdigest()[:12]


def submit(script: str, run_dir: Path) -> str:
    """Write ``RUN/train.sbatch``, ``sbatch --parsable`` it; returns the job id."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "train.sbatch"
    path.write_text(script)
    try:
        out = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise UserError("sbatch not found: not on a Slurm login node? (--dry-run only renders)") from None
    if out.returncode != 0:
        raise UserError(f"sbatch failed: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout.strip().split(";")[0]
