"""Writing a generated cohort to disk: what the phantom and brain generators share.

A generator supplies ``render(index) -> (row, image, mask, lesion[, extra])`` (a picklable,
pure function of the subject index; ``extra`` maps further folder names to label maps);
:func:`write_cohort` renders the subjects in worker processes, writes ``images/``, ``masks/``,
``lesions/`` and the extra folders (``sub-0000.nii.gz`` …), the manifest and ``cohort.json``
into an atomically created folder, and returns the summary.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import shutil
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from AttriVAELib.core.atomic import atomic_dir, write_json, write_text
from AttriVAELib.core.errors import ConfigError
from AttriVAELib.data.io import Geometry, Volume, read_image, write_image

__all__ = ["cohort_summary", "describe_cohort", "label_map_path", "manifest_text", "read_label_map", "read_cohort_info", "write_cohort"]

Render = Callable[[int], tuple]
_FOLDERS = (("image", "images"), ("mask", "masks"), ("lesion", "lesions"))


def read_cohort_info(root: str | os.PathLike) -> dict[str, Any]:
    """A cohort folder's ``cohort.json`` (which generator made it, and how), or {} without a readable one."""
    path = Path(root) / "cohort.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def label_map_path(root: str | os.PathLike, folder: str, subject: str) -> Path:
    """Where a cohort keeps a subject's label map: ``<root>/<folder>/<subject>.nii.gz``."""
    return Path(root) / folder / f"{subject}.nii.gz"


def read_label_map(root: str | os.PathLike, folder: str, subject: str) -> Volume:
    """A subject's label map ``<root>/<folder>/<subject>.nii.gz`` (labels kept, not binarized)."""
    return read_image(label_map_path(root, folder, subject), dtype=np.int16)


def _format(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return str(value)


def manifest_text(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """CSV text of ``rows`` with ``columns`` (floats to 6 significant digits)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_format(row[column]) for column in columns])
    return buffer.getvalue()


def cohort_summary(rows: Sequence[Mapping[str, Any]], attributes: Iterable[str], size: int | None,
                   spacing: Sequence[float]) -> dict:
    """Counts per label and min/mean/max of each attribute."""
    labels = [int(row["label"]) for row in rows]
    stats = {}
    for name in attributes:
        values = np.array([float(row[name]) for row in rows])
        stats[name] = {"min": float(values.min()), "mean": float(values.mean()), "max": float(values.max())}
    return {"n": len(rows), "size": size, "spacing": [float(s) for s in spacing],
            "labels": {str(label): labels.count(label) for label in (0, 1)}, "attributes": stats}


def _write_subjects(folder: str, indices: Sequence[int], render: Render, geometry: Geometry,
                    columns: Sequence[str], to_stored: Callable[[np.ndarray], np.ndarray]) -> list[dict]:
    """Worker task: render and write a batch of subjects; return their manifest rows."""
    rows = []
    for index in indices:
        row, image, mask, lesion, *rest = render(index)
        name = f"{row['subject']}.nii.gz"
        paths = {key: f"{sub}/{name}" for key, sub in _FOLDERS}
        for key, array in (("image", to_stored(image)), ("mask", mask), ("lesion", lesion)):
            write_image(Volume(array, geometry), Path(folder) / paths[key])
        for sub, array in (rest[0] if rest else {}).items():
            write_image(Volume(array, geometry), Path(folder) / sub / name)
        row.update(paths)
        rows.append({column: row[column] for column in columns})
    return rows


def _batches(n: int, workers: int, largest: int) -> Iterator[list[int]]:
    # Small enough for a smooth progress bar and load balance, large enough to amortize IPC.
    # A generator: memory does not grow with n.
    batch = max(1, min(largest, n // (8 * workers)))
    for start in range(0, n, batch):
        yield list(range(start, min(n, start + batch)))


def _die_with_parent(parent: int) -> None:
    """Worker initializer: end this worker when the process that started it dies (even by ``kill -9``).

    On Linux the kernel sends SIGKILL on the parent's death (``prctl(PR_SET_PDEATHSIG)``); everywhere,
    a daemon thread also checks every second that the parent is alive. A worker orphaned before
    either was set up exits at once.
    """
    import signal
    import threading
    import time

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent and not _alive(parent):
        os._exit(1)

    def watch() -> None:
        while _alive(parent):
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="attrivae-parent-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _render_all(folder: Path, n: int, task: Callable[..., list[dict]], workers: int, progress: bool, desc: str,
                largest_batch: int) -> list[dict]:
    from tqdm import tqdm

    batches = _batches(n, workers, largest_batch)
    bar = partial(tqdm, total=n, desc=desc, unit="subject", file=sys.stderr, disable=not progress)
    rows: list[dict] = []
    if workers == 1:
        with bar() as progress_bar:
            for batch in batches:
                rows.extend(task(str(folder), batch))
                progress_bar.update(len(batch))
        return rows
    # Workers start (fork) on submit, before the progress bar starts its monitor thread; they
    # inherit whatever the generator prepared in this process (templates, calibrations).
    # At most 2 batches per worker are in flight, so memory does not grow with n.
    executor = ProcessPoolExecutor(max_workers=workers, initializer=_die_with_parent, initargs=(os.getpid(),))
    try:
        pending: deque = deque()
        for batch in itertools.islice(batches, 2 * workers):
            pending.append(executor.submit(task, str(folder), batch))
        with bar() as progress_bar:
            while pending:
                batch_rows = pending.popleft().result()
                rows.extend(batch_rows)
                progress_bar.update(len(batch_rows))
                for batch in itertools.islice(batches, 1):
                    pending.append(executor.submit(task, str(folder), batch))
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return rows


#: Most subjects one cohort may have; ``$ATTRIVAE_MAX_SUBJECTS`` raises it.
MAX_SUBJECTS = 1_000_000
#: A lower bound of the disk space a subject takes per voxel (compressed image and masks).
_MIN_BYTES_PER_VOXEL = 0.25


def max_subjects() -> int:
    text = os.environ.get("ATTRIVAE_MAX_SUBJECTS", "").strip()
    try:
        return int(text) if text else MAX_SUBJECTS
    except ValueError:
        raise ConfigError(f"ATTRIVAE_MAX_SUBJECTS={text!r} is not a whole number") from None


def _check_room(out: Path, n: int, geometry: Geometry) -> None:
    """Refuse a cohort that cannot fit: more than :func:`max_subjects`, or clearly more than the free disk."""
    limit = max_subjects()
    if n > limit:
        raise ConfigError(f"n = {n:,} subjects is more than the limit of {limit:,}; ATTRIVAE_MAX_SUBJECTS raises it")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:
        free = shutil.disk_usage(parent).free
    except OSError:
        return
    need = n * math.prod(geometry.size) * _MIN_BYTES_PER_VOXEL
    if need > free:
        raise ConfigError(f"{out}: {n:,} subjects of {' × '.join(map(str, geometry.size))} voxels need at least "
                          f"{need / 2**30:.1f} GiB; {free / 2**30:.1f} GiB are free there")


def write_cohort(out: str | os.PathLike, n: int, render: Render, geometry: Geometry, columns: Sequence[str],
                 attributes: Iterable[str], to_stored: Callable[[np.ndarray], np.ndarray],
                 cohort_json: Callable[[dict], dict], *, workers: int | None = None, progress: bool = True,
                 overwrite: bool = False, desc: str = "subjects", largest_batch: int = 16,
                 extra_folders: Sequence[str] = (), prepare: Callable[[], None] | None = None) -> dict:
    """Render ``n`` subjects and write the cohort folder ``out`` atomically; return the summary.

    Args:
        render: subject index → (manifest row without paths, image, mask, lesion[, {folder: array}]),
            arrays (z, y, x).
        geometry: the grid every volume is written on.
        columns: manifest columns, in order.
        attributes: attribute columns summarized.
        to_stored: float image → the stored array (e.g. int16 scanner-like values).
        cohort_json: summary → contents of ``cohort.json``.
        extra_folders: the folders of ``render``'s extra arrays (not in the manifest).
        prepare: run once after the checks and before anything is written or any worker starts
            (slow set-up the workers inherit; its errors leave nothing behind).

    Raises:
        ConfigError: ``n`` < 1 or above :func:`max_subjects`, more than the free disk space, or ``out``
            exists and ``overwrite`` is false.
    """
    out = Path(out)
    if n < 1:
        raise ConfigError(f"n = {n}: the cohort needs at least one subject")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out}: already exists; pass --overwrite (overwrite=True) to replace it")
    _check_room(out, n, geometry)
    if prepare is not None:
        prepare()
    workers = max(1, min(int(workers or os.cpu_count() or 1), n))
    task = partial(_write_subjects, render=render, geometry=geometry, columns=list(columns), to_stored=to_stored)
    try:
        with atomic_dir(out, overwrite=overwrite) as tmp:
            for sub in (*(sub for _, sub in _FOLDERS), *extra_folders):
                (tmp / sub).mkdir()
            rows = _render_all(tmp, n, task, workers, progress, desc, largest_batch)
            summary = cohort_summary(rows, attributes, geometry.size[0], geometry.spacing)
            write_text(tmp / "manifest.csv", manifest_text(rows, columns))
            write_json(tmp / "cohort.json", cohort_json(summary))
    except FileExistsError:
        raise ConfigError(f"{out}: already exists; pass --overwrite (overwrite=True) to replace it") from None
    return summary


def describe_cohort(folder: str | os.PathLike, attributes: Mapping[str, str], kind: str,
                    label_names: tuple[str, str]) -> str:
    """A short human-readable summary (counts, grid, attribute ranges) of a cohort folder.

    Args:
        attributes: attribute column → unit, as the generator writes them.
        kind: what the cohort is called ("phantom", "brain").
        label_names: descriptions of labels 0 and 1.

    Raises:
        InputError: no manifest, a manifest lacking the generator's columns, or no subjects.
    """
    from AttriVAELib.core.errors import InputError

    folder = Path(folder)
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        raise InputError(f"{folder}: no manifest.csv; not a {kind} cohort folder")
    with open(manifest, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("label", *attributes) if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{manifest}: not a {kind} cohort manifest (missing columns {', '.join(missing)})")
        rows = list(reader)
    if not rows:
        raise InputError(f"{manifest}: has no subjects")
    info_path = folder / "cohort.json"
    info: dict = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    spacing, size = info.get("spacing"), info.get("size")
    summary = cohort_summary(rows, attributes, size, spacing or [])
    grid = f"{size}³ voxels of {' × '.join(f'{s:g}' for s in spacing)} mm" if size and spacing else "grid unknown"
    labels = summary["labels"]
    lines = [
        f"{kind} cohort {folder}: {summary['n']} subjects, {grid}, seed {info.get('seed', '?')}",
        f"  labels: 0 ({label_names[0]}) = {labels['0']}, 1 ({label_names[1]}) = {labels['1']}",
        f"  {'attribute':<24}{'unit':>6}{'min':>10}{'mean':>10}{'max':>10}",
    ]
    for name, stats in summary["attributes"].items():
        lines.append(f"  {name:<24}{attributes[name]:>6}{stats['min']:10.3f}{stats['mean']:10.3f}{stats['max']:10.3f}")
    return "\n".join(lines)
