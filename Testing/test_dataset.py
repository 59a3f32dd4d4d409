"""Tests of the cached cohort dataset (AttriVAELib.data.dataset) and augmentation (AttriVAELib.data.augment)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from AttriVAELib.core.errors import ConfigError, InputError
from AttriVAELib.data.augment import DEFAULT_AUGMENTATION, build_augmentation
from AttriVAELib.data.dataset import CohortDataset
from AttriVAELib.data.io import Geometry, Volume, read_image, write_image
from AttriVAELib.data.manifest import AttributeScaler, load_manifest
from AttriVAELib.data.preprocessing import GridMapping, PreprocessSpec, preprocess_file, to_source_grid

N = 32
RADII = [6.0, 7.0, 8.0, 9.0, 10.0, 11.0]
TRAIN = ["s0", "s1", "s2", "s3"]
ALL = [f"s{i}" for i in range(len(RADII))]


def _sphere_volume(radius: float, seed: int) -> tuple[Volume, Volume]:
    """A noisy bright sphere in an anisotropic 40×40×20 (2 mm slices) image, and its mask."""
    g = Geometry((40, 40, 20), (1.0, 1.0, 2.0), (-20.0, -20.0, -20.0), tuple(np.eye(3).ravel()))
    k, j, i = np.meshgrid(*(np.arange(n) for n in g.shape), indexing="ij")
    xyz = g.index_to_physical(np.stack([i, j, k], axis=-1))
    inside = (xyz**2).sum(-1) <= radius**2
    rng = np.random.default_rng(seed)
    image = 100.0 + 400.0 * inside + rng.normal(0.0, 10.0, g.shape)
    return Volume(image.astype(np.float32), g), Volume(inside.astype(np.uint8), g)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Six subjects with a manifest: radius and volume attributes, two classes, one lesion."""
    root = tmp_path_factory.mktemp("cohort")
    rows = []
    for s, radius in enumerate(RADII):
        image, mask = _sphere_volume(radius, seed=s)
        write_image(image, root / f"s{s}.nii.gz")
        write_image(mask, root / f"s{s}_mask.nii.gz")
        lesion = ""
        if s == 1:
            write_image(mask, root / "s1_lesion.nii.gz")
            lesion = "s1_lesion.nii.gz"
        rows.append(
            {
                "subject": f"s{s}",
                "image": f"s{s}.nii.gz",
                "mask": f"s{s}_mask.nii.gz",
                "lesion": lesion,
                "label": "scar" if s % 2 else "healthy",
                "radius_mm": radius,
                "volume_ml": 4.0 / 3.0 * np.pi * radius**3 / 1000.0,
            }
        )
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def manifest(cohort):
    return load_manifest(cohort / "manifest.csv")


@pytest.fixture(scope="module")
def scaler(manifest):
    return AttributeScaler.fit(manifest.attribute_matrix(manifest.subset(TRAIN)), manifest.attribute_names)


@pytest.fixture(scope="module")
def spec():
    return PreprocessSpec(size=N, crop_to_mask=True, margin_mm=5.0)


def test_items_have_the_documented_shapes_and_types(manifest, scaler, spec) -> None:
    data = CohortDataset(manifest, ALL, spec, scaler=scaler)
    assert len(data) == 6
    assert data.attribute_names == ["radius_mm", "volume_ml"]
    assert data.subjects == ALL
    item = data[1]
    assert item["image"].shape == (1, N, N, N) and item["image"].dtype == torch.float32
    assert item["attributes"].shape == (2,) and item["attributes"].dtype == torch.float32
    assert item["label"].shape == () and item["label"].dtype == torch.long
    assert item["label"].item() == manifest.label_names.index("scar")
    assert item["index"] == 1 and item["subject"] == "s1"
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert data.images is not None and data.images.shape == (6, 1, N, N, N) and data.images.dtype == torch.float16
    with pytest.raises(IndexError):
        data[6]


def test_attributes_are_scaled_on_train_and_raw_without_scaler(manifest, scaler, spec) -> None:
    train = CohortDataset(manifest, TRAIN, spec, scaler=scaler)
    a = train.attributes.numpy()
    assert a.min() == pytest.approx(0.0) and a.max() == pytest.approx(1.0)
    assert ((a >= 0) & (a <= 1)).all()
    np.testing.assert_allclose(a[:, 0], (np.array(RADII[:4]) - 6.0) / 3.0, atol=1e-6)
    # Held-out subjects use the training statistics (so may leave [0, 1]).
    test = CohortDataset(manifest, ["s5"], spec, scaler=scaler)
    assert test[0]["attributes"][0].item() == pytest.approx((11.0 - 6.0) / 3.0)
    raw = CohortDataset(manifest, ["s2"], spec)
    assert raw[0]["attributes"][0].item() == pytest.approx(8.0)


def test_cache_matches_preprocessing_and_mappings_invert(manifest, spec) -> None:
    data = CohortDataset(manifest, ALL, spec, workers=2)
    single = CohortDataset(manifest, ALL, spec, workers=0, cache_dtype=torch.float32)
    assert torch.equal(data.images.float(), single.images.half().float())
    record = manifest.subset(["s3"])[0]
    expected = preprocess_file(record.image, spec, record.mask)
    np.testing.assert_allclose(single[3]["image"][0].numpy(), expected.image, atol=0)
    np.testing.assert_allclose(data[3]["image"][0].numpy(), expected.image, atol=5e-4)  # float16 cache
    assert all(isinstance(m, GridMapping) for m in data.mappings) and len(data.mappings) == 6
    assert data.mappings[3] == expected.mapping
    # Crop to mask with a fixed margin: bigger spheres get bigger voxels.
    spacings = [m.spacing_mm for m in data.mappings]
    assert spacings == sorted(spacings) and spacings[0] < spacings[-1]
    back = to_source_grid(data[3]["image"][0].numpy(), data.mappings[3])
    assert back.geometry == expected.mapping.source


def test_cache_means_files_are_read_once(cohort, tmp_path, spec) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(cohort, copy)
    manifest = load_manifest(copy / "manifest.csv")
    calls: list[tuple[int, int]] = []
    data = CohortDataset(manifest, ALL, spec, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 6) for i in range(1, 7)]
    before = torch.stack([data[i]["image"] for i in range(len(data))])
    for path in copy.glob("*.nii.gz"):
        path.unlink()
    after = torch.stack([data[i]["image"] for i in range(len(data))])
    assert torch.equal(before, after)
    # Without a cache, the (now missing) file is read again and the error names it.
    uncached = CohortDataset(manifest, ALL, spec, cache=False)
    with pytest.raises(InputError, match="s0.nii.gz"):
        uncached[0]


def test_unreadable_file_error_names_the_file(cohort, tmp_path, spec) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(cohort, copy)
    (copy / "s4.nii.gz").write_bytes(b"not an image")
    manifest = load_manifest(copy / "manifest.csv")
    with pytest.raises(InputError, match="s4.nii.gz"):
        CohortDataset(manifest, ALL, spec, workers=2)


@pytest.mark.parametrize("content", [b"not an image", "nan"])
def test_a_bad_lesion_mask_error_names_the_file(cohort, tmp_path, spec, content) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(cohort, copy)
    lesion = copy / "s1_lesion.nii.gz"
    if content == "nan":
        mask = read_image(lesion)
        write_image(Volume(np.full(mask.array.shape, np.nan, np.float32), mask.geometry), lesion)
    else:
        lesion.write_bytes(content)
    manifest = load_manifest(copy / "manifest.csv")
    CohortDataset(manifest, ALL, spec)  # the lesion masks are read only when asked for
    with pytest.raises(InputError, match="s1_lesion.nii.gz"):
        CohortDataset(manifest, ALL, spec, lesions=True)


def test_scaler_for_other_attributes_is_config_error(manifest, spec) -> None:
    other = AttributeScaler(["volume_ml", "radius_mm"], np.zeros(2), np.ones(2))
    with pytest.raises(ConfigError, match="attribute scaling"):
        CohortDataset(manifest, ["s0"], spec, scaler=other)


def test_lesion_on_model_grid(manifest, spec) -> None:
    data = CohortDataset(manifest, ["s0", "s1"], spec)
    assert data.lesion(0) is None
    lesion = data.lesion(1)
    assert lesion.shape == (N, N, N) and lesion.dtype == np.uint8
    image = data[1]["image"][0].numpy()
    assert image[lesion == 1].mean() > 0.8 > image[lesion == 0].mean()


def test_lesion_channel_follows_the_spatial_augmentation_only(manifest, spec) -> None:
    plain = CohortDataset(manifest, ["s0", "s1"], spec, lesions=True)
    assert torch.equal(plain[0]["lesion"], torch.zeros(1, N, N, N))  # no lesion mask: zeros
    cover = plain[1]["lesion"]
    inside = torch.from_numpy(plain.lesion(1).astype(bool))[None]
    assert float(cover[inside].min()) > 0.5 and float(cover.max()) <= 1.0
    assert int((cover > 0).sum()) > int(inside.sum())  # dilated by one voxel
    # A certain mirror along x plus certain intensity changes and noise: the lesion channel is
    # mirrored exactly like the image and keeps its values.
    augmentation = build_augmentation({"flip": 1.0, "flip_axes": [2], "intensity": 1.0, "noise": 1.0}, seed=0)
    moved = CohortDataset(manifest, ["s0", "s1"], spec, lesions=True, augmentation=augmentation)[1]
    assert torch.allclose(moved["lesion"], torch.flip(cover, dims=[3]), atol=1e-6)
    image = moved["image"]
    assert not torch.allclose(image, torch.flip(plain[1]["image"], dims=[3]), atol=1e-3)  # intensities changed
    assert "lesion" not in CohortDataset(manifest, ["s1"], spec)[0]


def test_augmentation_keeps_range_and_changes_image(manifest, scaler, spec) -> None:
    augmentation = build_augmentation({"flip": 1.0, "intensity": 1.0, "affine": 1.0}, seed=0)
    data = CohortDataset(manifest, ALL, spec, scaler=scaler, augmentation=augmentation)
    plain = data.image(2)
    first = data[2]["image"]
    second = data[2]["image"]
    for img in (first, second):
        assert img.shape == (1, N, N, N) and img.dtype == torch.float32 and type(img) is torch.Tensor
        assert 0.0 <= img.min() and img.max() <= 1.0
        assert not torch.allclose(img, plain, atol=1e-3)
    assert not torch.equal(first, second)
    assert torch.equal(data.image(2), plain)  # the cache is untouched
    # Same seed, same augmentations.
    augmentation.set_random_state(seed=5)
    a = data[2]["image"]
    augmentation.set_random_state(seed=5)
    assert torch.equal(a, data[2]["image"])


def test_default_augmentation_keeps_shape_attributes() -> None:
    """Flips and axial quarter turns keep the sphere's volume and z-profile (axial diameters)."""
    x = torch.zeros(1, N, N, N)
    x[0, 8:24, 10:18, 12:26] = 0.8  # a box, elongated in x: not symmetric under rot90
    augmentation = build_augmentation({"flip": 1.0, "rot90": 1.0}, seed=3)
    for _ in range(4):
        y = augmentation(x)
        assert y.sum().item() == pytest.approx(x.sum().item())
        assert torch.equal(y.sum(dim=(2, 3)), x.sum(dim=(2, 3)))  # per-slice area unchanged
    assert build_augmentation(None) is None and build_augmentation({}) is None
    assert build_augmentation(DEFAULT_AUGMENTATION) is not None


@pytest.mark.parametrize(
    "config",
    [
        {"flips": 0.5},
        {"flip": 1.5},
        {"flip": "yes"},
        {"rot90_axes": [0]},
        {"flip_axes": [3]},
        {"contrast_gamma": [2, 1]},
    ],
)
def test_bad_augmentation_config_is_config_error(config) -> None:
    with pytest.raises(ConfigError):
        build_augmentation(config)


def test_dataloader_batches(manifest, scaler, spec) -> None:
    augmentation = build_augmentation(DEFAULT_AUGMENTATION, seed=0)
    data = CohortDataset(manifest, ALL, spec, scaler=scaler, augmentation=augmentation)
    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    batches = list(loader)
    assert [b["image"].shape[0] for b in batches] == [4, 2]
    batch = batches[0]
    assert batch["image"].shape == (4, 1, N, N, N) and batch["image"].dtype == torch.float32
    assert batch["attributes"].shape == (4, 2)
    assert batch["label"].shape == (4,) and batch["label"].dtype == torch.long
    assert batch["index"].shape == (4,) and len(batch["subject"]) == 4
    assert sorted(s for b in batches for s in b["subject"]) == ALL


def test_dataloader_workers_get_distinct_augmentation(manifest, spec) -> None:
    augmentation = build_augmentation({"intensity": 1.0}, seed=0)
    data = CohortDataset(manifest, ["s2", "s2"], spec, augmentation=augmentation)  # the same subject twice

    def load(worker_init_fn):
        loader = torch.utils.data.DataLoader(data, batch_size=1, num_workers=2, worker_init_fn=worker_init_fn)
        return [b["image"] for b in loader]

    # Without re-seeding, both worker processes copy the same random state.
    same = load(None)
    assert torch.equal(same[0], same[1])
    distinct = load(CohortDataset.worker_init_fn)
    assert not torch.equal(distinct[0], distinct[1])
    assert all(0.0 <= img.min() and img.max() <= 1.0 for img in distinct)
