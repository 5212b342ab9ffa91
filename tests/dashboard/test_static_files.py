"""The page's static files ship in the wheel, so the dashboard (its vendored charting library included) works from a
non-editable install."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import knflow.dashboard

ROOT = Path(__file__).resolve().parents[2]
STATIC = Path(knflow.dashboard.__file__).parent / "static"
PACKAGES = ("knflow", "functions", "eventing", "serving", "infra")
BUILT = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "screenshots")


def source_tree(into: Path) -> Path:
    """The distribution's sources in a fresh directory (an in-tree build dir would hold files of earlier builds)."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, into / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, into / package, ignore=BUILT)
    return into


def test_the_wheel_holds_every_file_the_page_loads_and_the_vendored_license(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    src = source_tree(tmp_path / "src")
    pip = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*pip, "-w", str(tmp_path)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("knflow-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    loaded = re.findall(r'(?:src|href)="/static/([^"]+)"', (STATIC / "index.html").read_text())
    assert "vendor/uplot/uPlot.iife.min.js" in loaded and "charts.js" in loaded
    for path in [*loaded, "index.html", "vendor/uplot/LICENSE"]:
        assert f"knflow/dashboard/static/{path}" in names, path
