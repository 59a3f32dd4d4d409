"""Shape attributes of the named labels of a segmentation, as manifest columns.

A label is named on the command line as ``NAME=VALUE`` (``myocardium=2``) or ``NAME=V1+V2`` (a
union: ``lv=2+3``). Each label's mask is measured with physical spacing by
:func:`AttriVAELib.data.attributes.shape_attributes`; the columns are ``<name>_<measure>``:

======================  ====  ===============================================================
measure                 unit  what it is
======================  ====  ===============================================================
``volume_ml``           mL    the label's own voxels
``diameter_mm``         mm    largest in-plane Feret diameter over the axial slices
``surface_mm2``         mm²   area of the (outer) boundary surface
``sphericity``          1     π^(1/3)·(6V)^(2/3)/A of the body the outer surface encloses
``thickness_mm``        mm    shells only: mean distance from the outer to the inner surface
``cavity_volume_ml``    mL    shells only: volume of the cavity the label encloses
======================  ====  ===============================================================

A label is a *shell* when it encloses a cavity: in 3D, or, for a shell open at one end (a
myocardium cut at the valve plane), in its axial slices (:func:`~AttriVAELib.data.attributes.shell_cavity`).
For a shell, diameter, surface and sphericity describe its outer surface (the epicardium of a
myocardium). Cavities smaller than :data:`MIN_CAVITY_FRACTION` of the label (holes left by a
segmentation tool) do not make a shell.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage as ndi

from AttriVAELib.core.errors import ConfigError, InputError
from AttriVAELib.data.attributes import shape_attributes, shell_cavity

__all__ = ["LabelSpec", "MEASURES", "MIN_CAVITY_FRACTION", "SHELL_MEASURES", "label_columns", "measure_label",
           "measure_label_map", "parse_labels"]

#: Measures of every label, with their descriptions.
MEASURES = {
    "volume_ml": "volume of the label",
    "diameter_mm": "largest in-plane (axial) diameter",
    "surface_mm2": "area of the outer surface",
    "sphericity": "sphericity of the body the outer surface encloses (1 = ball)",
}
#: Measures of shell labels only.
SHELL_MEASURES = {
    "thickness_mm": "mean wall thickness (outer to inner surface)",
    "cavity_volume_ml": "volume of the enclosed cavity",
}
#: A cavity smaller than this fraction of the label's own voxels is a hole, not a lumen.
MIN_CAVITY_FRACTION = 0.02
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class LabelSpec:
    """A named label: the segmentation values it is made of."""

    name: str
    values: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> "LabelSpec":
        """``NAME=VALUE`` or ``NAME=V1+V2``; NAME is lower-case letters, digits and ``_``.

        Raises:
            ConfigError: one line saying what is wrong.
        """
        name, sep, values = str(text).partition("=")
        name = name.strip()
        if not sep or not values.strip():
            raise ConfigError(f"label '{text}': expected NAME=VALUE, e.g. myocardium=2 (or lv=2+3 for a union)")
        if not _NAME.match(name):
            raise ConfigError(f"label '{text}': the name must be lower-case letters, digits and '_', starting with a "
                              "letter (it becomes column names such as myocardium_volume_ml)")
        try:
            numbers = tuple(int(v) for v in values.split("+"))
        except ValueError:
            raise ConfigError(f"label '{text}': values must be whole numbers joined by '+', e.g. {name}=2") from None
        if any(v <= 0 for v in numbers):
            raise ConfigError(f"label '{text}': values must be positive (0 is the background)")
        return cls(name, tuple(sorted(set(numbers))))

    def __str__(self) -> str:
        return f"{self.name}={'+'.join(str(v) for v in self.values)}"


def parse_labels(texts: Iterable[str]) -> list[LabelSpec]:
    """Parse ``NAME=VALUE`` texts; names must be unique.

    Raises:
        ConfigError: a malformed text, a repeated name, or none at all.
    """
    specs = [LabelSpec.parse(t) for t in texts]
    if not specs:
        raise ConfigError("name at least one label, e.g. --label myocardium=2")
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"label names {repeated} are given more than once")
    return specs


def label_columns(spec: LabelSpec, shell: bool) -> list[str]:
    """The manifest columns of a label: ``<name>_<measure>`` for each measure (and shell measure)."""
    keys = [*MEASURES, *(SHELL_MEASURES if shell else ())]
    return [f"{spec.name}_{key}" for key in keys]


def _is_shell(mask: np.ndarray) -> bool:
    cavity = shell_cavity(mask)
    return bool(cavity.any()) and np.count_nonzero(cavity) >= MIN_CAVITY_FRACTION * np.count_nonzero(mask)


def measure_label(mask: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """Measures of one label's (z, y, x) mask with (x, y, z) spacing in mm: :data:`MEASURES`, and
    :data:`SHELL_MEASURES` when it is a shell (see the module notes)."""
    mask = np.asarray(mask) != 0
    box = ndi.find_objects(mask.view(np.uint8))
    if not box or box[0] is None:
        raise InputError("mask is empty (no foreground voxels)")
    mask = np.pad(mask[box[0]], 1)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    own_ml = float(np.count_nonzero(mask) * voxel_ml)
    shell = _is_shell(mask)
    if shell:
        cavity = shell_cavity(mask)
        labels, n = ndi.label(cavity)
        if n > 1:  # only the largest cavity is the lumen; smaller holes are filled into the wall
            sizes = np.bincount(labels.ravel())[1:]
            mask = mask | (cavity & (labels != 1 + int(np.argmax(sizes))))
    measured = shape_attributes(mask, spacing, shell=shell, open_shell=True)
    result = {
        "volume_ml": own_ml,
        "diameter_mm": measured["max_axial_diameter_mm"],
        "surface_mm2": measured["surface_area_mm2"],
        "sphericity": measured["sphericity"],
    }
    if shell:
        result["thickness_mm"] = measured["wall_thickness_mm"]
        result["cavity_volume_ml"] = measured["volume_ml"] - measured["wall_volume_ml"]
    return result


def measure_label_map(label_map: np.ndarray, spacing: Sequence[float], specs: Sequence[LabelSpec],
                      where: str = "segmentation") -> tuple[dict[str, float], list[str]]:
    """(columns, shell label names) of every named label of a (z, y, x) label map.

    Raises:
        InputError: a named label is absent from the map (the line names it and the values present).
    """
    values = None
    columns: dict[str, float] = {}
    shells: list[str] = []
    for spec in specs:
        mask = np.isin(label_map, spec.values)
        if not mask.any():
            if values is None:
                values = [int(v) for v in np.unique(label_map) if v != 0]
            present = ", ".join(map(str, values[:12])) or "none"
            raise InputError(f"{where}: label '{spec.name}' ({'+'.join(map(str, spec.values))}) is missing "
                             f"(values present: {present})")
        measured = measure_label(mask, spacing)
        if "thickness_mm" in measured:
            shells.append(spec.name)
        columns.update({f"{spec.name}_{key}": value for key, value in measured.items()})
    return columns, shells
