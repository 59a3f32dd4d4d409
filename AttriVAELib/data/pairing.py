"""Pairing images with their segmentations by subject, across the layouts people keep data in.

Inputs are a folder (searched recursively; hidden entries skipped) or a glob pattern
(``data/*/*_gt.nii.gz``, ``**`` allowed). An *item* is an image file (NIfTI, NRRD, MHA/MHD)
or a DICOM series folder (a folder holding DICOM files; it is not searched further).

When images and segmentations come from the same folder (the ACDC/EMIDEC layout
``patient001/patient001_frame01.nii.gz`` + ``patient001/patient001_frame01_gt.nii.gz``), an item
whose name ends with a segmentation token (:data:`SEGMENTATION_TOKENS`: ``_gt``, ``_seg``,
``_label`` …) is a segmentation; a pattern or a separate folder for the segmentations says it
directly. Each item gets a *key*: its path relative to its root without the file suffix, the
segmentation token (or an image token such as ``_0000``) removed. Items are matched, in turn,

1. by key (same relative folder and name);
2. by file-name key alone, where it is unique on both sides (``images/a.nii.gz`` with
   ``labels/sub/a_seg.nrrd``);
3. by folder, where a folder holds exactly one unmatched item on each side
   (``images/s01/t1.nii.gz`` with ``labels/s01/seg.nii.gz``);
4. by the first folder of one side equal to the key of the other (a DICOM series in
   ``images/s01/cine/`` with ``labels/s01.nii.gz``).

A pair's *subject* id is its file-name key when that is unique in the cohort, else its key with
``/`` replaced by ``_``; characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_``.
Its *group* is the first folder of the image's relative path (the patient of a nested layout),
or the subject itself: frames of one patient share a group.
"""

from __future__ import annotations

import glob
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

from AttriVAELib.core.errors import InputError
from AttriVAELib.data.io import READABLE_SUFFIXES

__all__ = ["IMAGE_TOKENS", "Pair", "Pairing", "SEGMENTATION_TOKENS", "find_items", "is_dicom_folder", "pair_files"]

#: Name endings that mark a segmentation when images and segmentations share a folder.
SEGMENTATION_TOKENS = ("_gt", "_seg", "_segmentation", "_label", "_labels", "_labelmap", "_mask", "-seg",
                       "-label", ".seg")
#: Name endings of images removed before matching (nnU-Net's channel suffix and the like).
IMAGE_TOKENS = ("_0000", "_img", "_image")
_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
_GLOB_CHARS = re.compile(r"[*?\[]")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Pair:
    """An image and its segmentation; ``subject`` is unique in the cohort, ``group`` joins frames of one patient."""

    subject: str
    group: str
    image: Path
    segmentation: Path


@dataclass
class Pairing:
    """The pairs found, and the items left without a partner."""

    pairs: list[Pair]
    unpaired_images: list[Path] = field(default_factory=list)
    unpaired_segmentations: list[Path] = field(default_factory=list)
    roots: tuple[Path, ...] = ()  # the folders searched: images', segmentations'

    def unpaired_line(self, shown: int = 3) -> str | None:
        """One line naming the unpaired items (the first ``shown`` of each side), or None."""
        parts = []
        for items, what in ((self.unpaired_images, "image(s) without a segmentation"),
                            (self.unpaired_segmentations, "segmentation(s) without an image")):
            if items:
                names = ", ".join(str(p) for p in items[:shown]) + (", …" if len(items) > shown else "")
                parts.append(f"{len(items)} {what} ({names})")
        return "unpaired: " + "; ".join(parts) if parts else None


@dataclass(frozen=True)
class _Item:
    path: Path
    relative: PurePosixPath  # relative to its root, suffix kept
    key: str  # relative folder + name without suffix and token, case-folded

    @property
    def name_key(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def folder(self) -> str:
        return str(self.relative.parent)


def is_dicom_folder(path: Path) -> bool:
    """True if ``path`` is a folder directly holding DICOM files (by suffix or the ``DICM`` marker)."""
    try:
        entries = [e for e in os.scandir(path) if e.is_file() and not e.name.startswith(".")]
    except OSError:
        return False
    for entry in entries[:64]:
        if entry.name.lower().endswith(_DICOM_SUFFIXES):
            return True
        try:
            with open(entry.path, "rb") as fh:
                fh.seek(128)
                if fh.read(4) == b"DICM":
                    return True
        except OSError:
            continue
    return False


def _is_image_file(name: str) -> bool:
    lower = name.lower()
    return any(lower.endswith(s) for s in READABLE_SUFFIXES)


def _strip_suffix(name: str) -> str:
    lower = name.lower()
    for suffix in sorted(READABLE_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _walk(root: Path, exclude: Sequence[Path] = ()) -> Iterable[Path]:
    skip = {p.resolve() for p in exclude}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() not in skip)
        if here != root and is_dicom_folder(here):
            dirs[:] = []
            yield here
            continue
        for name in sorted(files):
            if not name.startswith(".") and _is_image_file(name):
                yield here / name
    if is_dicom_folder(root):
        yield root


def find_items(spec: str | os.PathLike, exclude: Sequence[Path] = ()) -> tuple[Path, list[Path]]:
    """(root, items) of a folder (searched recursively) or a glob pattern (root: its folder part).

    Items inside the folders ``exclude`` (e.g. the output being written) are left out.

    Raises:
        InputError: the folder does not exist, or nothing readable is found.
    """
    text = str(spec)
    if _GLOB_CHARS.search(text):
        parts = Path(text).parts
        fixed = [p for p in parts[: next(i for i, p in enumerate(parts) if _GLOB_CHARS.search(p))]]
        root = Path(*fixed) if fixed else Path(".")
        skip = [p.resolve() for p in exclude]
        matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
        matches = [p for p in matches if not any(s == p.resolve() or s in p.resolve().parents for s in skip)]
        items = [p for p in matches if (p.is_file() and _is_image_file(p.name)) or (p.is_dir() and is_dicom_folder(p))]
        if not items:
            raise InputError(f"{text}: the pattern matches no image file or DICOM series folder")
        return root, items
    root = Path(text)
    if not root.exists():
        raise InputError(f"{root}: folder not found")
    if root.is_file():
        raise InputError(f"{root}: is a file; give the folder holding the images (or a glob pattern)")
    items = list(_walk(root, exclude))
    if not items:
        raise InputError(f"{root}: holds no image file ({', '.join(READABLE_SUFFIXES)}) or DICOM series folder")
    return root, items


def _strip_token(stem: str, tokens: Sequence[str]) -> str:
    lower = stem.lower()
    for token in sorted(tokens, key=len, reverse=True):
        if lower.endswith(token) and len(stem) > len(token):
            return stem[: -len(token)]
    return stem


def _item(path: Path, root: Path, tokens: Sequence[str]) -> _Item:
    try:
        relative = PurePosixPath(path.resolve().relative_to(root.resolve()).as_posix())
    except ValueError:
        relative = PurePosixPath(path.name)
    if str(relative) == ".":
        relative = PurePosixPath(path.name)
    stem = _strip_token(_strip_suffix(relative.name), tokens)
    key = (relative.parent / stem).as_posix()
    key = key[2:] if key.startswith("./") else key
    return _Item(path, relative, key.casefold())


def _is_segmentation_name(path: Path) -> bool:
    stem = _strip_suffix(path.name).lower()
    return any(stem.endswith(token) and len(stem) > len(token) for token in SEGMENTATION_TOKENS)


def _match(images: list[_Item], segs: list[_Item]) -> list[tuple[_Item, _Item]]:
    """The four matching rules of the module notes, in turn, each on what the earlier left."""
    pairs: list[tuple[_Item, _Item]] = []

    def unique(items: list[_Item], key) -> dict[str, _Item]:
        counts = Counter(key(i) for i in items)
        return {key(i): i for i in items if counts[key(i)] == 1}

    rules = (lambda i: i.key, lambda i: i.name_key,
             lambda i: i.folder if i.folder != "." else None)
    for rule in rules:
        left, right = unique(images, rule), unique(segs, rule)
        found = [(left[k], right[k]) for k in sorted(set(left) & set(right)) if k is not None]
        pairs.extend(found)
        used = {id(x) for pair in found for x in pair}
        images = [i for i in images if id(i) not in used]
        segs = [s for s in segs if id(s) not in used]
    top = unique(images, lambda i: i.relative.parts[0].casefold() if len(i.relative.parts) > 1 else None)
    by_key = unique(segs, lambda s: s.key)
    for k in sorted(set(top) & set(by_key)):
        if k is not None:
            pairs.append((top[k], by_key[k]))
    return pairs


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("_") or "subject"


def pair_files(images: str | os.PathLike, segmentations: str | os.PathLike, exclude: Sequence[Path] = ()) -> Pairing:
    """Pair the image items of ``images`` with the segmentation items of ``segmentations``.

    Each is a folder or a glob pattern (see the module notes). When the segmentations' folder is the
    images' folder (or holds it), only the items named like a segmentation are segmentations; items
    that are segmentations are never images. Nothing inside the folders ``exclude`` is used.

    Raises:
        InputError: a folder is missing or holds nothing readable, or no pair is found.
    """
    image_root, image_paths = find_items(images, exclude)
    seg_root, seg_paths = find_items(segmentations, exclude)
    shared = seg_root.resolve() == image_root.resolve() or seg_root.resolve() in image_root.resolve().parents
    if shared and not _GLOB_CHARS.search(str(segmentations)):
        # One folder holds both: the segmentations are the items named like one.
        seg_paths = [p for p in seg_paths if _is_segmentation_name(p)]
    seg_set = {p.resolve() for p in seg_paths}
    image_only = [p for p in image_paths if p.resolve() not in seg_set]
    seg_only = seg_paths
    image_items = [_item(p, image_root, IMAGE_TOKENS) for p in image_only]
    seg_items = [_item(p, seg_root, SEGMENTATION_TOKENS) for p in seg_only]
    matched = _match(image_items, seg_items)
    if not matched:
        raise InputError(f"no image in {images} could be paired with a segmentation in {segmentations} "
                         f"({len(image_items)} image(s), {len(seg_items)} segmentation(s) found; names must match, "
                         f"segmentations ending in {', '.join(SEGMENTATION_TOKENS[:3])} …)")
    names = Counter(_safe(_strip_token(_strip_suffix(img.relative.name), IMAGE_TOKENS)).casefold()
                    for img, _ in matched)
    pairs: list[Pair] = []
    taken: dict[str, int] = defaultdict(int)
    for img, seg in sorted(matched, key=lambda m: m[0].key):
        name = _safe(_strip_token(_strip_suffix(img.relative.name), IMAGE_TOKENS))
        subject = name if names[name.casefold()] == 1 else _safe(_strip_suffix(str(img.relative)).replace("/", "_"))
        taken[subject.casefold()] += 1
        if taken[subject.casefold()] > 1:
            subject = f"{subject}-{taken[subject.casefold()]}"
        group = _safe(img.relative.parts[0]) if len(img.relative.parts) > 1 else subject
        pairs.append(Pair(subject, group, img.path, seg.path))
    used = {id(x) for pair in matched for x in pair}
    return Pairing(pairs, [i.path for i in image_items if id(i) not in used],
                   [s.path for s in seg_items if id(s) not in used], (image_root, seg_root))
