"""Configuration resolution: preset ← YAML ← overrides, and one-line errors for bad configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from AttriVAELib.core.errors import ConfigError
from AttriVAELib.train.config import dump_yaml, load_yaml, resolve_config


def test_layers_override_in_order(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.01\ntrain:\n  epochs: 3\nloss:\n  gamma: 50\n")
    config = resolve_config("attri_vae", load_yaml(path), {"train": {"epochs": 5}})
    assert config["optim"]["lr"] == 0.01
    assert config["train"]["epochs"] == 5
    assert config["loss"]["gamma"] == 50
    assert config["loss"]["delta"] == 10  # from the preset
    assert resolve_config("attri_vae", load_yaml(tmp_path / "c.yaml")) == resolve_config(
        "attri_vae", __import__("yaml").safe_load(dump_yaml(load_yaml(path))))


@pytest.mark.parametrize("layer, match", [
    ({"trian": {}}, "unknown key trian in 'config'"),
    ({"train": {"epoch": 3}}, "unknown key epoch in 'train'"),
    ({"optim": {"lr": -1}}, "optim.lr must be positive"),
    ({"optim": {"batch_size": 1}}, "batch_size must be at least 2"),
    ({"train": {"precision": "fp8"}}, "precision"),
    ({"model": {"input_size": 40}}, "16"),
    ({"model": {"latent_dim": 4, "num_regularized": 5}}, "num_regularized"),
    ({"model": {"colour": 1}}, "colour"),
    ({"loss": {"gamma": -1}}, "gamma"),
    ({"data": {"atributes": ["x"]}}, "unknown key atributes in 'data'"),
    ({"optim": {"lr_schedule": "step"}}, "lr_schedule must be one of constant, cosine"),
    ({"optim": {"lr": 1e-4, "lr_min": 1e-3}}, "lr_min must be between 0 and optim.lr"),
])
def test_bad_configs(layer: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        resolve_config("attri_vae", layer)
    assert "\n" not in str(info.value)


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'resnet'"):
        resolve_config("resnet")


def test_bad_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_yaml(path)
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(path)
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")
