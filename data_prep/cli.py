"""The command-line contract shared by ``python -m data_prep`` and ``python -m pipeline``.

Overrides (``key.sub=value``) may come after options; a failing command prints one line, ``error: ...``, on
stderr and exits non-zero, with no traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from data_prep.errors import UserError


def run_cli(
    parser: argparse.ArgumentParser, argv: list[str] | None, override_commands: tuple[str, ...]
) -> int:
    """Parse ``argv``, run ``args.func(args)``, and turn failures into one line on stderr."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        # `run RECIPE --force key=value`: argparse leaves overrides that follow options unparsed.
        if args.command in override_commands and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    debug = getattr(args, "debug", False)
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        args.func(args)
    except (UserError, ValueError) as exc:  # bad input, or a configuration a pure helper rejected
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `inspect ... | head` closes the pipe early; that is not an error.
        sys.stderr.close()
        return 0
    except Exception as exc:  # a bug or an unexpected library error: still one line unless --debug
        if debug:
            raise
        where = f" ({Path(exc.filename)})" if isinstance(exc, OSError) and exc.filename else ""
        print(
            f"error: {type(exc).__name__}{where}: {exc} (run with --debug for the traceback)", file=sys.stderr
        )
        return 1
    return 0
