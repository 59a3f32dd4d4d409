"""One subject of a cohort being built: read, check, measure, write its masks, cache the result.

:func:`process_subject` is the unit of work of :func:`AttriVAELib.data.cohort_builder.build_cohort`
(run in worker processes, so it takes and returns plain data). For one image/segmentation pair it

1. reads the image (every check of :func:`AttriVAELib.data.io.read_image`) for its grid;
2. reads the segmentation, which must hold whole numbers and lie on the image's grid (same size;
   spacing, origin and direction equal to within :data:`GRID_TOLERANCE_MM` / 1e-4);
3. measures every named label (:func:`AttriVAELib.data.label_measures.measure_label_map`);
4. writes ``masks/<subject>.nii.gz`` (the crop mask, 0/1) and ``labels/<subject>.nii.gz`` (the
   label map) on the image's exact grid, atomically;
5. writes its result to ``.cache/subjects/<subject>.json`` (atomically), with a *signature* of
   its inputs (paths, sizes, modification times, the label names) so that a later run reuses it
   while nothing changed, and measures it again when something did.

Any failure becomes the subject's ``reason`` (one line); nothing is skipped silently.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk

from AttriVAELib.core.atomic import write_json
from AttriVAELib.core.errors import AttriVAEError, InputError
from AttriVAELib.data.io import Geometry, Volume, read_image, read_sitk, write_image
from AttriVAELib.data.label_measures import LabelSpec, measure_label_map

__all__ = ["CACHE_FOLDER", "GRID_TOLERANCE_MM", "LABEL_FOLDER", "MASK_FOLDER", "MEASURE_VERSION", "cached_result",
           "output_paths", "process_subject", "signature"]

#: Bump when measurements change: cached results of other versions are measured again.
MEASURE_VERSION = 1
CACHE_FOLDER = Path(".cache") / "subjects"
MASK_FOLDER = "masks"
LABEL_FOLDER = "labels"
#: Largest difference (mm) of origin, and relative difference of spacing, taken as the same grid.
GRID_TOLERANCE_MM = 1e-3


def _stat(path: Path) -> list:
    if path.is_dir():
        entries = sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(path) if e.is_file())
        return ["dir", entries]
    info = path.stat()
    return [info.st_size, info.st_mtime_ns]


def signature(image: Path, segmentation: Path, specs: Sequence[LabelSpec], crop: Sequence[int]) -> str:
    """A digest of everything a subject's result depends on."""
    content = [MEASURE_VERSION, str(image.resolve()), _stat(image), str(segmentation.resolve()), _stat(segmentation),
               [[s.name, list(s.values)] for s in specs], list(crop)]
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()


def _cache_path(out: Path, subject: str) -> Path:
    return out / CACHE_FOLDER / f"{subject}.json"


def output_paths(out: Path, subject: str) -> tuple[Path, Path]:
    """(crop mask, label map) files of a subject in the cohort folder ``out``."""
    return out / MASK_FOLDER / f"{subject}.nii.gz", out / LABEL_FOLDER / f"{subject}.nii.gz"


def cached_result(out: Path, subject: str, digest: str) -> dict[str, Any] | None:
    """The cached result of a subject when its signature is ``digest`` (and its files exist), else None."""
    try:
        result = json.loads(_cache_path(out, subject).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict) or result.get("signature") != digest:
        return None
    if result.get("status") == "ok" and not all(p.is_file() for p in output_paths(out, subject)):
        return None
    return result


def _grid_text(g: Geometry) -> str:
    return (f"size {'×'.join(map(str, g.size))}, spacing {'×'.join(f'{s:g}' for s in g.spacing)} mm, "
            f"origin ({', '.join(f'{o:g}' for o in g.origin)})")


def _check_grid(image: Geometry, seg: Geometry, where: str) -> None:
    problems = []
    if image.size != seg.size:
        problems.append(f"size {'×'.join(map(str, seg.size))} vs {'×'.join(map(str, image.size))}")
    elif not np.allclose(seg.spacing, image.spacing, rtol=GRID_TOLERANCE_MM, atol=0):
        problems.append(f"spacing {'×'.join(f'{s:g}' for s in seg.spacing)} mm vs "
                        f"{'×'.join(f'{s:g}' for s in image.spacing)} mm")
    elif not np.allclose(seg.origin, image.origin, rtol=0, atol=GRID_TOLERANCE_MM + 1e-6 * max(image.spacing)):
        problems.append(f"origin ({', '.join(f'{o:g}' for o in seg.origin)}) vs "
                        f"({', '.join(f'{o:g}' for o in image.origin)})")
    elif not np.allclose(seg.direction, image.direction, rtol=0, atol=1e-4):
        problems.append("direction cosines differ")
    if problems:
        raise InputError(f"{where}: segmentation is on another grid than its image ({problems[0]}; image: "
                         f"{_grid_text(image)}); resample it onto the image first")


def _read_label_map(path: Path) -> tuple[np.ndarray, Geometry]:
    image = read_sitk(path)
    array = np.array(sitk.GetArrayViewFromImage(image))
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
            raise InputError(f"{path}: segmentation holds values that are not whole numbers (a probability map?); "
                             "give a label map")
    if array.size and (array.min() < 0 or array.max() > 32767):
        raise InputError(f"{path}: segmentation values {array.min():g}..{array.max():g} are outside 0..32767")
    return array.astype(np.int16), Geometry.from_image(image)


def process_subject(task: dict[str, Any]) -> dict[str, Any]:
    """Measure one pair and write its outputs (see the module notes); return the cached result.

    ``task``: ``subject``, ``group``, ``image``, ``segmentation``, ``out`` (paths as text), ``labels``
    ([name, [values]] pairs), ``crop`` (label values of the crop mask) and ``signature``.
    """
    out = Path(task["out"])
    subject = task["subject"]
    image_path, seg_path = Path(task["image"]), Path(task["segmentation"])
    result: dict[str, Any] = {key: task[key] for key in ("subject", "group", "image", "segmentation", "signature")}
    try:
        image = read_image(image_path).geometry
        label_map, seg_geometry = _read_label_map(seg_path)
        _check_grid(image, seg_geometry, seg_path.name)
        specs = [LabelSpec(name, tuple(values)) for name, values in task["labels"]]
        columns, shells = measure_label_map(label_map, image.spacing, specs, where=seg_path.name)
        crop = np.isin(label_map, task["crop"])
        if not crop.any():
            raise InputError(f"{seg_path.name}: the crop mask (labels {', '.join(map(str, task['crop']))}) is empty")
        k, j, i = (np.flatnonzero(crop.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1)))
        extent = [float((ax[-1] - ax[0] + 1) * s) for ax, s in zip((i, j, k), image.spacing)]
        mask_path, label_path = output_paths(out, subject)
        write_image(Volume(crop.astype(np.uint8), image), mask_path)
        dtype = np.uint8 if label_map.max() < 256 else np.int16
        write_image(Volume(label_map.astype(dtype), image), label_path)
        result.update(status="ok", columns=columns, shells=shells, crop_extent_mm=extent,
                      spacing=list(image.spacing), size=list(image.size))
    except AttriVAEError as exc:
        result.update(status="bad", reason=str(exc))
    except MemoryError:
        result.update(status="bad", reason=f"{image_path.name}: out of memory while reading or measuring it")
    except Exception as exc:  # a subject's failure of any kind is listed with its reason, never lost
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        result.update(status="bad", reason=f"{seg_path.name}: {type(exc).__name__}: {first}")
    write_json(_cache_path(out, subject), result)
    return result
