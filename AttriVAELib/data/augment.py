"""Training-time augmentation of model-grid volumes with MONAI array transforms.

Input and output are tensors of shape (C, N, N, N) = (channel, z, y, x) with values in
[0, 1] on the isotropic model grid of :mod:`AttriVAELib.data.preprocessing`; the output is
clipped to [0, 1] and is a plain :class:`torch.Tensor` (not a MONAI ``MetaTensor``). Channel 0
is the image; further channels (e.g. a lesion mask) follow every spatial transform, and no
intensity change touches them.

Which augmentations keep which attributes (attribute k is tied to latent dim k, so an
augmentation that changes an attribute without changing its target value teaches the
model to ignore that attribute):

- ``flip`` (mirror along ``flip_axes``) and ``rot90`` (quarter turns in the plane of
  ``rot90_axes``, by default the axial (y, x) plane): exact on the isotropic grid; keep
  every shape attribute (volumes, maximum axial diameter, wall thickness) and the label.
  A quarter turn out of the axial plane would change the *axial* diameter, hence the default.
- ``affine`` rotation (``rotate_deg``, about the z axis, i.e. in the axial plane only) and
  translation (``translate`` voxels): keep shape attributes up to interpolation, as long as
  the object stays inside the cube. ``scale`` changes physical size (volumes by s³,
  diameters by s) and is therefore off (0) by default.
- ``intensity`` (random scale, shift and gamma/contrast) and ``noise``: keep every shape
  attribute, but change intensity-based (e.g. first-order radiomics) attributes.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
from monai.transforms import (Compose, RandAdjustContrast, RandAffine, RandFlip, RandGaussianNoise, Randomizable,
                              RandRotate90, RandScaleIntensity, RandShiftIntensity, Transform)

from AttriVAELib.core.errors import ConfigError

__all__ = ["AUGMENTATION_OPTIONS", "DEFAULT_AUGMENTATION", "build_augmentation"]

#: Every option with its value when not given. Probabilities default to 0 (off).
AUGMENTATION_OPTIONS: dict[str, Any] = {
    "flip": 0.0,  # probability, per axis in flip_axes
    "flip_axes": [1, 2],  # spatial axes of (z, y, x)
    "rot90": 0.0,  # probability of a random quarter turn (k = 1..3)
    "rot90_axes": [1, 2],  # the plane of the turn; (1, 2) = axial
    "affine": 0.0,  # probability of a random affine
    "rotate_deg": 10.0,  # max rotation about z (in the axial plane), degrees
    "translate": 2.0,  # max translation per axis, voxels
    "scale": 0.0,  # max relative isotropic scaling (changes size attributes)
    "intensity": 0.0,  # probability, each of scale, shift and contrast
    "intensity_scale": 0.1,  # x * (1 + u), u in [-0.1, 0.1]
    "intensity_shift": 0.05,  # x + u, u in [-0.05, 0.05]
    "contrast_gamma": [0.8, 1.25],  # gamma range of the contrast change
    "noise": 0.0,  # probability of additive Gaussian noise
    "noise_std": 0.02,
}

#: The recommended training augmentation (keeps every shape attribute).
DEFAULT_AUGMENTATION: dict[str, Any] = {"flip": 0.5, "rot90": 0.5, "affine": 0.2, "intensity": 0.5}

_PROBABILITIES = ("flip", "rot90", "affine", "intensity", "noise")


class ImageChannelOnly(Randomizable, Transform):
    """Apply an intensity transform to channel 0 (the image) and pass the other channels on."""

    def __init__(self, transform: Randomizable) -> None:
        self.transform = transform

    def set_random_state(self, seed: int | None = None, state: Any = None) -> "ImageChannelOnly":
        self.transform.set_random_state(seed=seed, state=state)
        return self

    def randomize(self, data: Any) -> None:  # the wrapped transform draws its own numbers
        pass

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        img = torch.as_tensor(img)
        changed = torch.as_tensor(self.transform(img[:1]))
        return changed if img.shape[0] == 1 else torch.cat([changed, img[1:]])


class ClipToUnitRange(Transform):
    """Clip to [0, 1] and return a plain contiguous float tensor (drops MONAI metadata)."""

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        img = img.as_tensor() if hasattr(img, "as_tensor") else torch.as_tensor(img)
        return img.clamp(0.0, 1.0).contiguous()


def _check_number(key: str, value: Any, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= float(value) <= high:
        bound = f"[{low}, {high}]" if math.isfinite(high) else f">= {low}"
        raise ConfigError(f"augmentation option '{key}' must be a number in {bound} (got {value!r})")
    return float(value)


def _check_axes(key: str, value: Any, count: int | None = None) -> tuple[int, ...]:
    try:
        axes = tuple(int(a) for a in value)
    except (TypeError, ValueError):
        axes = ()
    valid = all(a in (0, 1, 2) for a in axes) and len(set(axes)) == len(axes)
    ok = bool(axes) and valid and (count is None or len(axes) == count)
    if not ok:
        what = f"{count} distinct" if count else "distinct"
        raise ConfigError(f"augmentation option '{key}' must list {what} spatial axes from 0, 1, 2 (got {value!r})")
    return axes


def resolve_augmentation(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate an augmentation config and fill in the defaults of :data:`AUGMENTATION_OPTIONS`.

    Raises:
        ConfigError: unknown option, or a value out of range (one line).
    """
    config = dict(config or {})
    unknown = sorted(set(config) - set(AUGMENTATION_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown augmentation option(s) {unknown}; known: {sorted(AUGMENTATION_OPTIONS)}")
    opts = {**AUGMENTATION_OPTIONS, **config}
    for key in _PROBABILITIES:
        opts[key] = _check_number(key, opts[key], 0.0, 1.0)
    opts["flip_axes"] = _check_axes("flip_axes", opts["flip_axes"])
    opts["rot90_axes"] = _check_axes("rot90_axes", opts["rot90_axes"], count=2)
    opts["rotate_deg"] = _check_number("rotate_deg", opts["rotate_deg"], 0.0, 180.0)
    opts["translate"] = _check_number("translate", opts["translate"], 0.0)
    opts["scale"] = _check_number("scale", opts["scale"], 0.0, 0.9)
    opts["intensity_scale"] = _check_number("intensity_scale", opts["intensity_scale"], 0.0, 1.0)
    opts["intensity_shift"] = _check_number("intensity_shift", opts["intensity_shift"], 0.0, 1.0)
    opts["noise_std"] = _check_number("noise_std", opts["noise_std"], 0.0, 1.0)
    gamma = opts["contrast_gamma"]
    try:
        g_lo, g_hi = (float(g) for g in gamma)
    except (TypeError, ValueError):
        g_lo, g_hi = 0.0, 0.0
    if not 0.0 < g_lo <= g_hi:
        raise ConfigError(
            f"augmentation option 'contrast_gamma' must be [low, high] with 0 < low <= high (got {gamma!r})"
        )
    opts["contrast_gamma"] = (g_lo, g_hi)
    return opts


def build_augmentation(
    config: Mapping[str, Any] | None, seed: int | None = None
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Build the augmentation pipeline from a config of probabilities and ranges.

    Args:
        config: options of :data:`AUGMENTATION_OPTIONS`, e.g. :data:`DEFAULT_AUGMENTATION`
            ``{"flip": 0.5, "rot90": 0.5, "affine": 0.2, "intensity": 0.5}``;
            probabilities not given are 0. None, ``{}`` or all probabilities 0: no augmentation.
        seed: seed of the transforms' random state (``Compose.set_random_state``); the
            pipeline can be re-seeded later, e.g. per DataLoader worker.

    Returns:
        A :class:`monai.transforms.Compose` mapping a (C, N, N, N) tensor in [0, 1] to a
        (C, N, N, N) float tensor clipped to [0, 1], or None when nothing is enabled.

    Raises:
        ConfigError: unknown option or invalid value.
    """
    opts = resolve_augmentation(config)
    transforms: list[Callable] = []
    if opts["flip"] > 0:
        transforms += [RandFlip(prob=opts["flip"], spatial_axis=axis) for axis in opts["flip_axes"]]
    if opts["rot90"] > 0:
        transforms.append(RandRotate90(prob=opts["rot90"], max_k=3, spatial_axes=opts["rot90_axes"]))
    if opts["affine"] > 0:
        transforms.append(
            RandAffine(
                prob=opts["affine"],
                # MONAI's first 3D angle rotates in the plane of spatial dims (1, 2): axial.
                rotate_range=(math.radians(opts["rotate_deg"]), 0.0, 0.0),
                translate_range=(opts["translate"],) * 3,
                scale_range=(opts["scale"],) * 3 if opts["scale"] > 0 else None,
                mode="bilinear",
                padding_mode="zeros",
            )
        )
    if opts["intensity"] > 0:
        p = opts["intensity"]
        transforms += [
            ImageChannelOnly(RandScaleIntensity(factors=opts["intensity_scale"], prob=p)),
            ImageChannelOnly(RandShiftIntensity(offsets=opts["intensity_shift"], prob=p)),
            ImageChannelOnly(RandAdjustContrast(prob=p, gamma=opts["contrast_gamma"])),
        ]
    if opts["noise"] > 0:
        transforms.append(ImageChannelOnly(RandGaussianNoise(prob=opts["noise"], mean=0.0, std=opts["noise_std"])))
    if not transforms:
        return None
    pipeline = Compose([*transforms, ClipToUnitRange()])
    if seed is not None:
        pipeline.set_random_state(seed=seed)
    return pipeline
