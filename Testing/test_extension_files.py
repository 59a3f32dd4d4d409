"""The 3D Slicer extension files: CMake lists, .s4ext, Extensions Index JSON entry, icons.

The installed extension must never miss an AttriVAELib file, and the three descriptions of
the extension (CMakeLists.txt, AttriVAE.s4ext, AttriVAE.json) must agree.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "AttriVAELib"
MODULE_DIR = ROOT / "AttriVAE"
TOP_CMAKE = ROOT / "CMakeLists.txt"
MODULE_CMAKE = MODULE_DIR / "CMakeLists.txt"
S4EXT = ROOT / "AttriVAE.s4ext"
CATALOG = ROOT / "AttriVAE.json"
ICONS = (ROOT / "Resources/Icons/AttriVAE.png", MODULE_DIR / "Resources/Icons/AttriVAE.png")
RAW_PREFIX = "https://raw.githubusercontent.com/attrivae/SlicerAttriVAE/main/"
SCHEMA_URL = (
    "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json"
)
# Properties allowed by that schema ("additionalProperties": false) and the required ones.
SCHEMA_PROPERTIES = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
                     "build_subdirectory", "enabled", "tier"}
SCHEMA_REQUIRED = {"$schema", "category", "scm_url"}
# Written by the module author later (the Slicer module and its Qt Designer file). They must
# be listed in AttriVAE/CMakeLists.txt now; only their existence check waits for them.
WRITTEN_LATER = {"AttriVAE.py", "Resources/UI/AttriVAE.ui"}
DEMO_MODEL_FILES = ("model.safetensors", "model.json", "README.md")


# ---------------------------------------------------------------------------------- parsing


def _strip_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] if not line.lstrip().startswith("#") else "" for line in text.splitlines())


def cmake_set(text: str, variable: str) -> list[str]:
    """Items of ``set(VARIABLE item item ...)`` in a CMake file (quoted items kept whole)."""
    match = re.search(rf"\bset\(\s*{re.escape(variable)}\b(.*?)\)", _strip_comments(text), re.S)
    assert match, f"set({variable} ...) not found"
    return [a or b for a, b in re.findall(r'"([^"]*)"|([^\s"]+)', match.group(1))]


def lib_files() -> list[str]:
    """Every file of the AttriVAELib package, relative to it (posix), bytecode caches excluded."""
    return sorted(
        p.relative_to(LIB).as_posix()
        for p in LIB.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    )


def read_s4ext() -> dict[str, str]:
    entries = {}
    for line in S4EXT.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        keyword, _, value = line.strip().partition(" ")
        assert keyword not in entries, f"AttriVAE.s4ext: '{keyword}' given twice"
        entries[keyword] = value.strip()
    return entries


def extension_fields() -> dict[str, str]:
    text = _strip_comments(TOP_CMAKE.read_text(encoding="utf-8"))
    return {m.group(1): m.group(2) for m in re.finditer(r'set\(\s*EXTENSION_(\w+)\s+"([^"]*)"\s*\)', text)}


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG file"
    return struct.unpack(">II", data[16:24])


# ---------------------------------------------------------------------------------- module CMake


def test_every_lib_file_is_listed_in_module_cmake():
    listed = set(cmake_set(MODULE_CMAKE.read_text(encoding="utf-8"), "ATTRIVAE_LIB_SCRIPTS"))
    files = lib_files()
    assert "__init__.py" in files and "cli/main.py" in files
    missing = [f for f in files if f.endswith(".py") and f not in listed]
    assert not missing, f"add to ATTRIVAE_LIB_SCRIPTS in AttriVAE/CMakeLists.txt: {', '.join(missing)}"
    # Data files would need an install rule of their own (RESOURCES are taken relative to the
    # module folder); there are none today, so any new one must be handled explicitly.
    others = [f for f in files if not f.endswith(".py")]
    assert not others, f"AttriVAELib holds non-Python files that the extension would not install: {others}"


def test_every_listed_file_exists():
    text = MODULE_CMAKE.read_text(encoding="utf-8")
    lib = cmake_set(text, "ATTRIVAE_LIB_SCRIPTS")
    assert len(lib) == len(set(lib)), "a file is listed twice in ATTRIVAE_LIB_SCRIPTS"
    absent = [f for f in lib if not (LIB / f).is_file()]
    assert not absent, f"listed in AttriVAE/CMakeLists.txt but not in AttriVAELib/: {absent}"

    scripts = cmake_set(text, "MODULE_PYTHON_SCRIPTS")
    resources = cmake_set(text, "MODULE_PYTHON_RESOURCES")
    assert "AttriVAE.py" in scripts and "${ATTRIVAE_LIB_BUILD_SCRIPTS}" in scripts
    assert {"Resources/Icons/AttriVAE.png", "Resources/UI/AttriVAE.ui"} <= set(resources)
    assert {f"Resources/DemoModel/{f}" for f in DEMO_MODEL_FILES} <= set(resources)
    for name in [s for s in scripts if not s.startswith("$")] + resources:
        if name in WRITTEN_LATER and not (MODULE_DIR / name).exists():
            continue  # the module file and its .ui come later; they are listed already
        assert (MODULE_DIR / name).is_file(), f"AttriVAE/{name} is listed in AttriVAE/CMakeLists.txt but missing"


def test_module_cmake_structure():
    text = _strip_comments(MODULE_CMAKE.read_text(encoding="utf-8"))
    call = re.search(r"slicerMacroBuildScriptedModule\((.*?)\)", text, re.S)
    assert call, "slicerMacroBuildScriptedModule(...) not found"
    args = call.group(1).split()
    assert args[args.index("NAME") + 1] in ("AttriVAE", "${MODULE_NAME}")
    assert "set(MODULE_NAME AttriVAE)" in text
    for keyword, value in (("SCRIPTS", "${MODULE_PYTHON_SCRIPTS}"), ("RESOURCES", "${MODULE_PYTHON_RESOURCES}")):
        assert args[args.index(keyword) + 1] == value
    assert "WITH_GENERIC_TESTS" in args
    testing = re.search(r"if\(\s*BUILD_TESTING\s*\)(.*?)endif\(\)", text, re.S)
    assert testing and re.search(r"slicer_add_python_unittest\(\s*SCRIPT\s+AttriVAE\.py\s*\)", testing.group(1))
    # the library is copied from the repository's top level into the module's build tree
    assert "${CMAKE_CURRENT_SOURCE_DIR}/../AttriVAELib" in text
    assert "${CMAKE_CURRENT_BINARY_DIR}/AttriVAELib/${script}" in text


_STUB_SLICER_CONFIG = r"""
# Stand-in for Slicer's CMake package: records what slicerMacroBuildScriptedModule would copy.
# Destination rule of ctkMacroCompilePythonScript: a relative script keeps its path; an
# absolute one gets its path relative to CMAKE_CURRENT_BINARY_DIR.
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/empty.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/empty.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/empty.cmake)
set(BUILD_TESTING ON)
set(STUB_MANIFEST ${CMAKE_BINARY_DIR}/manifest.txt)
file(WRITE ${STUB_MANIFEST} "")
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY "WITH_GENERIC_TESTS" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  file(APPEND ${STUB_MANIFEST} "name|${MY_NAME}|\n")
  if(MY_WITH_GENERIC_TESTS)
    file(APPEND ${STUB_MANIFEST} "generic_tests|1|\n")
  endif()
  foreach(f ${MY_SCRIPTS})
    if(IS_ABSOLUTE ${f})
      set(src ${f})
      file(RELATIVE_PATH dst ${CMAKE_CURRENT_BINARY_DIR} ${f})
    else()
      set(src ${CMAKE_CURRENT_SOURCE_DIR}/${f})
      set(dst ${f})
    endif()
    file(APPEND ${STUB_MANIFEST} "script|${dst}|${src}\n")
  endforeach()
  foreach(f ${MY_RESOURCES})
    file(APPEND ${STUB_MANIFEST} "resource|${f}|${CMAKE_CURRENT_SOURCE_DIR}/${f}\n")
  endforeach()
endmacro()
function(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "SCRIPT" "" ${ARGN})
  file(APPEND ${STUB_MANIFEST} "unittest|${MY_SCRIPT}|\n")
endfunction()
"""


@pytest.mark.skipif(
    shutil.which("cmake") is None or not any(shutil.which(c) for c in ("c++", "g++", "clang++")),
    reason="cmake or a C++ compiler (needed by project()) is not installed",
)
def test_cmake_configure_installs_library_next_to_module(tmp_path):
    """Configure the real CMake files against a stub Slicer: AttriVAELib lands beside AttriVAE.py."""
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "SlicerConfig.cmake").write_text(_STUB_SLICER_CONFIG)
    (stub / "empty.cmake").write_text("")
    build = tmp_path / "build"
    result = subprocess.run(
        ["cmake", "-S", str(ROOT), "-B", str(build), f"-DSlicer_DIR={stub}"],
        capture_output=True, encoding="utf-8", errors="replace", timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = [line.split("|") for line in (build / "manifest.txt").read_text().splitlines()]
    kinds = {kind: [(dst, src) for k, dst, src in rows if k == kind] for kind in {r[0] for r in rows}}
    assert kinds["name"] == [("AttriVAE", "")] and kinds["generic_tests"]
    assert kinds["unittest"] == [("AttriVAE.py", "")]

    scripts = dict(kinds["script"])
    expected = {"AttriVAE.py"} | {f"AttriVAELib/{f}" for f in lib_files()}
    assert set(scripts) == expected
    for dst, src in scripts.items():
        if dst == "AttriVAE.py":
            continue
        copied = Path(src)
        assert copied.is_file() and copied.read_bytes() == (LIB / dst.split("/", 1)[1]).read_bytes()
    assert {dst for dst, _ in kinds["resource"]} == {"Resources/Icons/AttriVAE.png", "Resources/UI/AttriVAE.ui",
                                                     *(f"Resources/DemoModel/{f}" for f in DEMO_MODEL_FILES)}


# ---------------------------------------------------------------------------------- descriptions


def test_extension_cmake_fields_and_structure():
    fields = extension_fields()
    for name in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert fields.get(name), f"EXTENSION_{name} missing or empty in CMakeLists.txt"
    assert fields["DEPENDS"] == "PyTorch"
    assert fields["HOMEPAGE"].startswith("https://")
    text = _strip_comments(TOP_CMAKE.read_text(encoding="utf-8"))
    order = [
        r"cmake_minimum_required\(",
        r"project\(\s*AttriVAE\s*\)",
        r"find_package\(\s*Slicer\b",
        r"include\(\s*\$\{Slicer_USE_FILE\}\s*\)",
        r"add_subdirectory\(\s*AttriVAE\s*\)",
        r"include\(\s*\$\{Slicer_EXTENSION_GENERATE_CONFIG\}\s*\)",
        r"include\(\s*\$\{Slicer_EXTENSION_CPACK\}\s*\)",
    ]
    positions = []
    for pattern in order:
        match = re.search(pattern, text)
        assert match, f"CMakeLists.txt lacks {pattern}"
        positions.append(match.start())
    assert positions == sorted(positions), "CMakeLists.txt commands are out of order"


def test_s4ext_json_and_cmake_agree():
    fields = extension_fields()
    s4ext = read_s4ext()
    for keyword in ("scm", "scmurl", "scmrevision", "depends", "homepage", "contributors", "category", "iconurl",
                    "status", "description", "screenshoturls", "enabled"):
        assert keyword in s4ext, f"AttriVAE.s4ext lacks '{keyword}'"
    assert s4ext["scm"] == "git" and s4ext["enabled"] == "1" and s4ext["scmrevision"] == "main"
    pairs = {"homepage": "HOMEPAGE", "category": "CATEGORY", "iconurl": "ICONURL", "contributors": "CONTRIBUTORS",
             "description": "DESCRIPTION", "screenshoturls": "SCREENSHOTURLS", "status": "STATUS"}
    for keyword, field in pairs.items():
        assert s4ext[keyword] == fields[field], f"s4ext '{keyword}' differs from EXTENSION_{field}"
    assert s4ext["depends"].split() == fields["DEPENDS"].split() == ["PyTorch"]
    assert s4ext["scmurl"].removesuffix(".git") == s4ext["homepage"]

    entry = json.loads(CATALOG.read_text(encoding="utf-8"))
    assert set(entry) <= SCHEMA_PROPERTIES, f"not allowed by the catalog schema: {set(entry) - SCHEMA_PROPERTIES}"
    assert SCHEMA_REQUIRED <= set(entry)
    assert entry["$schema"].rstrip("#") == SCHEMA_URL
    assert entry["category"] == s4ext["category"]
    assert entry["scm_url"] == s4ext["scmurl"] and entry["scm_revision"] == s4ext["scmrevision"]
    assert entry["build_dependencies"] == s4ext["depends"].split()
    assert entry["tier"] == 1 and entry.get("scm_type", "git") == "git" and entry.get("enabled", True) is True


def test_urls_point_at_files_of_this_repository():
    fields = extension_fields()
    assert fields["ICONURL"] == RAW_PREFIX + "Resources/Icons/AttriVAE.png"
    assert fields["HOMEPAGE"] + "/" in RAW_PREFIX.replace("raw.githubusercontent.com", "github.com")
    for url in fields["SCREENSHOTURLS"].split():
        assert url.startswith(RAW_PREFIX + "Resources/Screenshots/") and url.endswith(".png"), url


# ---------------------------------------------------------------------------------- icons


@pytest.mark.parametrize("path", ICONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_icon_is_128_png(path):
    assert path.is_file(), f"{path.relative_to(ROOT)} missing (run scripts/make_icon.py)"
    assert png_size(path) == (128, 128)


def test_icon_matches_its_script():
    pytest.importorskip("matplotlib")
    import numpy as np
    from matplotlib import pyplot as plt

    spec = importlib.util.spec_from_file_location("make_icon", ROOT / "scripts/make_icon.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    drawn = module.render()
    for path in ICONS:
        stored = plt.imread(path)
        assert stored.shape == drawn.shape
        assert np.abs(stored - drawn).max() <= 1.5 / 255, f"{path} differs from scripts/make_icon.py's drawing"
