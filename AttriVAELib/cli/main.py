"""The ``attrivae`` command line: the registration table, the parser and the error guard.

Each command group lives in its own module (:mod:`.data`, :mod:`.train`, :mod:`.explain`,
:mod:`.evaluate`, :mod:`.demo`) as a tuple of :class:`~AttriVAELib.cli.command.Command`;
this module wires them. Errors caused by the user's input are printed as one line (no
traceback unless ``--debug``) with exit code 2. The command modules import the engine
inside their handlers, so ``attrivae --help`` starts without loading torch.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Callable, Sequence

from AttriVAELib import __version__
from AttriVAELib.cli import data, demo, evaluate, explain, train
from AttriVAELib.cli.command import Command
from AttriVAELib.core.errors import AttriVAEError

__all__ = ["COMMANDS", "build_parser", "main", "run_guarded"]

Handler = Callable[[argparse.Namespace], int]

#: Every sub-command, in the order ``attrivae --help`` lists them.
COMMANDS: tuple[Command, ...] = (*data.COMMANDS, *train.COMMANDS, *explain.COMMANDS, *evaluate.COMMANDS,
                                 *demo.COMMANDS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attrivae", description="Attri-VAE: interpretable 3D VAEs with attribute-wise "
                                     "latent dimensions and Grad-CAM explanations.")
    parser.add_argument("--version", action="version", version=f"attrivae {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    common = argparse.ArgumentParser(add_help=False)  # every command also takes --debug after its name
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help, parents=[common])
        command.add_arguments(p)
        p.set_defaults(func=command.run)
    return parser


def run_guarded(func: Handler, args: argparse.Namespace) -> int:
    """Run a command; user errors become one line on stderr and exit code 2."""
    try:
        return int(func(args) or 0)
    except AttriVAEError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"attrivae {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except FileExistsError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"attrivae {args.command}: error: {exc.filename or exc}: already exists; pass --overwrite to replace it",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"attrivae {args.command}: interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_guarded(args.func, args)
