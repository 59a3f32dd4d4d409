"""The Slicer panel's *Build a cohort* step (AttriVAELib.slicer.cohort_step) on a real ACDC-like cohort.

The raw data are written by the ACDC-like generator (real NIfTI frames, segmentations and a
clinical CSV in ``tmp_path``); the task runs through the same :class:`~AttriVAELib.slicer.tasks.Task`
machinery as the panel's other tasks: ``run_here`` (the console's synchronous path) and a worker
thread polled from the main thread like the module's QTimer. Cancel is the task's own: once
:meth:`Task.cancel` is called, :meth:`Task.check` raises and the builder stops after the subject
it is on.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from AttriVAELib.core.errors import AttriVAEError, ConfigError, InputError, OutputError
from AttriVAELib.data.cohort_builder import NoUsableSubject
from AttriVAELib.slicer.cohort_step import (COHORT_TASK_NAME, STOPPED_TEXT, cohort_task, missing_cohort_requirements,
                                            parse_label_line, result_text)
from AttriVAELib.slicer.tasks import Task, TaskCancelled, TaskRunner

LABEL_LINE = "lv_cavity=3, myocardium=2, outer=1"
PATIENTS = 3  # two frames each: six subjects


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ACDC-like raw data: patientNNN/patientNNN_frameMM(_gt).nii.gz and clinical.csv (read-only)."""
    from AttriVAELib.cohorts.acdc_like.generator import generate_acdc_like

    out = tmp_path_factory.mktemp("acdc") / "raw"
    generate_acdc_like(out, n=PATIENTS, spacing=(1.6, 1.6, 5.0), seed=4, workers=1, progress=False)
    return out


def recording(task: Task, cancel_at: str | None = None) -> list[tuple[float, str]]:
    """Record what the worker reports; with ``cancel_at``, cancel the task right after that message."""
    reports: list[tuple[float, str]] = []
    report = task.report

    def record(fraction: float, message: str = "") -> None:
        report(fraction, message)
        reports.append((fraction, message))
        if message == cancel_at:
            task.cancel()

    task.report = record
    return reports


def rows_of(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))


def make_task(raw: Path, out: Path, **kwargs) -> Task:
    kwargs.setdefault("clinical", raw / "clinical.csv")
    kwargs.setdefault("class_column", "Group")
    return cohort_task(raw, raw, out, LABEL_LINE, **kwargs)


def test_builds_the_cohort_and_reports_progress(raw: Path, tmp_path: Path):
    out = tmp_path / "cohort"
    task = make_task(raw, out)
    reports = recording(task)
    summary = task.run_here()
    assert task.state == "done" and task.name == COHORT_TASK_NAME
    assert summary.manifest == out / "manifest.csv" and summary.manifest.is_file() and summary.out == out
    subjects = 2 * PATIENTS
    assert (summary.subjects, summary.groups, summary.measured, summary.reused) == (subjects, PATIENTS, subjects, 0)
    assert reports[0] == (0.0, "pairing images and segmentations")
    assert [m for _, m in reports[1:]] == [f"{k}/{subjects} subjects" for k in range(subjects + 1)]
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    rows = rows_of(summary.manifest)
    groups = {r["Patient"]: r["Group"] for r in rows_of(raw / "clinical.csv")}
    assert len(rows) == subjects and all(r["label"] == groups[r["meta_group"]] for r in rows)
    assert {"lv_cavity_volume_ml", "myocardium_thickness_mm"} <= set(rows[0])
    text = result_text(task)
    assert text == summary.text() and f"manifest: {summary.manifest}" in text
    assert "Spearman ρ between attributes:" in text


def test_background_worker_delivers_progress_and_the_summary(raw: Path, tmp_path: Path):
    """The panel's path: started on a runner, polled from the main thread; nothing of the raw data changes."""
    before = sorted((p.name, p.stat().st_size) for p in raw.rglob("*"))
    task = make_task(raw, tmp_path / "cohort", clinical=None, class_column=None)
    delivered: list[float] = []
    task.on_progress = lambda t: delivered.append(t.fraction)
    runner = TaskRunner()
    runner.start(task)
    end = time.monotonic() + 300
    while runner.process_pending() and time.monotonic() < end:
        time.sleep(0.005)
    assert task.state == "done", result_text(task)
    assert task.fraction == 1.0 and task.message == f"{2 * PATIENTS}/{2 * PATIENTS} subjects"
    assert delivered == sorted(delivered)
    assert task.value.manifest.is_file() and "label" not in rows_of(task.value.manifest)[0]
    assert sorted((p.name, p.stat().st_size) for p in raw.rglob("*")) == before


def test_cancel_stops_without_a_manifest_and_the_next_run_resumes(raw: Path, tmp_path: Path):
    out = tmp_path / "cohort"
    subjects = 2 * PATIENTS
    task = make_task(raw, out)
    reports = recording(task, cancel_at=f"2/{subjects} subjects")
    with pytest.raises(TaskCancelled):
        task.run_here()
    assert task.cancel_requested and reports[-1][1] == f"2/{subjects} subjects"  # nothing reported after cancel
    assert not (out / "manifest.csv").exists() and not (out / "summary.txt").exists()
    assert result_text(Task("x", lambda t: None)) == ""  # an unfinished task shows nothing

    again = make_task(raw, out)
    reports = recording(again)
    summary = again.run_here()
    assert (summary.reused, summary.measured, summary.subjects) == (2, subjects - 2, subjects)
    assert [m for _, m in reports[1:]] == [f"{k}/{subjects} subjects" for k in range(2, subjects + 1)]
    assert summary.manifest.is_file()


def test_cancel_from_the_main_thread_ends_the_task_at_once(raw: Path, tmp_path: Path):
    """Cancel pressed while the worker runs: cancelled for the panel at once, the worker ends, no manifest."""
    task = make_task(raw, tmp_path / "cohort")
    runner = TaskRunner()
    task.cancel()  # a cancelled task never starts measuring
    assert task.state == "cancelled" and result_text(task) == STOPPED_TEXT
    with pytest.raises(TaskCancelled):
        task.result()
    fresh = make_task(raw, tmp_path / "cohort")
    gate = threading.Event()
    report = fresh.report

    def held(fraction: float, message: str = "") -> None:  # the worker's first report waits for the cancel
        gate.wait(60)
        report(fraction, message)

    fresh.report = held
    runner.start(fresh)
    fresh.cancel()
    gate.set()
    assert fresh.state == "cancelled"
    end = time.monotonic() + 300
    while runner.busy and time.monotonic() < end:
        runner.process_pending()
        time.sleep(0.005)
    assert fresh.state == "cancelled" and not fresh.worker_alive
    assert not (tmp_path / "cohort" / "manifest.csv").exists()


def test_no_usable_subject_lists_every_reason(raw: Path, tmp_path: Path):
    """A label value absent from every segmentation: the task fails with one line, the text lists each subject."""
    task = cohort_task(raw, raw, tmp_path / "cohort", "scar=9")
    runner = TaskRunner()
    runner.start(task)
    end = time.monotonic() + 300
    while runner.process_pending() and time.monotonic() < end:
        time.sleep(0.005)
    assert task.state == "failed" and isinstance(task.error, NoUsableSubject)
    assert "\n" not in str(task.error) and str(task.error).startswith("no usable subject")
    text = result_text(task)
    assert f"excluded {2 * PATIENTS} subject(s):" in text and text.endswith(f"error: {task.error}")
    assert not (tmp_path / "cohort" / "manifest.csv").exists()


@pytest.mark.parametrize("change, error, words", [
    ({"images": ""}, ConfigError, "no images selected"),
    ({"labels": " "}, ConfigError, "no segmentations selected"),
    ({"out": "."}, ConfigError, "no output folder"),
    ({"label_specs": ""}, ConfigError, "no labels named"),
    ({"label_specs": "myocardium"}, ConfigError, "expected NAME=VALUE"),
    ({"label_specs": "lv=3, lv=2"}, ConfigError, "more than once"),
    ({"label_specs": "Myo=2"}, ConfigError, "lower-case"),
    ({"class_column": "Group"}, ConfigError, "without a clinical table"),
    ({"id_column": "Patient"}, ConfigError, "without a clinical table"),
    ({"clinical": "missing.csv"}, InputError, "clinical table not found"),
    ({"workers": 0}, ConfigError, "workers must be at least 1"),
])
def test_bad_fields_fail_at_once_with_one_line(raw: Path, tmp_path: Path, change, error, words):
    args = {"images": raw, "labels": raw, "out": tmp_path / "cohort", "label_specs": LABEL_LINE}
    args.update(change)
    if "clinical" in change:
        args["clinical"] = tmp_path / change["clinical"]
    with pytest.raises(error, match=words) as caught:
        cohort_task(**args)
    assert "\n" not in str(caught.value) and not (tmp_path / "cohort").exists()


@pytest.mark.parametrize("images, labels, out, error, words", [
    ("{tmp}/nothing", "{raw}", "{tmp}/cohort", InputError, "folder not found"),
    ("{raw}", "{raw}", "{raw}", OutputError, "holds the input"),
    ("{raw}", "{raw}", "{tmp}/file.txt/cohort", OutputError, "cannot write the cohort"),
    ("{raw}", "{raw}", "{tmp}/foreign", OutputError, "not a folder written by attrivae cohort"),
])
def test_errors_in_the_worker_are_one_line(raw: Path, tmp_path: Path, images, labels, out, error, words):
    (tmp_path / "file.txt").write_text("not a folder")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "keep.txt").write_text("mine")
    fill = {"tmp": tmp_path, "raw": raw}
    task = cohort_task(images.format(**fill), labels.format(**fill), out.format(**fill), LABEL_LINE)
    with pytest.raises(error, match=words) as caught:
        task.run_here()
    assert isinstance(caught.value, AttriVAEError) and "\n" not in str(caught.value)
    assert (tmp_path / "foreign" / "keep.txt").read_text() == "mine"


def test_label_line():
    assert parse_label_line("myocardium=2, lv = 2+3; outer=1") == ["myocardium=2", "lv=2+3", "outer=1"]
    assert parse_label_line(" rv=1\nlv=3 + 2 ") == ["rv=1", "lv=2+3"]
    with pytest.raises(ConfigError, match="values must be positive"):
        parse_label_line("background=0")


def test_requirements_and_imports_stay_light(tmp_path: Path):
    """Nothing to install here (the test environment has the cohort extras); importing the step
    imports neither Qt, Slicer, VTK nor torch (Slicer discovers the module before they are installed)."""
    assert missing_cohort_requirements(None) == missing_cohort_requirements("") == []
    assert missing_cohort_requirements(tmp_path / "table.csv") == missing_cohort_requirements("t.XLSX") == []
    code = ("import sys, AttriVAELib.slicer.cohort_step\n"
            "print(sorted(m for m in ('torch', 'qt', 'slicer', 'vtk', 'ctk', 'pandas') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
