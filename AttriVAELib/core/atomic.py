"""Atomic writes: a file or folder appears complete, or not at all.

A killed process leaves at most a hidden ``.tmp-*`` sibling, never a half-written target
that a later command would take as complete. Temporaries are named after the writer
(``.tmp-<target>-<pid>.<host>-<random>``), so the next write of the same target on the same
machine removes those whose writer is no longer alive (:func:`remove_stale`).

Files and folders are created with the permissions the umask allows (``0666``/``0777``
masked), like ``open()`` and ``mkdir()`` would, not the private ``0600``/``0700`` of
:mod:`tempfile`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_dir", "atomic_path", "current_umask", "remove_stale", "write_bytes", "write_json", "write_text"]

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read without changing it where the OS allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and restore it (the only portable way to read it)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]


def _writer_tag() -> str:
    return f"{os.getpid()}.{_host_tag()}-"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    try:  # a zombie has exited: its temporaries are stale too
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def remove_stale(parent: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove ``.tmp-*``/``.old-*`` siblings in ``parent`` left by dead writers on this machine.

    Args:
        parent: the folder holding the targets.
        name: only the temporaries of this target name (default: of every target).

    Returns:
        The paths removed. Temporaries of live writers, of other machines and of unknown
        naming (older versions) are left alone.
    """
    parent = Path(parent)
    host = _host_tag()
    removed: list[Path] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        for kind in (".tmp-", ".old-"):
            if not entry.name.startswith(kind):
                continue
            rest = entry.name[len(kind):]
            if name is not None:
                if not rest.startswith(name + "-"):
                    continue
                candidates = [rest[len(name) + 1:]]
            else:
                candidates = [rest[i + 1:] for i, c in enumerate(rest) if c == "-"]
            for tail in candidates:
                pid_text, _, after = tail.partition(".")
                if not pid_text.isdigit() or not after.startswith(host + "-"):
                    continue
                if _pid_alive(int(pid_text)):
                    break
                path = Path(entry.path)
                try:
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(path)
                    else:
                        path.unlink()
                    removed.append(path)
                except OSError:
                    pass
                break
    return removed


def _mode(base: int) -> int:
    return base & ~current_umask()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, clean_stale: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success.

    Works for files written by third-party writers (e.g. SimpleITK) that need a path.
    The temporary name keeps the target's suffixes so writers pick the right format.
    ``clean_stale`` first removes the target's temporaries left by dead writers.
    """
    target = Path(target)
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    if clean_stale:
        remove_stale(target.parent, target.name)
    suffix = "".join(target.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{target.name}-{_writer_tag()}", suffix=suffix, dir=target.parent)
    tmp_path = Path(tmp)
    try:
        try:
            os.fchmod(fd, _mode(0o666))
        except (AttributeError, OSError):  # pragma: no cover - platforms without fchmod
            os.chmod(tmp_path, _mode(0o666))
        os.close(fd)
        yield tmp_path
        try:  # writers that replace the file (e.g. safetensors) create it 0600
            os.chmod(tmp_path, _mode(0o666))
        except OSError:
            pass
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(target: str | os.PathLike, data: bytes, *, clean_stale: bool = False) -> None:
    with atomic_path(target, clean_stale=clean_stale) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def write_text(target: str | os.PathLike, text: str, *, clean_stale: bool = False) -> None:
    write_bytes(target, text.encode("utf-8"), clean_stale=clean_stale)


def write_json(target: str | os.PathLike, obj: Any, *, clean_stale: bool = False) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=False) + "\n", clean_stale=clean_stale)


def _make_dirs(path: Path) -> None:
    """``mkdir -p`` whose new folders follow the umask (``Path.mkdir`` already does)."""
    path.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder in a hidden sibling and rename it onto ``target`` when complete.

    If ``target`` exists and ``overwrite`` is False, :class:`FileExistsError` is raised
    before anything is written (and also at the end, if another process created ``target``
    meanwhile). On any exception the partial folder is removed. Temporaries of dead writers
    of the same target are removed first.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(errno.EEXIST, "already exists", str(target))
    _make_dirs(target.parent)
    remove_stale(target.parent, target.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-{_writer_tag()}", dir=target.parent))
    try:
        os.chmod(tmp, _mode(0o777))
        yield tmp
        if target.exists():
            if not overwrite:
                raise FileExistsError(errno.EEXIST, "already exists", str(target))
            trash = Path(tempfile.mkdtemp(prefix=f".old-{target.name}-{_writer_tag()}", dir=target.parent))
            os.replace(target, trash / "old")
            os.replace(tmp, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            try:
                os.rename(tmp, target)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) or target.exists():
                    raise FileExistsError(errno.EEXIST, "already exists", str(target)) from None
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
