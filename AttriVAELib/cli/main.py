"""The ``attrivae`` command line: the registration table, the parser and the error guard.

Each command group lives in its own module (:mod:`.data`, :mod:`.train`, :mod:`.explain`,
:mod:`.evaluate`, :mod:`.demo`) as a tuple of :class:`~AttriVAELib.cli.command.Command`;
this module wires them. Errors caused by the user's input are printed as one line (no
traceback unless ``--debug``) with exit code 2. The command modules import the engine
inside their handlers, so ``attrivae --help`` starts without loading torch.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
from typing import Callable, Sequence

from AttriVAELib import __version__
from AttriVAELib.cli import cohort, data, demo, evaluate, explain, export, train, view
from AttriVAELib.cli.command import Command, positive_int
from AttriVAELib.core.errors import AttriVAEError

__all__ = ["COMMANDS", "build_parser", "main", "run_guarded"]

Handler = Callable[[argparse.Namespace], int]

#: Every sub-command, in the order ``attrivae --help`` lists them.
COMMANDS: tuple[Command, ...] = (*data.COMMANDS, *cohort.COMMANDS, *train.COMMANDS, *explain.COMMANDS,
                                 *evaluate.COMMANDS, *export.COMMANDS, *demo.COMMANDS, *view.COMMANDS)


class _Parser(argparse.ArgumentParser):
    """argparse with errors on one line (``attrivae CMD: error: …``), like every other error."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="attrivae", description="Attri-VAE: interpretable 3D VAEs with attribute-wise "
                                     "latent dimensions and Grad-CAM explanations.")
    parser.add_argument("--version", action="version", version=f"attrivae {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    voxels_help = ("largest image read, in voxels (default 268,435,456 = 512×512×1024; also "
                   "$ATTRIVAE_MAX_VOXELS); larger headers are refused before anything is read")
    parser.add_argument("--max-voxels", type=positive_int, default=None, metavar="N", help=voxels_help)
    common = _Parser(add_help=False)  # every command also takes these after its name
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
    common.add_argument("--max-voxels", type=positive_int, default=argparse.SUPPRESS, metavar="N", help=voxels_help)
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
    except BrokenPipeError:  # the reader of our output went away (e.g. `| head`): nothing to report
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 1
    except OSError as exc:
        if args.debug:
            traceback.print_exc()
        if not exc.filename:  # e.g. ENOSPC from write(): name the output the command was writing
            exc.filename = next((str(v) for v in (getattr(args, k, None) for k in ("out", "json", "resume")) if v),
                                None)
        print(f"attrivae {args.command}: error: {os_error_line(exc, args.command)}", file=sys.stderr)
        return 2
    except MemoryError:
        if args.debug:
            traceback.print_exc()
        print(f"attrivae {args.command}: error: out of memory (the input or the requested sizes are too large for "
              "this machine)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"attrivae {args.command}: interrupted", file=sys.stderr)
        return 130


_HINTS = {
    errno.ENOSPC: "disk full; nothing partial was left: free some space and run the command again",
    errno.EDQUOT: "disk quota exceeded; nothing partial was left: free some space and run the command again",
    errno.EROFS: "read-only file system; choose an output on a writable one",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def os_error_line(exc: OSError, command: str = "") -> str:
    """One line for a file-system fault: the path, what the OS said, and what to do."""
    where = exc.filename or ""
    if exc.filename2:
        where = f"{where} -> {exc.filename2}"
    what = _HINTS.get(exc.errno or 0) or (exc.strerror or str(exc) or type(exc).__name__)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) and command == "train":
        what += " (a run continues with --resume)"
    return f"{where}: {what}" if where else what


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "max_voxels", None):
        from AttriVAELib.data.headers import MAX_VOXELS_ENV

        os.environ[MAX_VOXELS_ENV] = str(args.max_voxels)  # workers and child processes inherit it
    return run_guarded(args.func, args)
