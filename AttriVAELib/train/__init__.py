"""Training: the trainer (single process or DDP), configurations and presets.

Public names are imported on first use (:mod:`AttriVAELib.core.lazy`).
"""

from AttriVAELib.core.lazy import lazy_exports

_EXPORTS = {
    "DistContext": "AttriVAELib.train.distributed",
    "init_distributed": "AttriVAELib.train.distributed",
    "learning_rate": "AttriVAELib.train.trainer",
    "state_digest": "AttriVAELib.train.distributed",
    "Trainer": "AttriVAELib.train.trainer",
    "latent_scores": "AttriVAELib.train.heldout",
    "encode_split": "AttriVAELib.train.heldout",
    "add_calibration": "AttriVAELib.train.heldout",
    "heldout_summary": "AttriVAELib.train.heldout",
    "train": "AttriVAELib.train.trainer",
    "train_model": "AttriVAELib.train.trainer",
    "deep_merge": "AttriVAELib.train.config",
    "load_yaml": "AttriVAELib.train.config",
    "resolve_config": "AttriVAELib.train.config",
    "dump_yaml": "AttriVAELib.train.config",
    "get_preset": "AttriVAELib.train.presets",
    "preset_configs": "AttriVAELib.train.presets",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
