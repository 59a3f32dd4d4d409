"""Shape attributes against analytic values (spheres, ellipsoids, spherical shells).

Each shape is rendered as a binary mask (voxel centres inside the analytic surface, with a
random sub-voxel offset and in-plane rotation) at 1 mm isotropic and at 0.7 × 0.7 × 1.3 mm,
and every attribute must be within 3 % of its analytic value. Run with ``-s`` to see the
table of relative errors.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.special import elliprg

from AttriVAELib.core.errors import InputError
from AttriVAELib.data.attributes import (ATTRIBUTE_UNITS, max_axial_diameter_mm, mean_wall_thickness_mm,
                                         shape_attributes, sphericity, surface_area_mm2, volume_ml)

SPACINGS = {"1mm": (1.0, 1.0, 1.0), "0.7x0.7x1.3mm": (0.7, 0.7, 1.3)}
# name: (outer semi-axes (x, y, z) in mm before the in-plane rotation, wall thickness or None)
CASES = {
    "sphere r20": ((20.0, 20.0, 20.0), None),
    "ellipsoid 26x18x34": ((26.0, 18.0, 34.0), None),
    "ellipsoid 30x22x15": ((30.0, 22.0, 15.0), None),
    "shell r30 t8": ((30.0, 30.0, 30.0), 8.0),
    "shell r25 t5": ((25.0, 25.0, 25.0), 5.0),
}
TOLERANCE = 0.03


def render(semi_axes, thickness, spacing, rng) -> np.ndarray:
    """Binary (z, y, x) mask of an ellipsoid, or of a shell whose inner semi-axes are smaller by t."""
    half = max(semi_axes) + 4 * max(spacing)
    axes = [np.arange(-half, half + s, s) + rng.uniform(-s / 2, s / 2) for s in spacing[::-1]]
    z, y, x = np.meshgrid(*axes, indexing="ij", sparse=True)
    angle = rng.uniform(0, np.pi)
    xr = np.cos(angle) * x + np.sin(angle) * y
    yr = -np.sin(angle) * x + np.cos(angle) * y
    a, b, c = semi_axes
    mask = (xr / a) ** 2 + (yr / b) ** 2 + (z / c) ** 2 <= 1
    if thickness is not None:
        ia, ib, ic = (s - thickness for s in semi_axes)
        mask &= (xr / ia) ** 2 + (yr / ib) ** 2 + (z / ic) ** 2 > 1
    return mask


def analytic(semi_axes, thickness) -> dict[str, float]:
    a, b, c = semi_axes
    volume = 4 / 3 * np.pi * a * b * c
    area = 4 * np.pi * a * b * c * float(elliprg(a**-2, b**-2, c**-2))  # exact ellipsoid area
    truth = {
        "volume_ml": volume / 1000,
        "surface_area_mm2": area,
        "sphericity": np.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area,
        "max_axial_diameter_mm": 2 * max(a, b),
    }
    if thickness is not None:
        ia, ib, ic = (s - thickness for s in semi_axes)
        truth["wall_volume_ml"] = (volume - 4 / 3 * np.pi * ia * ib * ic) / 1000
        truth["wall_thickness_mm"] = thickness
    return truth


@pytest.fixture(scope="module")
def errors() -> dict[tuple[str, str], dict[str, float]]:
    """Relative errors (measured / analytic - 1) for every case and spacing."""
    rng = np.random.default_rng(20240601)
    table = {}
    for case, (semi_axes, thickness) in CASES.items():
        truth = analytic(semi_axes, thickness)
        for res, spacing in SPACINGS.items():
            mask = render(semi_axes, thickness, spacing, rng)
            measured = shape_attributes(mask, spacing, shell=thickness is not None)
            table[case, res] = {key: measured[key] / value - 1 for key, value in truth.items()}
    return table


@pytest.mark.parametrize("res", SPACINGS)
@pytest.mark.parametrize("case", CASES)
def test_attributes_match_analytic_values(errors, case, res):
    bad = {key: f"{err:+.2%}" for key, err in errors[case, res].items() if abs(err) > TOLERANCE}
    assert not bad, f"{case} at {res}: relative errors beyond 3 %: {bad}"


def test_print_error_table(errors):
    keys = ["volume_ml", "wall_volume_ml", "surface_area_mm2", "sphericity", "max_axial_diameter_mm",
            "wall_thickness_mm"]
    short = ["V", "Vwall", "A", "sph", "D", "t"]
    lines = ["", "relative error vs analytic (measured/analytic - 1)",
             f"{'case':<20}{'spacing':<15}" + "".join(f"{s:>8}" for s in short)]
    for (case, res), row in errors.items():
        cells = "".join(f"{row[k] * 100:+7.2f}%" if k in row else f"{'':>8}" for k in keys)
        lines.append(f"{case:<20}{res:<15}{cells}")
    print("\n".join(lines))
    assert len(errors) == len(CASES) * len(SPACINGS)


def test_single_functions_agree_with_shape_attributes():
    spacing = (0.9, 0.8, 1.2)
    mask = render((24.0, 20.0, 28.0), 6.0, spacing, np.random.default_rng(1))
    filled = ndi.binary_fill_holes(mask)
    attrs = shape_attributes(mask, spacing)
    assert set(attrs) == set(ATTRIBUTE_UNITS)
    assert attrs["volume_ml"] == pytest.approx(volume_ml(filled, spacing))
    assert attrs["wall_volume_ml"] == pytest.approx(volume_ml(mask, spacing))
    assert attrs["surface_area_mm2"] == pytest.approx(surface_area_mm2(filled, spacing))
    assert attrs["sphericity"] == pytest.approx(sphericity(filled, spacing))
    assert attrs["max_axial_diameter_mm"] == pytest.approx(max_axial_diameter_mm(mask, spacing))
    assert attrs["wall_thickness_mm"] == pytest.approx(mean_wall_thickness_mm(mask, spacing))
    # The shell's own surface has an outer and an inner sheet.
    assert surface_area_mm2(mask, spacing) > 1.3 * attrs["surface_area_mm2"]


def test_spacing_is_xyz_and_arrays_are_zyx():
    mask = np.zeros((14, 24, 34), dtype=np.uint8)  # (z, y, x)
    mask[2:12, 2:22, 2:32] = 1  # 10 slices of 20 rows × 30 columns
    spacing = (2.0, 1.0, 5.0)  # x, y, z
    assert volume_ml(mask, spacing) == pytest.approx(10 * 20 * 30 * 10 / 1000)
    # In-plane extent 60 × 20 mm: the diagonal, rounded by a voxel at the corners.
    assert max_axial_diameter_mm(mask, spacing) == pytest.approx(np.hypot(60, 20), rel=0.03)
    assert max_axial_diameter_mm(mask, spacing[::-1]) == pytest.approx(np.hypot(150, 20), rel=0.03)
    # The smoothing rounds the box's 12 sharp edges (a worst case): a few % below the box area.
    area = 2 * (60 * 20 + 60 * 50 + 20 * 50)
    assert surface_area_mm2(mask, spacing) == pytest.approx(area, rel=0.1)


def test_solid_mask_without_shell():
    mask = render((20.0, 20.0, 20.0), None, (1.0, 1.0, 1.0), np.random.default_rng(2))
    attrs = shape_attributes(mask, (1.0, 1.0, 1.0), shell=False)
    assert "wall_thickness_mm" not in attrs
    assert attrs["wall_volume_ml"] == attrs["volume_ml"]
    assert attrs["sphericity"] == pytest.approx(1.0, abs=0.02)


def test_empty_mask_is_an_input_error():
    with pytest.raises(InputError, match="mask is empty"):
        shape_attributes(np.zeros((8, 8, 8), dtype=np.uint8), (1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="mask is empty"):
        volume_ml(np.zeros((8, 8, 8)), (1.0, 1.0, 1.0))


def test_solid_mask_has_no_lumen():
    mask = render((10.0, 10.0, 10.0), None, (1.0, 1.0, 1.0), np.random.default_rng(3))
    with pytest.raises(InputError, match="no enclosed lumen"):
        shape_attributes(mask, (1.0, 1.0, 1.0), shell=True)
    with pytest.raises(InputError, match="no enclosed lumen"):
        mean_wall_thickness_mm(mask, (1.0, 1.0, 1.0))


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1.0, 0.0, 1.0), (1.0, -1.0, 1.0), (1.0, float("nan"), 1.0)])
def test_invalid_spacing(spacing):
    with pytest.raises(InputError, match="spacing"):
        volume_ml(np.ones((3, 3, 3)), spacing)


def test_not_3d():
    with pytest.raises(InputError, match="2D"):
        volume_ml(np.ones((3, 3)), (1.0, 1.0, 1.0))


def test_tiny_objects_still_measure():
    mask = np.zeros((5, 5, 5), dtype=bool)
    mask[2, 2, 2] = True  # a single voxel vanishes when smoothed: raw surface is used
    assert volume_ml(mask, (1.0, 1.0, 1.0)) == pytest.approx(0.001)
    assert surface_area_mm2(mask, (1.0, 1.0, 1.0)) > 0
    assert max_axial_diameter_mm(mask, (1.0, 1.0, 1.0)) == pytest.approx(1.0, abs=0.5)
