"""Locations of the shipped assets and of the user cache."""

import os
from pathlib import Path

# The assets folder sits beside the package in the repository (the project is installed with
# `pip install -e .`); DARWIN_ASSETS points elsewhere for a relocated copy.
ASSETS_DIR = Path(os.environ.get("DARWIN_ASSETS", Path(__file__).resolve().parent.parent / "assets"))
EVALS_DIR = ASSETS_DIR / "evals"
PROBES_DIR = ASSETS_DIR / "probes"


def cache_dir() -> Path:
    """Return the cache folder for downloaded wheels and materialised parents.

    DARWIN_CACHE overrides the default `~/.cache/darwin-studio`. The folder is created on demand.
    """
    path = Path(os.environ.get("DARWIN_CACHE", Path.home() / ".cache" / "darwin-studio"))
    path.mkdir(parents=True, exist_ok=True)
    return path
