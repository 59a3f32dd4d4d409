"""The network (AttriVAE), its losses, the CPU/GPU fast path, checkpoints and stored calibrations.

Public names are imported on first use (:mod:`AttriVAELib.core.lazy`).
"""

from AttriVAELib.core.lazy import lazy_exports

_EXPORTS = {
    "class_probabilities": "AttriVAELib.nn.model",
    "ModelConfig": "AttriVAELib.nn.config",
    "AttriVAE": "AttriVAELib.nn.model",
    "ConvBlock": "AttriVAELib.nn.model",
    "Conv3d": "AttriVAELib.nn.model",
    "ConvTranspose3d": "AttriVAELib.nn.model",
    "BatchNorm3d": "AttriVAELib.nn.model",
    "count_parameters": "AttriVAELib.nn.model",
    "to_fast_layout": "AttriVAELib.nn.model",
    "LossConfig": "AttriVAELib.nn.losses",
    "AttriVAELoss": "AttriVAELib.nn.losses",
    "kl_divergence": "AttriVAELib.nn.losses",
    "reconstruction_loss": "AttriVAELib.nn.losses",
    "attribute_regularization": "AttriVAELib.nn.losses",
    "classification_loss": "AttriVAELib.nn.losses",
    "l1_penalty": "AttriVAELib.nn.losses",
    "versions": "AttriVAELib.nn.checkpoint",
    "checkpoint_paths": "AttriVAELib.nn.checkpoint",
    "save_checkpoint": "AttriVAELib.nn.checkpoint",
    "read_metadata": "AttriVAELib.nn.checkpoint",
    "load_checkpoint": "AttriVAELib.nn.checkpoint",
    "split_prefix": "AttriVAELib.nn.checkpoint",
    "optimizer_to_tensors": "AttriVAELib.nn.checkpoint",
    "optimizer_from_tensors": "AttriVAELib.nn.checkpoint",
    "AttributeCalibration": "AttriVAELib.nn.calibration",
    "ClassStatistics": "AttriVAELib.nn.calibration",
    "select_device": "AttriVAELib.nn.fastpath",
    "describe_device": "AttriVAELib.nn.fastpath",
    "cpu_bf16_flags": "AttriVAELib.nn.fastpath",
    "bf16_supported": "AttriVAELib.nn.fastpath",
    "autocast_context": "AttriVAELib.nn.fastpath",
    "to_channels_last": "AttriVAELib.nn.fastpath",
    "channels_last_input": "AttriVAELib.nn.fastpath",
    "tune_cpu_allocator": "AttriVAELib.nn.fastpath",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
