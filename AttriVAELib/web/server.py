"""Start the web viewer's server: loopback by default, a warning for any other address.

The server (trame on aiohttp) listens on ``host:port`` (port 0: a free port the system picks)
and prints one line with the address once it accepts connections::

    AttriVAE viewer: http://127.0.0.1:43817/  (Ctrl+C stops it)

It never opens a browser, never parses the process's own command line (trame would otherwise
read ``sys.argv``), and never stops by itself when no page is connected. Anyone who can reach
the address can drive the viewer and read the files it was started on, so only the loopback
interface is used unless ``--host`` says otherwise.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

__all__ = ["LOOPBACK", "host_warning", "is_loopback", "prepare_environment", "serve"]

#: Addresses that only this machine can reach.
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    return host in LOOPBACK or host.startswith("127.")


def host_warning(host: str, port: int = 0) -> str | None:
    """The warning printed before listening on ``host`` (None for loopback)."""
    if is_loopback(host):
        return None
    return (f"attrivae view: warning: listening on {host}: anyone who can reach this machine on port "
            f"{port or '(chosen at start)'} can use the viewer and read the files it was started on; "
            "keep the default 127.0.0.1 and use an SSH tunnel instead")


def prepare_environment() -> None:
    """Settings trame, wslink and VTK read at start: no command line of theirs, no start-up banner, and
    offscreen rendering through EGL where there is no display.

    Call it before the trame server is made.
    """
    os.environ["TRAME_ARGS"] = ""  # trame parses sys.argv unless this is set
    os.environ.setdefault("WSLINK_READY_MSG", "")
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # no X: straight to EGL


def serve(app, host: str = "127.0.0.1", port: int = 0, *, say: Callable[[str], None] | None = None) -> None:
    """Run ``app``'s server until interrupted (blocking); print its address when it is ready.

    Args:
        app: an :class:`~AttriVAELib.web.app.AttriVAEWebApp`.
        host: the interface to listen on; anything but loopback prints a warning first.
        port: the port; 0 picks a free one.
        say: where the lines go (default: stdout, flushed).
    """
    say = say or (lambda line: print(line, flush=True))
    warning = host_warning(host, port)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    server = app.server
    shown = "127.0.0.1" if host == "localhost" else (f"[{host}]" if ":" in host else host)
    server.controller.on_server_ready.add(
        lambda **_: say(f"AttriVAE viewer: http://{shown}:{server.port}/  (Ctrl+C stops it)"))
    server.start(host=host, port=int(port), open_browser=False, show_connection_info=False, timeout=0,
                 disable_logging=True)
