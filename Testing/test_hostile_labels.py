"""Labels: a class with one subject, "1" and "1.0", a manifest with more classes than the model, an
empty test split, a split missing a class."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from hostile_helpers import TINY_CONFIG, assert_one_line_error, run


def _relabel(cohort: Path, labels: dict[int, str]) -> None:
    path = cohort / "manifest.csv"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for index, label in labels.items():
        rows[index]["label"] = label
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (cohort / "split.json").unlink(missing_ok=True)


def test_a_class_with_one_subject_is_one_line_and_leaves_no_run(cohort_copy: Path, tmp_path: Path) -> None:
    _relabel(cohort_copy, {0: "2"})
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    out = tmp_path / "run"
    result = run("train", "--data", str(cohort_copy), "--out", str(out), "--config", str(config), "--quiet")
    line = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "label '2' has only 1 subject" in line, line
    assert not out.exists()


def test_a_rare_class_missing_from_validation_trains(cohort_copy: Path, tmp_path: Path) -> None:
    """Three classes, the third with two subjects: the validation split may lack it; AUC is over
    the classes present instead of a crash."""
    _relabel(cohort_copy, {0: "2", 1: "2"})
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    out = tmp_path / "run"
    result = run("train", "--data", str(cohort_copy), "--out", str(out), "--config", str(config), "--quiet")
    assert result.returncode in (0, 2) and "Traceback" not in result.stderr, result.stderr
    if result.returncode == 2:  # the split put both in val/test: one line saying so
        assert "has no subject of class '2'" in result.stderr.strip().splitlines()[-1]
    else:
        assert (out / "model.safetensors").is_file()


def test_numeric_labels_are_one_class_however_written(cohort_copy: Path) -> None:
    from AttriVAELib.data.manifest import load_manifest

    _relabel(cohort_copy, {0: "1.0", 1: "01", 2: "0.0"})
    manifest = load_manifest(cohort_copy)
    assert manifest.label_names == ["0", "1"]
    result = run("info", "--data", str(cohort_copy))
    assert result.returncode == 0, result.stderr
    assert "labels: 0: " in result.stdout and "1.0" not in result.stdout


def test_evaluate_a_manifest_with_more_classes_than_the_model(cohort_copy: Path, tiny_run: Path,
                                                              tmp_path: Path) -> None:
    _relabel(cohort_copy, {0: "2", 1: "2", 2: "2"})
    result = run("evaluate", "--model", str(tiny_run), "--data", str(cohort_copy), "--out", str(tmp_path / "e"),
                 "--no-figures", "--bootstrap", "10")
    assert_one_line_error(result, "'2'", "not classes of the model")


def test_evaluate_an_empty_test_split(cohort_copy: Path, tiny_run: Path, tmp_path: Path) -> None:
    subjects = sorted(p.name.split(".")[0] for p in (cohort_copy / "images").iterdir())
    split = {"subjects": {"train": subjects[:30], "val": subjects[30:], "test": []}}
    (cohort_copy / "split.json").write_text(json.dumps(split))
    result = run("evaluate", "--model", str(tiny_run), "--data", str(cohort_copy), "--out", str(tmp_path / "e"),
                 "--no-figures", "--bootstrap", "10")
    assert_one_line_error(result, "test split", "is empty", "--split val")


def test_auc_over_the_classes_present() -> None:
    from AttriVAELib.evaluate.scores import classification_scores
    from AttriVAELib.train.heldout import latent_scores, macro_auc

    labels = np.array([0, 1, 0, 1, 0, 1])
    probs = np.tile([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]], (3, 1))
    assert macro_auc(labels, probs) == 1.0
    scores = latent_scores(np.zeros((6, 2)), np.zeros((6, 0)), labels, probs, 0)
    assert scores["auc"] == 1.0
    assert classification_scores(labels, probs, n_boot=20)["auc"]["value"] == 1.0
