"""Files the server reads at run time, found through importlib.resources: the same code works
from the source tree, an editable install, an installed wheel (site-packages) and the Docker
image."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def package_dir(package: str) -> Path:
    """The directory of a package's data files."""
    root = resources.files(package)
    # Starlette's StaticFiles and FileResponse serve from the file system; a wheel installed by
    # pip always is one, only a zip import (zipapp, PyInstaller) would not be.
    if not isinstance(root, Path):
        raise RuntimeError(f"package {package!r} must be installed as files, not as {root}")
    return root


def static_dir() -> Path:
    """The web console (static/: index.html, console.js, ...)."""
    return package_dir("eddy.static")
