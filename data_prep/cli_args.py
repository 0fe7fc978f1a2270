"""Command-line flags generated from the config dataclasses, so a flag and a recipe key are the same setting.

``add_config_args(parser, TokenizerConfig)`` adds ``--kind``, ``--vocab-size``, ``--lowercase/--no-lowercase``...
with the field's docstring as help; ``config_from_args(TokenizerConfig, args)`` builds the dataclass back, going
through the same checks as a YAML recipe. Nested dataclasses get a prefix (``--masking-mlm-probability``).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from data_prep.recipe import field_docs, from_dict

T = TypeVar("T")


def _dest(prefix: str, name: str) -> str:
    return f"{prefix}{name}".replace("-", "_")


def add_config_args(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    prefix: str = "",
    skip: tuple[str, ...] = (),
    rename: dict[str, str] | None = None,
) -> None:
    """Add one flag per field of ``cls`` (defaults come from the dataclass, shown in ``--help``)."""
    rename = rename or {}
    hints = get_type_hints(cls)
    docs = field_docs(cls)
    group = parser.add_argument_group(cls.__name__, (cls.__doc__ or "").strip().splitlines()[0])
    defaults = cls() if all(_has_default(f) for f in dataclasses.fields(cls)) else None
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            add_config_args(parser, tp, prefix=f"{prefix}{f.name}-")
            continue
        flag = "--" + (prefix + rename.get(f.name, f.name)).replace("_", "-")
        default = getattr(defaults, f.name) if defaults is not None else None
        help_text = docs.get(f.name, "").replace("%", "%%").replace("\n", " ")
        if default is not None and default != []:
            help_text += f" (default: {default})"
        kwargs: dict[str, Any] = {
            "dest": _dest(prefix, f.name),
            "default": argparse.SUPPRESS,
            "help": help_text,
        }
        origin = get_origin(tp)
        args = [a for a in get_args(tp) if a is not type(None)]
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
            tp, origin, args = args[0], get_origin(args[0]), list(get_args(args[0]))
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is typing.Literal:
            kwargs["choices"] = list(get_args(tp))
        elif origin is list:
            kwargs["nargs"] = "+"
            kwargs["type"] = args[0] if args else str
            kwargs["metavar"] = "VALUE"
        elif tp in (int, float, str):
            kwargs["type"] = tp
        group.add_argument(flag, **kwargs)


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def config_from_args(cls: type[T], args: argparse.Namespace, *, prefix: str = "", **fixed: Any) -> T:
    """Build ``cls`` from the flags that were given (others keep the dataclass defaults) plus ``fixed`` values."""
    data = _collect(cls, vars(args), prefix)
    data.update(fixed)
    return from_dict(cls, data, "command line")


def _collect(cls: type, values: dict[str, Any], prefix: str) -> dict[str, Any]:
    hints = get_type_hints(cls)
    data: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            sub = _collect(tp, values, f"{prefix}{f.name}-")
            if sub:
                data[f.name] = sub
            continue
        dest = _dest(prefix, f.name)
        if dest in values:
            data[f.name] = values[dest]
    return data
