"""Named configurations: the paper's Attri-VAE and its baselines as settings of the same code.

Each preset is ``{"model": {...}, "loss": {...}, "optim": {...}}`` holding overrides of
:class:`~AttriVAELib.nn.model.ModelConfig`, :class:`~AttriVAELib.nn.losses.LossConfig` and the
optimizer (Adam) settings.

``model.num_regularized`` (K) is never set here: the trainer sets it to the number of
attribute columns in the data (with γ = 0 it only records which dims *would* be tied to
attributes, so metrics can still compare dim k with attribute k). ``model.num_classes`` is set
by the trainer from the labels (2 = binary, C > 2 = multiclass) unless a preset fixes it to 0,
which means "no classifier" (VAE, β-VAE, AR-VAE).

| preset      | β | γ   | δ   | classifier (α) | notes                                    |
|-------------|---|-----|-----|----------------|------------------------------------------|
| vae         | 1 | 0   | –   | none           | plain VAE                                 |
| beta_vae    | 4 | 0   | –   | none           | β = 4, Higgins et al. 2017's usual choice |
| ar_vae      | 2 | 200 | 10  | none           | Attri-VAE without the classifier          |
| vae_mlp     | 1 | 0   | –   | yes (1)        | VAE + MLP classifier                      |
| attri_vae   | 2 | 200 | 10  | yes (1)        | paper hyperparameters (default)           |
| published   | 2 | 10  | 100 | yes (1)        | reference code: also L1 5e-5              |
| fast_cpu    | 2 | 200 | 10  | yes (1)        | 32³, L 16, lr 1e-3 cosine to 1e-5, KL warm-up 200 steps |
| brain_cpu   | 2 | 200 | 10  | yes (1)        | 64³ brain MRI on a CPU: L 32, batch 8, lr 1e-3 cosine to 1e-5 |
| brain_gpu   | 2 | 200 | 10  | yes (1)        | 128³ brain MRI on a GPU: L 64, batch 16   |

The brain presets are for ``attrivae synth-brain`` cohorts (and real T1 volumes): sizes the
published architecture (fixed at 80³) could not take, with a bottleneck wide enough
(16 channels × (N/16)³) for the anatomy; every command works on them unchanged.
"""

from __future__ import annotations

import copy
from typing import Any

from AttriVAELib.core.errors import ConfigError

__all__ = ["PRESETS", "DEFAULT_PRESET", "get_preset", "preset_configs"]

DEFAULT_PRESET = "attri_vae"

_PAPER_OPTIM = {"lr": 1e-4, "batch_size": 16}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "vae": {
        "model": {"num_classes": 0},
        "loss": {"beta": 1.0, "gamma": 0.0, "alpha": 0.0},
        "optim": dict(_PAPER_OPTIM),
    },
    "beta_vae": {
        "model": {"num_classes": 0},
        "loss": {"beta": 4.0, "gamma": 0.0, "alpha": 0.0},
        "optim": dict(_PAPER_OPTIM),
    },
    "ar_vae": {
        "model": {"num_classes": 0},
        "loss": {"beta": 2.0, "gamma": 200.0, "delta": 10.0, "alpha": 0.0},
        "optim": dict(_PAPER_OPTIM),
    },
    "vae_mlp": {
        "model": {},
        "loss": {"beta": 1.0, "gamma": 0.0, "alpha": 1.0},
        "optim": dict(_PAPER_OPTIM),
    },
    "attri_vae": {
        "model": {},
        "loss": {"beta": 2.0, "gamma": 200.0, "delta": 10.0, "alpha": 1.0},
        "optim": dict(_PAPER_OPTIM),
    },
    "published": {
        "model": {},
        "loss": {"beta": 2.0, "gamma": 10.0, "delta": 100.0, "alpha": 1.0, "l1": 5e-5},
        "optim": dict(_PAPER_OPTIM),
    },
    "fast_cpu": {
        "model": {"input_size": 32, "width": 1.0, "latent_dim": 16, "bottleneck_channels": 16},
        "loss": {"beta": 2.0, "gamma": 200.0, "delta": 10.0, "alpha": 1.0, "kl_warmup_steps": 200},
        # A cosine decay to 1e-5 over the run: on the phantom cohort (200 epochs) it lifted the
        # held-out ρ of every attribute (lesion volume 0.89 → 0.92) and the AUC (0.97 → 1.00).
        "optim": {"lr": 1e-3, "batch_size": 16, "lr_schedule": "cosine", "lr_min": 1e-5},
    },
    "brain_cpu": {
        "model": {"input_size": 64, "width": 1.0, "latent_dim": 32, "bottleneck_channels": 16},
        "loss": {"beta": 2.0, "gamma": 200.0, "delta": 10.0, "alpha": 1.0, "kl_warmup_steps": 200},
        # Cosine to 1e-5: 600 subjects, 30 epochs reached a validation ρ of 0.95 for the
        # ventricles and 0.67 for cortical thickness (held-out 0.95 and 0.53).
        "optim": {"lr": 1e-3, "batch_size": 8, "lr_schedule": "cosine", "lr_min": 1e-5},
    },
    "brain_gpu": {
        "model": {"input_size": 128, "width": 1.0, "latent_dim": 64, "bottleneck_channels": 16},
        "loss": {"beta": 2.0, "gamma": 200.0, "delta": 10.0, "alpha": 1.0, "kl_warmup_steps": 500},
        "optim": {"lr": 5e-4, "batch_size": 16},
    },
}


def get_preset(name: str) -> dict[str, dict[str, Any]]:
    """A deep copy of preset ``name`` (ConfigError for an unknown name)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def preset_configs(name: str, num_regularized: int = 0, num_classes: int | None = None):
    """``(ModelConfig, LossConfig, optim dict)`` for preset ``name`` and the data's K / classes.

    ``num_classes`` is ignored when the preset fixes it (0 = no classifier).
    """
    from AttriVAELib.nn.losses import LossConfig
    from AttriVAELib.nn.model import ModelConfig

    preset = get_preset(name)
    model = dict(preset["model"])
    model.setdefault("num_regularized", num_regularized)
    if num_classes is not None:
        model.setdefault("num_classes", num_classes)
    return ModelConfig.from_dict(model), LossConfig.from_dict(preset["loss"]), preset["optim"]
