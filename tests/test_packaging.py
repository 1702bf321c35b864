"""A non-editable install ships the templates and static files kept at the repo root."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_wheel_carries_templates_and_static(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("handraise-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "handraise/_data/templates/base.html" in names
    assert "handraise/_data/static/app.css" in names
    assert "handraise/cli.py" in names
