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
import math
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
    "selection_metric": "val_loss",  # val_loss: the epoch of lowest validation loss | last: the last epoch
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
    if not path.is_file():
        raise ConfigError(f"{path}: is {'a folder' if path.is_dir() else 'not a regular file'}; give a YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (expected YAML)") from None
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


#: Selection metrics of the best model (the validation loss; never a test-split score).
SELECTION_METRICS = ("val_loss", "last")
#: Seeds: whole numbers in [0, 2³²), which every generator (NumPy, torch, scikit-learn) takes.
MAX_SEED = 2**32 - 1


def _number(section: str, key: str, value: Any, *, integer: bool = False, low: float | None = None,
            high: float | None = None, low_open: bool = False) -> int | float:
    """``value`` as a finite int/float within bounds, or a one-line ConfigError naming ``section.key``."""
    what = "a whole number" if integer else "a number"
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"{section}.{key} must be {what}, got {value!r}")
    if isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
        try:
            value = float(value.strip())
        except ValueError:
            raise ConfigError(f"{section}.{key} must be {what}, got {value!r}") from None
    if not isinstance(value, (int, float)):
        raise ConfigError(f"{section}.{key} must be {what}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{section}.{key} must be a finite number, got {value!r}")
    if integer:
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{section}.{key} must be a whole number, got {value!r}")
        value = int(value)
    if low is not None and (value <= low if low_open else value < low):
        bound = "positive" if (low == 0 and low_open) else f"{'>' if low_open else '>='} {_plain_number(low)}"
        raise ConfigError(f"{section}.{key} must be {bound}, got {_plain_number(value)}")
    if high is not None and value > high:
        raise ConfigError(f"{section}.{key} must be <= {_plain_number(high)}, got {_plain_number(value)}")
    return value


def _plain_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def _flag(section: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{section}.{key} must be true or false, got {value!r}")
    return value


def _validate_numbers(config: dict) -> None:
    """Check every optim/train/data value's type and range, and store it normalized (ints as int)."""
    optim, train, data = config["optim"], config["train"], config["data"]
    optim["lr"] = _number("optim", "lr", optim["lr"], low=0, low_open=True)
    if optim["lr_schedule"] not in LR_SCHEDULES:
        raise ConfigError(f"optim.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {optim['lr_schedule']!r}")
    optim["lr_min"] = _number("optim", "lr_min", optim["lr_min"], low=0)
    if not optim["lr_min"] <= optim["lr"]:
        raise ConfigError(f"optim.lr_min must be between 0 and optim.lr ({optim['lr']}), got {optim['lr_min']}")
    optim["batch_size"] = _number("optim", "batch_size", optim["batch_size"], integer=True, high=65536)
    if optim["batch_size"] < 2:
        raise ConfigError(f"optim.batch_size must be at least 2 (the attribute loss compares pairs), got {optim['batch_size']}")
    optim["weight_decay"] = _number("optim", "weight_decay", optim["weight_decay"], low=0)
    train["epochs"] = _number("train", "epochs", train["epochs"], integer=True, low=1, high=10_000_000)
    train["max_minutes"] = _number("train", "max_minutes", train["max_minutes"], low=0)
    train["patience"] = _number("train", "patience", train["patience"], integer=True, low=0)
    train["val_every"] = _number("train", "val_every", train["val_every"], integer=True, low=1)
    train["seed"] = _number("train", "seed", train["seed"], integer=True, low=0, high=MAX_SEED)
    train["num_threads"] = _number("train", "num_threads", train["num_threads"], integer=True, low=0, high=4096)
    if train["precision"] not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"train.precision must be auto, bf16 or fp32, got {train['precision']!r}")
    if not isinstance(train["device"], str) or not train["device"].strip():
        raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {train['device']!r}")
    for key in ("channels_last", "compile", "deterministic"):
        train[key] = _flag("train", key, train[key])
    if train["selection_metric"] not in SELECTION_METRICS:
        raise ConfigError(f"train.selection_metric must be one of {', '.join(SELECTION_METRICS)} (the model kept is "
                          f"the epoch of lowest validation loss, or the last), got {train['selection_metric']!r}")
    if train["init_from"] is not None and not isinstance(train["init_from"], str):
        raise ConfigError(f"train.init_from must be a run folder or a model.safetensors path, got {train['init_from']!r}")
    attributes = data["attributes"]
    if attributes is not None and (not isinstance(attributes, list) or not all(isinstance(a, str) for a in attributes)):
        raise ConfigError(f"data.attributes must be a list of column names or null, got {attributes!r}")
    if not isinstance(data["preprocess"], Mapping):
        raise ConfigError(f"data.preprocess must be a mapping, got {data['preprocess']!r}")
    if data["augmentation"] is not None and not isinstance(data["augmentation"], Mapping):
        raise ConfigError(f"data.augmentation must be a mapping or null, got {data['augmentation']!r}")
    data["split_seed"] = _number("data", "split_seed", data["split_seed"], integer=True, low=0, high=MAX_SEED)
    data["cache"] = _flag("data", "cache", data["cache"])
    data["workers"] = _number("data", "workers", data["workers"], integer=True, low=0, high=1024)
    fr = data["split_fractions"]
    if not (isinstance(fr, (list, tuple)) and len(fr) == 3):
        raise ConfigError(f"data.split_fractions must be three numbers, got {fr!r}")
    fr = [_number("data", "split_fractions", f, low=0) for f in fr]
    if not math.isclose(sum(fr), 1.0, abs_tol=1e-6):
        raise ConfigError(f"data.split_fractions must sum to 1, got {data['split_fractions']!r}")
    data["split_fractions"] = fr
    size = data["preprocess"].get("size")
    input_size = config["model"].get("input_size")
    if size is not None and input_size is not None and size != input_size:
        raise ConfigError(f"data.preprocess.size ({size!r}) differs from model.input_size ({input_size!r}); the model's "
                          "input is the preprocessed cube: set one of them, or both to the same value")


def dump_yaml(config: Mapping) -> str:
    return yaml.safe_dump(_plain(config), sort_keys=False)


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
