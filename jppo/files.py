"""The one way jppo writes a file: atomically, so a crash never leaves half a file under a real
name (a checkpoint, run_info.json, an ONNX model Unity's importer may be reading)."""
from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile


def write_atomic(path: pathlib.Path, data: bytes, *, mode: int | None = None,
                 make_parents: bool = True) -> pathlib.Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync it, then
    ``os.replace`` it over ``path``. ``mode`` sets the file's permissions (the temporary file
    is 0600 otherwise); ``make_parents`` creates missing folders first. Returns ``path``."""
    path = pathlib.Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


__all__ = ["write_atomic"]
