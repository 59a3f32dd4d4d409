"""The cohort registry: what each kind of cohort brings to training and evaluation.

A cohort folder's ``cohort.json`` names the generator that made it (``"generator"``). The
registry maps that name to a :class:`Cohort`, which tells the engine, without the trainer or
the evaluation naming any cohort:

- how to segment a (decoded) image and re-measure its shape attributes
  (:meth:`Cohort.kind` → :class:`CohortKind`, for traversal fidelity and the Dice);
- the training recipe it recommends (:attr:`Cohort.training_overrides`, used by ``compare``);
- any extra, cohort-specific loss term (:meth:`Cohort.measured_loss`).

Folders written before the cohorts became a subpackage name their generator by its old module
path (``AttriVAELib.synth``, ``AttriVAELib.brain``); :data:`LEGACY_GENERATORS` maps those.
A folder built by ``attrivae cohort`` from one's own images and segmentations is ``"segmented"``
(its attribute regions come from its ``cohort.json``); data without ``cohort.json`` gets
:data:`GENERIC`: a foreground segmentation and no measure.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from AttriVAELib.core.errors import ConfigError
from AttriVAELib.data.cohort_files import read_cohort_info

if TYPE_CHECKING:
    from AttriVAELib.data.io import Volume
    from AttriVAELib.data.manifest import Manifest

__all__ = ["AttributeRegion", "Cohort", "CohortKind", "GENERIC", "LEGACY_GENERATORS", "cohort_for",
           "cohort_kind", "get_cohort", "registered_cohorts", "segment_foreground"]

Measure = Callable[["Volume"], "dict[str, float] | None"]
Segment = Callable[[np.ndarray], np.ndarray]

#: Registered cohorts: generator name → module whose ``COHORT`` is the :class:`Cohort`.
_MODULES = {"phantom": "AttriVAELib.cohorts.phantom.cohort", "brain": "AttriVAELib.cohorts.brain.cohort",
            "segmented": "AttriVAELib.cohorts.segmented.cohort"}
#: ``cohort.json`` generator names written by earlier versions → registered name.
LEGACY_GENERATORS = {"AttriVAELib.synth": "phantom", "AttriVAELib.brain": "brain"}


@dataclass(frozen=True)
class AttributeRegion:
    """Where an attribute lives: labels of per-subject label maps ``<root>/<folder>/<subject>.nii.gz``."""

    folder: str
    labels: tuple[int, ...]


@dataclass(frozen=True)
class CohortKind:
    """How to segment a (decoded) image of a cohort and re-measure its shape attributes.

    Attributes:
        name: short name, e.g. ``"phantom"``.
        segment: (N, N, N) image in [0, 1] → boolean mask comparable to the manifest's mask.
        measure: a volume with physical geometry → {attribute: value}, None when it fails.
        regions: attribute → where it lives, for scoring its attention map.
    """

    name: str
    segment: Segment
    measure: Measure | None = None
    regions: Mapping[str, AttributeRegion] = field(default_factory=dict)


def segment_foreground(array: np.ndarray) -> np.ndarray:
    """Foreground by Otsu's threshold, holes filled, largest component."""
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    from AttriVAELib.data.attributes import largest_component

    if float(array.max()) - float(array.min()) < 1e-6:
        return np.zeros(array.shape, bool)
    return largest_component(ndi.binary_fill_holes(array > threshold_otsu(array)))


def attribute_regions(info: Mapping[str, Any]) -> dict[str, AttributeRegion]:
    """``cohort.json``'s ``attribute_regions``: attribute → where it lives."""
    return {name: AttributeRegion(str(spec["folder"]), tuple(int(v) for v in spec["labels"]))
            for name, spec in (info.get("attribute_regions") or {}).items()}


@dataclass(frozen=True)
class Cohort:
    """A kind of cohort and what it brings; subclass to add a measure or a loss.

    Attributes:
        name: the generator name written into ``cohort.json``.
        description: one line for listings.
        training_overrides: configuration sections (``data``, ``model``, …) recommended for
            training on this cohort; ``compare`` applies them to every run.
    """

    name: str
    description: str = ""
    training_overrides: Mapping[str, Any] = field(default_factory=dict)

    def kind(self, manifest: Manifest, info: Mapping[str, Any]) -> CohortKind:
        """How to segment and measure this cohort's images (default: foreground, no measure)."""
        return CohortKind(self.name, segment_foreground, None, attribute_regions(info))

    def measured_loss(self, weight: float, manifest: Manifest, info: Mapping[str, Any], train_set: Any,
                      regularized: list[str], log: Callable[[str], None]) -> Any:
        """A loss term measuring an attribute on decoded images (``loss.measured_gamma``).

        Returns a callable ``loss(decode, outputs, x, attributes) -> Tensor``. Cohorts without
        one refuse with one line.
        """
        raise ConfigError("loss.measured_gamma needs a synth-brain or a phantom cohort (attrivae synth-brain, attrivae "
                          f"synth); {manifest.path} is neither")


#: Data with no (known) generator: foreground segmentation, no measure.
GENERIC = Cohort("generic", "a user's own data")


def registered_cohorts() -> list[str]:
    """Names of the registered cohorts."""
    return sorted(_MODULES)


def get_cohort(generator: str | None) -> Cohort:
    """The cohort registered for a generator name (old module-path names included); :data:`GENERIC` otherwise."""
    name = LEGACY_GENERATORS.get(generator or "", generator or "")
    module = _MODULES.get(name)
    if module is None:
        return GENERIC
    return importlib.import_module(module).COHORT


def cohort_for(manifest: Manifest) -> Cohort:
    """The cohort a manifest belongs to (from its folder's ``cohort.json``)."""
    return get_cohort(read_cohort_info(manifest.root).get("generator"))


def cohort_kind(manifest: Manifest) -> CohortKind:
    """The kind of the manifest's cohort (from ``cohort.json``); generic foreground otherwise."""
    info = read_cohort_info(manifest.root)
    return get_cohort(info.get("generator")).kind(manifest, info)
