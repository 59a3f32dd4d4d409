"""User-facing errors.

Every exception raised for bad input derives from :class:`AttriVAEError`; its message is
one line naming the file, row or option and what is wrong. The CLI prints it without a
traceback (unless ``--debug``) and exits with a non-zero code.
"""

from __future__ import annotations


class AttriVAEError(Exception):
    """Base class for errors caused by the user's input, not by a bug."""

    exit_code: int = 2


class InputError(AttriVAEError):
    """An image or mask file is missing, unreadable or unusable."""


class ManifestError(AttriVAEError):
    """A dataset manifest (CSV) is malformed."""


class ConfigError(AttriVAEError):
    """A configuration value or command-line option is invalid."""


class CheckpointError(AttriVAEError):
    """A checkpoint is missing, incompatible or has been tampered with."""


class TrainingError(AttriVAEError):
    """Training cannot go on (e.g. the loss became NaN); the last completed epoch is kept."""


class OutputError(AttriVAEError):
    """An output cannot be written where asked (it would replace an input, the folder is
    read-only or full, or another process is writing it)."""
