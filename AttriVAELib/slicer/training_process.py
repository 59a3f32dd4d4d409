"""Training in a background process: the command line, its environment, and a non-blocking reader.

The module starts ``python -m AttriVAELib.cli train ... --quiet`` in a child process (in its own
process group, so cancelling also stops the data-loader workers it started). A reader thread
queues the merged stdout/stderr line by line; the GUI polls :meth:`TrainingProcess.poll` from a
timer on the main thread (never blocking) and shows :attr:`TrainingProcess.progress`, parsed
from the ``epoch N/M`` (or ``resuming ... after epoch N of M``) lines. The child finds
``AttriVAELib`` through ``PYTHONPATH`` (:func:`training_environment`), so it works from the
installed extension as well as from the source tree.

Cancel stops the whole process tree: inside Slicer the command starts ``PythonSlicer``, a
launcher whose child is the real Python (on Windows a process group does not contain it), so
:meth:`TrainingProcess.cancel` lists every descendant with ``psutil`` (shipped with Slicer)
before it terminates them, then kills what is left after the grace period. Without psutil it
falls back to the process group (POSIX) or ``taskkill /T`` (Windows).

:attr:`TrainingProcess.output` keeps the ``--out`` folder of the command, so a training that
ends after the scene was closed still knows which model it made (the panel's fields may have
been reset); :func:`trained_model` says whether a finished process produced a loadable model.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

from AttriVAELib.core.errors import ConfigError

__all__ = ["DEVICE_CHOICES", "TrainingProcess", "parse_training_progress", "trained_model", "training_command",
           "training_environment"]

#: Device choices offered by the module (``cuda:N`` is accepted too).
DEVICE_CHOICES = ("auto", "cpu", "cuda")

_EPOCH_RE = re.compile(r"\bepoch (\d+)/(\d+)\b")
_RESUME_RE = re.compile(r"\bresuming .* after epoch (\d+) of (\d+)\b")


def parse_training_progress(line: str) -> tuple[int, int] | None:
    """(epochs done, total) from a line of ``attrivae train --quiet`` output, else None."""
    match = _EPOCH_RE.search(line) or _RESUME_RE.search(line)
    return (int(match.group(1)), int(match.group(2))) if match else None


def training_command(manifest: str | os.PathLike, out: str | os.PathLike, *, preset: str = "fast_cpu",
                     epochs: int | None = None, device: str = "auto", python: str | None = None) -> list[str]:
    """The ``python -m AttriVAELib.cli train ... --quiet`` command line, after checking its inputs.

    A cohort written by ``attrivae cohort`` holds its recommended settings in ``train.yaml``
    (cropping to the mask, the field of view, augmentation); they are passed with ``--config``.

    Raises:
        ConfigError: missing manifest, an output folder that already holds files, an unknown
            preset or device, fewer than one epoch.
    """
    from AttriVAELib.train.presets import PRESETS

    manifest = Path(manifest) if str(manifest).strip() not in ("", ".") else None
    if manifest is None:
        raise ConfigError("no training manifest selected (a manifest.csv or the folder holding it)")
    if not (manifest.is_file() or (manifest / "manifest.csv").is_file()):
        raise ConfigError(f"{manifest}: no manifest found (give a manifest CSV or a folder holding manifest.csv)")
    if str(out).strip() in ("", "."):
        raise ConfigError("no output folder selected for the trained model")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: already exists and is not empty; choose a new output folder")
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    if device not in DEVICE_CHOICES and not re.fullmatch(r"cuda:\d+", device):
        raise ConfigError(f"unknown device {device!r}; use {', '.join(DEVICE_CHOICES)} or cuda:N")
    command = [python or sys.executable, "-m", "AttriVAELib.cli", "train", "--data", str(manifest),
               "--out", str(out), "--preset", preset, "--device", device, "--quiet"]
    recipe = (manifest if manifest.is_dir() else manifest.parent) / "train.yaml"
    if recipe.is_file():
        command += ["--config", str(recipe)]
    if epochs is not None:
        if int(epochs) < 1:
            raise ConfigError(f"epochs must be at least 1 (got {epochs})")
        command += ["--epochs", str(int(epochs))]
    return command


def training_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for the training process: AttriVAELib importable, unbuffered output."""
    env = dict(os.environ if base is None else base)
    lib_parent = str(Path(__file__).resolve().parents[2])  # the folder holding the AttriVAELib package
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([lib_parent] + [p for p in paths if p != lib_parent])
    env["PYTHONUNBUFFERED"] = "1"
    return env


class TrainingProcess:
    """A child process whose merged stdout/stderr a reader thread queues line by line.

    The GUI calls :meth:`poll` from a timer on the main thread (never blocking), shows
    :attr:`progress` and the new lines, and :meth:`cancel` stops the process (and the workers
    it started: it runs in its own process group).
    """

    def __init__(self, command: Sequence[str], env: Mapping[str, str] | None = None,
                 cwd: str | os.PathLike | None = None) -> None:
        kwargs: dict[str, Any] = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True
        elif hasattr(subprocess, "CREATE_NEW_PROCESS_GROUP"):
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        self.command = [str(c) for c in command]
        try:
            self._process = subprocess.Popen(
                self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                text=True, encoding="utf-8", errors="replace", bufsize=1,
                env=None if env is None else dict(env), cwd=None if cwd is None else str(cwd), **kwargs)
        except OSError as exc:
            raise ConfigError(f"cannot start the training process ({self.command[0]}): {exc.strerror or exc}") \
                from None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="AttriVAE training output", daemon=True)
        self._reader.start()
        self._eof = False
        self.cancelled = False
        self.progress: tuple[int, int] | None = None
        self.log: list[str] = []
        self.output: Path | None = None
        if "--out" in self.command[:-1]:
            self.output = Path(self.command[self.command.index("--out") + 1])

    def _read(self) -> None:
        stream = self._process.stdout
        try:
            for line in iter(stream.readline, ""):
                self._lines.put(line.rstrip("\r\n"))
        finally:
            stream.close()
            self._lines.put(None)

    @property
    def pid(self) -> int:
        return self._process.pid

    def poll(self) -> list[str]:
        """New output lines since the last call (never blocks); updates :attr:`progress`."""
        new: list[str] = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._eof = True
                continue
            new.append(line)
            found = parse_training_progress(line)
            if found is not None:
                self.progress = found
        self.log += new
        return new

    @property
    def running(self) -> bool:
        """True until the process has exited and all of its output was read by :meth:`poll`."""
        return self._process.poll() is None or not self._eof or not self._lines.empty()

    @property
    def returncode(self) -> int | None:
        return self._process.poll()

    def wait(self, timeout: float | None = None) -> int:
        code = self._process.wait(timeout)
        self._reader.join(timeout)
        return code

    def cancel(self, grace: float = 5.0) -> None:
        """Stop the process and every process it started; kill what still runs after ``grace`` s."""
        if self._process.poll() is not None:
            return
        self.cancelled = True
        tree = self._descendants()  # before the parent goes: orphans are no longer its children
        self._signal(signal.SIGTERM if os.name == "posix" else None)
        for child in tree:
            _quietly(child.terminate)
        try:
            self._process.wait(grace)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL if os.name == "posix" else None, kill=True)
            self._process.wait(grace)
        if tree:
            import psutil

            _gone, alive = psutil.wait_procs(tree, timeout=grace)
            for child in alive:
                _quietly(child.kill)
            psutil.wait_procs(alive, timeout=grace)

    def _descendants(self) -> list:
        """Every process below the child (psutil), [] without psutil or once it has exited."""
        try:
            import psutil
        except ImportError:
            return []
        try:
            return psutil.Process(self._process.pid).children(recursive=True)
        except psutil.Error:
            return []

    def _signal(self, sig: int | None, kill: bool = False) -> None:
        try:
            if os.name == "posix" and sig is not None:
                os.killpg(self._process.pid, sig)  # its own group (start_new_session)
            elif os.name == "nt" and not self._descendants_known():
                subprocess.run(["taskkill", "/PID", str(self._process.pid), "/T", "/F"], capture_output=True,
                               timeout=30, check=False)
            elif kill:
                self._process.kill()
            else:
                self._process.terminate()
        except (ProcessLookupError, PermissionError, OSError, subprocess.SubprocessError):
            pass

    @staticmethod
    def _descendants_known() -> bool:
        try:
            import psutil  # noqa: F401
        except ImportError:
            return False
        return True


def _quietly(action) -> None:
    try:
        action()
    except Exception:  # the process is gone already, or is not ours to signal
        pass


def trained_model(process: TrainingProcess) -> Path | None:
    """The run folder a finished, successful training process wrote (holding ``model.safetensors``), else None."""
    if process.running or process.cancelled or process.returncode != 0 or process.output is None:
        return None
    return process.output if (process.output / "model.safetensors").is_file() else None
