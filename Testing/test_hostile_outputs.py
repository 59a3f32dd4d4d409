"""Outputs never destroy inputs; ``--overwrite`` replaces only what the command wrote; the umask is followed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from hostile_helpers import TINY_CONFIG, assert_one_line_error, run


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def subject(tiny_cohort: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "subject"
    folder.mkdir()
    return Path(shutil.copy(tiny_cohort / "images" / "sub-0001.nii.gz", folder / "image.nii.gz"))


@pytest.fixture()
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def test_explain_overwrite_never_deletes_the_input_image(run_copy: Path, subject: Path) -> None:
    before = _digest(subject)
    result = run("explain", "--model", str(run_copy), str(subject), "--out", str(subject.parent), "--overwrite")
    assert_one_line_error(result, str(subject.parent), "holds the input")
    assert _digest(subject) == before


def test_explain_overwrite_never_deletes_the_model(run_copy: Path, subject: Path) -> None:
    weights = run_copy / "model.safetensors"
    before = _digest(weights)
    result = run("explain", "--model", str(run_copy), str(subject), "--out", str(run_copy), "--overwrite")
    assert_one_line_error(result, "is the input")
    assert _digest(weights) == before
    result = run("traverse", "--model", str(weights), str(subject), "--out", str(run_copy), "--overwrite", "--dim", "0",
                 "--range", "-1", "1", "--steps", "2")
    assert_one_line_error(result, "holds the input")
    assert _digest(weights) == before


def test_overwrite_replaces_only_what_the_command_wrote(run_copy: Path, subject: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    result = run("explain", "--model", str(run_copy), str(subject), "--out", str(mine), "--overwrite")
    assert_one_line_error(result, "not an output folder of attrivae explain")
    assert (mine / "notes.txt").read_text() == "keep me"
    out = tmp_path / "explained"
    assert run("explain", "--model", str(run_copy), str(subject), "--out", str(out)).returncode == 0
    assert run("explain", "--model", str(run_copy), str(subject), "--out", str(out), "--overwrite").returncode == 0
    assert (out / "explain.json").is_file()
    result = run("traverse", "--model", str(run_copy), str(subject), "--out", str(out), "--overwrite", "--dim", "0",
                 "--range", "-1", "1", "--steps", "2")
    assert_one_line_error(result, "not an output folder of attrivae traverse")
    assert (out / "explain.json").is_file()


def test_synth_overwrite_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me")
    assert_one_line_error(run("synth", "--out", str(mine), "--n", "2", "--size", "24", "--overwrite"),
                          "not an output folder of attrivae synth")
    assert (mine / "thesis.tex").read_text() == "keep me"


def test_encode_json_never_replaces_the_image(run_copy: Path, subject: Path) -> None:
    before = _digest(subject)
    assert_one_line_error(run("encode", "--model", str(run_copy), str(subject), "--json", str(subject)),
                          "is the input")
    assert_one_line_error(run("encode", "--model", str(run_copy), str(subject), "--json", str(subject), "--overwrite"),
                          "is the input")
    assert _digest(subject) == before
    weights = run_copy / "model.json"
    assert_one_line_error(run("encode", "--model", str(run_copy), str(subject), "--json", str(weights)),
                          "is the input")


def test_encode_json_needs_overwrite_and_only_replaces_its_own_json(run_copy: Path, subject: Path,
                                                                     tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text('{"precious": true}\n')
    assert_one_line_error(run("encode", "--model", str(run_copy), str(subject), "--json", str(other)),
                          "already exists", "--overwrite")
    assert_one_line_error(run("encode", "--model", str(run_copy), str(subject), "--json", str(other), "--overwrite"),
                          "not a JSON file written by attrivae encode")
    assert json.loads(other.read_text()) == {"precious": True}
    mine = tmp_path / "enc.json"
    assert run("encode", "--model", str(run_copy), str(subject), "--json", str(mine)).returncode == 0
    assert run("encode", "--model", str(run_copy), str(subject), "--json", str(mine), "--overwrite").returncode == 0
    assert "mu" in json.loads(mine.read_text())


def test_encode_json_onto_a_folder_is_one_line(run_copy: Path, subject: Path, tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    assert_one_line_error(run("encode", "--model", str(run_copy), str(subject), "--json", str(folder)),
                          "is a folder")


def test_train_out_may_not_be_the_data_folder(cohort_copy: Path, tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    result = run("train", "--data", str(cohort_copy), "--out", str(cohort_copy), "--config", str(config), "--quiet")
    assert_one_line_error(result, "is the input")
    assert not (cohort_copy / "config.yaml").exists()


def _modes(folder: Path) -> set[tuple[str, int]]:
    return {("d" if p.is_dir() else "f", stat.S_IMODE(p.stat().st_mode)) for p in [folder, *folder.rglob("*")]}


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("umask", [0o002, 0o027])
def test_outputs_follow_the_umask(run_copy: Path, subject: Path, tmp_path: Path, umask: int) -> None:
    cohort, explained, encoded = tmp_path / "cohort", tmp_path / "explained", tmp_path / "enc.json"
    set_umask = lambda: os.umask(umask)  # noqa: E731
    assert run("synth", "--out", str(cohort), "--n", "2", "--size", "24", "--workers", "1", "--quiet",
               preexec_fn=set_umask).returncode == 0
    assert run("explain", "--model", str(run_copy), str(subject), "--out", str(explained),
               preexec_fn=set_umask).returncode == 0
    assert run("encode", "--model", str(run_copy), str(subject), "--json", str(encoded),
               preexec_fn=set_umask).returncode == 0
    expected = {("d", 0o777 & ~umask), ("f", 0o666 & ~umask)}
    assert _modes(cohort) == expected
    assert _modes(explained) == expected
    assert stat.S_IMODE(encoded.stat().st_mode) == 0o666 & ~umask
