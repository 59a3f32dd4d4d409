"""The Extensions Index submission: the checks the index runs on a new entry, re-implemented here.

The 3D Slicer ExtensionsIndex repository validates a submitted ``<Name>.json`` with
``scripts/check_description_files.py`` and its pre-commit configuration (prettier with the
multiline-arrays plugin at wrap threshold 0, the catalog-entry JSON schema, whitespace hooks).
These tests apply the same rules to ``AttriVAE.json`` and the repository it points at, without
a network: the category list and the schema's properties are copied as data (ExtensionsIndex at
commit 07f1d1b, August 2026); the rules are written anew. Also checked: the extension template's
conventions the index reviewers ask for (``## NEXT_MODULE`` marker, "Name (Organization)"
contributors).
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENTRY = ROOT / "AttriVAE.json"
TOP_CMAKE = ROOT / "CMakeLists.txt"
S4EXT = ROOT / "AttriVAE.s4ext"
MODULE = ROOT / "AttriVAE" / "AttriVAE.py"

#: Categories the index accepts (ACCEPTED_EXTENSION_CATEGORIES of the index's check script).
ACCEPTED_CATEGORIES = frozenset({
    "Active Learning", "Analysis", "Auto3dgm", "BigImage", "Cardiac", "Chest Imaging Platform", "Conda",
    "Converters", "DICOM", "DSCI", "Developer Tools", "Diffusion", "Examples", "Exporter", "FTV Segmentation",
    "Filtering", "Filtering.Morphology", "Filtering.Vesselness", "Holographic Display", "Image Synthesis", "IGT",
    "Informatics", "Netstim", "Neuroimaging", "Nuclear Medicine", "Orthodontics", "Osteotomy Planning",
    "Otolaryngology", "Photogrammetry", "Pipelines", "Planning", "Printing", "Quantification", "Radiotherapy",
    "Registration", "Remote", "Rendering", "SPHARM", "Segmentation", "Sequences", "Shape Analysis",
    "Shape Regression", "Shape Visualization", "Simulation", "SlicerCMF", "SlicerMorph", "Spectral Imaging",
    "Supervisely", "Surface Models", "SurfaceLearner", "Tomographic Reconstruction", "Tracking", "Tractography",
    "Training", "Ultrasound", "Utilities", "Vascular Modeling Toolkit", "Virtual Reality", "VisSimTools",
    "Web System Tools", "Wizards",
})
#: The catalog-entry schema (v1.0.x): property → JSON type; required keys; no other keys allowed.
SCHEMA_TYPES = {"$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
                "build_dependencies": list, "dicom_support_rule": str, "build_subdirectory": str, "enabled": bool,
                "tier": int}
SCHEMA_REQUIRED = ("$schema", "category", "scm_url")
#: Extensions in the index that ours may depend on (a dependency must be an index entry).
KNOWN_INDEX_ENTRIES = frozenset({"PyTorch"})


def entry() -> dict:
    return json.loads(ENTRY.read_text(encoding="utf-8"))


def prettier_json(value, indent: int = 0) -> str:
    """JSON as prettier writes it with ``multilineArraysWrapThreshold: 0``: 2-space indent, objects and
    every non-empty array one item per line, empty ones as ``{}``/``[]``."""
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {prettier_json(v, indent + 2)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[\n" + ",\n".join(inner + prettier_json(v, indent + 2) for v in value) + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=False)


def cmake_field(name: str) -> str | None:
    match = re.search(rf'set\s*\(\s*EXTENSION_{name}\s+"([^"]*)"\s*\)', TOP_CMAKE.read_text(encoding="utf-8"))
    return match.group(1) if match else None


# ---------------------------------------------------------------------------------- the JSON entry


def test_entry_matches_the_schema():
    data = entry()
    assert not set(data) - set(SCHEMA_TYPES), f"not allowed by the schema: {set(data) - set(SCHEMA_TYPES)}"
    for key in SCHEMA_REQUIRED:
        assert data.get(key), f"{key} is required"
    for key, value in data.items():
        assert type(value) is SCHEMA_TYPES[key], f"{key} must be a {SCHEMA_TYPES[key].__name__}"
    assert data.get("scm_type", "git") in ("git", "local")
    assert 1 <= data.get("tier", 1) <= 5
    assert all(isinstance(d, str) and d for d in data.get("build_dependencies", []))
    assert data["$schema"].split("#")[0].endswith(".json") and data["$schema"].startswith("https://")


def test_category_is_accepted_by_the_index():
    assert entry()["category"] in ACCEPTED_CATEGORIES
    assert cmake_field("CATEGORY") == entry()["category"]


def test_entry_is_formatted_as_the_index_formats_it():
    raw = ENTRY.read_bytes()
    assert b"\r" not in raw, "LF line endings only"
    assert b"\t" not in raw, "no tabs"
    text = raw.decode("utf-8")
    assert text.endswith("\n") and not text.endswith("\n\n"), "exactly one newline at the end of the file"
    assert not [n for n, line in enumerate(text.splitlines(), 1) if line != line.rstrip()], "trailing whitespace"
    assert text == prettier_json(entry()) + "\n", "format it as prettier (multiline arrays) would"
    assert len(raw) <= 1024 * 1024


def test_the_prettier_rules_themselves():
    assert prettier_json({"a": ["x"], "b": [], "c": 1, "d": True}) == (
        '{\n  "a": [\n    "x"\n  ],\n  "b": [],\n  "c": 1,\n  "d": true\n}')
    assert prettier_json({"a": ["x", "y"]}) != '{\n  "a": ["x", "y"]\n}'


def test_names_and_scm_url():
    data = entry()
    name = ENTRY.stem
    assert not name.lower().startswith("slicer"), "the extension name should not start with 'Slicer'"
    url = urllib.parse.urlsplit(data["scm_url"])
    assert url.scheme in ("git", "https") and "://" in data["scm_url"]
    repo = Path(url.path.strip("/")).stem
    assert any(repo.startswith(p) for p in ("Slicer", "Slicer-", "Slicer_", "SlicerExtension-", "SlicerExtension_"))
    assert set(data.get("build_dependencies", [])) <= KNOWN_INDEX_ENTRIES


# ---------------------------------------------------------------------------------- the repository it points at


def test_top_level_cmake_as_the_index_reads_it():
    text = TOP_CMAKE.read_text(encoding="utf-8")
    projects = re.findall(r"project\s*\(\s*([^\s)]+)", text, re.IGNORECASE)
    assert projects and projects[0].strip("\"'") == ENTRY.stem, "project() must be named like the .json file"
    assert re.search(r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)', text, re.IGNORECASE)
    shots = re.search(r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)', text, re.IGNORECASE)
    assert shots and all(u.startswith("http") and u.lower().endswith((".png", ".jpg", ".jpeg", ".gif"))
                         for u in shots.group(1).split())
    icon = cmake_field("ICONURL")
    assert icon.startswith("http") and icon.lower().endswith(".png")
    depends = cmake_field("DEPENDS").split()
    assert depends == entry().get("build_dependencies", [])


def test_template_conventions():
    text = TOP_CMAKE.read_text(encoding="utf-8")
    marker = text.find("## NEXT_MODULE")
    assert marker > text.find("add_subdirectory(AttriVAE)") > 0, "keep the template's ## NEXT_MODULE marker"
    assert marker < text.find("include(${Slicer_EXTENSION_GENERATE_CONFIG})")
    form = re.compile(r"[^,()]+ \([^()]+\)")
    for source, value in (("CMakeLists.txt", cmake_field("CONTRIBUTORS")),
                          ("AttriVAE.s4ext", re.search(r"^contributors (.*)$", S4EXT.read_text(), re.M).group(1))):
        for person in value.split(","):
            assert form.fullmatch(person.strip()), f"{source}: contributor {person.strip()!r} is not 'Name (Org)'"
    contributors = re.search(r"self\.parent\.contributors = \[(.*?)\]", MODULE.read_text(encoding="utf-8"), re.S)
    for person in re.findall(r'"([^"]*)"', contributors.group(1)):
        assert form.fullmatch(person), f"AttriVAE.py: contributor {person!r} is not 'Name (Organization)'"


def test_license_and_repository_size():
    assert any((ROOT / name).is_file() for name in ("LICENSE", "LICENCE", "License.txt", "license.txt",
                                                   "LICENSE.txt", "COPYING", "COPYING.txt"))
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, timeout=60)
    if listed.returncode != 0:
        return  # not a git checkout (e.g. an sdist): nothing to measure
    files = [ROOT / name for name in listed.stdout.decode("utf-8", "replace").split("\0") if name]
    total = sum(f.stat().st_size for f in files if f.is_file())
    assert total < 100 * 1024 * 1024, f"the repository holds {total / 2**20:.0f} MB; the index allows 100 MB"
