"""Dataset manifests, the saved train/val/test split and attribute scaling.

A manifest is a CSV with a column ``image`` (path to a 3D image), optional ``mask``
(segmentation used for cropping/masking), optional ``lesion`` (a lesion mask used only to
score explanations), optional ``label`` (class) and optional ``subject`` (id). Every other
column is a numeric attribute, except columns whose name starts with ``meta_`` or
``factor_`` (kept as metadata). Relative paths are resolved against the CSV's folder.
An attribute's unit is read from its name's suffix (``volume_ml`` → mL).
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from AttriVAELib.core import atomic
from AttriVAELib.core.errors import ManifestError

PATH_COLUMNS = ("image", "mask", "lesion")
RESERVED_COLUMNS = ("subject", *PATH_COLUMNS, "label")
METADATA_PREFIXES = ("meta_", "factor_")
SPLIT_NAMES = ("train", "val", "test")
SPLIT_FILE = "split.json"

_UNIT_SUFFIXES = {
    "_ml": "mL",
    "_mm3": "mm³",
    "_mm2": "mm²",
    "_mm": "mm",
    "_m2": "m²",
    "_cm": "cm",
    "_kg": "kg",
    "_bpm": "bpm",
    "_pct": "%",
    "_years": "years",
    "_ms": "ms",
}


def attribute_unit(name: str) -> str:
    """Unit of an attribute from its name's suffix (``wall_thickness_mm`` → ``mm``), or ``""``."""
    for suffix, unit in _UNIT_SUFFIXES.items():
        if name.endswith(suffix):
            return unit
    return ""


def attribute_label(name: str) -> str:
    """A readable label: ``wall_thickness_mm`` → ``wall thickness (mm)``."""
    unit = attribute_unit(name)
    base = name
    for suffix in _UNIT_SUFFIXES:
        if unit and name.endswith(suffix):
            base = name[: -len(suffix)]
            break
    base = base.replace("_", " ")
    return f"{base} ({unit})" if unit else base


@dataclass(frozen=True)
class Record:
    """One subject of a manifest. ``row`` is the CSV line number (header = line 1)."""

    subject: str
    image: Path
    mask: Path | None
    lesion: Path | None
    label: str | None
    attributes: dict[str, float]
    row: int
    metadata: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass
class Manifest:
    path: Path
    records: list[Record]
    attribute_names: list[str]
    label_names: list[str]

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def subjects(self) -> list[str]:
        return [r.subject for r in self.records]

    @property
    def attribute_units(self) -> list[str]:
        return [attribute_unit(n) for n in self.attribute_names]

    def label_index(self, record: Record) -> int:
        """Index of the record's label in :attr:`label_names`, or -1 without a label."""
        if record.label is None:
            return -1
        return self.label_names.index(record.label)

    def subset(self, subjects: Iterable[str]) -> list[Record]:
        by_id = {r.subject: r for r in self.records}
        missing = [s for s in subjects if s not in by_id]
        if missing:
            raise ManifestError(f"{self.path}: subjects {missing[:3]} are not in the manifest")
        return [by_id[s] for s in subjects]

    def attribute_matrix(self, records: Sequence[Record] | None = None) -> np.ndarray:
        """Attributes as an (N, K) float64 array in :attr:`attribute_names` order."""
        records = self.records if records is None else records
        return np.array([[r.attributes[n] for n in self.attribute_names] for r in records], dtype=np.float64).reshape(
            len(records), len(self.attribute_names)
        )

    def labels(self, records: Sequence[Record] | None = None) -> np.ndarray:
        records = self.records if records is None else records
        return np.array([self.label_index(r) for r in records], dtype=np.int64)


def _resolve_manifest_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.csv"
    if not path.exists():
        raise ManifestError(f"{path}: manifest not found")
    return path


def normalize_label(text: str) -> str:
    """One spelling per class: numeric labels are compared as numbers (``"1.0"``, ``"01"`` → ``"1"``;
    ``"0.50"`` → ``"0.5"``); other labels are kept as written."""
    try:
        value = float(text)
    except ValueError:
        return text
    if not math.isfinite(value):
        return text
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _sort_labels(labels: Iterable[str]) -> list[str]:
    unique = sorted(set(labels))
    try:
        return sorted(unique, key=float)
    except ValueError:
        return unique


def load_manifest(
    path: str | os.PathLike,
    attributes: Sequence[str] | None = None,
    check_files: bool = True,
) -> Manifest:
    """Read and validate a manifest CSV (or a folder holding ``manifest.csv``).

    Args:
        path: the CSV, or a folder containing ``manifest.csv``.
        attributes: attribute columns to use, in order; default: every column that is not
            reserved (``subject, image, mask, lesion, label``) or metadata (``meta_*``, ``factor_*``).
        check_files: check that every referenced file exists.

    Raises:
        ManifestError: one line naming the file, row and column at fault.
    """
    path = _resolve_manifest_path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ManifestError(f"{path}: not a readable CSV ({exc})") from None
    if not header:
        raise ManifestError(f"{path}: manifest is empty (no header)")
    if "image" not in header:
        raise ManifestError(f"{path}: missing required column 'image' (columns: {', '.join(header)})")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise ManifestError(f"{path}: duplicate columns {dupes}")
    if not rows:
        raise ManifestError(f"{path}: manifest has no rows")

    available = [h for h in header if h not in RESERVED_COLUMNS and not h.startswith(METADATA_PREFIXES)]
    if attributes is None:
        attribute_names = available
    else:
        attribute_names = list(attributes)
        unknown = [a for a in attribute_names if a not in header]
        if unknown:
            raise ManifestError(f"{path}: attribute columns {unknown} not found (available: {', '.join(available)})")

    records: list[Record] = []
    seen: dict[str, int] = {}
    for line, raw in enumerate(rows, start=2):
        row = {(k or "").strip(): (v or "").strip() if isinstance(v, str) else "" for k, v in raw.items()}
        where = f"{path.name} row {line}"
        subject = row.get("subject") or Path(row["image"]).name.split(".")[0]
        if not row.get("image"):
            raise ManifestError(f"{where}: empty 'image' path")
        if subject in seen:
            raise ManifestError(f"{where}: subject '{subject}' already used on row {seen[subject]}")
        seen[subject] = line
        paths: dict[str, Path | None] = {}
        for col in PATH_COLUMNS:
            value = row.get(col, "")
            if not value:
                paths[col] = None
                continue
            p = Path(value)
            p = p if p.is_absolute() else (path.parent / p)
            if check_files and not p.exists():
                raise ManifestError(f"{where}: {col} file '{value}' not found")
            paths[col] = p
        values: dict[str, float] = {}
        for name in attribute_names:
            text = row.get(name, "")
            try:
                value = float(text)
            except ValueError:
                raise ManifestError(f"{where}: attribute '{name}' is not numeric ('{text}')") from None
            if not math.isfinite(value):
                raise ManifestError(f"{where}: attribute '{name}' is not finite ('{text}')")
            values[name] = value
        label = row.get("label") or None
        if "label" in header and label is None:
            raise ManifestError(f"{where}: empty 'label'")
        if label is not None:
            label = normalize_label(label)
        metadata = {k: v for k, v in row.items() if k.startswith(METADATA_PREFIXES)}
        records.append(Record(subject, paths["image"], paths["mask"], paths["lesion"], label, values, line, metadata))

    label_names = _sort_labels(r.label for r in records if r.label is not None) if "label" in header else []
    return Manifest(path=path, records=records, attribute_names=attribute_names, label_names=label_names)


def _manifest_digest(manifest: Manifest) -> str:
    text = "\n".join(sorted(manifest.subjects))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_split(
    manifest: Manifest,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> dict[str, list[str]]:
    """Seeded split into train/val/test, stratified by label when there are labels."""
    from sklearn.model_selection import train_test_split

    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ManifestError(f"split fractions {fractions} must be three non-negative numbers summing to 1")
    subjects = np.array(manifest.subjects)
    labels = manifest.labels() if manifest.label_names else None
    n = len(subjects)
    n_test = int(round(fractions[2] * n))
    n_val = int(round(fractions[1] * n))
    if n - n_test - n_val < 1:
        raise ManifestError(f"{manifest.path}: {n} subjects are too few for split fractions {fractions}")

    def stratify(y: np.ndarray | None, size: int) -> np.ndarray | None:
        if y is None or size == 0:
            return None
        counts = np.bincount(y[y >= 0]) if (y >= 0).any() else np.array([])
        ok = len(counts) > 1 and counts.min() >= 2 and size >= len(counts) and len(y) - size >= len(counts)
        return y if ok else None

    idx = np.arange(n)
    rest, test = (idx, idx[:0]) if n_test == 0 else train_test_split(
        idx, test_size=n_test, random_state=seed, stratify=stratify(labels, n_test)
    )
    rest_labels = labels[rest] if labels is not None else None
    train, val = (rest, rest[:0]) if n_val == 0 else train_test_split(
        rest, test_size=n_val, random_state=seed + 1, stratify=stratify(rest_labels, n_val)
    )
    return {name: sorted(subjects[part].tolist()) for name, part in zip(SPLIT_NAMES, (train, val, test))}


def cache_dir() -> Path:
    """Where AttriVAE keeps what cannot live next to read-only data: ``$ATTRIVAE_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/attrivae``, else ``~/.cache/attrivae``."""
    explicit = os.environ.get("ATTRIVAE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "attrivae"


def split_locations(manifest: Manifest) -> list[Path]:
    """Where a manifest's split is saved: next to it (``split.json``), or, for data in a folder this
    user cannot write, in the user cache (:func:`cache_dir`) under a name derived from the manifest's path."""
    key = hashlib.sha256(str(manifest.path.resolve()).encode("utf-8")).hexdigest()[:16]
    return [manifest.root / SPLIT_FILE, cache_dir() / "splits" / f"{manifest.path.parent.name}-{key}.json"]


def find_split(manifest: Manifest) -> Path | None:
    """The saved split file of ``manifest`` (see :func:`split_locations`), or None."""
    return next((p for p in split_locations(manifest) if p.is_file()), None)


def read_split_file(path: Path, manifest: Manifest) -> tuple[dict[str, list[str]], dict]:
    """(split, the file's settings: seed and fractions) of a saved split of ``manifest``."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        split = {name: [str(s) for s in saved["subjects"][name]] for name in SPLIT_NAMES}
    except (OSError, ValueError, KeyError, TypeError):
        raise ManifestError(f"{path}: not a valid split file; delete it to create a new split") from None
    listed = sorted(s for name in SPLIT_NAMES for s in split[name])
    if listed != sorted(manifest.subjects):
        raise ManifestError(
            f"{path}: saved split does not match the manifest's subjects; delete it to create a new split"
        )
    return split, {"seed": saved.get("seed"), "fractions": saved.get("fractions")}


def load_split(
    manifest: Manifest,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    create: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, list[str]]:
    """The split saved with the manifest, creating it on first use.

    Every later command reuses the saved split. A saved split that does not match the
    manifest's subjects is an error rather than being silently replaced. The split is saved
    next to the manifest (``split.json``); when that folder cannot be written (read-only data),
    in the user cache instead (:func:`split_locations`), and ``log`` says where.
    """
    found = find_split(manifest)
    if found is not None:
        return read_split_file(found, manifest)[0]
    if not create:
        raise ManifestError(f"{manifest.root / SPLIT_FILE}: no saved split")
    split = make_split(manifest, seed=seed, fractions=fractions)
    content = {
        "seed": seed,
        "fractions": list(fractions),
        "stratified_by": "label" if manifest.label_names else None,
        "manifest": str(manifest.path.resolve()),
        "manifest_digest": _manifest_digest(manifest),
        "counts": {name: len(split[name]) for name in SPLIT_NAMES},
        "subjects": split,
    }
    beside, cached = split_locations(manifest)
    try:
        atomic.write_json(beside, content)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        atomic.write_json(cached, content)
        if log is not None:
            log(f"note: {manifest.root} is not writable; the split is saved in {cached}")
    return split


def split_settings_note(manifest: Manifest, seed: int, fractions: Sequence[float]) -> str | None:
    """A note when the saved split was made with other settings than ``seed``/``fractions`` (they are
    then not used: the saved split is), or None."""
    found = find_split(manifest)
    if found is None:
        return None
    saved = read_split_file(found, manifest)[1]
    differ = []
    if saved["fractions"] is not None and not np.allclose(saved["fractions"], list(fractions), atol=1e-9):
        differ.append(f"split_fractions {list(fractions)} (saved: {saved['fractions']})")
    if saved["seed"] is not None and saved["seed"] != seed:
        differ.append(f"split_seed {seed} (saved: {saved['seed']})")
    if not differ:
        return None
    return (f"note: using the split saved in {found}; data.{' and data.'.join(differ)} not applied "
            "(delete the split file to make a new one)")


@dataclass
class AttributeScaler:
    """Min-max scaling of attributes to [0, 1], fitted on the training split only."""

    names: list[str]
    minimum: np.ndarray
    maximum: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray, names: Sequence[str]) -> "AttributeScaler":
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(names):
            raise ValueError(f"values of shape {values.shape} do not match {len(names)} attribute names")
        if values.shape[0] == 0:
            raise ManifestError("cannot fit attribute scaling on an empty training split")
        return cls(list(names), values.min(axis=0), values.max(axis=0))

    @property
    def _range(self) -> np.ndarray:
        rng = self.maximum - self.minimum
        return np.where(rng > 0, rng, 1.0)

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - self.minimum) / self._range

    def inverse_transform(self, scaled: np.ndarray) -> np.ndarray:
        return np.asarray(scaled, dtype=np.float64) * self._range + self.minimum

    def to_dict(self) -> dict:
        return {
            "method": "minmax",
            "names": list(self.names),
            "units": [attribute_unit(n) for n in self.names],
            "minimum": [float(v) for v in self.minimum],
            "maximum": [float(v) for v in self.maximum],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "AttributeScaler":
        return cls(list(d["names"]), np.asarray(d["minimum"], dtype=np.float64), np.asarray(d["maximum"], dtype=np.float64))

    def save(self, path: str | os.PathLike) -> None:
        atomic.write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AttributeScaler":
        return cls.from_dict(json.loads(Path(path).read_text()))


SCALER_FILE = "attribute_scaling.json"


def fit_scaler(manifest: Manifest, split: dict[str, list[str]], save: bool = True) -> AttributeScaler:
    """Fit min-max scaling on the training split and save it next to the data."""
    scaler = AttributeScaler.fit(manifest.attribute_matrix(manifest.subset(split["train"])), manifest.attribute_names)
    if save:
        scaler.save(manifest.root / SCALER_FILE)
    return scaler


def training_subjects(manifest: Manifest, limit: int) -> list[str]:
    """Up to ``limit`` subjects of the training split (all subjects without a saved split)."""
    records = manifest.records
    if find_split(manifest) is not None:
        records = manifest.subset(load_split(manifest, create=False).get("train", []))
    return [r.subject for r in records[:limit]]
