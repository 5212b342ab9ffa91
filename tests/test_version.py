"""knflow's version is written once (infra/version.py); every place that shows it says the same."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import yaml

import knflow
from infra.version import VERSION
from serving import dataplane

ROOT = Path(__file__).parents[1]


def test_package_cli_and_v2_server_metadata_show_the_one_version() -> None:
    assert knflow.__version__ == VERSION
    assert dataplane.SERVER_METADATA["version"] == VERSION
    shown = subprocess.run(
        [sys.executable, "-m", "knflow", "--version"], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert shown.stdout.strip() == f"knflow {VERSION}"


def test_distribution_takes_its_version_from_infra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "infra.version.VERSION"}
    assert metadata.version("knflow") == VERSION


def test_func_yaml_image_is_tagged_with_the_version() -> None:
    image = yaml.safe_load((ROOT / "func.yaml").read_text())["image"]
    assert image.rsplit(":", 1)[1] == VERSION, "func.yaml is YAML: bump its image tag with infra/version.py"
