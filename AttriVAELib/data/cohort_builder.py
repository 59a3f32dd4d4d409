"""Build a trainable cohort from one's own images, segmentations and clinical table.

:func:`build_cohort` pairs images with segmentations (:mod:`.pairing`), measures the named
labels of every pair with physical spacing in worker processes (:mod:`.cohort_subject`,
:mod:`.label_measures`), merges a clinical table (:mod:`.clinical`) and writes into ``out``::

    manifest.csv        one row per subject: image, crop mask, label (class), attributes, meta_*
    cohort.json         generator "segmented", the labels, the crop mask, attribute regions
    split.json          train/val/test, stratified by class, frames of one patient kept together
    train.yaml          suggested ``attrivae train --config`` (crop to the mask, a fixed field of view)
    summary.json/.txt   distributions, the Spearman matrix, warnings, excluded subjects (:mod:`.cohort_report`)
    masks/, labels/     crop mask and label map of each subject, on its image's grid
    .cache/subjects/    each subject's result, reused by the next run while its inputs are unchanged

Every file is written atomically; a run that is stopped or killed keeps the subjects it finished,
and the next run measures only the others. A subject that cannot be used is listed with its
reason (one line), never skipped silently. Shell labels (thickness, cavity volume) are those that
enclose a cavity in most subjects; a subject in which such a label encloses none is excluded.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import math
import os
import shutil
import sys
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from AttriVAELib import __version__
from AttriVAELib.core.atomic import write_json, write_text
from AttriVAELib.core.errors import ConfigError, InputError, OutputError
from AttriVAELib.data.clinical import ClinicalTable, read_clinical
from AttriVAELib.data.cohort_files import _die_with_parent, manifest_text
from AttriVAELib.data.cohort_report import CohortSummary
from AttriVAELib.data.cohort_subject import (CACHE_FOLDER, LABEL_FOLDER, MASK_FOLDER, cached_result, process_subject,
                                             signature)
from AttriVAELib.data.label_measures import MEASURES, SHELL_MEASURES, LabelSpec, label_columns, parse_labels
from AttriVAELib.data.manifest import SPLIT_FILE, attribute_unit, normalize_label
from AttriVAELib.data.pairing import Pair, pair_files

__all__ = ["GENERATOR", "NoUsableSubject", "RECIPE_FILE", "TRAINING_RECIPE", "build_cohort", "default_attributes"]

GENERATOR = "segmented"
FORMAT_VERSION = 1
RECIPE_FILE = "train.yaml"
_MARKER = Path(".cache") / "builder.json"
_FRACTIONS = (0.7, 0.15, 0.15)
#: Settings suggested for training on a built cohort; ``fov_mm`` is added per cohort (the largest crop
#: mask plus twice the margin, in steps of 8 mm), so every subject keeps its physical size in the cube.
TRAINING_RECIPE: dict[str, Any] = {
    # The phantom demo's schedule: 100 epochs, no early stop, no dropout on the bottleneck features
    # (dropout blurs the code the attribute loss orders).
    "train": {"epochs": 100, "patience": 0},
    "model": {"dropout": 0.0},
    "data": {
        "preprocess": {"crop_to_mask": True, "margin_mm": 10.0},
        # Mirroring, quarter turns and small rotations in the axial plane keep every shape attribute.
        "augmentation": {"flip": 0.5, "rot90": 0.5, "affine": 0.5, "rotate_deg": 15.0, "translate": 1.5},
    },
}

Progress = Callable[[int, int], None]


class NoUsableSubject(InputError):
    """No pair could be used; :attr:`summary` lists each one's reason."""

    def __init__(self, message: str, summary: CohortSummary) -> None:
        super().__init__(message)
        self.summary = summary


def default_attributes(specs: Sequence[LabelSpec], shells: Sequence[str], clinical: Sequence[str]) -> list[str]:
    """Each label's volume, each shell's thickness, and every numeric clinical column."""
    names = [f"{s.name}_volume_ml" for s in specs]
    names += [f"{s.name}_thickness_mm" for s in specs if s.name in shells]
    return names + list(clinical)


def _select(patterns: Sequence[str] | None, available: Sequence[str], default: Sequence[str]) -> list[str]:
    if not patterns:
        return list(default)
    chosen: list[str] = []
    for pattern in patterns:
        found = [n for n in available if fnmatch.fnmatchcase(n, pattern)]
        if not found:
            raise ConfigError(f"--attributes '{pattern}' matches no column (available: {', '.join(available)})")
        chosen.extend(n for n in found if n not in chosen)
    return chosen


def _prepare_out(out: Path, overwrite: bool, inputs: Sequence[Path]) -> None:
    """Refuse an output that is, or holds, an input, or a folder not written by the builder."""
    target = out.resolve()
    for item in inputs:
        source = item.resolve()
        if source == target or target in source.parents:
            raise OutputError(f"{out}: the output folder holds the input {item}; choose another output")
    if not out.exists():
        return
    ours = (out / _MARKER).is_file()
    if not out.is_dir() or (not ours and any(out.iterdir())):
        raise OutputError(f"{out}: exists and is not a folder written by attrivae cohort; choose another output")
    if overwrite and ours:
        shutil.rmtree(out)


def _run(tasks: list[dict], workers: int, progress: bool | Progress, should_stop: Callable[[], bool] | None,
         done: int, total: int) -> tuple[list[dict], bool]:
    """Process ``tasks`` (in ``workers`` processes); stop early when ``should_stop()`` says so."""
    from tqdm import tqdm

    results: list[dict] = []
    bar = tqdm(total=total, initial=done, desc="subjects", unit="subject", file=sys.stderr,
               disable=progress is not True)
    callback = progress if callable(progress) else None
    stop = should_stop or (lambda: False)
    if callback is not None:
        callback(done, total)  # the subjects taken from the cache are done already

    def finished(result: dict) -> None:
        nonlocal done
        results.append(result)
        done += 1
        bar.update(1)
        if callback is not None:
            callback(done, total)

    try:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                if stop():
                    return results, True
                finished(process_subject(task))
            return results, False
        executor = ProcessPoolExecutor(max_workers=workers, initializer=_die_with_parent, initargs=(os.getpid(),))
        try:
            queue = iter(tasks)
            pending = deque(executor.submit(process_subject, t) for t in itertools.islice(queue, 2 * workers))
            while pending:
                finished(pending.popleft().result())
                if stop():
                    return results, True
                pending.extend(executor.submit(process_subject, t) for t in itertools.islice(queue, 1))
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
        return results, False
    finally:
        bar.close()


def _grouped_split(subjects: list[str], groups: list[str], labels: list[str | None],
                   seed: int) -> dict[str, list[str]] | None:
    """Train/val/test of the *groups* (patients), stratified by class where possible; None below 3 groups."""
    from sklearn.model_selection import train_test_split

    unique = sorted(set(groups))
    if len(unique) < 3:
        return None
    label_of = {g: l for g, l in zip(groups, labels)}
    y = np.array([str(label_of[g]) for g in unique])
    n_test, n_val = int(round(_FRACTIONS[2] * len(unique))), int(round(_FRACTIONS[1] * len(unique)))
    if len(unique) - n_test - n_val < 1 or n_test < 1 or n_val < 1:
        return None

    def stratify(values: np.ndarray, size: int) -> np.ndarray | None:
        counts = Counter(values.tolist())
        ok = len(counts) > 1 and min(counts.values()) >= 2 and size >= len(counts) and len(values) - size >= len(counts)
        return values if ok and labels[0] is not None else None

    index = np.arange(len(unique))
    rest, test = train_test_split(index, test_size=n_test, random_state=seed, stratify=stratify(y, n_test))
    train, val = train_test_split(rest, test_size=n_val, random_state=seed + 1, stratify=stratify(y[rest], n_val))
    part = {}
    for name, chosen in (("train", train), ("val", val), ("test", test)):
        members = {unique[i] for i in chosen}
        part[name] = sorted(s for s, g in zip(subjects, groups) if g in members)
    return part


def _recipe(extents: list[float]) -> dict[str, Any]:
    recipe = {section: {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}
              for section, values in TRAINING_RECIPE.items()}
    margin = float(recipe["data"]["preprocess"]["margin_mm"])
    recipe["data"]["preprocess"]["fov_mm"] = float(8 * math.ceil((max(extents) + 2 * margin) / 8))
    return recipe


def _pair_tasks(pairs: Sequence[Pair], out: Path, specs: Sequence[LabelSpec], crop: Sequence[int]) -> list[dict]:
    return [{"subject": p.subject, "group": p.group, "image": str(p.image.resolve()),
             "segmentation": str(p.segmentation.resolve()), "out": str(out),
             "labels": [[s.name, list(s.values)] for s in specs], "crop": list(crop),
             "signature": signature(p.image, p.segmentation, specs, crop)} for p in pairs]


def build_cohort(images: str | os.PathLike, labels: str | os.PathLike, out: str | os.PathLike,
                 label_specs: Sequence[str | LabelSpec], *, clinical: str | os.PathLike | None = None,
                 id_column: str | None = None, class_column: str | None = None,
                 attributes: Sequence[str] | None = None, crop_labels: Sequence[str] | None = None,
                 workers: int = 1, overwrite: bool = False, seed: int = 0, progress: bool | Progress = False,
                 should_stop: Callable[[], bool] | None = None) -> CohortSummary:
    """Build (or resume building) a cohort folder ``out`` that ``attrivae train`` takes directly.

    Args:
        images, labels: a folder (searched recursively) or a glob pattern of images / of segmentations.
        out: the cohort folder; an earlier run's folder is resumed (only new or changed pairs are measured).
        label_specs: ``NAME=VALUE`` texts (``myocardium=2``, ``lv=2+3``) or :class:`LabelSpec`.
        clinical: optional CSV/XLSX merged by subject id (``id_column``; default a column named like an id).
        class_column: clinical column holding each subject's class (the manifest's ``label``).
        attributes: attribute columns or ``fnmatch`` patterns (``*_volume_ml``), in order; default
            :func:`default_attributes`. Other measured columns are kept as ``meta_<name>``, other
            clinical columns as ``meta_clinical_<name>``.
        crop_labels: label names whose union is the crop mask (default: all named labels).
        workers: processes measuring subjects; overwrite: start again, discarding the cache.
        seed: seed of the train/val/test split.
        progress: True for a progress bar on stderr, or ``progress(done, total)``, called once at the start
            (``done`` = subjects taken from the cache) and after each subject.
        should_stop: polled after each subject; when it returns True the run stops (finished subjects are
            cached) and the summary has ``stopped`` set and no manifest.

    Raises:
        InputError: inputs missing or unreadable, nothing paired, or no subject usable.
        ConfigError: bad label, attribute, column or crop names. OutputError: an unusable ``out``.
    """
    from filelock import FileLock, Timeout

    out = Path(out)
    specs = [s if isinstance(s, LabelSpec) else LabelSpec.parse(s) for s in label_specs] or parse_labels([])
    parse_labels(str(s) for s in specs)  # names unique
    by_name = {s.name: s for s in specs}
    unknown = [n for n in (crop_labels or []) if n not in by_name]
    if unknown:
        raise ConfigError(f"crop label(s) {unknown} are not named labels ({', '.join(by_name)})")
    crop = sorted({v for n in (crop_labels or list(by_name)) for v in by_name[n].values})
    pairing = pair_files(images, labels, exclude=[out])
    table = read_clinical(clinical, id_column) if clinical is not None else None
    if class_column is not None:
        if table is None:
            raise ConfigError("--class-column needs a --clinical table")
        matches = [c.name for c in table.columns if class_column in (c.header, c.name)]
        if not matches:
            raise ConfigError(f"{table.path}: class column '{class_column}' is not a column "
                              f"({', '.join(c.header for c in table.columns)})")
        class_column = matches[0]
    _prepare_out(out, overwrite, [*pairing.roots, *([Path(clinical)] if clinical else [])])
    (out / CACHE_FOLDER).mkdir(parents=True, exist_ok=True)
    for folder in (MASK_FOLDER, LABEL_FOLDER):
        (out / folder).mkdir(exist_ok=True)
    lock = FileLock(str(out / ".cache" / "lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise OutputError(f"{out}: another attrivae cohort is writing this folder") from None
    try:
        write_json(out / _MARKER, {"version": __version__, "images": str(images), "labels": str(labels),
                                   "label_specs": [str(s) for s in specs]})
        tasks = _pair_tasks(pairing.pairs, out, specs, crop)
        reused = [r for r in (cached_result(out, t["subject"], t["signature"]) for t in tasks) if r is not None]
        done = {r["subject"] for r in reused}
        todo = [t for t in tasks if t["subject"] not in done]
        fresh, stopped = _run(todo, max(1, int(workers)), progress, should_stop, len(reused), len(tasks))
        summary = CohortSummary(out=out, measured=len(fresh), reused=len(reused), crop_labels=crop)
        if pairing.unpaired_line():
            summary.notes.append(pairing.unpaired_line())
        if stopped:
            summary.stopped = True
            return summary
        order = {t["subject"]: i for i, t in enumerate(tasks)}
        results = sorted(reused + fresh, key=lambda r: order[r["subject"]])
        _assemble(out, results, specs, table, class_column, attributes, crop, seed, summary,
                  {"images": str(images), "labels": str(labels),
                   "clinical": None if clinical is None else str(clinical),
                   "id_column": None if table is None else table.id_column, "class_column": class_column})
        return summary
    finally:
        lock.release()


def _assemble(out: Path, results: list[dict], specs: Sequence[LabelSpec], table: ClinicalTable | None,
              class_column: str | None, patterns: Sequence[str] | None, crop: Sequence[int], seed: int,
              summary: CohortSummary, sources: dict[str, Any]) -> None:
    """Decide shells and attributes, merge the clinical table, write every cohort file."""
    ok = [r for r in results if r["status"] == "ok"]
    summary.excluded = [(r["subject"], r["reason"]) for r in results if r["status"] != "ok"]
    shells = [s.name for s in specs if sum(s.name in r["shells"] for r in ok) * 2 > len(ok)]
    summary.shells = shells
    measured = [c for s in specs for c in label_columns(s, s.name in shells)]
    numeric = table.numeric if table is not None else []
    numeric = [n for n in numeric if n != class_column]
    clash = sorted(set(measured) & {c.name for c in table.columns}) if table is not None else []
    if clash:
        raise ConfigError(f"{table.path}: clinical column '{clash[0]}' has the name of a measured attribute; rename it")
    chosen = _select(patterns, measured + numeric, default_attributes(specs, shells, numeric))
    rows: list[dict[str, Any]] = []
    used_ids: set[str] = set()
    for r in ok:
        missing = [s for s in shells if s not in r["shells"]]
        if missing:
            summary.excluded.append((r["subject"], f"{Path(r['segmentation']).name}: label '{missing[0]}' encloses "
                                                   "no cavity (the other subjects' does: a shell)"))
            continue
        row: dict[str, Any] = {"subject": r["subject"], "image": r["image"],
                               "mask": f"{MASK_FOLDER}/{r['subject']}.nii.gz", "meta_group": r["group"],
                               "meta_segmentation": r["segmentation"]}
        row.update({c: r["columns"][c] for c in measured})
        if table is not None:
            found = table.find(r["subject"], r["group"])
            if found is None:
                summary.excluded.append((r["subject"], f"no row for id '{r['subject']}' or '{r['group']}' in "
                                                       f"{table.path.name} (id column '{table.id_column}')"))
                continue
            used_ids.add(found)
            wanted = {c.name: c.name in chosen or c.name == class_column for c in table.columns}
            values, problems = table.values(found, wanted)
            if class_column is not None and class_column not in values and not problems:
                problems.append(f"clinical '{class_column}' is empty ({table.path.name})")
            if problems:
                summary.excluded.append((r["subject"], problems[0]))
                continue
            row["meta_clinical_id"] = table.ids.get(found, found)
            row.update({name: value for name, value in values.items()})
            if class_column is not None:
                row["label"] = normalize_label(str(values[class_column]).strip())
        rows.append(row)
    if table is not None:
        used_ids.update(table.find(r["subject"], r["group"]) for r in results if r["status"] != "ok")
        extra = table.unmatched(used_ids)
        if extra:
            summary.notes.append(f"clinical rows matching no subject: {len(extra)} ({', '.join(extra[:5])}"
                                 f"{', …' if len(extra) > 5 else ''})")
        for name, lines in table.duplicates.items():
            summary.notes.append(f"clinical id '{name}' is on rows {', '.join(map(str, lines))} of {table.path.name}")
    if not rows:
        first = summary.excluded[0][1] if summary.excluded else "nothing was paired"
        write_text(out / "summary.txt", summary.text() + "\n")
        raise NoUsableSubject(f"no usable subject in {sources['images']} ({len(summary.excluded)} excluded; first: "
                              f"{first})", summary)
    _write(out, rows, chosen, measured, table, class_column, specs, shells, crop, seed, summary, sources, results)


def _write(out: Path, rows: list[dict], chosen: list[str], measured: list[str], table: ClinicalTable | None,
           class_column: str | None, specs: Sequence[LabelSpec], shells: list[str], crop: Sequence[int], seed: int,
           summary: CohortSummary, sources: dict[str, Any], results: list[dict]) -> None:
    clinical_cols = [c.name for c in table.columns if c.name != class_column] if table is not None else []
    meta = ["meta_group", "meta_segmentation"] + (["meta_clinical_id"] if table is not None else [])
    kept = {c: f"meta_{c}" for c in measured if c not in chosen}
    kept.update({c: f"meta_clinical_{c}" for c in clinical_cols if c not in chosen})
    meta += list(kept.values())
    for row in rows:
        for c, name in kept.items():
            row[name] = row.pop(c, "")
        for c in chosen + meta:
            row.setdefault(c, "")
    columns = ["subject", "image", "mask", *(["label"] if class_column else []), *chosen, *meta]
    write_text(out / "manifest.csv", manifest_text(rows, columns))
    subjects = [r["subject"] for r in rows]
    paired = {r["subject"] for r in results}
    for folder in (MASK_FOLDER, LABEL_FOLDER):  # outputs of subjects no longer paired (inputs removed)
        for path in (out / folder).glob("*.nii.gz"):
            if path.name[: -len(".nii.gz")] not in paired:
                path.unlink()
    split = _grouped_split(subjects, [r["meta_group"] for r in rows], [r.get("label") for r in rows], seed)
    if split is not None:
        write_json(out / SPLIT_FILE, {
            "seed": seed, "fractions": list(_FRACTIONS), "stratified_by": "label" if class_column else None,
            "grouped_by": "meta_group", "manifest": str((out / "manifest.csv").resolve()),
            "manifest_digest": hashlib.sha256("\n".join(sorted(subjects)).encode()).hexdigest()[:16],
            "counts": {k: len(v) for k, v in split.items()}, "subjects": split})
    elif (out / SPLIT_FILE).exists():
        (out / SPLIT_FILE).unlink()
    recipe = _recipe([max(r["crop_extent_mm"]) for r in results if r["subject"] in set(subjects)])
    import yaml

    write_text(out / "train.yaml", "# Suggested settings: attrivae train --data THIS_FOLDER --config train.yaml "
               "--preset fast_cpu --out RUN\n" + yaml.safe_dump(recipe, sort_keys=False))
    summary.manifest, summary.recipe = out / "manifest.csv", out / "train.yaml"
    summary.subjects, summary.groups = len(rows), len({r["meta_group"] for r in rows})
    summary.labels = dict(sorted(Counter(str(r["label"]) for r in rows).items())) if class_column else {}
    summary.metadata = meta
    summary.set_attributes(chosen, np.array([[float(r[c]) for c in chosen] for r in rows]).reshape(len(rows), -1))
    by_name = {s.name: s for s in specs}
    regions = {c: {"folder": LABEL_FOLDER, "labels": list(by_name[s.name].values)}
               for s in specs for c in chosen if c.startswith(f"{s.name}_") and c[len(s.name) + 1:] in
               (*MEASURES, *SHELL_MEASURES)}
    info = {
        "generator": GENERATOR, "version": __version__, "format_version": FORMAT_VERSION, "sources": sources,
        "n": len(rows), "labels": {s.name: list(s.values) for s in specs}, "shells": shells,
        "crop_mask": {"folder": MASK_FOLDER, "labels": list(crop),
                      "names": [s.name for s in specs if set(s.values) <= set(crop)]},
        "label_maps": LABEL_FOLDER,
        "attribute_regions": regions,
        "attributes": {c: {"unit": attribute_unit(c)} for c in chosen},
        "label": {"column": class_column, "counts": summary.labels} if class_column else None,
        "recipe": RECIPE_FILE, "split": {"grouped_by": "meta_group"} if split is not None else None,
    }
    write_json(out / "cohort.json", info)
    write_json(out / "summary.json", summary.to_dict())
    write_text(out / "summary.txt", summary.text() + "\n")
