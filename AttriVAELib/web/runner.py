"""The session's background tasks driven from the web server's event loop.

The session runs long work as :class:`~AttriVAELib.slicer.tasks.Task` objects: the torch part
in a worker thread, the MRML writes on the main thread in small steps. In the Slicer module a
Qt timer calls ``session.process_tasks()``; here :class:`TaskPump` does the same from an
asyncio coroutine on the server's loop (the main thread), every 10 ms while something runs
(every 3 ms for a slider decode), and copies the task's progress into the page's state
(``busy``, ``progress``, ``progress_text``).

* One task at a time (the session's rule). A *quiet* task (a slider decode) shows no progress
  bar; a task asked for while a quiet one runs waits for it (:meth:`TaskPump.run` queues it),
  one asked for during a long task is refused with a message (press Cancel or wait).
* A finished task calls its ``on_done(value)``; a failed one adds its one-line error to the
  page's messages (:class:`~AttriVAELib.core.errors.AttriVAEError` text as is, anything else
  as ``"<what> failed: <type>: <text>"`` with the traceback on the server's stderr); the
  session's own notes (``pop_messages()``) follow.
* When nothing runs, ``on_idle()`` may start the next task (the latest slider values).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

from AttriVAELib.core.errors import AttriVAEError

__all__ = ["POLL_SECONDS", "TaskPump"]

#: Seconds between two polls of a running task (a quiet one, a slider decode, is polled more often).
POLL_SECONDS = 0.01
QUIET_POLL_SECONDS = 0.003
#: Seconds of main-thread apply work per poll (the session's step budget).
APPLY_BUDGET = 0.03


@dataclass
class _Running:
    task: Any
    on_done: Callable[[Any], None] | None
    quiet: bool
    context: Callable[[], ContextManager] | None = None
    shown: tuple[float, str] = (-1.0, "")


def error_text(exc: BaseException, what: str = "") -> str:
    """One line for an error: a user error's message, else ``"<what> failed: <type>: <text>"``."""
    if isinstance(exc, AttriVAEError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return f"{what or 'the operation'} ran out of memory (the input or the model is too large for this machine)"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{what or 'the operation'} failed: {type(exc).__name__}: {text}"


class TaskPump:
    """Start session tasks and poll them from the event loop (see the module docstring).

    Args:
        session: the :class:`~AttriVAELib.slicer.session.AttriVAESession`.
        state: the trame state (``with state:`` pushes changes to the page).
        message: ``message(text, kind)`` adds a line to the page's messages.
        on_idle: called on the loop when no task runs; may start one.
    """

    def __init__(self, session, state, message: Callable[[str, str], None],
                 on_idle: Callable[[], None] | None = None) -> None:
        self.session = session
        self.state = state
        self.message = message
        self.on_idle = on_idle
        self._current: _Running | None = None
        self._queued: tuple | None = None
        self._polling = False

    @property
    def busy(self) -> bool:
        """A task runs (or a cancelled one's worker has not stopped yet)."""
        return self._current is not None or self.session.busy

    @property
    def running_quiet(self) -> bool:
        return self._current is not None and self._current.quiet

    def run(self, make_task: Callable[[], Any], on_done: Callable[[Any], None] | None = None, *,
            quiet: bool = False, context: Callable[[], ContextManager] | None = None) -> bool:
        """Make the task (``make_task()``) and start it; True if it started or waits behind a quiet one.

        ``context()``: a context manager the task's main-thread steps (and ``on_done``) run in.
        Errors raised while making the task (no image encoded, a bad value, ...) become messages.
        """
        if self.busy:
            if self.running_quiet and not quiet:
                self._queued = (make_task, on_done, quiet, context)
                return True
            name = self._current.task.name if self._current is not None else "the last task"
            self.message(f"{name} is still running; wait for it or press Cancel", "warning")
            return False
        try:
            task = make_task()
            self.session.start(task)
        except Exception as exc:  # one line on the page, never a dead page
            self._report_exception(exc, "starting the task")
            return False
        self._current = _Running(task, on_done, quiet, context)
        if not quiet:
            self.state.busy = True
            self.state.progress = 0
            self.state.progress_text = task.name
        self._ensure_polling()
        return True

    def cancel(self) -> None:
        """Cancel the running task (its result is dropped; its worker stops at its next check)."""
        self._queued = None
        if self._current is not None:
            self.session.cancel_task()

    def _ensure_polling(self) -> None:
        if not self._polling:
            self._polling = True
            asyncio.get_event_loop().create_task(self._poll())

    async def _poll(self) -> None:
        try:
            while True:
                with self.state:
                    self._step()
                    if self._current is None and not self.session.busy:
                        self._idle()
                        if self._current is None and not self.session.busy:
                            self.state.busy = False
                            break
                await asyncio.sleep(QUIET_POLL_SECONDS if self.running_quiet else POLL_SECONDS)
        finally:
            self._polling = False

    def _step(self) -> None:
        running = self._current
        with running.context() if running is not None and running.context is not None else contextlib.nullcontext():
            self._advance()

    def _advance(self) -> None:
        self.session.process_tasks(APPLY_BUDGET)
        running = self._current
        if running is None:
            self.state.busy = self.session.busy and self.state.busy  # a cancelled worker is stopping
            return
        task = running.task
        if not running.quiet and (task.fraction, task.message) != running.shown:
            running.shown = (task.fraction, task.message)
            self.state.progress = round(100 * task.fraction)
            self.state.progress_text = f"{task.name}: {task.message}" if task.message else task.name
        if task.finished:
            self._current = None
            self._finish(running)

    def _finish(self, running: _Running) -> None:
        task = running.task
        if task.state == "done":
            if running.on_done is not None:
                try:
                    running.on_done(task.value)
                except Exception as exc:
                    self._report_exception(exc, f"showing the result of {task.name.lower()}")
        elif task.state == "cancelled":
            self.message(f"{task.name} cancelled", "warning")
        elif task.error is not None:
            self._report_exception(task.error, task.name)
        for note in self.session.pop_messages():
            self.message(note, "info")
        if self._current is None or self._current.quiet:
            self.state.busy = self.session.busy and task.state == "cancelled"

    def _idle(self) -> None:
        if self._queued is not None:
            make_task, on_done, quiet, context = self._queued
            self._queued = None
            self.run(make_task, on_done, quiet=quiet, context=context)
            return
        if self.on_idle is not None:
            try:
                self.on_idle()
            except Exception as exc:
                self._report_exception(exc, "updating the view")

    def _report_exception(self, exc: BaseException, what: str) -> None:
        if not isinstance(exc, AttriVAEError):
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        self.message(error_text(exc, what), "error")
