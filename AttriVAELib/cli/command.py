"""One ``attrivae`` sub-command: its name, its one help text, its options and its handler."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

__all__ = ["Command", "MAX_SEED", "bounded_int", "check_output", "check_replaceable", "finite_float",
           "non_negative_int", "positive_int", "seed_int"]


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


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None


def positive_int(text: str) -> int:
    """argparse type: a whole number > 0."""
    value = _whole_number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: a whole number ≥ 0."""
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be ≥ 0")
    return value


#: Seeds are whole numbers in [0, 2³²): every generator (NumPy, torch, scikit-learn) takes them.
MAX_SEED = 2**32 - 1


def seed_int(text: str) -> int:
    """argparse type: a seed, a whole number from 0 to 2³² − 1."""
    value = _whole_number(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{value} is outside 0..{MAX_SEED}")
    return value


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """argparse type: a whole number in [low, high]."""
    def parse(text: str) -> int:
        value = _whole_number(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}..{high}")
        return value

    parse.__name__ = "int"
    return parse


def finite_float(text: str) -> float:
    """argparse type: a finite number."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def check_output(out: Path, inputs: Sequence[Path | None], option: str = "--out") -> None:
    """An output may never be, or contain, an input (the command would destroy it).

    Raises:
        OutputError: ``out`` is one of ``inputs`` or a folder holding one.
    """
    from AttriVAELib.core.errors import OutputError

    target = Path(out).resolve()
    for item in inputs:
        if item is None:
            continue
        source = Path(item).resolve()
        if source == target:
            raise OutputError(f"{out}: {option} is the input {item}; choose another output")
        if target in source.parents:
            raise OutputError(f"{out}: {option} holds the input {item}; choose another output")


def check_replaceable(out: Path, marker: str, command: str, overwrite: bool) -> None:
    """``--overwrite`` replaces only what ``command`` wrote: a folder holding ``marker``.

    Raises:
        FileExistsError: ``out`` exists and ``overwrite`` is false.
        OutputError: ``out`` exists but is not an output folder of ``command``.
    """
    from AttriVAELib.core.errors import OutputError

    out = Path(out)
    if not (out.exists() or out.is_symlink()):
        return
    if not overwrite:
        raise FileExistsError(None, None, str(out))
    if out.is_symlink() or not out.is_dir():
        raise OutputError(f"{out}: is a file, not an output folder of attrivae {command}; refusing to replace it")
    if not (out / marker).is_file():
        raise OutputError(f"{out}: not an output folder of attrivae {command} (no {marker}); --overwrite replaces "
                          "only what the command wrote")
