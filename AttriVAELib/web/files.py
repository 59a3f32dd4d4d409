"""Which files the web viewer may open: the folders and files named on the command line, and uploads.

The browser never sends a path the server opens as given. :class:`FileRoots` lists the volume
files under the command line's folders (and the files named there) and hands the page their
*keys* (the path relative to its root, prefixed by the root's number: ``"0:sub-0001.nii.gz"``);
:meth:`FileRoots.resolve` turns a key back into a path only when the resolved path (symbolic
links followed) is one of the listed files' locations: inside a root folder, or exactly a root
file. ``..``, absolute paths, links that lead outside and unknown root numbers are refused
with one line (:class:`~AttriVAELib.core.errors.InputError`).

:class:`UploadStore` keeps uploaded files in a private temporary folder, refusing files over
its size limit and formats that need a second file (``.nhdr``/``.mhd``); names are reduced to
safe characters, so an upload can never write outside that folder.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from AttriVAELib.core.errors import InputError
from AttriVAELib.data.io import READABLE_SUFFIXES, WRITABLE_SUFFIXES

__all__ = ["DEFAULT_MAX_UPLOAD_MB", "FileRoots", "MAX_LISTED_FILES", "UploadStore", "check_volume_file",
           "volume_suffix"]

#: Most files :meth:`FileRoots.list_files` returns (a huge folder is cut, with a note).
MAX_LISTED_FILES = 2000
#: How deep :meth:`FileRoots.list_files` looks below each root folder.
MAX_DEPTH = 4
#: Default upload size limit in MiB (``attrivae view --max-upload-mb``).
DEFAULT_MAX_UPLOAD_MB = 512


def volume_suffix(name: str, suffixes: Sequence[str] = READABLE_SUFFIXES) -> str | None:
    """The volume suffix ``name`` ends with (case-insensitive; ``.nii.gz`` before ``.gz``), or None."""
    lower = name.lower()
    return next((s for s in sorted(suffixes, key=len, reverse=True) if lower.endswith(s)), None)


def check_volume_file(path: str | os.PathLike, label: str | None = None) -> None:
    """Refuse, from its header, a file that is not one 3D scalar volume (before Slicer's reader sees it).

    Slicer's volume reader takes the first frame of a 4D NIfTI without a word; the viewer says
    what the file is instead, as :func:`AttriVAELib.data.io.read_image` does.

    Raises:
        InputError: not a readable image (:func:`~AttriVAELib.data.headers.inspect_image_file`),
            a 4D or 2D image, or more than one component per voxel; ``label`` names the file.
    """
    from AttriVAELib.data.headers import inspect_image_file

    label = label or str(path)
    try:
        info = inspect_image_file(path)
    except InputError as exc:
        raise InputError(str(exc).replace(str(path), label)) from None
    size = tuple(info.size)
    while len(size) > 3 and size[-1] == 1:
        size = size[:-1]
    if len(size) != 3:
        raise InputError(f"{label}: image is {len(size)}D (size {tuple(info.size)}); expected a 3D volume")
    if min(size) < 2:
        raise InputError(f"{label}: image size {size} is a 2D slice; expected a 3D volume")
    if info.components != 1:
        raise InputError(f"{label}: image has {info.components} components per voxel; expected a scalar image")


@dataclass(frozen=True)
class ListedFile:
    """A volume file the page may choose: its key, the text shown, and its resolved path."""

    key: str
    title: str
    path: Path


class FileRoots:
    """The command line's folders and files: the only places the viewer reads from (see the module docstring).

    Args:
        paths: folders and volume files. Each must exist; folders are searched
            :data:`MAX_DEPTH` levels deep for :data:`~AttriVAELib.data.io.READABLE_SUFFIXES` files.

    Raises:
        InputError: a path does not exist, or is a file that is not a volume.
    """

    def __init__(self, paths: Iterable[str | os.PathLike]) -> None:
        self.roots: list[Path] = []
        for item in paths:
            path = Path(item).expanduser()
            if not path.exists():
                raise InputError(f"{item}: no such file or folder")
            path = path.resolve()
            if path.is_file() and volume_suffix(path.name) is None:
                raise InputError(f"{item}: not a volume file; use one of {', '.join(READABLE_SUFFIXES)}")
            if not (path.is_file() or path.is_dir()):
                raise InputError(f"{item}: not a regular file or folder")
            if path not in self.roots:
                self.roots.append(path)

    def __bool__(self) -> bool:
        return bool(self.roots)

    def list_files(self, limit: int = MAX_LISTED_FILES) -> tuple[list[ListedFile], bool]:
        """The volume files under the roots, sorted per root; and whether the list was cut at ``limit``."""
        found: list[ListedFile] = []
        for number, root in enumerate(self.roots):
            if root.is_file():
                found.append(ListedFile(f"{number}:", root.name, root))
                continue
            for path in sorted(self._walk(root), key=lambda p: str(p).lower()):
                relative = path.relative_to(root).as_posix()
                title = relative if len(self.roots) == 1 else f"{root.name}/{relative}"
                found.append(ListedFile(f"{number}:{relative}", title, path))
                if len(found) >= limit:
                    return found, True
        return found, False

    def _walk(self, root: Path) -> Iterable[Path]:
        base_depth = len(root.parts)
        for folder, dirs, files in os.walk(root):
            depth = len(Path(folder).parts) - base_depth
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < MAX_DEPTH else []
            for name in files:
                if name.startswith(".") or volume_suffix(name) is None:
                    continue
                path = Path(folder) / name
                if _inside(root, path):  # a link out of the root is not listed
                    yield path

    def contains(self, path: str | os.PathLike) -> bool:
        """Whether ``path`` (links followed) is a root file or lies inside a root folder."""
        try:
            resolved = Path(path).resolve(strict=True)
        except (OSError, RuntimeError):
            return False
        for root in self.roots:
            if root.is_file():
                if resolved == root:
                    return True
            elif resolved == root or root in resolved.parents:
                return True
        return False

    def resolve(self, key: str) -> Path:
        """The file a key names (``"<root number>:<relative path>"``), refusing anything outside the roots.

        Raises:
            InputError: a malformed key, an unknown root, a path that leaves its root (``..``,
                absolute, or through a link), or one that is not an existing volume file.
        """
        text = str(key or "")
        number, sep, relative = text.partition(":")
        if not sep or not number.isdigit() or int(number) >= len(self.roots):
            raise InputError(f"'{text}': not a file offered by this viewer")
        root = self.roots[int(number)]
        if root.is_file():
            if relative:
                raise InputError(f"'{text}': not a file offered by this viewer")
            return root
        parts = Path(relative).parts
        if not relative or Path(relative).is_absolute() or ".." in parts or "\\" in relative:
            raise InputError(f"'{relative}': outside the folders given on the command line")
        candidate = root / relative
        if not candidate.exists():
            raise InputError(f"'{relative}': no such file in {root}")
        if not _inside(root, candidate):
            raise InputError(f"'{relative}': outside the folders given on the command line")
        resolved = candidate.resolve()
        if not resolved.is_file() or volume_suffix(resolved.name) is None:
            raise InputError(f"'{relative}': not a volume file in {root}")
        return resolved


def _inside(root: Path, path: Path) -> bool:
    """Whether ``path`` (links followed) lies inside the folder ``root`` (itself resolved)."""
    try:
        return root in Path(path).resolve(strict=True).parents
    except (OSError, RuntimeError):
        return False


class UploadStore:
    """Uploaded files in a private temporary folder (removed by :meth:`close`).

    Args:
        max_bytes: the largest upload accepted.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_UPLOAD_MB << 20) -> None:
        self.max_bytes = int(max_bytes)
        self.folder = Path(tempfile.mkdtemp(prefix="attrivae-uploads-"))
        self.count = 0

    @property
    def limit_text(self) -> str:
        """The size limit for messages (``"512 MiB"``)."""
        return f"{self.max_bytes / (1 << 20):g} MiB"

    def check(self, name: str, size: int | None) -> str:
        """The volume suffix of an upload called ``name`` of ``size`` bytes; raise if it cannot be accepted."""
        suffix = volume_suffix(str(name or ""), READABLE_SUFFIXES)
        if suffix is None:
            raise InputError(f"'{name}': not a volume file; upload one of {', '.join(WRITABLE_SUFFIXES)}")
        if suffix not in WRITABLE_SUFFIXES:
            raise InputError(f"'{name}': a {suffix} header needs its data file; upload a single-file volume "
                             f"({', '.join(WRITABLE_SUFFIXES)}) or start the viewer on its folder")
        if size is not None and int(size) > self.max_bytes:
            raise InputError(f"'{name}': {int(size) / (1 << 20):.1f} MiB is over the upload limit of {self.limit_text} "
                             "(attrivae view --max-upload-mb)")
        return suffix

    def save(self, name: str, content: bytes | Sequence[bytes] | None) -> Path:
        """Write one upload into the private folder; return its path.

        Raises:
            InputError: no content, an unacceptable name or format, or over the size limit.
        """
        if content is None:
            raise InputError(f"'{name}': the upload arrived empty")
        data = content if isinstance(content, (bytes, bytearray)) else b"".join(content)
        suffix = self.check(name, len(data))
        if not data:
            raise InputError(f"'{name}': the file is empty")
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(name)).name[: -len(suffix)]).strip("._") or "upload"
        self.count += 1
        path = self.folder / f"{self.count:03d}-{stem[:80]}{suffix}"
        path.write_bytes(bytes(data))
        return path

    def close(self) -> None:
        """Remove the uploads folder."""
        shutil.rmtree(self.folder, ignore_errors=True)
