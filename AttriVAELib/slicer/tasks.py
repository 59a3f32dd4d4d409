"""Long work off the GUI thread: a worker thread computes, the main thread applies to MRML in small steps.

A :class:`Task` has two halves:

* ``work(task)`` runs in a worker thread: the torch part (encode, Grad-CAM, decode, resampling
  to the input grid). It never touches MRML. It calls ``task.report(fraction, message)`` for
  progress and ``task.check()`` between chunks, which raises :class:`TaskCancelled` once
  :meth:`Task.cancel` was called.
* ``apply(result)`` runs on the main thread and writes MRML nodes. It may be a generator: each
  ``yield`` ends one step, and :meth:`Task.process_pending` runs steps only until its time
  budget is used, so writing five 256³ heatmaps never blocks the GUI for five writes in a row.
  The generator's return value is the task's :attr:`Task.value`.

The GUI (or a test, or a script) calls :meth:`TaskRunner.process_pending` from a timer on the
main thread (the Slicer module uses a 50 ms ``qt.QTimer``); it delivers progress callbacks and
the apply steps there. :meth:`Task.cancel` takes effect at once for the caller (the task is
``"cancelled"``; no later step is applied) and the worker stops at its next ``check()``,
within a fraction of a second for the chunk sizes used here. :meth:`Task.run_here` runs both
halves in the calling thread (the synchronous API of the session and the Python console).

The first Grad-CAM of a process imports hundreds of modules (torch's functorch, sympy) in the
worker; a full garbage collection triggered there holds the interpreter for 100-200 ms while
it walks Slicer's large heap. :func:`warm_up` does those imports with the collector paused and
then freezes the imported objects (``gc.freeze``), so later collections stay short.
"""

from __future__ import annotations

import gc
import queue
import threading
import time
import types
from typing import Any, Callable, Iterator

from AttriVAELib.core.errors import AttriVAEError, ConfigError

__all__ = ["Task", "TaskCancelled", "TaskHostMixin", "TaskRunner", "warm_up"]

#: Task states: not started, computing in the worker, applying on the main thread, and the end states.
STATES = ("pending", "running", "applying", "done", "failed", "cancelled")


class TaskCancelled(AttriVAEError):
    """Raised inside a task's worker by :meth:`Task.check` after :meth:`Task.cancel`."""


class Task:
    """One long operation: ``work`` in a worker thread, ``apply`` on the main thread (see the module docstring).

    Attributes:
        name: what the task does, for progress messages (``"Encoding"``).
        state: one of :data:`STATES`.
        fraction: progress in [0, 1] as last delivered on the main thread.
        message: the last progress message.
        value: what ``apply`` returned (``"done"`` only).
        error: the exception of a ``"failed"`` task.
        on_progress: called on the main thread as ``on_progress(task)`` when progress arrives.
        on_finished: called on the main thread as ``on_finished(task)`` once, at the end state.
    """

    def __init__(self, name: str, work: Callable[["Task"], Any],
                 apply: Callable[[Any], Any] | None = None) -> None:
        self.name = name
        self._work = work
        self._apply = apply
        self.state = "pending"
        self.fraction = 0.0
        self.message = ""
        self.value: Any = None
        self.error: BaseException | None = None
        self.on_progress: Callable[[Task], None] | None = None
        self.on_finished: Callable[[Task], None] | None = None
        self._cancel = threading.Event()
        self._events: queue.Queue = queue.Queue()
        self._steps: Iterator | None = None
        self._thread: threading.Thread | None = None
        self.cancelled_at: float | None = None

    # ------------------------------------------------------------------ worker side
    def check(self) -> None:
        """Raise :class:`TaskCancelled` if the task was cancelled (call it between chunks of work)."""
        if self._cancel.is_set():
            raise TaskCancelled(f"{self.name} cancelled")

    def report(self, fraction: float, message: str = "") -> None:
        """Progress from the worker (delivered on the main thread by :meth:`process_pending`); checks cancel."""
        self.check()
        self._events.put(("progress", min(max(float(fraction), 0.0), 1.0), str(message)))

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def _run_worker(self) -> None:
        try:
            result = self._work(self)
        except BaseException as exc:  # delivered to the main thread, never lost in the worker
            self._events.put(("error", exc))
        else:
            self._events.put(("result", result))

    # ------------------------------------------------------------------ main-thread side
    def start(self) -> "Task":
        """Start the worker thread (once)."""
        if self.state != "pending":
            raise ConfigError(f"task {self.name!r} was already started")
        self.state = "running"
        self._thread = threading.Thread(target=self._run_worker, name=f"AttriVAE: {self.name}", daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Stop the task: no later step is applied, and the worker stops at its next check."""
        self._cancel.set()
        if not self.finished:
            self.cancelled_at = time.monotonic()
            self._finish("cancelled")

    @property
    def finished(self) -> bool:
        """The task reached an end state (done, failed or cancelled)."""
        return self.state in ("done", "failed", "cancelled")

    @property
    def worker_alive(self) -> bool:
        """The worker thread still runs (after a cancel it ends at its next check)."""
        return self._thread is not None and self._thread.is_alive()

    def _finish(self, state: str, error: BaseException | None = None) -> None:
        self.state = state
        self.error = error
        self._steps = None
        if self.on_finished is not None:
            callback, self.on_finished = self.on_finished, None
            callback(self)

    def _begin_apply(self, result: Any) -> None:
        self.state = "applying"
        out = self._apply(result) if self._apply is not None else result
        if isinstance(out, types.GeneratorType):
            self._steps = out
        else:
            self.value = out
            self._finish("done")

    def _step(self) -> None:
        try:
            next(self._steps)
        except StopIteration as stop:
            self.value = stop.value
            self._finish("done")

    def process_pending(self, budget: float = 0.04) -> bool:
        """Deliver progress and run apply steps for about ``budget`` seconds (main thread); True while unfinished.

        At least one apply step runs per call; an error in ``work`` or ``apply`` ends the task
        as ``"failed"`` (see :attr:`error`) instead of propagating.
        """
        end = time.monotonic() + budget
        progressed = False
        while not self.finished and self.state == "running":
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            if event[0] == "progress":
                _, self.fraction, self.message = event
                progressed = True
            elif event[0] == "error":
                self._finish("cancelled" if isinstance(event[1], TaskCancelled) else "failed", event[1])
            else:
                try:
                    self._begin_apply(event[1])
                except Exception as exc:
                    self._finish("failed", exc)
        if progressed and self.on_progress is not None and not self.finished:
            self.on_progress(self)
        while self.state == "applying" and self._steps is not None:
            try:
                self._step()
            except Exception as exc:
                self._finish("failed", exc)
            if time.monotonic() >= end:
                break
        return not self.finished

    def wait(self, timeout: float | None = None, *, poll: float = 0.01) -> "Task":
        """Process events on the calling (main) thread until the task ends (scripts and tests)."""
        end = None if timeout is None else time.monotonic() + timeout
        while self.process_pending():
            if end is not None and time.monotonic() > end:
                raise TimeoutError(f"{self.name} did not finish within {timeout} s")
            time.sleep(poll)
        return self

    def result(self) -> Any:
        """The value of a finished task; re-raises its error (or :class:`TaskCancelled`)."""
        if self.state == "failed" and self.error is not None:
            raise self.error
        if self.state == "cancelled":
            raise TaskCancelled(f"{self.name} cancelled")
        if self.state != "done":
            raise ConfigError(f"{self.name} has not finished")
        return self.value

    def run_here(self) -> Any:
        """Run ``work`` and every ``apply`` step in the calling thread; return the value (errors propagate)."""
        if self.state != "pending":
            raise ConfigError(f"task {self.name!r} was already started")
        self.state = "running"
        try:
            self._begin_apply(self._work(self))
            while self.state == "applying":
                self._step()
        except BaseException:
            self.state = "failed"
            raise
        return self.value


class TaskRunner:
    """Runs one :class:`Task` at a time in a worker thread; the main thread polls it.

    :meth:`start` refuses while the previous task's worker is alive (even a cancelled one that
    has not reached its next check), because tasks share the model.
    """

    def __init__(self) -> None:
        self.task: Task | None = None

    @property
    def busy(self) -> bool:
        """A task is unfinished, or a cancelled task's worker has not stopped yet.

        A task that ended otherwise (done or failed) delivered its result: its worker is past
        any use of the model, so the next task may start at once (e.g. from ``on_finished``).
        """
        task = self.task
        return task is not None and (not task.finished or (task.state == "cancelled" and task.worker_alive))

    def start(self, task: Task) -> Task:
        if self.busy:
            raise ConfigError(f"{self.task.name} is still running; wait for it or cancel it")
        self.task = task
        return task.start()

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def process_pending(self, budget: float = 0.04) -> bool:
        """Progress and apply steps of the current task (main thread); True while :attr:`busy`."""
        if self.task is not None and not self.task.finished:
            self.task.process_pending(budget)
        return self.busy


class TaskHostMixin:
    """Background tasks of an object (the session): one :class:`TaskRunner`, polled by the GUI's timer."""

    @property
    def tasks(self) -> TaskRunner:
        """The :class:`TaskRunner` (created on first use)."""
        runner = getattr(self, "_task_runner", None)
        if runner is None:
            runner = self._task_runner = TaskRunner()
        return runner

    @property
    def busy(self) -> bool:
        """A background task runs (or a cancelled one has not stopped yet)."""
        return self.tasks.busy

    def start(self, task: Task) -> Task:
        """Start ``task`` in the background (one at a time); then call :meth:`process_tasks` from a timer."""
        return self.tasks.start(task)

    def process_tasks(self, budget: float = 0.04) -> bool:
        """Deliver progress and apply results on the calling (main) thread; True while :attr:`busy`."""
        return self.tasks.process_pending(budget)

    def cancel_task(self) -> None:
        """Cancel the running background task (it stops applying at once, its worker at its next check)."""
        self.tasks.cancel()


_warmed = False


def warm_up(model) -> None:
    """Import what the first encode, decode and Grad-CAM import, with the garbage collector paused.

    Then ``gc.freeze()`` moves everything alive into the permanent generation, so no later full
    collection has to walk it (see the module docstring). Runs once per process; a tiny forward
    and batched backward on zeros of the model's input size.
    """
    global _warmed
    if _warmed:
        return
    import numpy as np

    from AttriVAELib.explain.gradcam import gradcam_maps

    enabled = gc.isenabled()
    gc.disable()
    try:
        import torch

        n = int(model.input_size)
        x = torch.zeros((1, 1, n, n, n))
        model.decode(np.zeros((1, model.latent_size), dtype=np.float32))
        if model.num_regularized:
            gradcam_maps(model, x, "attributes")
        if model.has_classifier:
            gradcam_maps(model, x, "classifier", relu=False)
        gc.freeze()
        _warmed = True
    finally:
        if enabled:
            gc.enable()
