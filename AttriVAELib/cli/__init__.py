"""The ``attrivae`` command line: one module per command group, one registration table."""

from AttriVAELib.cli.main import build_parser, main, run_guarded

__all__ = ["build_parser", "main", "run_guarded"]
