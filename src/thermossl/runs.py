"""Run folders: every command leaves ``config.json``, ``metrics.json`` and its figures.

Writes are atomic (a temporary file in the same folder, then a rename), so an interrupted run
never leaves a half-written file behind.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

__all__ = [
    "environment",
    "read_json",
    "setting_differences",
    "write_atomically",
    "write_csv",
    "write_figure",
    "write_json",
]


def environment() -> dict[str, str]:
    """Versions of Python and the packages a result depends on."""
    packages = {}
    for name in ("thermossl", "torch", "pyro-ppl", "numpy"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = "not installed"
    return {"python": sys.version.split()[0], "platform": platform.platform(), **packages}


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(data, stream, indent=2)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_atomically(path: Path, write: Callable[[str], None], suffix: str = ".tmp") -> Path:
    """Call ``write(temporary_path)`` then rename the temporary file to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_csv(path: Path, rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> Path:
    """Write ``rows`` (dictionaries keyed by ``columns``) as CSV with a header, atomically."""
    rows = list(rows)

    def write(temporary: str) -> None:
        with open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(columns))
            writer.writeheader()
            writer.writerows(rows)

    return write_atomically(path, write, suffix=".csv")


def write_figure(path: Path, figure) -> Path:
    """Save a matplotlib figure as PNG at ``path`` atomically; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(handle)
    try:
        figure.savefig(temporary, dpi=120)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def read_json(path: Path) -> dict:
    """The JSON object at ``path``, or ``{}`` when there is none yet (a fresh run folder)."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else {}


def setting_differences(previous: dict, settings: dict) -> str:
    """The settings that differ from a run folder's ``previous`` ones, as ``key: old there, new now``."""
    return ", ".join(
        f"{key}: {previous.get(key)!r} there, {value!r} now"
        for key, value in settings.items()
        if previous.get(key) != value
    )
