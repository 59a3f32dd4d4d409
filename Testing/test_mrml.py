"""AttriVAELib.mrml against a real MRML scene from the slicer-core wheel (no mocks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")
vtk = pytest.importorskip("vtk")
import SimpleITK as sitk  # noqa: E402
from mrml_helpers import ijk_to_ras, raw_node  # noqa: E402

from AttriVAELib.core.errors import InputError  # noqa: E402
from AttriVAELib.data.io import Geometry, Volume, write_image  # noqa: E402
from AttriVAELib.slicer import mrml  # noqa: E402

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _rotation(axis: str, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def oblique_geometry(size=(7, 6, 5)) -> Geometry:
    """Rotated about z and x, anisotropic spacing, non-zero origin (LPS)."""
    direction = _rotation("z", 30.0) @ _rotation("x", -20.0)
    return Geometry(
        size=size,
        spacing=(0.7, 1.3, 2.1),
        origin=(-12.5, 30.25, 7.0),
        direction=tuple(float(v) for v in direction.ravel()),
    )


def oblique_volume(seed: int = 0, size=(7, 6, 5)) -> Volume:
    geometry = oblique_geometry(size)
    array = np.random.default_rng(seed).random(geometry.shape, dtype=np.float32)
    return Volume(array, geometry)


def assert_same_volume(a: Volume, b: Volume, atol: float = 1e-6) -> None:
    assert a.array.shape == b.array.shape
    np.testing.assert_allclose(a.array, b.array, atol=atol, rtol=0)
    assert a.geometry.size == b.geometry.size
    np.testing.assert_allclose(a.geometry.spacing, b.geometry.spacing, atol=atol, rtol=0)
    np.testing.assert_allclose(a.geometry.origin, b.geometry.origin, atol=atol, rtol=0)
    np.testing.assert_allclose(a.geometry.direction, b.geometry.direction, atol=atol, rtol=0)






@pytest.fixture()
def scene():
    return slicer.vtkMRMLScene()


def assert_one_line_error(excinfo, *words: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message and message.strip() == message and message
    for word in words:
        assert word in message, message


# ---------------------------------------------------------------------------------- geometry


def test_oblique_round_trip_and_ras_matrix(scene):
    volume = oblique_volume()
    node = mrml.update_volume_node(scene, volume, "recon", role="reconstruction")
    assert node.GetAttribute(mrml.ROLE_ATTRIBUTE) == "reconstruction"
    assert_same_volume(mrml.volume_from_node(node), volume)

    # IJKToRAS is the LPS index-to-physical matrix with the first two rows negated.
    expected = volume.geometry.index_to_physical_matrix()
    expected[:2, :] *= -1
    np.testing.assert_allclose(ijk_to_ras(node), expected, atol=1e-9)
    np.testing.assert_allclose(node.GetSpacing(), volume.geometry.spacing, atol=1e-9)
    np.testing.assert_allclose(node.GetOrigin(), LPS_TO_RAS @ volume.geometry.origin, atol=1e-9)

    # A known voxel lands where ITK says it is (converted to RAS).
    ijk = np.array([5.0, 2.0, 3.0])
    ras = (ijk_to_ras(node) @ np.append(ijk, 1.0))[:3]
    np.testing.assert_allclose(ras, LPS_TO_RAS @ volume.geometry.index_to_physical(ijk), atol=1e-9)
    # … and holds the right value: Slicer's own accessor uses the same (k, j, i) layout.
    assert slicer.util.arrayFromVolume(node)[3, 2, 5] == volume.array[3, 2, 5]


def test_geometry_matrix_helpers_invert_each_other():
    geometry = oblique_geometry()
    back = mrml.geometry_from_ijk_to_ras(mrml.ijk_to_ras_from_geometry(geometry), geometry.size)
    assert back.allclose(geometry, atol=1e-12)
    sheared = mrml.ijk_to_ras_from_geometry(geometry)
    sheared[0, 1] += 0.5
    with pytest.raises(InputError, match="sheared"):
        mrml.geometry_from_ijk_to_ras(sheared, geometry.size)


def test_file_written_by_simpleitk_loads_with_same_geometry(scene, tmp_path):
    """Slicer's reader and our LPS↔RAS conversion agree on a file SimpleITK wrote."""
    volume = oblique_volume(1)
    path = write_image(volume, tmp_path / "input.nrrd")
    node = mrml.load_volume_node(scene, path)
    assert node.GetName() == "input" and node.GetDisplayNode() is not None
    assert_same_volume(mrml.volume_from_node(node), volume)


def test_output_node_carries_input_geometry(scene, tmp_path):
    source = oblique_volume(2)
    input_node = mrml.load_volume_node(scene, write_image(source, tmp_path / "in.nii.gz"))
    transform = slicer.vtkMRMLLinearTransformNode()
    scene.AddNode(transform)
    input_node.SetAndObserveTransformNodeID(transform.GetID())

    image = mrml.volume_from_node(input_node)
    heat = Volume(np.clip(image.array, 0, 1) ** 2, image.geometry)
    out = mrml.update_volume_node(scene, heat, "Grad-CAM LV volume", reference=input_node, role="heatmap:LV volume")
    np.testing.assert_allclose(ijk_to_ras(out), ijk_to_ras(input_node), atol=1e-9)
    assert out.GetTransformNodeID() == transform.GetID()
    assert out.GetNodeReferenceID(mrml.SOURCE_REFERENCE_ROLE) == input_node.GetID()
    assert_same_volume(mrml.volume_from_node(out), heat)


def test_world_geometry_includes_linear_parent_transform(scene):
    volume = oblique_volume(3)
    node = mrml.update_volume_node(scene, volume, "moved")
    transform = slicer.vtkMRMLLinearTransformNode()
    scene.AddNode(transform)
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 10.0)  # +10 mm in R = -10 mm in L
    transform.SetMatrixTransformToParent(shift)
    node.SetAndObserveTransformNodeID(transform.GetID())
    assert mrml.geometry_from_node(node).allclose(volume.geometry, atol=1e-9)
    world = mrml.geometry_from_node(node, world=True)
    np.testing.assert_allclose(np.array(world.origin) - volume.geometry.origin, [-10.0, 0, 0], atol=1e-9)


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_save_and_load_keep_values_and_geometry(scene, tmp_path, suffix):
    volume = oblique_volume(4)
    node = mrml.update_volume_node(scene, volume, "heatmap", role="heatmap:wall")
    path = mrml.save_volume_node(node, tmp_path / f"heat{suffix}")
    assert path.is_file() and not list(tmp_path.glob(".tmp-*"))

    image = sitk.ReadImage(str(path))  # independent reader, ITK LPS convention
    from_sitk = Volume.from_sitk(image)
    assert_same_volume(from_sitk, volume, atol=1e-5)

    loaded = mrml.load_volume_node(scene, path, name="reloaded")
    assert loaded.GetStorageNode() is not None
    assert_same_volume(mrml.volume_from_node(loaded), volume, atol=1e-5)


def test_save_and_load_errors(scene, tmp_path):
    node = mrml.update_volume_node(scene, oblique_volume(), "v")
    with pytest.raises(InputError) as excinfo:
        mrml.save_volume_node(node, tmp_path / "v.png")
    assert_one_line_error(excinfo, "unsupported")
    before = scene.GetNumberOfNodes()
    with pytest.raises(InputError) as excinfo:
        mrml.load_volume_node(scene, tmp_path / "missing.nrrd")
    assert_one_line_error(excinfo, "not found")
    garbage = tmp_path / "garbage.nrrd"
    garbage.write_bytes(b"not an image")
    with pytest.raises(InputError) as excinfo:
        mrml.load_volume_node(scene, garbage)
    assert_one_line_error(excinfo, "cannot read")
    assert scene.GetNumberOfNodes() == before
    # A 4D file (e.g. a cine series): Slicer's reader would keep its first frame without a word.
    import nibabel as nib

    four_d = tmp_path / "cine.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4, 3), np.float32), np.eye(4)), four_d)
    with pytest.raises(InputError) as excinfo:
        mrml.load_volume_node(scene, four_d)
    assert_one_line_error(excinfo, "4D image (6 × 5 × 4 × 3)")
    assert scene.GetNumberOfNodes() == before


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd"])
def test_truncated_file_is_refused_before_slicer_reads_it(scene, tmp_path, suffix):
    """Slicer's readers zero-fill a file cut short; the session refuses it in one line instead."""
    path = write_image(oblique_volume(), tmp_path / f"whole{suffix}")
    data = path.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    assert mrml.load_volume_node(scene, path) is not None  # the whole file loads
    before = scene.GetNumberOfNodes()
    with pytest.raises(InputError) as excinfo:
        mrml.load_volume_node(scene, cut)
    assert_one_line_error(excinfo, str(cut), "truncated")
    assert scene.GetNumberOfNodes() == before  # nothing was added for the cut file


# ---------------------------------------------------------------------------------- updates


def test_repeated_updates_reuse_one_node(scene):
    volume = oblique_volume(5)
    first = mrml.update_volume_node(scene, volume, "reconstruction", role="reconstruction")
    count = scene.GetNumberOfNodes()
    image_before = first.GetImageData()
    for step in range(1, 4):
        updated = Volume(volume.array + step, volume.geometry)
        node = mrml.update_volume_node(scene, updated, "reconstruction", role="reconstruction")
        assert node is first
        assert scene.GetNumberOfNodes() == count
        np.testing.assert_allclose(slicer.util.arrayFromVolume(node), updated.array)
    assert first.GetImageData() is image_before  # same grid: voxels updated in place

    # A different grid replaces the image data, still on the same node.
    bigger = oblique_volume(6, size=(8, 8, 8))
    assert mrml.update_volume_node(scene, bigger, "reconstruction", role="reconstruction") is first
    assert scene.GetNumberOfNodes() == count
    assert_same_volume(mrml.volume_from_node(first), bigger)


def test_user_node_with_same_name_is_not_overwritten(scene):
    user = raw_node(scene, np.zeros((4, 5, 6), np.float32))
    user.SetName("heatmap")
    node = mrml.update_volume_node(scene, oblique_volume(), "heatmap", role="heatmap:a")
    assert node is not user
    assert not slicer.util.arrayFromVolume(user).any()
    assert mrml.update_volume_node(scene, oblique_volume(), "heatmap", role="heatmap:b") is not node


# ---------------------------------------------------------------------------------- display


def test_colormap_built_when_absent_and_reused(scene):
    assert scene.GetNodesByClass("vtkMRMLColorNode").GetNumberOfItems() == 0
    inferno = mrml.ensure_colormap(scene, "Inferno")
    assert inferno.GetNumberOfColors() == 256 and inferno.GetName() == "Inferno"
    first, last = [0.0] * 4, [0.0] * 4
    inferno.GetColor(0, first)
    inferno.GetColor(255, last)
    assert max(first[:3]) < 0.05 and last[0] > 0.95 and last[1] > 0.95  # black → pale yellow
    assert mrml.ensure_colormap(scene, "Inferno") is inferno
    signed = mrml.ensure_colormap(scene, "ColdToHotRainbow")
    low, high = [0.0] * 4, [0.0] * 4
    signed.GetColor(0, low)
    signed.GetColor(255, high)
    assert low[2] > low[0] and high[0] > high[2]  # blue for negative, red for positive
    with pytest.raises(InputError) as excinfo:
        mrml.ensure_colormap(scene, "NoSuchTable")
    assert_one_line_error(excinfo, "NoSuchTable")


def test_colormap_uses_existing_slicer_file_table(scene):
    table = slicer.vtkMRMLColorTableNode()
    table.SetTypeToGrey()
    table.SetName("Inferno")
    scene.AddNode(table)
    assert mrml.ensure_colormap(scene, "Inferno") is table


def test_heatmap_display_settings(scene):
    heat = mrml.update_volume_node(scene, oblique_volume(7), "heat", role="heatmap:x")
    colors = mrml.ensure_colormap(scene)
    display = mrml.set_heatmap_display(heat, colors, window=(0.0, 1.0), threshold=0.2, opacity=0.6)
    assert display is heat.GetDisplayNode()
    assert display.GetColorNodeID() == colors.GetID()
    assert not display.GetAutoWindowLevel()
    assert display.GetWindow() == pytest.approx(1.0) and display.GetLevel() == pytest.approx(0.5)
    assert display.GetApplyThreshold() and not display.GetAutoThreshold()
    assert display.GetLowerThreshold() == pytest.approx(0.2)
    assert display.GetUpperThreshold() >= 1.0
    assert display.GetInterpolate() and display.GetOpacity() == pytest.approx(0.6)

    diff = mrml.update_volume_node(scene, oblique_volume(8), "diff", role="difference")
    signed = mrml.set_signed_heatmap_display(diff, mrml.ensure_colormap(scene, "ColdToHotRainbow"), limit=0.5)
    assert signed.GetWindow() == pytest.approx(1.0) and signed.GetLevel() == pytest.approx(0.0)
    assert not signed.GetApplyThreshold()
    with pytest.raises(InputError):
        mrml.set_heatmap_display(heat, colors, window=(1.0, 1.0))


def test_show_overlay_sets_every_slice_view(scene):
    composites = []
    for _ in range(3):
        composite = slicer.vtkMRMLSliceCompositeNode()
        scene.AddNode(composite)
        composites.append(composite)
    background = mrml.update_volume_node(scene, oblique_volume(), "image", role="input")
    heat = mrml.update_volume_node(scene, oblique_volume(1), "heat", role="heatmap:x")
    assert mrml.show_overlay(scene, background, heat, opacity=0.4) == 3
    for composite in composites:
        assert composite.GetBackgroundVolumeID() == background.GetID()
        assert composite.GetForegroundVolumeID() == heat.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.4)


# ---------------------------------------------------------------------------------- sequences


def test_traversal_sequence_and_browser(scene):
    values = [-2.0, -1.0, 0.0, 1.0, 2.0]
    base = oblique_volume(9)
    volumes = [Volume(base.array + v, base.geometry) for v in values]
    reference = mrml.update_volume_node(scene, base, "image", role="input")
    sequence, browser = mrml.traversal_sequence(
        scene, volumes, values, "Traversal LV volume", attribute="LV volume", unit="σ", reference=reference
    )
    assert sequence.GetNumberOfDataNodes() == len(values)
    assert sequence.GetIndexName() == "LV volume" and sequence.GetIndexUnit() == "σ"
    assert [float(sequence.GetNthIndexValue(i)) for i in range(len(values))] == values
    assert browser is not None and browser.GetSelectedItemNumber() == 0

    proxy = mrml.set_traversal_item(scene, browser, 0)
    assert proxy is not None and proxy.GetDisplayNode() is not None
    assert_same_volume(mrml.volume_from_node(proxy), volumes[0])
    proxy = mrml.set_traversal_item(scene, browser, 3)
    assert_same_volume(mrml.volume_from_node(proxy), volumes[3])

    count = scene.GetNumberOfNodes()
    again, browser2 = mrml.traversal_sequence(scene, volumes[:3], values[:3], "Traversal LV volume")
    assert again is sequence and browser2 is browser and scene.GetNumberOfNodes() == count
    assert sequence.GetNumberOfDataNodes() == 3


def test_traversal_bad_inputs(scene):
    volume = oblique_volume()
    for volumes, values, word in [([], [], "no volumes"), ([volume], [1.0, 2.0], "values"),
                                  ([volume, volume], [1.0, 1.0], "distinct"), ([volume], [float("nan")], "finite")]:
        with pytest.raises(InputError) as excinfo:
            mrml.traversal_sequence(scene, volumes, values, "t")
        assert_one_line_error(excinfo, word)


# ---------------------------------------------------------------------------------- parameters


PARAMETERS = {
    "model_dir": "/data/runs/attri vae|v1:best",
    "latent_values": [0.5, -1.25, 0.0],
    "heatmap": {"attribute": "LV volume", "threshold": 0.2, "opacity": 0.6},
    "use_gpu": False,
    "note": 'quotes " and unicode σ',
}


def test_parameters_persist_through_saved_scene(scene, tmp_path):
    assert mrml.load_parameters(scene) == {}
    node = mrml.save_parameters(scene, PARAMETERS)
    assert node.GetSingletonTag() == mrml.PARAMETER_SINGLETON_TAG
    node.SetParameter("wrapperField", "raw")  # a parameterNodeWrapper field on the same node
    mrml.save_parameters(scene, {"use_gpu": True})
    assert scene.GetNodesByClass("vtkMRMLScriptedModuleNode").GetNumberOfItems() == 1
    expected = dict(PARAMETERS, use_gpu=True)
    assert mrml.load_parameters(scene) == expected

    # .mrml round trip
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()
    restored = slicer.vtkMRMLScene()
    restored.SetURL(str(tmp_path / "scene.mrml"))
    assert restored.Connect()
    assert mrml.load_parameters(restored) == expected
    restored_node = restored.GetSingletonNode(mrml.PARAMETER_SINGLETON_TAG, "vtkMRMLScriptedModuleNode")
    assert restored_node.GetParameter("wrapperField") == "raw"

    mrml.save_parameters(scene, {"only": 1}, replace=True)
    assert mrml.load_parameters(scene) == {"only": 1}
    with pytest.raises(InputError):
        mrml.save_parameters(scene, {"bad": float("nan")})


def test_scene_bundle_keeps_parameters_and_volumes(scene, tmp_path):
    volume = oblique_volume(10)
    node = mrml.update_volume_node(scene, volume, "heatmap", role="heatmap:LV volume")
    mrml.save_parameters(scene, PARAMETERS)
    bundle = tmp_path / "scene.mrb"
    assert scene.WriteToMRB(str(bundle))
    restored = slicer.vtkMRMLScene()
    # Slicer's application logic gives every scene a data I/O manager with a cache; a bare
    # scene needs one for ReadFromMRB.
    cache = slicer.vtkCacheManager()
    cache.SetRemoteCacheDirectory(str(tmp_path / "cache"))
    io_manager = slicer.vtkDataIOManager()
    io_manager.SetCacheManager(cache)
    restored.SetDataIOManager(io_manager)
    restored.SetCacheManager(cache)
    assert restored.ReadFromMRB(str(bundle))
    assert mrml.load_parameters(restored) == PARAMETERS
    again = restored.GetNodeByID(node.GetID())
    assert again is not None and again.GetAttribute(mrml.ROLE_ATTRIBUTE) == "heatmap:LV volume"
    assert_same_volume(mrml.volume_from_node(again), volume, atol=1e-5)


# ---------------------------------------------------------------------------------- masks


def test_labelmap_mask_same_grid(scene):
    volume = oblique_volume(11)
    image = mrml.update_volume_node(scene, volume, "image", role="input")
    labels = np.zeros(volume.geometry.shape, np.uint8)
    labels[1:3, 2:4, 3:6] = 2
    labels[0, 0, 0] = 5
    labelmap = mrml.update_volume_node(scene, Volume(labels, volume.geometry), "labels", role="mask", labelmap=True)
    assert labelmap.IsA("vtkMRMLLabelMapVolumeNode")
    mask = mrml.segmentation_or_labelmap_mask(scene, labelmap, image)
    assert mask.array.dtype == np.uint8 and mask.geometry.allclose(volume.geometry, atol=1e-9)
    np.testing.assert_array_equal(mask.array, labels != 0)
    only2 = mrml.segmentation_or_labelmap_mask(scene, labelmap, image, label=2)
    np.testing.assert_array_equal(only2.array, labels == 2)


def test_labelmap_mask_other_grid_is_resampled(scene):
    volume = oblique_volume(12, size=(10, 10, 10))
    image = mrml.update_volume_node(scene, volume, "image", role="input")
    # the same oblique frame at half the spacing: voxel (i, j, k) of the image = (2i, 2j, 2k)
    fine = Geometry((20, 20, 20), tuple(s / 2 for s in volume.geometry.spacing), volume.geometry.origin,
                    volume.geometry.direction)
    labels = np.zeros(fine.shape, np.uint8)
    labels[8:13, 4:9, 6:15] = 1
    labelmap = mrml.update_volume_node(scene, Volume(labels, fine), "fine labels", role="mask", labelmap=True)
    mask = mrml.segmentation_or_labelmap_mask(scene, labelmap, image)
    np.testing.assert_array_equal(mask.array, labels[::2, ::2, ::2] != 0)


def test_segmentation_mask(scene):
    volume = oblique_volume(13)
    image = mrml.update_volume_node(scene, volume, "image", role="input")
    labels = np.zeros(volume.geometry.shape, np.uint8)
    labels[1:4, 1:4, 2:5] = 1
    labelmap = mrml.update_volume_node(scene, Volume(labels, volume.geometry), "labels", role="mask", labelmap=True)
    segmentation = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(segmentation)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation)
    def count():  # nodes other than the subject hierarchy singleton the export may create
        return scene.GetNumberOfNodes() - scene.GetNodesByClass("vtkMRMLSubjectHierarchyNode").GetNumberOfItems()

    before = count()
    mask = mrml.segmentation_or_labelmap_mask(scene, segmentation, image)
    np.testing.assert_array_equal(mask.array, labels)
    assert mask.geometry.allclose(volume.geometry, atol=1e-9)
    assert count() == before  # the temporary export labelmap, its display and colour nodes are gone

    empty = slicer.vtkMRMLSegmentationNode()
    empty.SetName("empty seg")
    scene.AddNode(empty)
    with pytest.raises(InputError) as excinfo:
        mrml.segmentation_or_labelmap_mask(scene, empty, image)
    assert_one_line_error(excinfo, "empty seg", "empty")


def test_mask_errors(scene):
    volume = oblique_volume(14)
    image = mrml.update_volume_node(scene, volume, "image", role="input")
    empty = mrml.update_volume_node(scene, Volume(np.zeros(volume.geometry.shape, np.uint8), volume.geometry),
                                    "empty labels", role="mask", labelmap=True)
    with pytest.raises(InputError) as excinfo:
        mrml.segmentation_or_labelmap_mask(scene, empty, image)
    assert_one_line_error(excinfo, "'empty labels'", "empty")

    far = Geometry(volume.geometry.size, volume.geometry.spacing,
                   tuple(o + 500.0 for o in volume.geometry.origin), volume.geometry.direction)
    away = mrml.update_volume_node(scene, Volume(np.ones(far.shape, np.uint8), far), "far labels",
                                   role="mask", labelmap=True)
    with pytest.raises(InputError) as excinfo:
        mrml.segmentation_or_labelmap_mask(scene, away, image)
    assert_one_line_error(excinfo, "'far labels'", "does not overlap", "'image'")

    with pytest.raises(InputError) as excinfo:
        mrml.segmentation_or_labelmap_mask(scene, None, image)
    assert_one_line_error(excinfo, "no mask")
    with pytest.raises(InputError) as excinfo:
        mrml.segmentation_or_labelmap_mask(scene, away, None)
    assert_one_line_error(excinfo, "reference")


# ---------------------------------------------------------------------------------- bad inputs


def test_bad_volume_nodes(scene):
    with pytest.raises(InputError) as excinfo:
        mrml.volume_from_node(None)
    assert_one_line_error(excinfo, "no volume")

    flat = raw_node(scene, np.zeros((1, 8, 8), np.float32))
    flat.SetName("one slice")
    with pytest.raises(InputError) as excinfo:
        mrml.volume_from_node(flat)
    assert_one_line_error(excinfo, "'one slice'", "2D")

    vector = raw_node(scene, np.zeros((4, 5, 6, 3), np.float32), cls=slicer.vtkMRMLVectorVolumeNode, components=3)
    vector.SetName("rgb")
    with pytest.raises(InputError) as excinfo:
        mrml.volume_from_node(vector)
    assert_one_line_error(excinfo, "'rgb'", "4D")

    scalar3 = raw_node(scene, np.zeros((4, 5, 6, 3), np.float32), components=3)
    with pytest.raises(InputError) as excinfo:
        mrml.volume_from_node(scalar3)
    assert_one_line_error(excinfo, "3 components")

    array = np.ones((4, 5, 6), np.float32)
    array[2, 3, 4] = np.nan
    array[0, 0, 0] = np.inf
    nan = raw_node(scene, array)
    nan.SetName("has nan")
    with pytest.raises(InputError) as excinfo:
        mrml.volume_from_node(nan)
    assert_one_line_error(excinfo, "'has nan'", "2 NaN")

    empty = slicer.vtkMRMLScalarVolumeNode()
    empty.SetName("no data")
    scene.AddNode(empty)
    with pytest.raises(InputError) as excinfo:
        mrml.volume_from_node(empty)
    assert_one_line_error(excinfo, "no image data")

    sequence = slicer.vtkMRMLSequenceNode()
    scene.AddNode(sequence)
    with pytest.raises(InputError) as excinfo:
        mrml.volume_from_node(sequence)
    assert_one_line_error(excinfo, "sequence")

    model = slicer.vtkMRMLModelNode()
    scene.AddNode(model)
    with pytest.raises(InputError) as excinfo:
        mrml.volume_from_node(model)
    assert_one_line_error(excinfo, "not a scalar volume")


def test_library_imports_without_slicer():
    """``import AttriVAELib.slicer.mrml`` must not need Slicer; using it then gives a clear error."""
    code = (
        "import sys; sys.modules['slicer'] = None; sys.modules['vtk'] = None\n"
        "import AttriVAELib, AttriVAELib.slicer.mrml as m\n"
        "from AttriVAELib.core.errors import InputError\n"
        "try:\n    m.load_parameters(object())\nexcept InputError as e:\n    print('ERR', e)\n"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, encoding="utf-8", errors="replace", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ERR" in result.stdout and "slicer-core" in result.stdout
