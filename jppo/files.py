"""The one way jppo writes a file: atomically, so a crash never leaves half a file under a real
name (a checkpoint, run_info.json, an ONNX model Unity's importer may be reading).

A write goes to ``.<name>.<8 hex digits>.tmp`` beside the file, is fsynced, then renamed over
it. A process killed in between leaves that temporary file behind; ``remove_temporaries``
clears them (a run does when it starts or resumes, holding its folder's lock). Files get the
permissions of any file the user creates (0666 less the umask: 0644 under the usual 022).
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import re
import secrets

_TEMP = re.compile(r"^\..+\.[0-9a-z_]{8}\.tmp$")  # ours, and tempfile.mkstemp's of earlier versions


def write_atomic(path: pathlib.Path, data: bytes, *, make_parents: bool = True) -> pathlib.Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync it, then
    ``os.replace`` it over ``path`` (and fsync the folder, so the rename survives a power cut).
    ``make_parents`` creates missing folders first. An ``OSError`` names ``path``. Returns
    ``path``."""
    path = pathlib.Path(path)
    try:
        if make_parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temporary(path)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_folder(path.parent)
    except OSError as err:
        if err.filename is None:  # write() and fsync() errors name no file: say which
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise
    return path


def _create_temporary(path: pathlib.Path) -> tuple[int, pathlib.Path]:
    """An open, new ``.<name>.<random>.tmp`` beside ``path``, created with mode 0666 so the
    umask decides its permissions (``tempfile.mkstemp`` would make it 0600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def _fsync_folder(folder: pathlib.Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform that cannot open folders (Windows): the rename stands
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_temporary(path: pathlib.Path) -> bool:
    """Whether ``path`` is a temporary file ``write_atomic`` leaves when it is killed."""
    return bool(_TEMP.match(pathlib.Path(path).name))


def remove_temporaries(folder: pathlib.Path) -> list[pathlib.Path]:
    """Delete every temporary file ``write_atomic`` left anywhere under ``folder`` (its process
    was killed mid-write); returns them. Only for a folder no live writer uses."""
    found = [p for p in pathlib.Path(folder).rglob(".*.tmp") if is_temporary(p) and p.is_file()]
    for p in found:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return found


__all__ = ["is_temporary", "remove_temporaries", "write_atomic"]
