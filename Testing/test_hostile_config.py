"""Configurations, options and checkpoints that used to end in a traceback or be silently accepted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hostile_helpers import TINY_CONFIG, assert_one_line_error, run


@pytest.mark.parametrize("yaml_text, fragment", [
    ("optim: {lr: fast}", "optim.lr must be a number"),
    ("train: {num_threads: -1}", "train.num_threads must be >= 0"),
    ("train: {val_every: 0}", "train.val_every must be >= 1"),
    ("model: {latent_dim: 100000000}", "latent_dim 100000000 is larger than the maximum"),
    ("train: {epochs: 1.5}", "train.epochs must be a whole number"),
    ("train: {selection_metric: bogus}", "train.selection_metric must be one of val_loss, last"),
    ("train: {seed: 1e23}", "train.seed must be <="),
    ("data: {split_fractions: [0.5, 0.5, 0.5]}", "must sum to 1"),
    ("data: {preprocess: {size: 40}}", "data.preprocess.size (40) differs from model.input_size (32)"),
])
def test_bad_config_values_are_one_line(tiny_cohort: Path, tmp_path: Path, yaml_text: str, fragment: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text + "\n")
    result = run("train", "--data", str(tiny_cohort), "--out", str(tmp_path / "run"), "--preset", "fast_cpu",
                 "--config", str(config), "--quiet")
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, fragment", [
    (["train", "--seed", "1e23"], "--seed"),
    (["train", "--max-minutes", "nan"], "--max-minutes: nan is not a finite number"),
    (["train", "--epochs", "0"], "--epochs"),
    (["synth", "--seed", "-5"], "--seed: -5 is outside"),
    (["info", "--seed", "99999999999999999999"], "--seed"),
])
def test_bad_options_are_one_line(tiny_cohort: Path, tmp_path: Path, args: list[str], fragment: str) -> None:
    where = ["--data", str(tiny_cohort)] if args[0] in ("train", "info") else []
    out = ["--out", str(tmp_path / "x")] if args[0] in ("train", "synth") else []
    assert_one_line_error(run(*args, *where, *out), fragment)


def test_config_that_is_a_folder(tiny_cohort: Path, tmp_path: Path) -> None:
    assert_one_line_error(run("train", "--data", str(tiny_cohort), "--out", str(tmp_path / "run"), "--config",
                              str(tmp_path)), "is a folder")


def _resave(run_dir: Path, edit) -> Path:
    """The run's best model, its metadata or tensors edited, saved again with a valid checksum."""
    from safetensors import safe_open

    from AttriVAELib.nn.checkpoint import save_checkpoint

    tensors = {}
    with safe_open(str(run_dir / "model.safetensors"), framework="pt") as fh:
        meta = json.loads(fh.metadata()["attrivae"])
        for key in fh.keys():
            tensors[key] = fh.get_tensor(key)
    meta = edit(tensors, meta)
    for name in ("model.safetensors", "model.json"):
        (run_dir / name).unlink()
    save_checkpoint(run_dir, tensors, meta, name="model")
    return run_dir


@pytest.fixture()
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def test_nan_weights_are_refused(run_copy: Path, tiny_cohort: Path) -> None:
    def poison(tensors, meta):
        key = next(k for k in tensors if k.endswith("fc_mu.weight"))
        tensors[key][0, 0] = float("nan")
        return meta

    _resave(run_copy, poison)
    result = run("encode", "--model", str(run_copy), str(tiny_cohort / "images" / "sub-0001.nii.gz"))
    assert_one_line_error(result, "NaN or infinite")
    assert "class probabilities" not in result.stdout


def test_checkpoint_without_preprocessing_is_refused(run_copy: Path, tiny_cohort: Path) -> None:
    _resave(run_copy, lambda tensors, meta: {k: v for k, v in meta.items() if k != "preprocess"})
    result = run("encode", "--model", str(run_copy), str(tiny_cohort / "images" / "sub-0001.nii.gz"))
    assert_one_line_error(result, "no preprocessing settings")


@pytest.mark.parametrize("metadata, fragment", [
    ("[1, 2, 3]", "must be a JSON object"),
    ('{"format": "attrivae-checkpoint", "format_version": [1]}', "format_version"),
])
def test_checkpoint_header_of_the_wrong_shape(tmp_path: Path, tiny_cohort: Path, metadata: str, fragment: str) -> None:
    import torch
    from safetensors.torch import save_file

    weights = tmp_path / "model.safetensors"
    save_file({"x": torch.zeros(2)}, str(weights), metadata={"attrivae": metadata})
    result = run("encode", "--model", str(weights), str(tiny_cohort / "images" / "sub-0001.nii.gz"))
    assert_one_line_error(result, fragment)


def test_checkpoint_with_absurd_sizes_allocates_nothing(run_copy: Path, tiny_cohort: Path) -> None:
    image = str(tiny_cohort / "images" / "sub-0001.nii.gz")

    def huge(tensors, meta):
        meta["model_config"]["latent_dim"] = 10**8
        return meta

    _resave(run_copy, huge)
    assert_one_line_error(run("encode", "--model", str(run_copy), image), "latent_dim", "larger than the maximum")

    def big_but_allowed(tensors, meta):  # within the bounds: tens of GB if it were built before checking
        meta["model_config"].update(latent_dim=8192, width=64.0, input_size=512)
        return meta

    _resave(run_copy, big_but_allowed)
    assert_one_line_error(run("encode", "--model", str(run_copy), image, timeout=120),
                          "weights do not fit the model configuration")


def test_resume_with_a_garbage_run_file(run_copy: Path) -> None:
    (run_copy / "run.json").write_text("[not json")
    assert_one_line_error(run("train", "--resume", str(run_copy)), "run.json", "not a valid run file")


def test_resume_refuses_other_data_or_epochs(run_copy: Path, tiny_cohort: Path) -> None:
    assert_one_line_error(run("train", "--resume", str(run_copy), "--data", str(tiny_cohort), "--epochs", "9"),
                          "--data, --epochs cannot be changed")


def test_split_fractions_not_applied_to_a_saved_split_are_reported(cohort_copy: Path, tmp_path: Path) -> None:
    from AttriVAELib.data.manifest import load_manifest, load_split

    load_split(load_manifest(cohort_copy))  # the split saved with the data
    config = tmp_path / "c.yaml"
    config.write_text(TINY_CONFIG + "data: {split_fractions: [0.5, 0.25, 0.25]}\n")
    result = run("train", "--data", str(cohort_copy), "--out", str(tmp_path / "run"), "--config", str(config),
                 "--quiet")
    assert result.returncode == 0, result.stderr
    assert "split_fractions [0.5, 0.25, 0.25] (saved: [0.7, 0.15, 0.15]) not applied" in result.stderr
