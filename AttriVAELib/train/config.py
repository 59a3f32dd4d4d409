"""Experiment configuration: a preset, overridden by a YAML file, overridden by CLI flags.

The resolved configuration is a plain nested dict with five sections::

    model: ModelConfig fields        loss: LossConfig fields
    optim: lr, batch_size, weight_decay, lr_schedule, lr_min
    train: epochs, patience, seed, device, precision, channels_last, compile, ...
    data:  attributes, preprocess (PreprocessSpec fields), augmentation, split_seed, ...

Unknown keys anywhere are an error naming the key, so a typo never silently falls back to
a default.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Mapping

import yaml

from AttriVAELib.core.errors import ConfigError

OPTIM_DEFAULTS: dict[str, Any] = {
    "lr": 1e-4,
    "batch_size": 16,
    "weight_decay": 0.0,
    "lr_schedule": "constant",  # constant | cosine (from lr down to lr_min over all epochs' steps)
    "lr_min": 0.0,
}
LR_SCHEDULES = ("constant", "cosine")

TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 100,
    "patience": 0,  # early stopping on the validation loss; 0 = off
    "max_minutes": 0,  # stop after the epoch that reaches this wall time; 0 = off
    "val_every": 1,
    "seed": 0,
    "device": "auto",  # auto | cpu | cuda | cuda:N
    "precision": "auto",  # auto (bf16 where it helps) | bf16 | fp32
    "channels_last": True,
    "compile": False,
    "num_threads": 0,  # torch intra-op threads; 0 = torch's default
    "deterministic": True,  # deterministic algorithms on CPU
    "selection_metric": "val_loss",
    "init_from": None,  # a run folder or model.safetensors whose weights start this run (fine-tuning)
}

DATA_DEFAULTS: dict[str, Any] = {
    "attributes": None,  # None = every attribute column of the manifest
    "preprocess": {},  # PreprocessSpec fields
    "augmentation": None,  # None/{} = off; e.g. {"flip": 0.5, "rot90": 0.5}
    "split_seed": 0,
    "split_fractions": [0.7, 0.15, 0.15],
    "cache": True,
    "workers": 0,  # preprocessing workers (0 = in this process)
}

SECTIONS = ("model", "loss", "optim", "train", "data")


def deep_merge(base: dict, override: Mapping) -> dict:
    """Recursive dict merge; ``override`` wins. Inputs are not modified."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _check_keys(section: str, values: Mapping, allowed: Mapping) -> None:
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in '{section}' "
                          f"(allowed: {', '.join(sorted(allowed))})")


def load_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of sections ({', '.join(SECTIONS)})")
    return data


def resolve_config(preset: str = "attri_vae", file_config: Mapping | None = None,
                   overrides: Mapping | None = None) -> dict:
    """Preset ← YAML file ← overrides, validated section by section."""
    from AttriVAELib.nn.losses import LossConfig
    from AttriVAELib.nn.model import ModelConfig
    from AttriVAELib.train.presets import get_preset

    base = {"model": {}, "loss": {}, "optim": dict(OPTIM_DEFAULTS), "train": dict(TRAIN_DEFAULTS),
            "data": copy.deepcopy(DATA_DEFAULTS)}
    layers = [get_preset(preset), file_config or {}, overrides or {}]
    config = base
    for layer in layers:
        _check_keys("config", layer, dict.fromkeys(SECTIONS + ("preset",)))
        for section, values in layer.items():
            if section == "preset":
                continue
            if not isinstance(values, Mapping):
                raise ConfigError(f"section '{section}' must be a mapping, not {type(values).__name__}")
        config = deep_merge(config, {k: v for k, v in layer.items() if k != "preset"})
    config["preset"] = preset
    _check_keys("optim", config["optim"], OPTIM_DEFAULTS)
    _check_keys("train", config["train"], TRAIN_DEFAULTS)
    _check_keys("data", config["data"], DATA_DEFAULTS)
    # Validate model/loss field names and values now; K and classes are set from the data later.
    ModelConfig.from_dict(config["model"])
    LossConfig.from_dict(config["loss"])
    _validate_numbers(config)
    return config


def _validate_numbers(config: dict) -> None:
    optim, train = config["optim"], config["train"]
    if not float(optim["lr"]) > 0:
        raise ConfigError(f"optim.lr must be positive, got {optim['lr']}")
    if optim["lr_schedule"] not in LR_SCHEDULES:
        raise ConfigError(f"optim.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {optim['lr_schedule']!r}")
    if not 0.0 <= float(optim["lr_min"]) <= float(optim["lr"]):
        raise ConfigError(f"optim.lr_min must be between 0 and optim.lr ({optim['lr']}), got {optim['lr_min']}")
    if int(optim["batch_size"]) < 2:
        raise ConfigError(f"optim.batch_size must be at least 2 (the attribute loss compares pairs), got {optim['batch_size']}")
    if int(train["epochs"]) < 1:
        raise ConfigError(f"train.epochs must be at least 1, got {train['epochs']}")
    if float(train["max_minutes"]) < 0:
        raise ConfigError(f"train.max_minutes must be >= 0, got {train['max_minutes']}")
    if int(train["patience"]) < 0:
        raise ConfigError(f"train.patience must be >= 0, got {train['patience']}")
    if train["precision"] not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"train.precision must be auto, bf16 or fp32, got {train['precision']!r}")
    fr = config["data"]["split_fractions"]
    if not (isinstance(fr, (list, tuple)) and len(fr) == 3):
        raise ConfigError(f"data.split_fractions must be three numbers, got {fr!r}")


def dump_yaml(config: Mapping) -> str:
    return yaml.safe_dump(_plain(config), sort_keys=False)


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
