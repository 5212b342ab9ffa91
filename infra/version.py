"""knflow's version, written here once: pyproject.toml reads it (``[tool.setuptools.dynamic]``), code imports it."""

VERSION = "0.1.0"
