"""Interop with Hugging Face ``transformers`` folders, both ways, without importing ``transformers``.

``python -m pipeline export --checkpoint DIR --to hf OUT`` writes ``config.json`` (transformers' fields),
``model.safetensors`` (transformers' names) and the tokenizer (``tokenizer.json``, ``tokenizer_config.json``,
``special_tokens_map.json``) so that ``AutoModel*.from_pretrained(OUT)`` and ``AutoTokenizer.from_pretrained(OUT)``
load it. A pretrained BERT becomes ``BertForPreTraining`` (``BertForMaskedLM`` without NSP), a GPT
``GPT2LMHeadModel``; fine-tuned releases become ``BertForSequenceClassification``,
``BertForTokenClassification``, ``BertForQuestionAnswering``, ``GPT2ForSequenceClassification`` or
``GPT2LMHeadModel``. DIR may be a release folder, a fine-tuned release, a run folder or a checkpoint.

``python -m pipeline export --from hf DIR OUT`` imports a ``bert`` or ``gpt2`` transformers folder
(``model.safetensors`` or ``pytorch_model.bin``, ``tokenizer.json`` or ``vocab.txt`` / ``vocab.json`` +
``merges.txt``) as a release folder, so fine-tuning can start from any compatible checkpoint on disk.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from data_prep.errors import UserError
from pipeline.models import (
    ModelConfig,
    bert_from_hf_state_dict,
    bert_to_hf_state_dict,
    build_model,
    gpt_from_hf_state_dict,
    gpt_to_hf_state_dict,
)

# ---------------------------------------------------------------------------------------------------- ours -> HF


def _bert_hf_config(cfg: ModelConfig) -> dict[str, Any]:
    return {
        "model_type": "bert",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "hidden_act": cfg.activation,
        "hidden_dropout_prob": cfg.hidden_dropout,
        "attention_probs_dropout_prob": cfg.attention_dropout,
        "max_position_embeddings": cfg.max_position_embeddings,
        "type_vocab_size": cfg.type_vocab_size,
        "initializer_range": cfg.initializer_range,
        "layer_norm_eps": cfg.layer_norm_eps,
        "pad_token_id": cfg.pad_token_id,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
    }


def _gpt_hf_config(cfg: ModelConfig, eot: int) -> dict[str, Any]:
    return {
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_embd": cfg.hidden_size,
        "n_layer": cfg.num_layers,
        "n_head": cfg.num_heads,
        "n_inner": cfg.intermediate_size,
        "n_positions": cfg.max_position_embeddings,
        "n_ctx": cfg.max_position_embeddings,
        "activation_function": cfg.activation,
        "resid_pdrop": cfg.hidden_dropout,
        "embd_pdrop": cfg.hidden_dropout,
        "attn_pdrop": cfg.attention_dropout,
        "layer_norm_epsilon": cfg.layer_norm_eps,
        "initializer_range": cfg.initializer_range,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }


def _task_hf(
    arch: str, task: dict[str, Any], sd: dict[str, torch.Tensor]
) -> tuple[str, dict[str, torch.Tensor]]:
    """(architecture name, HF state dict) of a fine-tuned task model's state dict."""
    kind = task["type"]
    if arch == "bert":
        backbone = {k: v for k, v in sd.items() if k.startswith("bert.")}
        heads = {k: v for k, v in sd.items() if not k.startswith("bert.")}
        out = bert_to_hf_state_dict(backbone)
        out.update(heads)  # classifier.* / qa_outputs.* already carry transformers' names
        name = {
            "classification": "BertForSequenceClassification",
            "regression": "BertForSequenceClassification",
            "token_classification": "BertForTokenClassification",
            "qa": "BertForQuestionAnswering",
        }[kind]
        return name, out
    gpt = {k[len("gpt.") :]: v for k, v in sd.items() if k.startswith("gpt.")}
    out = gpt_to_hf_state_dict(gpt)
    if kind == "lm":
        return "GPT2LMHeadModel", out
    out = {k: v for k, v in out.items() if k.startswith("transformer.")}
    out["score.weight"] = sd["score.weight"]
    return "GPT2ForSequenceClassification", out


def _tokenizer_files(tok_json: Path, out: Path, arch: str, max_len: int, lowercase: bool) -> None:
    shutil.copyfile(tok_json, out / "tokenizer.json")
    if arch == "bert":
        special = {
            "unk_token": "[UNK]",
            "sep_token": "[SEP]",
            "pad_token": "[PAD]",
            "cls_token": "[CLS]",
            "mask_token": "[MASK]",
        }
    else:
        special = {k: "<|endoftext|>" for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    conf = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_len,
        "do_lower_case": lowercase,
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "token_type_ids", "attention_mask"]
        if arch == "bert"
        else ["input_ids", "attention_mask"],
        **special,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(conf, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def _as_release(src: Path, work: Path) -> Path:
    """A release folder for ``src``: itself, or a consolidation of a run folder / checkpoint into ``work``."""
    if src.is_dir() and (src / "config.json").is_file():
        return src
    if src.is_dir() and (src / "release" / "config.json").is_file():
        return src / "release"  # a fine-tuning run folder: its best model
    from pipeline.checkpoint import consolidate, latest_checkpoint

    ckpt = latest_checkpoint(src) if src.is_dir() and not (src / "latest").exists() else src
    if ckpt is None or not Path(ckpt).exists():
        raise UserError(f"{src}: not a release folder, run folder or checkpoint")
    return consolidate(ckpt, work / "release")


def export_hf(src: str | Path, out: str | Path) -> Path:
    """Write ``src`` (release / fine-tuned release / run folder / checkpoint) as a transformers folder."""
    from data_prep.tokenizer import tokenizer_info
    from pipeline.finetune.release import load_task_release, read_model_config, read_task

    src, out = Path(src), Path(out)
    if not src.exists():
        raise UserError(f"{src}: not found")
    with tempfile.TemporaryDirectory() as tmp:
        folder = _as_release(src, Path(tmp))
        cfg = read_model_config(folder)
        tok = folder / "tokenizer.json"
        if not tok.is_file():
            raise UserError(f"{folder}: no tokenizer.json to export")
        info = tokenizer_info(tok)
        eot = info["special_ids"].get("eot", 0)
        task = read_task(folder)
        hf_cfg = _bert_hf_config(cfg) if cfg.arch == "bert" else _gpt_hf_config(cfg, eot)
        if task is not None:
            model, cfg, task = load_task_release(folder)
            name, sd = _task_hf(cfg.arch, task, model.state_dict())
            if task["type"] in ("classification", "token_classification"):
                hf_cfg["id2label"] = {str(i): lab for i, lab in enumerate(task["labels"])}
                hf_cfg["label2id"] = {lab: i for i, lab in enumerate(task["labels"])}
                if task["type"] == "classification":
                    hf_cfg["problem_type"] = "single_label_classification"
            elif task["type"] == "regression":
                hf_cfg["id2label"], hf_cfg["label2id"] = {"0": "LABEL_0"}, {"LABEL_0": 0}
                hf_cfg["problem_type"] = "regression"
            if cfg.arch == "gpt" and task["type"] != "lm":
                hf_cfg["pad_token_id"] = eot
        else:
            from pipeline.checkpoint import load_release

            model, cfg = load_release(folder)
            sd = model.state_dict()
            if cfg.arch == "bert":
                sd = bert_to_hf_state_dict(sd)
                name = "BertForPreTraining" if cfg.nsp else "BertForMaskedLM"
                if not cfg.nsp:
                    sd = {k: v for k, v in sd.items() if not k.startswith("cls.seq_relationship")}
            else:
                sd, name = gpt_to_hf_state_dict(sd), "GPT2LMHeadModel"
        # transformers ties the output projection to the input embedding: store the tensor once.
        for tied in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias", "lm_head.weight"):
            sd.pop(tied, None)
        hf_cfg["architectures"] = [name]
        out.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.detach().contiguous().float() for k, v in sd.items()},
            str(out / "model.safetensors"),
            metadata={"format": "pt"},
        )
        (out / "config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n")
        _tokenizer_files(tok, out, cfg.arch, cfg.max_position_embeddings, info["lowercase"])
    return out


# ---------------------------------------------------------------------------------------------------- HF -> ours


def _read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    st = folder / "model.safetensors"
    if st.is_file():
        return load_file(str(st))
    pt = folder / "pytorch_model.bin"
    if pt.is_file():
        try:
            return torch.load(pt, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise UserError(f"{pt}: cannot read ({type(exc).__name__}: {exc})") from None
    raise UserError(
        f"{folder}: no model.safetensors or pytorch_model.bin (sharded checkpoints: merge them first)"
    )


def _hf_tokenizer_json(folder: Path, model_type: str, out: Path) -> None:
    """Copy ``tokenizer.json``, or build one from ``vocab.txt`` / ``vocab.json`` + ``merges.txt``."""
    if (folder / "tokenizer.json").is_file():
        shutil.copyfile(folder / "tokenizer.json", out / "tokenizer.json")
        return
    try:
        import transformers
    except ImportError:
        raise UserError(
            f"{folder}: no tokenizer.json (install transformers to convert the vocab files)"
        ) from None
    if model_type == "bert" and (folder / "vocab.txt").is_file():
        conf = folder / "tokenizer_config.json"
        lower = json.loads(conf.read_text()).get("do_lower_case", True) if conf.is_file() else True
        tok = transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=lower)
    elif model_type == "gpt2" and (folder / "vocab.json").is_file():
        tok = transformers.GPT2TokenizerFast(str(folder / "vocab.json"), str(folder / "merges.txt"))
    else:
        raise UserError(f"{folder}: no tokenizer.json and no vocab files")
    tok.backend_tokenizer.save(str(out / "tokenizer.json"))


def import_hf(src: str | Path, out: str | Path) -> Path:
    """A transformers ``bert`` / ``gpt2`` folder -> our release folder (pretraining model + tokenizer)."""
    from pipeline.checkpoint import write_release

    src, out = Path(src), Path(out)
    path = src / "config.json"
    if not path.is_file():
        raise UserError(f"{src}: no config.json: not a transformers model folder")
    hf = json.loads(path.read_text())
    kind = hf.get("model_type")
    sd = _read_hf_weights(src)
    if kind == "bert":
        act = hf.get("hidden_act", "gelu")
        if act not in ("gelu", "gelu_new") or hf.get("position_embedding_type", "absolute") != "absolute":
            raise UserError(
                f"{path}: hidden_act {act!r} / position embeddings not supported (gelu, absolute)"
            )
        if not any(k.startswith("bert.") for k in sd):  # a bare BertModel checkpoint
            sd = {f"bert.{k}": v for k, v in sd.items()}
        sd = {
            k: v for k, v in sd.items() if k.startswith(("bert.", "cls.")) and not k.endswith("position_ids")
        }
        has_nsp = "cls.seq_relationship.weight" in sd and "bert.pooler.dense.weight" in sd
        cfg = ModelConfig(
            arch="bert",
            vocab_size=hf["vocab_size"],
            max_position_embeddings=hf.get("max_position_embeddings", 512),
            hidden_size=hf["hidden_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=hf["num_attention_heads"],
            intermediate_size=hf.get("intermediate_size"),
            type_vocab_size=hf.get("type_vocab_size", 2),
            hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
            attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
            activation=act,
            nsp=has_nsp,
            pad_token_id=hf.get("pad_token_id") or 0,
            initializer_range=hf.get("initializer_range", 0.02),
        )
        if not has_nsp:
            sd = {k: v for k, v in sd.items() if not k.startswith(("bert.pooler.", "cls.seq_relationship."))}
        ours = bert_from_hf_state_dict(sd)
    elif kind == "gpt2":
        if not any(k.startswith("transformer.") for k in sd):  # a bare GPT2Model checkpoint
            sd = {f"transformer.{k}": v for k, v in sd.items()}
        sd = {k: v for k, v in sd.items() if k.startswith(("transformer.", "lm_head."))}
        cfg = ModelConfig(
            arch="gpt",
            vocab_size=hf["vocab_size"],
            max_position_embeddings=hf.get("n_positions", 1024),
            hidden_size=hf["n_embd"],
            num_layers=hf["n_layer"],
            num_heads=hf["n_head"],
            intermediate_size=hf.get("n_inner"),
            hidden_dropout=hf.get("resid_pdrop", 0.1),
            attention_dropout=hf.get("attn_pdrop", 0.1),
            layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            activation=hf.get("activation_function", "gelu_new"),
            initializer_range=hf.get("initializer_range", 0.02),
        )
        ours = gpt_from_hf_state_dict(sd)
    else:
        raise UserError(f"{path}: model_type {kind!r} is not supported (bert or gpt2)")
    model = build_model(cfg)
    missing, unexpected = model.load_state_dict(ours, strict=False)
    aliases = set(dict(model.named_parameters(remove_duplicate=False))) - set(dict(model.named_parameters()))
    missing = [k for k in missing if k not in aliases and not re.match(r"mlm_head\.", k)]
    if missing or unexpected:
        raise UserError(f"{src}: weights do not fit (missing {missing[:3]}, unexpected {unexpected[:3]})")
    with tempfile.TemporaryDirectory() as tmp:
        _hf_tokenizer_json(src, kind, Path(tmp))
        recipe = {"imported_from": str(src)}
        return write_release(model, cfg, out, tokenizer=Path(tmp) / "tokenizer.json", recipe=recipe)
