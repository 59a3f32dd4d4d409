"""Image IO keeps spacing, origin and direction; bad files give one clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import kept_locale

from AttriVAELib.core.errors import InputError
from AttriVAELib.data.io import Geometry, Volume, read_image, read_mask, read_sitk, write_image


def oblique_direction(deg_z: float = 25.0, deg_x: float = 40.0) -> tuple[float, ...]:
    a, b = np.deg2rad(deg_z), np.deg2rad(deg_x)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return tuple((rz @ rx).ravel())


def make_volume(shape=(7, 9, 11), seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    geometry = Geometry(size=(shape[2], shape[1], shape[0]), spacing=(0.7, 1.3, 2.5), origin=(-12.5, 30.25, 7.0),
                        direction=oblique_direction())
    return Volume(rng.normal(size=shape).astype(np.float32), geometry)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"])
def test_round_trip_keeps_values_and_geometry(tmp_path: Path, suffix: str) -> None:
    volume = make_volume()
    path = write_image(volume, tmp_path / f"img{suffix}")
    back = read_image(path)
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.geometry.size == volume.geometry.size
    np.testing.assert_allclose(back.geometry.spacing, volume.geometry.spacing, atol=1e-5)
    np.testing.assert_allclose(back.geometry.origin, volume.geometry.origin, atol=1e-4)
    np.testing.assert_allclose(back.geometry.direction, volume.geometry.direction, atol=1e-5)


def test_mhd_header_pair(tmp_path: Path) -> None:
    volume = make_volume()
    sitk.WriteImage(volume.to_sitk(), str(tmp_path / "img.mhd"))
    back = read_image(tmp_path / "img.mhd")
    assert back.geometry.allclose(volume.geometry)
    np.testing.assert_array_equal(back.array, volume.array)


def test_dicom_series_folder(tmp_path: Path) -> None:
    volume = make_volume(shape=(5, 16, 12))
    image = sitk.Cast(sitk.RescaleIntensity(volume.to_sitk(), 0, 1000), sitk.sitkInt16)
    folder = tmp_path / "dicom"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    dir_tag = "\\".join(f"{v:.6f}" for v in (direction[0], direction[3], direction[6], direction[1], direction[4],
                                              direction[7]))
    for k in range(image.GetDepth()):
        s = image[:, :, k]
        s.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1.99")
        s.SetMetaData("0020|0037", dir_tag)
        s.SetMetaData("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, k)))))
        s.SetMetaData("0020|0013", str(k))
        s.SetMetaData("0018|0050", str(image.GetSpacing()[2]))
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        with kept_locale():
            writer.Execute(s)
    back = read_image(folder)
    assert back.geometry.size == volume.geometry.size
    np.testing.assert_allclose(back.geometry.direction, volume.geometry.direction, atol=1e-4)
    np.testing.assert_allclose(back.geometry.origin, volume.geometry.origin, atol=1e-3)
    np.testing.assert_allclose(back.geometry.spacing[:2], volume.geometry.spacing[:2], atol=1e-4)
    np.testing.assert_array_equal(back.array, sitk.GetArrayFromImage(image))


def test_index_to_physical_matches_sitk() -> None:
    volume = make_volume()
    image = volume.to_sitk()
    ijk = np.array([[0, 0, 0], [3, 2, 1], [10, 8, 6]], dtype=float)
    expected = np.array([image.TransformContinuousIndexToPhysicalPoint(tuple(p)) for p in ijk])
    np.testing.assert_allclose(volume.geometry.index_to_physical(ijk), expected, atol=1e-9)
    np.testing.assert_allclose(volume.geometry.physical_to_index(expected), ijk, atol=1e-9)


def test_geometry_dict_round_trip() -> None:
    g = make_volume().geometry
    assert Geometry.from_dict(g.to_dict()) == g


# -- errors -------------------------------------------------------------------------------------

def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "nope.nii.gz")


def test_corrupt_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"this is not an image" * 10)
    with pytest.raises(InputError, match="cannot read image") as info:
        read_image(bad)
    assert "\n" not in str(info.value)


def test_2d_image(tmp_path: Path) -> None:
    path = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.Image([16, 16], sitk.sitkFloat32), str(path))
    with pytest.raises(InputError, match="2D"):
        read_image(path)


def test_single_slice_3d_is_2d(tmp_path: Path) -> None:
    path = tmp_path / "slab.nii.gz"
    sitk.WriteImage(sitk.Image([16, 16, 1], sitk.sitkFloat32), str(path))
    with pytest.raises(InputError, match="2D slice"):
        read_image(path)


def test_4d_image(tmp_path: Path) -> None:
    path = tmp_path / "series.nii.gz"
    sitk.WriteImage(sitk.Image([8, 8, 8, 3], sitk.sitkFloat32), str(path))
    with pytest.raises(InputError, match="4D"):
        read_image(path)


def test_vector_image(tmp_path: Path) -> None:
    path = tmp_path / "rgb.nrrd"
    sitk.WriteImage(sitk.Image([8, 8, 8], sitk.sitkVectorFloat32, 3), str(path))
    with pytest.raises(InputError, match="components"):
        read_image(path)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_non_finite_voxels(tmp_path: Path, bad_value: float) -> None:
    volume = make_volume()
    volume.array[2, 3, 4] = bad_value
    path = write_image(volume, tmp_path / "nan.nii.gz")
    with pytest.raises(InputError, match="1 NaN or infinite"):
        read_image(path)


def test_empty_mask(tmp_path: Path) -> None:
    volume = make_volume()
    path = write_image(Volume(np.zeros(volume.array.shape, np.uint8), volume.geometry), tmp_path / "m.nii.gz")
    with pytest.raises(InputError, match="mask is empty"):
        read_mask(path)


def test_mask_outside_reference(tmp_path: Path) -> None:
    volume = make_volume()
    mask = Volume(np.ones(volume.array.shape, np.uint8), Geometry(volume.geometry.size, volume.geometry.spacing,
                                                                 (500.0, 500.0, 500.0), volume.geometry.direction))
    path = write_image(mask, tmp_path / "far.nii.gz")
    with pytest.raises(InputError, match="empty"):
        read_mask(path, reference=volume.geometry)


def test_mask_resampled_onto_reference(tmp_path: Path) -> None:
    volume = make_volume(shape=(10, 10, 10))
    fine = Geometry((20, 20, 20), tuple(s / 2 for s in volume.geometry.spacing), volume.geometry.origin,
                    volume.geometry.direction)
    arr = np.zeros((20, 20, 20), np.uint8)
    arr[4:12, 4:12, 4:12] = 1
    path = write_image(Volume(arr, fine), tmp_path / "fine.nii.gz")
    mask = read_mask(path, reference=volume.geometry)
    assert mask.geometry.allclose(volume.geometry)
    assert mask.array.sum() > 0


def test_write_is_atomic_and_rejects_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unsupported output format"):
        write_image(make_volume(), tmp_path / "x.png")
    write_image(make_volume(), tmp_path / "ok.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.nii.gz"]


def test_read_sitk_keeps_integer_type(tmp_path: Path) -> None:
    volume = make_volume()
    path = write_image(Volume(volume.array.astype(np.int16), volume.geometry), tmp_path / "i.nrrd")
    assert read_sitk(path).GetPixelID() == sitk.sitkInt16
