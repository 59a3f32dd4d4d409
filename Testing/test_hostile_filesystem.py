"""File-system faults: read-only data, a full disk, an output that is a folder.

Read-only data is a read-only bind mount of a cohort; a full disk is a tiny tmpfs. Where the
machine does not allow mounting, these tests skip with the reason.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hostile_helpers import TINY_CONFIG, assert_one_line_error, fill, leftovers, read_only_copy, run, small_filesystem


@pytest.fixture()
def cache(tmp_path: Path) -> dict:
    return {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "ATTRIVAE_CACHE_DIR": ""}


def test_info_and_train_work_on_a_read_only_dataset(cohort_copy: Path, tmp_path: Path, cache: dict) -> None:
    (cohort_copy / "split.json").unlink(missing_ok=True)
    with read_only_copy(cohort_copy, tmp_path) as data:
        info = run("info", "--data", str(data), env=cache)
        assert info.returncode == 0, info.stderr
        assert "Traceback" not in info.stderr and "not writable" in info.stderr
        saved = list((tmp_path / "xdg" / "attrivae" / "splits").glob("*.json"))
        assert len(saved) == 1
        config = tmp_path / "tiny.yaml"
        config.write_text(TINY_CONFIG)
        out = tmp_path / "run"
        result = run("train", "--data", str(data), "--out", str(out), "--config", str(config), "--quiet", env=cache)
        assert result.returncode == 0, result.stderr
        assert (out / "model.safetensors").is_file()
        # the run keeps its split; it is the one info created
        assert json.loads((out / "split.json").read_text())["subjects"] == \
            json.loads(saved[0].read_text())["subjects"]
        assert not (data / "split.json").exists()
        again = run("info", "--data", str(data), env=cache)
        assert again.returncode == 0 and "not writable" not in again.stderr


def test_train_into_a_read_only_folder_is_one_line(tiny_cohort: Path, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    with read_only_copy(target, tmp_path) as ro:
        result = run("train", "--data", str(tiny_cohort), "--out", str(ro / "run"), "--config", str(config), "--quiet")
        assert_one_line_error(result, "read-only file system")


def test_disk_full_during_synth_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    with small_filesystem(tmp_path, "600k") as disk:
        for workers in ("1", "2"):
            result = run("synth", "--out", str(disk / "cohort"), "--n", "40", "--size", "32", "--workers", workers,
                         "--quiet")
            assert_one_line_error(result, "disk full")
            assert not (disk / "cohort").exists() and not leftovers(disk)


def test_disk_full_during_explain_traverse_and_encode(tiny_cohort: Path, tiny_run: Path, tmp_path: Path) -> None:
    image = str(tiny_cohort / "images" / "sub-0001.nii.gz")
    with small_filesystem(tmp_path, "600k") as disk:
        fill(disk)
        for command, extra in (("explain", ["--out", str(disk / "e")]),
                               ("traverse", ["--out", str(disk / "t"), "--dim", "0", "--range", "-1", "1",
                                             "--steps", "3"]),
                               ("encode", ["--json", str(disk / "e.json")])):
            result = run(command, "--model", str(tiny_run), image, *extra)
            assert_one_line_error(result, "disk full")
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]


def test_disk_full_during_train_is_one_line_and_the_run_resumes(tiny_cohort: Path, tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG.replace("epochs: 1", "epochs: 2"))
    with small_filesystem(tmp_path, "600k") as disk:
        result = run("train", "--data", str(tiny_cohort), "--out", str(disk / "run"), "--config", str(config),
                     "--quiet")
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert "disk full" in result.stderr.strip().splitlines()[-1]
        assert not leftovers(disk)
        saved = tmp_path / "saved"
        shutil.copytree(disk / "run", saved)
    # with room again, the run starts over or resumes; either way it finishes
    again = run("train", "--resume", str(saved), "--quiet") if (saved / "last.safetensors").exists() else \
        run("train", "--data", str(tiny_cohort), "--out", str(saved), "--config", str(config), "--quiet")
    assert again.returncode == 0, again.stderr
    assert (saved / "model.safetensors").is_file()
