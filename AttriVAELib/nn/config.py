"""The network's configuration: :class:`ModelConfig`, its bounds, and the config-from-dict helper.

Configurations come from YAML files, the command line and checkpoint headers, so every field
is coerced to its annotated type and checked against bounds far above any model trained here
but low enough that no hostile configuration makes the engine allocate without bound; a bad
value is one :class:`~AttriVAELib.core.errors.ConfigError` line naming it.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, Mapping

from AttriVAELib.core.errors import ConfigError

__all__ = ["BOTTLENECK_CHANNELS", "MAX_CHANNELS", "MAX_CLASSES", "MAX_INPUT_SIZE", "MAX_LATENT_DIM", "ModelConfig",
           "config_from_dict", "scale_channels"]

#: Channels of the last encoder conv (conv5); the flattened bottleneck is 2·(N/16)³ features.
BOTTLENECK_CHANNELS = 2

#: Upper bounds of a configuration: far above any model trained here, low enough that no hostile
#: configuration or checkpoint header makes the engine allocate without bound.
MAX_INPUT_SIZE, MAX_LATENT_DIM, MAX_CHANNELS, MAX_CLASSES = 512, 8192, 4096, 1024

_BASE_CHANNELS = (8, 16, 32, 64)


def _coerce(value: Any, annotation: str, name: str, what: str) -> Any:
    """Convert a YAML/CLI value to the annotated field type, or raise a one-line ConfigError."""
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{what}.{name} must be {expected}, got {value!r}")

    kind = annotation.replace(" ", "")
    if kind == "int":
        if isinstance(value, bool):
            raise bad("an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise bad("an integer") from None
        raise bad("an integer")
    if kind == "float":
        if isinstance(value, bool):
            raise bad("a number")
        if isinstance(value, (int, float)):
            out = float(value)
        elif isinstance(value, str):
            # PyYAML reads "1e-4" (no dot) as a string.
            try:
                out = float(value.strip())
            except ValueError:
                raise bad("a number") from None
        else:
            raise bad("a number")
        if not math.isfinite(out):
            raise bad("a finite number")
        return out
    if kind == "str":
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if kind in ("list[float]|None", "Optional[list[float]]"):
        if value is None:
            return None
        if isinstance(value, (str, bytes)) or not isinstance(value, typing.Sequence):
            raise bad("a list of numbers or null")
        return [_coerce(v, "float", name, what) for v in value]
    raise TypeError(f"unsupported config annotation {annotation!r}")  # programming error


def config_from_dict(cls: type, data: Mapping[str, Any] | None, what: str) -> Any:
    """Build dataclass ``cls`` from ``data``: unknown keys and bad values raise ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{what} options must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        raise ConfigError(
            f"unknown {what} option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"valid options: {', '.join(fields)}")
    kwargs = {k: _coerce(v, str(fields[k].type), k, what) for k, v in data.items()}
    config = cls(**kwargs)
    config.validate()
    return config


# --------------------------------------------------------------------------- model config
@dataclass
class ModelConfig:
    """Hyperparameters of :class:`AttriVAE`.

    ``num_regularized`` (K) and ``num_classes`` are normally filled in by the trainer from the
    data (number of attribute columns, number of label classes); a preset that fixes
    ``num_classes = 0`` means "no classifier" whatever the labels.
    """

    input_size: int = 80  # N: cubic input N×N×N, a multiple of 16
    in_channels: int = 1
    width: float = 1.0  # multiplier for the 8, 16, 32, 64 (and decoder 4) conv channels
    latent_dim: int = 64
    num_regularized: int = 0  # K: latent dims 0..K-1 are tied to attributes 0..K-1
    num_classes: int = 2  # 0 = no classifier; 2 = binary (one logit); >2 = C logits
    dropout: float = 0.25
    # conv5 output channels: 2 as published (250 features at 80³). Small inputs need more:
    # at 32³ two channels leave 2·2³ = 16 features, too few to carry a small lesion.
    bottleneck_channels: int = BOTTLENECK_CHANNELS

    def validate(self) -> "ModelConfig":
        def fail(msg: str) -> None:
            raise ConfigError(f"model.{msg}")

        if self.input_size < 16 or self.input_size % 16:
            fail(f"input_size must be a positive multiple of 16 (four stride-2 convs), got {self.input_size}")
        if not 1 <= self.in_channels <= MAX_CHANNELS:
            fail(f"in_channels must be between 1 and {MAX_CHANNELS}, got {self.in_channels}")
        for name, limit in (("input_size", MAX_INPUT_SIZE), ("latent_dim", MAX_LATENT_DIM),
                            ("num_classes", MAX_CLASSES), ("bottleneck_channels", MAX_CHANNELS)):
            if getattr(self, name) > limit:
                fail(f"{name} {getattr(self, name)} is larger than the maximum {limit}")
        if not (self.width > 0 and math.isfinite(self.width)):
            fail(f"width must be a positive number, got {self.width}")
        if self.width > 64:
            fail(f"width {self.width} is unreasonably large (max 64)")
        if self.latent_dim < 1:
            fail(f"latent_dim must be >= 1, got {self.latent_dim}")
        if not 0 <= self.num_regularized <= self.latent_dim:
            fail(f"num_regularized must be between 0 and latent_dim ({self.latent_dim}), got {self.num_regularized}")
        if self.num_classes < 0 or self.num_classes == 1:
            fail(f"num_classes must be 0 (no classifier), 2 (binary) or more, got {self.num_classes}")
        if not 0.0 <= self.dropout < 1.0:
            fail(f"dropout must be in [0, 1), got {self.dropout}")
        if self.bottleneck_channels < 1:
            fail(f"bottleneck_channels must be >= 1, got {self.bottleneck_channels}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "ModelConfig":
        return config_from_dict(cls, data, "model")

    # Derived sizes ---------------------------------------------------------------------
    @property
    def channels(self) -> tuple[int, int, int, int]:
        """Encoder channels of conv1..conv4 (the decoder mirrors them)."""
        return tuple(scale_channels(c, self.width) for c in _BASE_CHANNELS)  # type: ignore[return-value]

    @property
    def bottleneck_size(self) -> int:
        """Spatial size N/16 of the conv5 feature map."""
        return self.input_size // 16

    @property
    def flat_features(self) -> int:
        """bottleneck_channels·(N/16)³ (2·(N/16)³ as published), the flattened conv5 output."""
        return self.bottleneck_channels * self.bottleneck_size ** 3


def scale_channels(channels: int, width: float) -> int:
    """Channels of a layer at a width multiplier (at least 1)."""
    return max(1, int(round(channels * width)))
