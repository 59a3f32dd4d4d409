"""Foundations every layer may use: the error types and atomic file writes.

Public names are imported on first use (:mod:`AttriVAELib.core.lazy`).
"""

from AttriVAELib.core.lazy import lazy_exports

_EXPORTS = {
    "AttriVAEError": "AttriVAELib.core.errors",
    "InputError": "AttriVAELib.core.errors",
    "ManifestError": "AttriVAELib.core.errors",
    "ConfigError": "AttriVAELib.core.errors",
    "CheckpointError": "AttriVAELib.core.errors",
    "TrainingError": "AttriVAELib.core.errors",
    "OutputError": "AttriVAELib.core.errors",
    "remove_stale": "AttriVAELib.core.atomic",
    "atomic_path": "AttriVAELib.core.atomic",
    "write_bytes": "AttriVAELib.core.atomic",
    "write_text": "AttriVAELib.core.atomic",
    "write_json": "AttriVAELib.core.atomic",
    "atomic_dir": "AttriVAELib.core.atomic",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
