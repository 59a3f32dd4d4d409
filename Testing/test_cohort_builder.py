"""``attrivae cohort``: pairing, label measures against analytic geometry, clinical merge, bad inputs,
resuming, the summary, and that the result trains.

Every input is a real file written in ``tmp_path`` (NIfTI, NRRD, a DICOM series written with
SimpleITK, CSV and XLSX tables).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import kept_locale

from AttriVAELib.cli.main import main
from AttriVAELib.core.errors import ConfigError
from AttriVAELib.data.clinical import normalize_column, read_clinical
from AttriVAELib.data.cohort_builder import build_cohort
from AttriVAELib.data.io import Geometry, Volume, write_image
from AttriVAELib.data.label_measures import LabelSpec, measure_label, measure_label_map, parse_labels
from AttriVAELib.data.pairing import pair_files

LABELS = ["lv_cavity=3", "myocardium=2", "outer=1"]
TOLERANCE = 0.03
SPACINGS = {"1mm": (1.0, 1.0, 1.0), "0.7x0.7x5mm": (0.7, 0.7, 5.0)}
MEASURED = [f"{label}_{m}" for label in ("lv_cavity", "myocardium", "outer")
            for m in ("volume_ml", "diameter_mm", "surface_mm2", "sphericity")]
MEASURED += [f"{label}_{m}" for label in ("myocardium", "outer") for m in ("thickness_mm", "cavity_volume_ml")]


# -- small real files ---------------------------------------------------------------------------------------------

def _geometry(shape=(16, 32, 32), spacing=(1.0, 1.0, 1.5), origin=(-10.0, 4.0, 7.5)) -> Geometry:
    return Geometry((shape[2], shape[1], shape[0]), spacing, origin, (1, 0, 0, 0, 1, 0, 0, 0, 1))


def _nested(geometry: Geometry, radii=(4.0, 7.0, 10.0), values=(3, 2, 1)) -> np.ndarray:
    """Label map of nested balls (radii in mm) about the grid's centre."""
    k, j, i = np.indices(geometry.shape)
    s = geometry.spacing
    centre = [(n - 1) / 2 for n in geometry.shape]
    r = np.sqrt(((k - centre[0]) * s[2]) ** 2 + ((j - centre[1]) * s[1]) ** 2 + ((i - centre[2]) * s[0]) ** 2)
    out = np.zeros(geometry.shape, np.uint8)
    for radius, value in sorted(zip(radii, values), reverse=True):
        if value:
            out[r <= radius] = value
    return out


def write_case(image: Path, seg: Path | None, *, radii=(4.0, 7.0, 10.0), values=(3, 2, 1), seg_geometry=None,
               geometry: Geometry | None = None) -> None:
    geometry = geometry or _geometry()
    labels = _nested(geometry, radii, values)
    rng = np.random.default_rng(abs(hash(image.name)) % 2**32)
    pixels = (np.choose(labels, [50, 500, 250, 900]) + rng.normal(0, 20, labels.shape)).astype(np.int16)
    write_image(Volume(pixels, geometry), image)
    if seg is not None:
        seg_geometry = seg_geometry or geometry
        write_image(Volume(_nested(seg_geometry, radii, values), seg_geometry), seg)


def flat_cohort(root: Path, n: int = 8) -> tuple[Path, Path]:
    """``images/caseNN.nii.gz`` + ``labels/caseNN_seg.nrrd``, radii varying by case."""
    for k in range(1, n + 1):
        write_case(root / "images" / f"case{k:02d}.nii.gz", root / "labels" / f"case{k:02d}_seg.nrrd",
                   radii=(3.5 + 0.25 * k, 6.0 + 0.3 * (k % 3), 9.5 + 0.2 * (k % 2)))
    return root / "images", root / "labels"


def write_clinical(path: Path, n: int = 8, rows: dict | None = None) -> Path:
    table = [{"Case ID": f"case{k:02d}", "Group": "A" if k % 2 else "B", "Height (cm)": str(150 + 3 * k),
              "Weight [kg]": str(60 + (k * 7) % 23), "Smoker": "yes" if k % 3 else "no"} for k in range(1, n + 1)]
    for key, value in (rows or {}).items():
        if value is None:
            table = [r for r in table if r["Case ID"] != key]
        else:
            table.append(value) if key == "append" else next(r for r in table if r["Case ID"] == key).update(value)
    if path.suffix == ".xlsx":
        import pandas as pd

        pd.DataFrame(table).to_excel(path, index=False)
    else:
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
    return path


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["cohort", *args, "--quiet"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cohort_args(images: Path, labels: Path | str, out: Path, *extra: str) -> list[str]:
    return ["--images", str(images), "--labels", str(labels), *(f"--label={x}" for x in LABELS), "--out", str(out),
            *extra]


# -- label measures against the analytic geometry of the ACDC-like cohort ---------------------------------------

@pytest.fixture(scope="module")
def measured_vs_truth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, list[float]]]:
    """Relative errors (measured / analytic - 1) of every attribute of every frame, per spacing."""
    from AttriVAELib.cohorts.acdc_like.generator import generate_acdc_like

    errors: dict[str, dict[str, list[float]]] = {}
    for res, spacing in SPACINGS.items():
        root = tmp_path_factory.mktemp(f"acdc-{res}")
        generate_acdc_like(root / "raw", n=2, spacing=spacing, seed=21, workers=2, progress=False)
        build_cohort(root / "raw", root / "raw", root / "cohort", LABELS, workers=2)
        truth = {r["subject"]: r for r in csv.DictReader(open(root / "raw" / "truth.csv", encoding="utf-8"))}
        rows = list(csv.DictReader(open(root / "cohort" / "manifest.csv", encoding="utf-8")))
        assert sorted(r["subject"] for r in rows) == sorted(truth)
        errors[res] = {name: [float(r.get(name) or r[f"meta_{name}"]) / float(truth[r["subject"]][name]) - 1
                              for r in rows] for name in MEASURED}
    return errors


@pytest.mark.parametrize("name", MEASURED)
@pytest.mark.parametrize("res", SPACINGS)
def test_attribute_within_3_percent_of_analytic(measured_vs_truth, res: str, name: str):
    worst = max(measured_vs_truth[res][name], key=abs)
    assert abs(worst) <= TOLERANCE, f"{name} at {res}: {worst:+.2%} from the analytic value"


def test_print_error_table(measured_vs_truth):
    print("\nworst relative error per attribute (measured / analytic - 1)")
    for name in MEASURED:
        print(f"{name:<30}" + "".join(f"{max(v[name], key=abs):+8.2%}" for v in measured_vs_truth.values()))
    assert set(measured_vs_truth) == set(SPACINGS)


# -- pairing ------------------------------------------------------------------------------------------------------

def test_pairs_nested_acdc_layout(tmp_path: Path):
    for patient, frames in (("patient001", (1, 12)), ("patient002", (1, 9))):
        for frame in frames:
            name = f"{patient}_frame{frame:02d}"
            write_case(tmp_path / patient / f"{name}.nii.gz", tmp_path / patient / f"{name}_gt.nii.gz")
        (tmp_path / patient / "Info.cfg").write_text("ED: 1\n")
    write_case(tmp_path / "patient002" / "patient002_4d.nii.gz", None)
    pairing = pair_files(tmp_path, tmp_path)
    assert [(p.subject, p.group, p.image.name, p.segmentation.name) for p in pairing.pairs] == [
        ("patient001_frame01", "patient001", "patient001_frame01.nii.gz", "patient001_frame01_gt.nii.gz"),
        ("patient001_frame12", "patient001", "patient001_frame12.nii.gz", "patient001_frame12_gt.nii.gz"),
        ("patient002_frame01", "patient002", "patient002_frame01.nii.gz", "patient002_frame01_gt.nii.gz"),
        ("patient002_frame09", "patient002", "patient002_frame09.nii.gz", "patient002_frame09_gt.nii.gz")]
    assert pairing.unpaired_line() == f"unpaired: 1 image(s) without a segmentation " \
                                      f"({tmp_path / 'patient002' / 'patient002_4d.nii.gz'})"
    ed = pair_files(f"{tmp_path}/*/*_frame01.nii.gz", f"{tmp_path}/*/*_frame01_gt.nii.gz")
    assert [p.subject for p in ed.pairs] == ["patient001_frame01", "patient002_frame01"] and ed.unpaired_line() is None


def test_pairs_flat_layout_by_folder_and_by_pattern(tmp_path: Path):
    images, labels = flat_cohort(tmp_path, n=3)
    write_case(images / "extra.nii.gz", None)
    (labels / "notes.txt").write_text("not an image")
    by_folder = pair_files(images, labels)
    assert [(p.subject, p.group, p.segmentation.name) for p in by_folder.pairs] == [
        ("case01", "case01", "case01_seg.nrrd"), ("case02", "case02", "case02_seg.nrrd"),
        ("case03", "case03", "case03_seg.nrrd")]
    assert by_folder.unpaired_images == [images / "extra.nii.gz"]
    by_pattern = pair_files(images, f"{labels}/case0[12]_seg.nrrd")
    assert [p.subject for p in by_pattern.pairs] == ["case01", "case02"]
    assert len(by_pattern.unpaired_images) == 2
    # One folder per subject with different names inside: matched by folder.
    for k in (1, 2):
        write_case(tmp_path / "img" / f"s{k}" / "t1.nii.gz", None)
        write_case(tmp_path / "img" / f"s{k}" / "dummy.nii.gz", tmp_path / "seg" / f"s{k}" / "mask.mha")
        (tmp_path / "img" / f"s{k}" / "dummy.nii.gz").unlink()
    folders = pair_files(tmp_path / "img", tmp_path / "seg")
    assert [(p.subject, p.image.name, p.segmentation.name) for p in folders.pairs] == [
        ("s1_t1", "t1.nii.gz", "mask.mha"), ("s2_t1", "t1.nii.gz", "mask.mha")]


def _write_dicom_series(image: sitk.Image, folder: Path, uid: str) -> None:
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = image.GetDirection()
    common = {"0008|0060": "MR", "0020|000e": uid, "0008|103e": "cine", "0010|0020": folder.name,
              "0020|0037": "\\".join(str(v) for v in (d[0], d[3], d[6], d[1], d[4], d[7]))}
    for k in range(image.GetDepth()):
        plane = image[:, :, k]
        for tag, value in common.items():
            plane.SetMetaData(tag, value)
        plane.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))))
        plane.SetMetaData("0020|0013", str(k + 1))
        writer.SetFileName(str(folder / f"IM{k:04d}.dcm"))
        with kept_locale():
            writer.Execute(plane)


def test_pairs_dicom_series_folders_and_measures_them(tmp_path: Path):
    geometry = _geometry(shape=(16, 32, 32), spacing=(1.0, 1.0, 1.5), origin=(-15.5, -15.5, 0.0))
    for k, name in enumerate(("sub01", "sub02")):
        write_case(tmp_path / "tmp.nii.gz", tmp_path / "labels" / f"{name}.nii.gz", geometry=geometry)
        image = sitk.ReadImage(str(tmp_path / "tmp.nii.gz"))
        _write_dicom_series(image, tmp_path / "images" / name / "cine", f"1.2.826.0.1.3680043.2.1125.77.{k + 1}")
    (tmp_path / "tmp.nii.gz").unlink()
    pairing = pair_files(tmp_path / "images", tmp_path / "labels")
    assert [(p.subject, p.image.name, p.segmentation.name) for p in pairing.pairs] == [
        ("sub01_cine", "cine", "sub01.nii.gz"), ("sub02_cine", "cine", "sub02.nii.gz")]
    summary = build_cohort(tmp_path / "images", tmp_path / "labels", tmp_path / "out", LABELS)
    assert summary.subjects == 2 and not summary.excluded
    mask = sitk.ReadImage(str(tmp_path / "out" / "masks" / "sub01_cine.nii.gz"))
    assert mask.GetSpacing() == pytest.approx((1.0, 1.0, 1.5)) and mask.GetOrigin() == pytest.approx(geometry.origin)


# -- labels and clinical tables -------------------------------------------------------------------------------------

def test_label_specs():
    assert parse_labels(["lv=2+3", "myocardium=2"]) == [LabelSpec("lv", (2, 3)), LabelSpec("myocardium", (2,))]
    for bad, match in (("lv", "NAME=VALUE"), ("LV=1", "lower-case"), ("lv=a", "whole numbers"), ("lv=0", "positive")):
        with pytest.raises(ConfigError, match=match):
            LabelSpec.parse(bad)
    with pytest.raises(ConfigError, match="more than once"):
        parse_labels(["a=1", "a=2"])


def _ball_shell(spacing, outer=30.0, inner=22.0, top=None):
    axes = [np.arange(-40, 40.01, s) for s in spacing[::-1]]
    z, y, x = np.meshgrid(*axes, indexing="ij", sparse=True)
    r = np.sqrt(x * x + y * y + z * z)
    mask = (r <= outer) & (r > inner)
    return mask & (z < top) if top is not None else mask


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 0.8, 4.0)])
def test_open_shell_is_measured_slice_by_slice(spacing):
    """A myocardium cut at the valve plane encloses no cavity in 3D; its slices do. The open rim
    lowers the mean thickness a little (a documented bias), never to the rim's zero distance."""
    closed = measure_label(_ball_shell(spacing), spacing)
    cup = measure_label(_ball_shell(spacing, top=15.0), spacing)
    assert closed["thickness_mm"] == pytest.approx(8.0, rel=0.03)
    assert cup["thickness_mm"] == pytest.approx(8.0, rel=0.10)
    assert cup["cavity_volume_ml"] < closed["cavity_volume_ml"]


def test_small_holes_do_not_make_a_shell():
    mask = _ball_shell((1.0, 1.0, 1.0), outer=20.0, inner=-1.0)
    mask[40, 40, 40] = False  # one voxel left out by a segmentation tool
    assert "thickness_mm" not in measure_label(mask, (1.0, 1.0, 1.0))
    union = measure_label_map(np.where(mask, 2, 0) + (_ball_shell((1.0, 1.0, 1.0), 24.0, 20.0) * 3),
                              (1.0, 1.0, 1.0), parse_labels(["heart=2+3"]))[0]
    assert union["heart_volume_ml"] == pytest.approx(4 / 3 * np.pi * 24**3 / 1000, rel=0.01)


@pytest.mark.parametrize("header, name", [("Height (cm)", "height_cm"), ("Weight [kg]", "weight_kg"),
                                          ("EF (%)", "ef_pct"), ("Age (years)", "age_years"),
                                          ("LV volume (mL)", "lv_volume_ml"),
                                          ("wall_thickness_mm", "wall_thickness_mm"),
                                          ("BSA (m²)", "bsa_m2"), ("NT-proBNP", "nt_probnp")])
def test_clinical_names_follow_the_unit_suffix_convention(header: str, name: str):
    assert normalize_column(header) == name


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_clinical_merge_csv_and_xlsx(tmp_path: Path, suffix: str):
    images, labels = flat_cohort(tmp_path, n=6)
    table = write_clinical(tmp_path / f"clinical{suffix}", n=6, rows={
        "case03": None, "append": {"Case ID": "case99", "Group": "A", "Height (cm)": "170", "Weight [kg]": "70",
                                   "Smoker": "no"}})
    clinical = read_clinical(table)
    assert clinical.id_column == "Case ID" and clinical.numeric == ["height_cm", "weight_kg"]
    assert clinical.text == ["group", "smoker"]
    summary = build_cohort(images, labels, tmp_path / "out", LABELS, clinical=table, id_column="Case ID",
                           class_column="Group")
    assert summary.subjects == 5 and summary.labels == {"A": 2, "B": 3}
    assert summary.excluded == [("case03", f"no row for id 'case03' or 'case03' in {table.name} (id column "
                                           "'Case ID')")]
    assert "clinical rows matching no subject: 1 (case99)" in summary.notes
    rows = {r["subject"]: r for r in csv.DictReader(open(tmp_path / "out" / "manifest.csv", encoding="utf-8"))}
    assert float(rows["case02"]["height_cm"]) == 156 and float(rows["case02"]["weight_kg"]) == 74
    assert rows["case02"]["meta_clinical_smoker"] == "yes" and rows["case02"]["label"] == "B"
    assert rows["case02"]["meta_group"] == "case02" and rows["case02"]["meta_clinical_id"] == "case02"
    assert "height_cm" in summary.attributes and "meta_clinical_smoker" in summary.metadata


def test_duplicate_clinical_ids_are_reported(tmp_path: Path):
    images, labels = flat_cohort(tmp_path, n=4)
    table = write_clinical(tmp_path / "clinical.csv", n=4, rows={"append": {
        "Case ID": "CASE02", "Group": "A", "Height (cm)": "170", "Weight [kg]": "70", "Smoker": "no"}})
    summary = build_cohort(images, labels, tmp_path / "out", LABELS, clinical=table)
    assert summary.excluded == [("case02", f"clinical id 'case02' is on rows 3, 6 of {table.name}; keep one")]
    assert f"clinical id 'case02' is on rows 3, 6 of {table.name}" in summary.notes


def test_clinical_needs_an_id_column(tmp_path: Path):
    path = tmp_path / "c.csv"
    path.write_text("Name,Age\nx,3\n")
    with pytest.raises(ConfigError, match="no subject id column found; name it with --id-column"):
        read_clinical(path)
    with pytest.raises(ConfigError, match="--id-column 'Nope' is not a column"):
        read_clinical(path, "Nope")


# -- bad inputs: one clear line each through the command line -------------------------------------------------------

def _lines_naming(text: str, word: str) -> list[str]:
    return [line for line in text.splitlines() if word in line]


def test_bad_inputs_each_give_one_line(tmp_path: Path, capsys):
    images, labels = flat_cohort(tmp_path, n=8)
    write_case(images / "case09.nii.gz", None)  # image without segmentation
    write_case(images / "case10.nii.gz", labels / "case10_seg.nrrd", values=(3, 2, 0))  # label 1 missing
    other = _geometry(shape=(16, 30, 32))
    write_case(images / "case11.nii.gz", None)
    write_case(tmp_path / "x.nii.gz", labels / "case11_seg.nrrd", geometry=other)  # segmentation on another grid
    clinical = write_clinical(tmp_path / "clinical.csv", n=11, rows={
        "case09": None,
        "case05": None,  # clinical id not found
        "case06": {"Weight [kg]": "seventy"},  # non-numeric clinical value
    })
    code, out, err = run_cli(capsys, *cohort_args(images, labels, tmp_path / "out", "--clinical", str(clinical)))
    assert code == 0, err
    expected = {
        "case09": "unpaired: 1 image(s) without a segmentation",
        "case10": "case10_seg.nrrd: label 'outer' (1) is missing (values present: 2, 3)",
        "case11": "case11_seg.nrrd: segmentation is on another grid than its image (size 32×30×16 vs 32×32×16",
        "case05": "no row for id 'case05' or 'case05' in clinical.csv (id column 'Case ID')",
        "case06": "clinical 'Weight [kg]' value 'seventy' is not a number (clinical.csv row 6)",
    }
    for subject, reason in expected.items():
        lines = _lines_naming(out, subject)
        assert len(lines) == 1, (subject, lines)
        assert reason in lines[0], (subject, lines[0])
    assert "cohort " in out and "6 subjects (6 patients)" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert sorted(s for s, _ in summary["excluded"]) == ["case05", "case06", "case10", "case11"]


def test_no_usable_subject_is_an_error_line(tmp_path: Path, capsys):
    images, labels = flat_cohort(tmp_path, n=2)
    code, out, err = run_cli(capsys, "--images", str(images), "--labels", str(labels), "--label", "scar=7",
                             "--out", str(tmp_path / "out"))
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("attrivae cohort: error: no usable subject in")
    listed = [line for line in err.splitlines() if line.startswith("  case0")]
    assert listed == ["  case01: case01_seg.nrrd: label 'scar' (7) is missing (values present: 1, 2, 3)",
                      "  case02: case02_seg.nrrd: label 'scar' (7) is missing (values present: 1, 2, 3)"]


@pytest.mark.parametrize("args, message", [
    (["--label", "lv=x"], "values must be whole numbers"),
    (["--label", "lv_cavity=3", "--attributes", "nothing_*"], "--attributes 'nothing_*' matches no column"),
    (["--label", "lv_cavity=3", "--crop-label", "heart"], "crop label(s) ['heart'] are not named labels"),
    (["--label", "lv_cavity=3", "--class-column", "Group"], "--class-column needs a --clinical table"),
])
def test_bad_options_are_one_line(tmp_path: Path, capsys, args: list[str], message: str):
    images, labels = flat_cohort(tmp_path, n=2)
    code, _, err = run_cli(capsys, "--images", str(images), "--labels", str(labels), "--out", str(tmp_path / "o"),
                           *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err


def test_output_inside_the_inputs_or_foreign_folder_is_refused(tmp_path: Path, capsys):
    images, labels = flat_cohort(tmp_path, n=2)
    code, _, err = run_cli(capsys, *cohort_args(images, labels, images))
    assert code == 2 and "holds the input" in err
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "keep.txt").write_text("mine")
    code, _, err = run_cli(capsys, *cohort_args(images, labels, tmp_path / "foreign"))
    assert code == 2 and "not a folder written by attrivae cohort" in err
    assert (tmp_path / "foreign" / "keep.txt").read_text() == "mine"


# -- resuming, the summary, training --------------------------------------------------------------------------------

def test_second_run_skips_done_subjects(tmp_path: Path, capsys):
    images, labels = flat_cohort(tmp_path, n=4)
    args = cohort_args(images, labels, tmp_path / "out", "--workers", "2")
    assert run_cli(capsys, *args)[1].splitlines()[0].endswith("4 measured, 0 from the cache")
    first = (tmp_path / "out" / "manifest.csv").read_text()
    assert run_cli(capsys, *args)[1].splitlines()[0].endswith("0 measured, 4 from the cache")
    assert (tmp_path / "out" / "manifest.csv").read_text() == first
    seg = labels / "case03_seg.nrrd"
    os.utime(seg, ns=(seg.stat().st_atime_ns, seg.stat().st_mtime_ns + 10**9))  # a changed input is measured again
    assert run_cli(capsys, *args)[1].splitlines()[0].endswith("1 measured, 3 from the cache")
    assert run_cli(capsys, *args, "--overwrite")[1].splitlines()[0].endswith("4 measured, 0 from the cache")


def test_stopped_run_resumes(tmp_path: Path):
    images, labels = flat_cohort(tmp_path, n=4)
    calls = []
    stopped = build_cohort(images, labels, tmp_path / "out", LABELS, progress=lambda done, total: calls.append(
        (done, total)), should_stop=lambda: len(calls) >= 3)
    assert stopped.stopped and stopped.manifest is None and calls == [(0, 4), (1, 4), (2, 4)]
    assert not (tmp_path / "out" / "manifest.csv").exists()
    calls.clear()
    resumed = build_cohort(images, labels, tmp_path / "out", LABELS, progress=lambda d, t: calls.append((d, t)))
    assert (resumed.reused, resumed.measured, resumed.subjects) == (2, 2, 4)
    assert calls == [(2, 4), (3, 4), (4, 4)]


def test_summary_has_spearman_matrix_and_correlation_warning(tmp_path: Path, capsys):
    images, labels = flat_cohort(tmp_path, n=8)
    code, out, _ = run_cli(capsys, *cohort_args(images, labels, tmp_path / "out", "--attributes",
                                                "lv_cavity_volume_ml", "lv_cavity_surface_mm2", "outer_thickness_mm"))
    assert code == 0
    assert "Spearman ρ between attributes:" in out
    assert len(_lines_naming(out, "[1] lv_cavity_surface_mm2")) == 1
    warnings = _lines_naming(out, "too correlated to disentangle")
    assert warnings == ["warning: lv_cavity_volume_ml and lv_cavity_surface_mm2 are too correlated to disentangle "
                        "(Spearman ρ = +1.00, |ρ| > 0.7); keep one of them as an attribute"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    rho = np.array(summary["spearman"], dtype=float)
    assert rho.shape == (3, 3) and np.allclose(rho, rho.T) and np.allclose(np.diag(rho), 1)
    assert summary["correlated"] == [["lv_cavity_volume_ml", "lv_cavity_surface_mm2", 1.0]]
    assert (tmp_path / "out" / "summary.txt").read_text(encoding="utf-8").strip() == out.strip()
    header = next(csv.reader(open(tmp_path / "out" / "manifest.csv", encoding="utf-8")))
    assert header[3:6] == ["lv_cavity_volume_ml", "lv_cavity_surface_mm2", "outer_thickness_mm"]
    assert "meta_myocardium_thickness_mm" in header


def test_built_cohort_trains_and_evaluates_as_segmented(tmp_path: Path):
    """The folder is a dataset as it is: its manifest, grouped split, recipe and registry entry."""
    from AttriVAELib.cohorts import cohort_for, cohort_kind
    from AttriVAELib.data.manifest import load_manifest, load_split
    from AttriVAELib.train.config import resolve_config
    from AttriVAELib.train.trainer import train

    root = tmp_path / "raw"
    for k in range(1, 9):  # two frames per patient: kept in one split part
        for frame in (1, 2):
            write_case(root / f"p{k}" / f"p{k}_frame0{frame}.nii.gz", root / f"p{k}" / f"p{k}_frame0{frame}_gt.nii.gz",
                       radii=(2.5 + 0.2 * k + 0.5 * frame, 7.0 + 0.2 * frame, 10.0))
    clinical = tmp_path / "clinical.csv"
    clinical.write_text("patient,Group\n" + "".join(f"p{k},{'A' if k % 2 else 'B'}\n" for k in range(1, 9)))
    out = tmp_path / "cohort"
    summary = build_cohort(root, root, out, LABELS, clinical=clinical, class_column="Group",
                           attributes=["lv_cavity_volume_ml", "myocardium_thickness_mm"])
    assert summary.subjects == 16 and summary.groups == 8
    manifest = load_manifest(out)
    assert manifest.attribute_names == ["lv_cavity_volume_ml", "myocardium_thickness_mm"]
    assert manifest.label_names == ["A", "B"] and all(r.mask is not None for r in manifest.records)
    split = load_split(manifest, create=False)
    group = {r.subject: r.metadata["meta_group"] for r in manifest.records}
    parts = {part: {group[s] for s in subjects} for part, subjects in split.items()}
    assert not (parts["train"] & parts["val"]) and not (parts["train"] & parts["test"])
    assert cohort_for(manifest).name == "segmented"
    info = json.loads((out / "cohort.json").read_text(encoding="utf-8"))
    assert info["crop_mask"] == {"folder": "masks", "labels": [1, 2, 3], "names": ["lv_cavity", "myocardium", "outer"]}
    kind = cohort_kind(manifest)
    assert kind.regions["myocardium_thickness_mm"].labels == (2,) and kind.regions["lv_cavity_volume_ml"].folder \
        == "labels"
    import yaml

    recipe = yaml.safe_load((out / "train.yaml").read_text(encoding="utf-8"))
    assert recipe["data"]["preprocess"]["crop_to_mask"] is True and recipe["data"]["preprocess"]["fov_mm"] >= 40
    config = resolve_config("attri_vae", {**recipe, "model": {"input_size": 16, "latent_dim": 4, "width": 0.5},
                                          "optim": {"batch_size": 4}, "train": {"epochs": 1, "precision": "fp32"}})
    result = train(out, tmp_path / "run", config=config, progress=False)
    assert (tmp_path / "run" / "model.safetensors").is_file() and result["best"]["epoch"] == 1
    assert main(["info", "--data", str(out)]) == 0
