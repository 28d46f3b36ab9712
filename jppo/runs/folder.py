"""results/<run-id>/: deciding whether a run may start, resume or overwrite, before any write,
and holding the folder while the run lives.

- A run folder is a real folder inside --results-dir (never a file, never a symbolic link that
  would carry the run's files elsewhere).
- One run at a time: the run takes a lock on its folder (``flock`` on ``.jppo.lock``, which
  names its process); a second run of the same run id is refused with one sentence naming the
  first's process. The lock goes with the process, even one killed with SIGKILL.
- A folder "holds a run" once it has a checkpoint, a summary row or run_info.json; one that
  holds none (a start stopped before its first summary: configuration.yaml, empty event files,
  Unity's logs) is started over without --force.
- Temporary files of a write that a kill cut short are removed when a run starts or resumes.
- A file-system failure while preparing (a results dir that is a file, a read-only mount, a
  full disk) is one sentence (exit 2), never a traceback.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import json
import os
import pathlib
import shutil
import socket

import yaml

from jppo.errors import UserError, brief
from jppo.files import remove_temporaries, write_atomic
from jppo.runs import checkpoint
from jppo.runs.settings import RunSettings

try:
    import fcntl
except ImportError:  # Windows has no flock: runs there go unlocked
    fcntl = None

LOCK_NAME = ".jppo.lock"


class RunLock:
    """An exclusive ``flock`` on ``<folder>/.jppo.lock`` while a run uses the folder; the file
    says who holds it. ``release`` deletes the file and drops the lock."""

    def __init__(self, file, path: pathlib.Path):
        self._file, self.path = file, path

    @classmethod
    def take(cls, folder: pathlib.Path, run_id: str) -> "RunLock":
        """The lock of ``folder``, or a ``UserError`` naming the process that holds it. The
        file is not written until ``announce``: a refused command changes nothing."""
        path = folder / LOCK_NAME
        while True:
            file = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                                     0o666), "r+")
            if fcntl is None:
                break
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    file.close()
                    raise
                holder = _holder(file.read())
                file.close()
                raise UserError(f"run {brief(run_id)} is in use by {holder}; wait for it to end "
                                "(or stop it), or give another --run-id.") from None
            # A run that ended deleted the file we opened: lock the one now at the path instead.
            with contextlib.suppress(FileNotFoundError):
                if os.path.samestat(os.fstat(file.fileno()), os.stat(path)):
                    break
            file.close()
        return cls(file, path)

    def announce(self) -> None:
        """Write who holds the lock, for the message a second run gets."""
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started":
                                     datetime.datetime.now().isoformat(timespec="seconds")}))
        self._file.flush()

    def release(self, delete: bool = True) -> None:
        """Drop the lock (a run's end deletes the file too; a refused command leaves it)."""
        if not self._file.closed:
            if delete:
                with contextlib.suppress(OSError):
                    self.path.unlink()
            self._file.close()


def _holder(text: str) -> str:
    """'process 1234 on host h (started ...)' from a lock file's content."""
    try:
        who = json.loads(text)
        return f"process {int(who['pid'])} on {who['host']} (started {who['started']})"
    except (ValueError, KeyError, TypeError):
        return "another process (it has not written its id yet)"


@dataclasses.dataclass(frozen=True)
class RunFolder:
    path: pathlib.Path
    resume_from: pathlib.Path | None  # the checkpoint to resume from, if resuming
    lock: RunLock | None = dataclasses.field(default=None, compare=False, repr=False)
    created: bool = False  # this run made the folder

    def release(self) -> None:
        """The run is over: let the next one in. A folder this run made and left empty (it
        stopped before writing anything: Unity never connected) goes too."""
        if self.lock is not None:
            self.lock.release()
        if self.created:
            with contextlib.suppress(OSError):  # not empty, or gone: it stays as it is
                self.path.rmdir()


def path_of(settings: RunSettings) -> pathlib.Path:
    """results/<run-id>/ of a run."""
    return pathlib.Path(settings.results_dir) / settings.run_id


def holds_run(path: pathlib.Path) -> bool:
    """Whether ``path`` holds a run worth keeping: a checkpoint, a summary row (progress.csv of
    the run or of a sweep member, past its header) or run_info.json."""
    if checkpoint.newest_anywhere(path) is not None or (path / "run_info.json").exists():
        return True
    for csv in path.rglob("progress.csv"):
        with csv.open("rb") as f:
            if len(f.read(1 << 16).splitlines()) > 1:
                return True
    return False


def prepare(settings: RunSettings, resume: bool, force: bool) -> RunFolder:
    """Check the run folder against ``--resume`` / ``--force``, lock it, and return it.

    Nothing is deleted or written unless every check passed: a refused command leaves an
    existing run exactly as it was. With ``force`` the old folder's content is removed.
    """
    path = path_of(settings)
    if resume and force:
        raise UserError("--resume and --force contradict each other; --resume continues run "
                        f"{settings.run_id!r}, --force deletes it and starts again.")
    lock = None
    try:
        _check_place(settings, path)
        if (path / LOCK_NAME).exists():  # a run may be using it: find out before anything else
            lock = RunLock.take(path, settings.run_id)
        if resume:
            last = checkpoint.newest_anywhere(path)
            if last is None:
                where = "does not exist" if not path.exists() else "has no checkpoint"
                raise UserError(f"--resume: run {settings.run_id!r} {where} in "
                                f"{settings.results_dir!r}; check --run-id and --results-dir, or "
                                "start it without --resume.")
        elif holds_run(path) and not force:
            raise UserError(f"run {settings.run_id!r} already exists in {settings.results_dir!r}; "
                            "use --resume to continue it, --force to overwrite it, or another "
                            "--run-id.")
        created = not path.exists()
        path.mkdir(parents=True, exist_ok=True)
        lock = lock or RunLock.take(path, settings.run_id)
        lock.announce()
        if force:
            for entry in path.iterdir():
                if entry.name == LOCK_NAME:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        remove_temporaries(path)
        # A run of several behaviors resumes each from its own folder's newest checkpoint.
        return RunFolder(path, checkpoint.newest_anywhere(path) if resume else None, lock, created)
    except OSError as err:
        if lock is not None:
            lock.release(delete=False)
        raise UserError(f"cannot prepare the run folder {str(path)!r}: {describe(err)}; give a "
                        "--results-dir you can write to.") from None
    except BaseException:
        if lock is not None:
            lock.release(delete=False)
        raise


def _check_place(settings: RunSettings, path: pathlib.Path) -> None:
    results = pathlib.Path(settings.results_dir)
    if results.exists() and not results.is_dir():
        raise UserError(f"--results-dir {str(results)!r} is a file, not a folder; give a folder "
                        "for the run folders.")
    if path.is_symlink():
        raise UserError(f"run folder {str(path)!r} is a symbolic link; jppo writes a run only "
                        "into a real folder inside --results-dir, so remove the link or give "
                        "another --run-id.")
    if path.exists() and not path.is_dir():
        raise UserError(f"run folder {str(path)!r} is a file, not a folder; remove it or give "
                        "another --run-id.")


def describe(err: OSError) -> str:
    """An ``OSError`` in a few words: "No space left on device ('results/x/checkpoints/...')"."""
    what = err.strerror or type(err).__name__
    return f"{what} ({err.filename!r})" if err.filename else what


def write_configuration(folder: RunFolder, settings: RunSettings, extra: dict):
    """The resolved settings, as the run used them: the first file a run writes, so a failure
    here is the user's to fix before training (exit 2)."""
    resolved = settings.to_yaml_dict(env=extra.get("env"))
    resolved["jppo"]["run_record"] = extra  # for the record: parse reads it back as nothing
    text = yaml.safe_dump(resolved, sort_keys=False)
    try:
        write_atomic(folder.path / "configuration.yaml", text.encode())
    except OSError as err:
        raise UserError(f"cannot write the run folder {str(folder.path)!r}: {describe(err)}; free "
                        "space or give a --results-dir you can write to.") from None


def write_json(folder: RunFolder, name: str, payload: dict):
    write_atomic(folder.path / name, (json.dumps(payload, indent=2) + "\n").encode())


__all__ = ["LOCK_NAME", "RunFolder", "RunLock", "describe", "holds_run", "path_of", "prepare",
           "write_configuration", "write_json"]
