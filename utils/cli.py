"""Command lines shared by every entry point: flags and ``key=value`` overrides in any order, and
``run``, which turns a ``UserError`` into one or two lines on stderr and an exit status.

    python train_voc.py train.max_iters=100 --resume device=cpu     # any order
    python train_voc.py ... --debug                                  # the traceback instead
    AFA_DEBUG=1 python train_voc.py ...                              # the same, for launch scripts

A ``key=value`` token is an override when its key is a dotted name (``train.max_iters``, ``device``)
and it is not the value of an option such as ``--out``; anything argparse does not know is an error
naming it (exit status 2).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence

from common.errors import UserError

OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*=")
DEBUG_ENV = "AFA_DEBUG"


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """``--debug``: show the full traceback of an error (also ``AFA_DEBUG=1``)."""
    parser.add_argument(
        "--debug", action="store_true", help=f"print the traceback of an error (or set {DEBUG_ENV}=1)"
    )


def _takes_one_value(parser: argparse.ArgumentParser, token: str) -> bool:
    """Whether ``token`` is an option whose single value is the next token (``--out DIR``)."""
    if "=" in token or not token.startswith("-"):
        return False
    action = parser._option_string_actions.get(token)  # argparse has no public lookup
    return action is not None and action.nargs is None


def split_overrides(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> tuple[argparse.Namespace, list[str]]:
    """Parse ``argv`` (default ``sys.argv[1:]``): the options, and the ``key=value`` overrides wherever
    they stand. Unknown tokens stop with argparse's usage error (exit 2)."""
    tokens = list(sys.argv[1:] if argv is None else argv)
    overrides, rest = [], []
    value_next = False
    for token in tokens:
        if not value_next and OVERRIDE.match(token):
            overrides.append(token)
            continue
        rest.append(token)
        value_next = not value_next and _takes_one_value(parser, token)
    return parser.parse_args(rest), overrides


def override_keys(overrides: Sequence[str]) -> set[str]:
    """The keys set by ``key=value`` overrides."""
    return {item.split("=", 1)[0] for item in overrides}


def debug_requested(argv: Sequence[str] | None) -> bool:
    """``--debug`` among the arguments, or ``AFA_DEBUG`` set to anything but empty or 0."""
    tokens = sys.argv[1:] if argv is None else argv
    return "--debug" in tokens or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def error_lines(err: BaseException) -> list[str]:
    """``error: ...`` (and ``hint: ...``) for a user-facing error.

    An error re-raised from a DataLoader worker carries the worker's traceback in its message; only
    its last line (the original message) is kept.
    """
    message = str(err).strip()
    if "Original Traceback" in message:
        last = message.splitlines()[-1]
        message = last.split(": ", 1)[1] if ": " in last else last
    if isinstance(err, OSError) and not isinstance(err, UserError) and err.filename is not None:
        message = f"{err.strerror or message}: {err.filename}"
    lines = [f"error: {message}"]
    hint = getattr(err, "hint", None)
    if hint:
        lines.append(f"hint: {hint}")
    return lines


def run(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> int:
    """Call ``main(argv)``; a ``UserError`` (or a missing file or refused permission) prints one or two
    lines on stderr and gives its exit status, other exceptions keep their traceback.

    Returns:
        0, or ``main``'s integer result, or the error's exit status.
    """
    try:
        result = main(argv)
    except (UserError, FileNotFoundError, PermissionError) as err:
        if debug_requested(argv):
            raise
        print("\n".join(error_lines(err)), file=sys.stderr, flush=True)
        return getattr(err, "exit_code", 1)
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
