"""The panel's *Build a cohort* step: :func:`~AttriVAELib.data.cohort_builder.build_cohort` as a background task.

:func:`cohort_task` checks the panel's texts on the calling (main) thread, so an empty field, a
malformed label line or a missing clinical table fails at once with one line, and returns a
:class:`~AttriVAELib.slicer.tasks.Task` whose ``work`` builds the cohort in the worker thread:

* progress: ``build_cohort`` calls back with ``(done, total)`` subjects, once at the start (the
  subjects taken from the cohort folder's cache) and after each subject; the task reports the
  fraction ``done / total`` with the message ``"done/total subjects"``.
* cancel: ``should_stop`` polls the task's cancel flag after each subject. The run stops there,
  keeps the subjects it finished in the cache and writes no manifest; the worker then raises
  :class:`~AttriVAELib.slicer.tasks.TaskCancelled`. The next run over the same folders measures
  only the others.
* ``apply`` (main thread) returns the :class:`~AttriVAELib.data.cohort_report.CohortSummary`:
  ``manifest`` is the new ``manifest.csv``, ``out`` the cohort folder (what the Train section
  takes), ``text()`` the counts, attribute distributions, Spearman matrix, correlation warnings,
  excluded subjects and unpaired files.

Errors are one-line :class:`~AttriVAELib.core.errors.AttriVAEError`. When no subject is usable
the task fails with :class:`~AttriVAELib.data.cohort_builder.NoUsableSubject`, whose ``summary``
gives each subject's reason; :func:`result_text` is the panel's text for every end state.

Like the rest of :mod:`AttriVAELib.slicer`, nothing here imports Qt, Slicer, VTK or torch.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Sequence

from AttriVAELib.core.errors import AttriVAEError, ConfigError, InputError, OutputError
from AttriVAELib.slicer.tasks import Task, TaskCancelled

__all__ = ["COHORT_TASK_NAME", "STOPPED_TEXT", "cohort_task", "missing_cohort_requirements", "parse_label_line",
           "result_text"]

#: The task's name (the progress bar and the status bar show it).
COHORT_TASK_NAME = "Building the cohort"
#: What the panel shows after Cancel (the worker's own summary is discarded with the cancelled task).
STOPPED_TEXT = ("stopped: the subjects measured so far are kept in the cohort folder's cache; "
                "press Build cohort again to measure the others")
#: Packages the step needs besides the module's own, as (pip requirement, import name): the
#: output folder's lock, and for a clinical table pandas (openpyxl for .xlsx/.xlsm).
_LOCK = ("filelock>=3.8", "filelock")
_TABLE = ("pandas>=1.5", "pandas")
_EXCEL = ("openpyxl>=3.1", "openpyxl")
_EXCEL_SUFFIXES = (".xlsx", ".xlsm")


def _text(value) -> str:
    """A field's value as text: ``""`` for None, blanks and ``"."`` (an unset path)."""
    text = str(value if value is not None else "").strip()
    return "" if text == "." else text


def parse_label_line(text: str) -> list[str]:
    """``"myocardium=2, lv = 2+3; outer=1"`` → ``["myocardium=2", "lv=2+3", "outer=1"]`` (checked).

    Labels are separated by commas, semicolons or blanks; blanks around ``=`` and ``+`` are ignored.

    Raises:
        ConfigError: no label, a malformed one, or a name given twice.
    """
    from AttriVAELib.data.label_measures import parse_labels

    joined = re.sub(r"\s*([=+])\s*", r"\1", str(text or "").strip())
    items = [item for item in re.split(r"[,;\s]+", joined) if item]
    if not items:
        raise ConfigError("no labels named: give NAME=VALUE pairs of the segmentations, e.g. myocardium=2, "
                          "lv_cavity=3")
    return [str(spec) for spec in parse_labels(items)]


def missing_cohort_requirements(clinical: str | os.PathLike | None = None) -> list[str]:
    """Pip requirements the step needs that are not importable (checked without importing them)."""
    needed = [_LOCK]
    clinical_text = _text(clinical)
    if clinical_text:
        needed.append(_TABLE)
        if Path(clinical_text).suffix.lower() in _EXCEL_SUFFIXES:
            needed.append(_EXCEL)
    return [requirement for requirement, module in needed if importlib.util.find_spec(module) is None]


def cohort_task(images: str | os.PathLike, labels: str | os.PathLike, out: str | os.PathLike,
                label_specs: str | Sequence[str], clinical: str | os.PathLike | None = None,
                id_column: str | None = None, class_column: str | None = None, workers: int = 1) -> Task:
    """A task that builds (or resumes) the cohort folder ``out``; its value is the ``CohortSummary``.

    Args:
        images, labels: a folder or a glob pattern of the images / of their segmentations.
        out: the cohort folder (an earlier run's folder is resumed).
        label_specs: one line (``"myocardium=2, lv_cavity=3"``) or a list of ``NAME=VALUE`` texts.
        clinical: optional clinical table (.csv, .tsv, .xlsx); ``""`` means none.
        id_column: its subject id column (default: one named id, subject, patient or case).
        class_column: its column holding each subject's class (the manifest's ``label``).
        workers: processes measuring the subjects.

    Raises:
        ConfigError, InputError: at once, for what can be checked without reading the images.
    """
    from AttriVAELib.data.label_measures import parse_labels

    images_text, labels_text, out_text = _text(images), _text(labels), _text(out)
    if not images_text:
        raise ConfigError("no images selected: choose their folder, or type a pattern such as "
                          "data/*/*_frame01.nii.gz")
    if not labels_text:
        raise ConfigError("no segmentations selected: choose their folder (it may be the images' folder when their "
                          "names end in _gt, _seg, _label …), or type a pattern")
    if not out_text:
        raise ConfigError("no output folder selected for the cohort")
    if isinstance(label_specs, str):
        specs = parse_label_line(label_specs)
    else:
        specs = [str(spec) for spec in parse_labels(str(spec) for spec in label_specs)]
    clinical_text = _text(clinical) or None
    id_text, class_text = _text(id_column) or None, _text(class_column) or None
    if clinical_text is None and (id_text or class_text):
        which = "an id column" if id_text else "a class column"
        raise ConfigError(f"{which} was given without a clinical table; choose the table or clear the column")
    if clinical_text is not None and not Path(clinical_text).is_file():
        raise InputError(f"{clinical_text}: clinical table not found")
    if int(workers) < 1:
        raise ConfigError(f"workers must be at least 1 (got {workers})")

    def work(task: Task):
        from AttriVAELib.data.cohort_builder import build_cohort

        task.report(0.0, "pairing images and segmentations")

        def progress(done: int, total: int) -> None:
            if task.cancel_requested:
                return  # should_stop ends the run after this subject
            try:
                task.report(done / total if total else 0.0, f"{done}/{total} subjects")
            except TaskCancelled:
                pass  # cancelled just now: likewise

        try:
            summary = build_cohort(images_text, labels_text, out_text, specs, clinical=clinical_text,
                                   id_column=id_text, class_column=class_text, workers=int(workers),
                                   progress=progress, should_stop=lambda: task.cancel_requested)
        except AttriVAEError:
            raise
        except OSError as exc:  # e.g. a full disk, or an output path below a file
            where = f" ({exc.filename})" if exc.filename else ""
            raise OutputError(f"{out_text}: cannot write the cohort: {exc.strerror or exc}{where}") from exc
        if summary.stopped:
            task.check()  # raises TaskCancelled: the cancel is what stopped it
            raise TaskCancelled(f"{COHORT_TASK_NAME} stopped")
        return summary

    return Task(COHORT_TASK_NAME, work, lambda summary: summary)


def result_text(task: Task) -> str:
    """What the panel shows for a finished cohort task: the summary, the stop note, or the reasons and the error."""
    if task.state == "done" and task.value is not None:
        return task.value.text()
    if task.state == "cancelled":
        return STOPPED_TEXT
    if task.state == "failed" and task.error is not None:
        summary = getattr(task.error, "summary", None)
        lines = [summary.text()] if summary is not None and summary.text() else []
        return "\n".join(lines + [f"error: {task.error}"])
    return ""
