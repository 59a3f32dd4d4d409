"""Every file the extension installs runs on Python 3.9 (Slicer 5.6 and 5.8 ship 3.9; 5.10 ships 3.12).

The extension installs ``AttriVAE/AttriVAE.py`` and every file of ``AttriVAELib``
(``AttriVAE/CMakeLists.txt``). ``vermin`` reads them and reports the oldest Python that can
run each construct; annotations are evaluated (``--eval-annotations``): the module file's are
read at run time by ``parameterNodeWrapper``, the engine's are not (``from __future__ import
annotations``), which vermin knows. The package metadata must say the same.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MINIMUM = (3, 9)


def vermin(*paths: str | Path) -> subprocess.CompletedProcess:
    exe = shutil.which("vermin") or str(Path(sys.executable).with_name("vermin"))
    if not Path(exe).exists():
        pytest.skip("vermin is not installed (pip install -e '.[test]')")
    target = f"-t={MINIMUM[0]}.{MINIMUM[1]}-"
    return subprocess.run([exe, "--no-tips", "--eval-annotations", "--violations", target, *map(str, paths)],
                          capture_output=True, encoding="utf-8", errors="replace", timeout=300)


def test_installed_files_need_no_newer_python(tmp_path):
    files = [ROOT / "AttriVAE" / "AttriVAE.py", *sorted((ROOT / "AttriVAELib").rglob("*.py"))]
    assert len(files) > 50
    result = vermin(*files)
    assert result.returncode == 0, "constructs newer than Python 3.9:\n" + result.stdout[-4000:] + result.stderr[-2000:]


def test_the_check_catches_newer_constructs(tmp_path):
    newer = tmp_path / "newer.py"
    newer.write_text("def f(x):\n    match x:\n        case 1:\n            return zip([1], [2], strict=True)\n")
    result = vermin(newer)
    assert result.returncode != 0 and "3.10" in result.stdout


def test_package_metadata_says_python_39():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^requires-python\s*=\s*">=3\.9"', text, re.M)
    for minor in (9, 10, 11, 12):
        assert f'"Programming Language :: Python :: 3.{minor}"' in text
