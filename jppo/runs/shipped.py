"""The trainer configs jppo ships (the repository's ``configs/``), found wherever jppo runs.

One copy of the files, ``configs/`` at the repository root, where the README's commands name
them (``python -m jppo.train configs/CartPole.yaml``). A wheel carries them as the package
data ``jppo/configs`` (``setup.py`` maps the folder), so ``pip install jppo`` (not editable)
finds them too; a checkout or an editable install reads the folder beside ``jppo/``.

``locate`` lets the README's ``configs/<name>.yaml`` work from any folder: a path that does not
exist, written ``configs/<name>``, is the shipped file of that name. A file of that name in
the current folder always wins, so a user's own ``configs/`` is never shadowed.
"""
from __future__ import annotations

import importlib.resources
import pathlib

FOLDER = "configs"
DEFAULT_NAME = "3DBall.yaml"  # what `python -m jppo.train` trains without a config


def folder() -> pathlib.Path:
    """The folder of shipped configs: the installed package's ``jppo/configs``, else the
    checkout's ``configs/`` (a checkout on the path, or an editable install)."""
    packaged = importlib.resources.files("jppo") / FOLDER
    if packaged.is_dir():
        return pathlib.Path(str(packaged))
    return pathlib.Path(__file__).resolve().parents[2] / FOLDER


def names() -> list[str]:
    """The shipped configs' file names, sorted."""
    return sorted(p.name for p in folder().glob("*.yaml"))


def default() -> pathlib.Path:
    return folder() / DEFAULT_NAME


def locate(path: str | pathlib.Path) -> pathlib.Path:
    """``path`` itself if it exists (or is not of the form ``configs/<name>``), else the shipped
    config ``<name>`` if there is one (see the module docstring)."""
    path = pathlib.Path(path)
    if path.exists() or path.is_absolute() or len(path.parts) != 2 or path.parts[0] != FOLDER:
        return path
    shipped = folder() / path.name
    return shipped if shipped.is_file() else path


__all__ = ["DEFAULT_NAME", "default", "folder", "locate", "names"]
