"""Settings as a process of a platform in ``data_dir`` would load them, with some ``KNFLOW_*`` variables set."""

from __future__ import annotations

from pathlib import Path

from infra.settings import Settings, load_settings


def settings_in(data_dir: Path, **env: str) -> Settings:
    """``load_settings`` of ``KNFLOW_DATA_DIR=data_dir`` and ``KNFLOW_<NAME>`` for each ``name=value`` (no file)."""
    given = {"KNFLOW_DATA_DIR": str(data_dir), **{f"KNFLOW_{k.upper()}": v for k, v in env.items()}}
    return load_settings(given, config_file=None)
