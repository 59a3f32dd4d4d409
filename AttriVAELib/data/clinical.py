"""Clinical tables (CSV or Excel) merged into a manifest by subject id.

The table is read with pandas (``.csv``/``.tsv``/``.txt`` with the delimiter sniffed; ``.xlsx``/
``.xlsm`` through openpyxl, first sheet), every cell as text. Column names follow the manifest's
unit-suffix convention (:func:`AttriVAELib.data.manifest.attribute_unit`): a unit in brackets
becomes a suffix, ``Height (cm)`` → ``height_cm``, ``EF [%]`` → ``ef_pct``, ``Age (years)`` →
``age_years``, ``LV volume (mL)`` → ``lv_volume_ml``; other characters become ``_``.

A column is *numeric* when most of its non-empty cells are numbers (a decimal comma is
accepted); its other cells are reported, never guessed. Other columns are *text* and go to the
manifest as metadata (``meta_clinical_<name>``). Empty cells and ``NA``, ``N/A``, ``NaN``, ``-``, ``?``
are missing.

A subject's row is the one whose id equals its subject id, else its group (the patient of a
nested layout), else the longest id that starts the subject id before ``_``, ``-`` or ``.``
(``patient001`` for ``patient001_frame01``); ids are compared ignoring case.
"""

from __future__ import annotations

import importlib.util
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from AttriVAELib.core.errors import ConfigError, InputError

__all__ = ["ClinicalTable", "MISSING", "normalize_column", "parse_number", "read_clinical"]

MISSING = frozenset({"", "na", "n/a", "nan", "none", "null", "-", "?", "missing"})
_UNITS = {
    "%": "pct", "percent": "pct", "pct": "pct", "ml": "ml", "mm": "mm", "mm2": "mm2", "mm²": "mm2", "mm^2": "mm2",
    "mm3": "mm3", "mm³": "mm3", "mm^3": "mm3", "ms": "ms", "years": "years", "year": "years", "yrs": "years",
    "y": "years", "cm": "cm", "kg": "kg", "bpm": "bpm", "1/min": "bpm", "m2": "m2", "m²": "m2", "kg/m2": "kg_m2",
    "kg/m²": "kg_m2", "l": "l",
}
_UNIT_IN_NAME = re.compile(r"^(.*?)[\s_]*[(\[]\s*([^()\[\]]+?)\s*[)\]]\s*$")
_RESERVED = ("subject", "image", "mask", "lesion", "label", "id")
_ID_NAMES = ("subject", "subject_id", "id", "patient", "patient_id", "case", "case_id")
_SEPARATORS = ("_", "-", ".")
_TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
_EXCEL_SUFFIXES = (".xlsx", ".xlsm")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.casefold()).strip("_")


def normalize_column(header: str) -> str:
    """A clinical header as a manifest column name: ``Height (cm)`` → ``height_cm`` (see the module notes)."""
    text = str(header).strip()
    unit = ""
    match = _UNIT_IN_NAME.match(text)
    if match and match.group(1).strip():
        text, raw = match.group(1), match.group(2).strip()
        unit = _UNITS.get(raw.casefold(), _UNITS.get(raw, _slug(raw)))
    name = _slug(text) or "column"
    if name[0].isdigit():
        name = f"c_{name}"
    if unit and not name.endswith(f"_{unit}"):
        name = f"{name}_{unit}"
    return name


def parse_number(text: str) -> float | None:
    """The number a cell holds (``72.5``, ``72,5``, ``1e3``), or None when it holds no finite number."""
    text = text.strip()
    for candidate in (text, text.replace(",", ".") if text.count(",") == 1 and "." not in text else None):
        if candidate is None:
            continue
        try:
            value = float(candidate)
        except ValueError:
            continue
        return value if math.isfinite(value) else None
    return None


@dataclass(frozen=True)
class ClinicalColumn:
    """A column: its manifest name, its header in the file, and whether it is numeric."""

    name: str
    header: str
    numeric: bool


@dataclass
class ClinicalTable:
    """A clinical table: its columns and its rows by id (``row`` numbers as a spreadsheet shows them)."""

    path: Path
    id_column: str
    columns: list[ClinicalColumn]
    rows: dict[str, tuple[int, dict[str, str]]]  # case-folded id → (row number, name → cell text)
    ids: dict[str, str] = field(default_factory=dict)  # case-folded id → id as written
    duplicates: dict[str, list[int]] = field(default_factory=dict)  # id as written → its row numbers

    @property
    def numeric(self) -> list[str]:
        return [c.name for c in self.columns if c.numeric]

    @property
    def text(self) -> list[str]:
        return [c.name for c in self.columns if not c.numeric]

    def find(self, subject: str, group: str) -> str | None:
        """The case-folded id of the row of a subject (see the module notes), or None."""
        for candidate in (subject.casefold(), group.casefold()):
            if candidate in self.rows or candidate in {k.casefold() for k in self.duplicates}:
                return candidate
        key = subject.casefold()
        known = set(self.rows) | {k.casefold() for k in self.duplicates}
        starts = [i for i in known if key.startswith(i) and len(key) > len(i) and key[len(i)] in _SEPARATORS]
        return max(starts, key=len) if starts else None

    def values(self, found: str, columns: Mapping[str, bool]) -> tuple[dict[str, float | str], list[str]]:
        """(values, problems) of row ``found`` for ``columns`` (name → required as a number).

        Numeric cells become floats, text cells stay text, missing cells are left out. A required
        column's missing or non-numeric cell is a problem (one line each).
        """
        where = self.path.name
        duplicate = next((rows for name, rows in self.duplicates.items() if name.casefold() == found), None)
        if duplicate is not None:
            return {}, [f"clinical id '{self.ids.get(found, found)}' is on rows {', '.join(map(str, duplicate))} of "
                        f"{where}; keep one"]
        line, cells = self.rows[found]
        kinds = {c.name: c for c in self.columns}
        values: dict[str, float | str] = {}
        problems: list[str] = []
        for name, required in columns.items():
            text = cells.get(name, "").strip()
            missing = text.casefold() in MISSING
            if kinds[name].numeric:
                number = None if missing else parse_number(text)
                if number is not None:
                    values[name] = number
                elif required:
                    what = "is empty" if missing else f"value '{text}' is not a number"
                    problems.append(f"clinical '{kinds[name].header}' {what} ({where} row {line})")
            elif not missing:
                values[name] = text
        return values, problems

    def unmatched(self, used: set[str]) -> list[str]:
        """Ids (as written) of rows no subject used."""
        return [self.ids[k] for k in self.rows if k not in used]


def _read_frame(path: Path):
    try:
        import pandas as pd
    except ImportError:
        raise ConfigError("reading a clinical table needs pandas: pip install 'attrivae[cohort]'") from None
    suffix = path.suffix.lower()
    try:
        if suffix in _EXCEL_SUFFIXES:
            if importlib.util.find_spec("openpyxl") is None:  # pandas reads .xlsx through it
                raise ConfigError("reading .xlsx needs openpyxl: pip install 'attrivae[cohort]'")
            return pd.read_excel(path, dtype=str, keep_default_na=False, engine="openpyxl")
        if suffix in _TEXT_SUFFIXES:
            return pd.read_csv(path, dtype=str, keep_default_na=False, sep=None, engine="python",
                               encoding="utf-8-sig", skipinitialspace=True)
    except ConfigError:
        raise
    except Exception as exc:  # pandas and openpyxl raise many types for a malformed file
        raise InputError(f"{path}: not a readable table ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") \
            from None
    raise InputError(f"{path}: unsupported clinical table; use .csv, .tsv or .xlsx")


def read_clinical(path: str | Path, id_column: str | None = None) -> ClinicalTable:
    """Read a clinical table (see the module notes).

    Args:
        id_column: the header of the subject id column (as written or normalized); default: a
            column named ``subject``, ``id``, ``patient``, ``case`` (or with ``_id``).

    Raises:
        InputError: the file is missing or unreadable, or has no rows.
        ConfigError: no id column, or two headers with one normalized name.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: clinical table not found")
    frame = _read_frame(path)
    headers = [str(h).strip() for h in frame.columns]
    if frame.empty:
        raise InputError(f"{path}: clinical table has no rows")
    names = [normalize_column(h) for h in headers]
    if id_column is None:
        index = next((i for i, n in enumerate(names) if n in _ID_NAMES), None)
        if index is None:
            raise ConfigError(f"{path}: no subject id column found; name it with --id-column (columns: "
                              f"{', '.join(headers)})")
    else:
        wanted = [i for i, (h, n) in enumerate(zip(headers, names)) if id_column in (h, n)]
        if not wanted:
            raise ConfigError(f"{path}: --id-column '{id_column}' is not a column (columns: {', '.join(headers)})")
        index = wanted[0]
    names = [f"clinical_{n}" if n in _RESERVED and i != index else n for i, n in enumerate(names)]
    repeated = sorted({n for i, n in enumerate(names) if i != index and names.count(n) > 1})
    if repeated:
        raise ConfigError(f"{path}: several columns are named {repeated[0]} once normalized; rename one")
    rows: dict[str, tuple[int, dict[str, str]]] = {}
    ids: dict[str, str] = {}
    seen: dict[str, list[int]] = {}
    for line, record in enumerate(frame.itertuples(index=False, name=None), start=2):
        cells = ["" if c is None else str(c) for c in record]
        subject = cells[index].strip()
        if subject.casefold() in MISSING:
            continue
        seen.setdefault(subject.casefold(), []).append(line)
        ids.setdefault(subject.casefold(), subject)
        rows[subject.casefold()] = (line, {n: c for i, (n, c) in enumerate(zip(names, cells)) if i != index})
    duplicates = {ids[k]: lines for k, lines in seen.items() if len(lines) > 1}
    for key in {k.casefold() for k in duplicates}:
        rows.pop(key, None)
    columns = []
    for i, (header, name) in enumerate(zip(headers, names)):
        if i == index:
            continue
        texts = [c[name].strip() for _, c in rows.values() if c[name].strip().casefold() not in MISSING]
        numbers = sum(parse_number(t) is not None for t in texts)
        columns.append(ClinicalColumn(name, header, bool(texts) and numbers > len(texts) / 2))
    return ClinicalTable(path, headers[index], columns, rows, ids, duplicates)
