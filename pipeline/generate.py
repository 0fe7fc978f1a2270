"""``python -m pipeline generate``: sample text from a GPT release (pretrained, LM-fine-tuned, or imported).

``--checkpoint`` is a release folder, a fine-tuned ``lm`` release, a run folder or a checkpoint. Sampling is
``GPT.generate``: temperature, then top-k, then top-p; ``--temperature 0`` is greedy; ``--seed`` makes it
reproducible. Generation stops at ``<|endoftext|>``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from data_prep.errors import UserError


def load_gpt(checkpoint: str | Path, work: Path) -> tuple[torch.nn.Module, Path]:
    """The GPT of a release / fine-tuned LM release / run folder / checkpoint, and its tokenizer.json."""
    from pipeline.export import _as_release
    from pipeline.finetune.release import load_task_release, read_model_config, read_task

    src = Path(checkpoint)
    if not src.exists():
        raise UserError(f"{src}: checkpoint not found")
    folder = _as_release(src, work)
    if read_model_config(folder).arch != "gpt":
        raise UserError(f"{folder}: generate needs a GPT model, this one is BERT")
    if read_task(folder) is not None:
        model, _, task = load_task_release(folder)
        if task["type"] != "lm":
            raise UserError(f"{folder}: a fine-tuned {task['type']} model does not generate text")
        gpt = model.gpt  # type: ignore[attr-defined]
    else:
        from pipeline.checkpoint import load_release

        gpt, _ = load_release(folder)
    return gpt.eval(), folder / "tokenizer.json"


def generate_text(
    checkpoint: str | Path,
    prompt: str,
    *,
    max_new_tokens: int = 50,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    num_samples: int = 1,
) -> list[str]:
    """``num_samples`` continuations of ``prompt`` (the prompt included)."""
    from data_prep.tokenizer import load_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        model, tok_path = load_gpt(checkpoint, Path(tmp))
        tok = load_tokenizer(tok_path)
    eot = tok.token_to_id("<|endoftext|>")
    ids = tok.encode(prompt, add_special_tokens=False).ids if prompt else []
    if not ids:
        ids = [eot]
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    x = torch.tensor([ids] * num_samples)
    out = model.generate(
        x,
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        greedy=temperature == 0,
        eos_token_id=eot,
        generator=gen,
    )
    texts = []
    for row in out.tolist():
        new = row[len(ids) :]
        if eot in new:
            new = new[: new.index(eot)]
        texts.append(prompt + tok.decode(new, skip_special_tokens=True))
    return texts
