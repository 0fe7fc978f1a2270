"""``python -m pipeline attention``: attention maps as PNG heatmaps with the tokens on both axes.

BERT: self-attention (query x key); GPT and ``transformer-lm``: causal self-attention (the upper triangle is
zero); sequence-to-sequence models: the encoder-decoder alignment (target x source), the target being
``--target`` or, by default, the model's greedy output. The model comes from a release folder
(``config.json`` + ``model.safetensors``), a run folder (its newest checkpoint) or a checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from data_prep.errors import UserError


@dataclass
class LoadedModel:
    """A model ready for plotting."""

    model: nn.Module
    kind: str
    """``bert``, ``gpt``, ``transformer-lm``, an RNN arch, or ``seq2seq``."""
    tokenizer: Any
    """A ``tokenizers.Tokenizer``."""
    recipe: dict[str, Any]
    """The training recipe (may be empty for release folders without one)."""


def _tokenizer_for(recipe: dict[str, Any], folder: Path | None) -> Any:
    from data_prep.tokenizer import load_tokenizer

    if folder is not None and (folder / "tokenizer.json").is_file():
        return load_tokenizer(folder)
    data = recipe.get("data", {})
    src = data.get("tokenizer") or data.get("path")
    if not src:
        raise UserError(
            "cannot find the tokenizer: no tokenizer.json beside the model and none in the recipe"
        )
    path = Path(src)
    if path.is_dir() and not (path / "tokenizer.json").is_file():
        from pipeline.seq2seq_data import shards_folder

        path = shards_folder(path)
    return load_tokenizer(path)


def load_for_attention(path: str | Path) -> LoadedModel:
    """A release folder, a run folder (newest checkpoint) or a checkpoint -> the model, its kind, tokenizer."""
    import yaml

    from data_prep.recipe import from_dict
    from pipeline.checkpoint import latest_checkpoint, load_release, load_training_state_dict
    from pipeline.models import build_model
    from pipeline.models.config import load_model_config
    from pipeline.models.seq2seq import build_seq2seq
    from pipeline.models.seq2seq_config import Seq2SeqModelConfig

    path = Path(path)
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        model, cfg = load_release(path)
        side = path / "recipe.yaml"
        recipe = yaml.safe_load(side.read_text()) if side.is_file() else {}
        return LoadedModel(model.eval(), cfg.arch, _tokenizer_for(recipe, path), recipe)
    ckpt = path
    if path.is_dir() and not (path / "latest").is_file():
        found = latest_checkpoint(path)
        if found is None:
            raise UserError(f"{path}: not a release folder, and no checkpoints in it as a run folder")
        ckpt = found
    weights, hparams = load_training_state_dict(ckpt)
    recipe = hparams.get("recipe") or {}
    if not recipe:
        raise UserError(f"{ckpt}: the checkpoint carries no recipe; cannot tell the model")
    if isinstance(recipe.get("model"), dict):  # a seq2seq recipe holds the model section itself
        model = build_seq2seq(from_dict(Seq2SeqModelConfig, recipe["model"], f"{ckpt} recipe"))
        kind = "seq2seq"
    else:
        cfg = load_model_config(recipe["model"], **recipe.get("model_overrides", {}))
        model, kind = build_model(cfg), cfg.arch
    missing, unexpected = model.load_state_dict(weights, strict=False)
    aliases = set(dict(model.named_parameters(remove_duplicate=False))) - set(dict(model.named_parameters()))
    if [k for k in missing if k not in aliases] or unexpected:
        raise UserError(
            f"{ckpt}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return LoadedModel(model.eval(), kind, _tokenizer_for(recipe, None), recipe)


def token_labels(tokenizer: Any, ids: list[int]) -> list[str]:
    """A readable label per token id (its text; ``<mask>`` for the denoising mask id past the vocabulary)."""
    size = tokenizer.get_vocab_size()
    labels = []
    for i in ids:
        if i >= size:
            labels.append("<mask>")
            continue
        text = tokenizer.decode([i], skip_special_tokens=False)
        labels.append(text if text.strip() else (tokenizer.id_to_token(i) or "?"))
    return labels


def attention_map(
    loaded: LoadedModel, text: str, *, layer: int = -1, head: int | None = 0, target: str | None = None
) -> tuple[torch.Tensor, list[str], list[str], str]:
    """(rows x cols) weights, row labels, column labels and a title. ``head`` None = mean over heads."""
    from pipeline.models.config import RNN_ARCHS

    tok, model = loaded.tokenizer, loaded.model
    enc = tok.encode(text)
    ids = torch.tensor([enc.ids])
    if not enc.ids:
        raise UserError("--text holds no tokens")
    if loaded.kind in RNN_ARCHS:
        raise UserError(f"a {loaded.kind} language model has no attention to plot")
    if loaded.kind == "seq2seq":
        maps, rows, cols, what = _seq2seq_maps(loaded, enc.ids, target)
    elif loaded.kind == "bert":
        maps = model.bert.attention_weights(ids, attention_mask=torch.ones_like(ids))
        rows = cols = token_labels(tok, enc.ids)
        what = "BERT self-attention (query x key)"
    else:
        maps = model.attention_weights(ids)
        rows = cols = token_labels(tok, enc.ids)
        what = f"{loaded.kind} causal self-attention (query x key)"
    n_layers = len(maps)
    if not -n_layers <= layer < n_layers:
        raise UserError(f"--layer {layer}: the model has {n_layers} attention layers")
    w = maps[layer][0]  # (nh, T, S)
    if head is not None and not -w.size(0) <= head < w.size(0):
        raise UserError(f"--head {head}: the layer has {w.size(0)} heads")
    w = w.mean(0) if head is None else w[head]
    head_txt = "mean of heads" if head is None else f"head {head % maps[layer].size(1)}"
    return w, rows, cols, f"{what}, layer {layer % n_layers}, {head_txt}"


def _seq2seq_maps(
    loaded: LoadedModel, src: list[int], target: str | None
) -> tuple[list[torch.Tensor], list[str], list[str], str]:
    from pipeline.decoding import greedy_decode
    from pipeline.models.transformer import Seq2SeqTransformer

    tok, model = loaded.tokenizer, loaded.model
    eot = tok.token_to_id("<|endoftext|>")
    bos = eos = 0 if eot is None else eot
    src_ids = torch.tensor([src])
    mask = torch.ones_like(src_ids)
    if target is not None:
        out = tok.encode(target).ids
    else:
        out = greedy_decode(model, src_ids, mask, bos_id=bos, eos_id=eos, max_len=2 * len(src) + 8)[0]
    tgt_in = torch.tensor([[bos, *out]])
    if getattr(model.config, "attention", None) == "none" and not isinstance(model, Seq2SeqTransformer):
        raise UserError("this seq2seq model has no attention (attention: none) to plot")
    with torch.no_grad():
        if isinstance(model, Seq2SeqTransformer):
            maps = model.cross_attention_weights(src_ids, mask, tgt_in)
        else:
            maps = [model(src_ids, mask, tgt_in, return_attention=True).cross_attention]
    rows = token_labels(tok, out) + ["<eos>"]
    return maps, rows, token_labels(tok, src), "encoder-decoder alignment (target x source)"


def plot_attention(
    weights: torch.Tensor, rows: list[str], cols: list[str], title: str, out: str | Path
) -> Path:
    """Save a heatmap of ``weights`` (len(rows) x len(cols)) with the token labels on both axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = weights.detach().float().numpy()
    h, wd = w.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.32 * wd + 2), max(3.5, 0.32 * h + 1.8)))
    im = ax.imshow(w, cmap="viridis", vmin=0.0, aspect="auto")
    ax.set_xticks(range(wd), cols, rotation=90, fontsize=8)
    ax.set_yticks(range(h), rows, fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(checkpoint: str, text: str, *, out: str, layer: int, head: int | None, target: str | None) -> Path:
    """Load, compute and save one attention map; returns the PNG path."""
    loaded = load_for_attention(checkpoint)
    w, rows, cols, title = attention_map(loaded, text, layer=layer, head=head, target=target)
    path = plot_attention(w, rows, cols, title, out)
    (path.with_suffix(".json")).write_text(json.dumps({"rows": rows, "cols": cols, "title": title}) + "\n")
    return path
