"""results/<run-id>/: deciding whether a run may start, resume or overwrite, before any write."""
from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil

import yaml

from jppo.errors import UserError
from jppo.files import write_atomic
from jppo.runs import checkpoint
from jppo.runs.settings import RunSettings


@dataclasses.dataclass(frozen=True)
class RunFolder:
    path: pathlib.Path
    resume_from: pathlib.Path | None  # the checkpoint to resume from, if resuming


def path_of(settings: RunSettings) -> pathlib.Path:
    """results/<run-id>/ of a run."""
    return pathlib.Path(settings.results_dir) / settings.run_id


def prepare(settings: RunSettings, resume: bool, force: bool) -> RunFolder:
    """Check the run folder against ``--resume`` / ``--force`` and return it.

    Nothing is deleted or written unless every check passed: a refused command leaves an
    existing run exactly as it was. With ``force`` the old folder is removed.
    """
    path = path_of(settings)
    if resume and force:
        raise UserError("--resume and --force contradict each other; --resume continues run "
                        f"{settings.run_id!r}, --force deletes it and starts again.")
    if resume:
        last = checkpoint.latest(path)
        if last is None:
            where = "does not exist" if not path.exists() else "has no checkpoint"
            raise UserError(f"--resume: run {settings.run_id!r} {where} in "
                            f"{settings.results_dir!r}; check --run-id and --results-dir, or "
                            "start it without --resume.")
        return RunFolder(path, last)
    if path.exists() and any(path.iterdir()):
        if not force:
            raise UserError(f"run {settings.run_id!r} already exists in {settings.results_dir!r}; "
                            "use --resume to continue it, --force to overwrite it, or another "
                            "--run-id.")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return RunFolder(path, None)


def write_configuration(folder: RunFolder, settings: RunSettings, extra: dict):
    """The resolved settings, as the run used them."""
    text = yaml.safe_dump({**settings.to_yaml_dict(), **extra}, sort_keys=False)
    write_atomic(folder.path / "configuration.yaml", text.encode())


def write_json(folder: RunFolder, name: str, payload: dict):
    write_atomic(folder.path / name, (json.dumps(payload, indent=2) + "\n").encode())
