"""One ``attrivae`` sub-command: its name, its one help text, its options and its handler."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

__all__ = ["Command", "positive_int", "non_negative_int"]


@dataclass(frozen=True)
class Command:
    """A sub-command as the registration table in :mod:`AttriVAELib.cli.main` wires it.

    Attributes:
        name: what the user types (``attrivae NAME``).
        help: the one-line help shown by ``attrivae --help``.
        add_arguments: adds the command's options to its parser.
        run: the handler; returns the exit code. User errors raise
            :class:`~AttriVAELib.core.errors.AttriVAEError` (one line, exit code 2).
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def positive_int(text: str) -> int:
    """argparse type: a whole number > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: a whole number ≥ 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be ≥ 0")
    return value
