"""results/<run-id>/ is the only place a run writes: names are not paths (checked where they
enter and where a checkpoint is read), a bad place for the folder is one sentence, one run at a
time holds a folder (the second is told who holds it), a write cut by a kill leaves nothing
behind after the next start, a full or read-only disk is one sentence, and files get the
user's umask."""
import dataclasses
import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import yaml

from jppo import files
from jppo.runs import checkpoint, folder
from jppo.runs.settings import MAX_NAME_BYTES, check_name
from jppo.errors import UserError
from jppo.train import main
from tiny_config import tiny_cartpole

TINY = tiny_cartpole(1024, keep_checkpoints=3)


def config_file(tmp_path, data=None, name="tiny.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data or TINY))
    return str(path)


def run_cli(tmp_path, *args, config=None) -> int:
    return main([config or config_file(tmp_path), "--results-dir", str(tmp_path / "results"),
                 "--quiet", *args])


def one_sentence(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("jppo: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err[len("jppo: error: "):-1]


def listing(root: pathlib.Path) -> set:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ------------------------------------------------------------------------- names are not paths

@pytest.mark.parametrize("name, why", [
    ("../../escape", "it contains a slash"), ("/tmp/absolute", "it contains a slash"),
    ("", "it is empty"), ("..", "it starts with a dot"), (".hidden", "it starts with a dot"),
    ("a\\b", "it contains a slash"), ("tab\there", "it contains a control character"),
    ("x" * (MAX_NAME_BYTES + 1), f"it is longer than {MAX_NAME_BYTES} bytes"),
    ("é" * (MAX_NAME_BYTES // 2 + 1), f"it is longer than {MAX_NAME_BYTES} bytes"),
])
def test_a_behavior_name_that_is_a_path_is_refused_and_nothing_is_written(tmp_path, capsys, name, why):
    data = yaml.safe_load(yaml.safe_dump(TINY))
    data["behaviors"] = {name: data["behaviors"]["CartPole"]}
    before = listing(tmp_path)
    assert run_cli(tmp_path, config=config_file(tmp_path, data)) == 2
    sentence = one_sentence(capsys)
    assert sentence.startswith("behavior name ") and why in sentence, sentence
    assert listing(tmp_path) == before | {"tiny.yaml"}  # nothing below, beside or above results/


@pytest.mark.parametrize("run_id", ["../up", "a/b", "..", "x" * 300, "nul\0byte", ".", ""])
def test_a_run_id_that_is_a_path_is_refused_and_nothing_is_written(tmp_path, capsys, run_id):
    config = config_file(tmp_path)
    assert run_cli(tmp_path, "--run-id", run_id, config=config) == 2
    assert one_sentence(capsys).startswith("run id ")
    assert listing(tmp_path) == {"tiny.yaml"}


def test_names_within_the_limits_pass():
    for name in ("3DBall", "my behavior (v2)", "learning_rate=0.0003", "é" * (MAX_NAME_BYTES // 2)):
        assert check_name("behavior name", name) == name


def test_export_refuses_a_checkpoint_whose_behavior_is_a_path(tmp_path, capsys):
    """A crafted run folder cannot direct the export outside it: the checkpoint's behavior name
    is checked when the checkpoint is read."""
    import jax
    import jppo
    from jppo import export

    config = jppo.PPOConfig(hidden_units=8, num_layers=1)
    spec = jppo.ActionSpec.continuous(2)
    state = jppo.init_train_state(jax.random.PRNGKey(0), config, 4, spec)
    run = tmp_path / "results" / "crafted"
    checkpoint.save(run, 10, {"train": state}, checkpoint.policy_meta(config, spec, 4, "../../escape"))
    before = listing(tmp_path)
    assert export.main([str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: checkpoint '{checkpoint.latest(run)}' is not a jppo checkpoint "
                          "to trust: behavior name '../../escape' is not allowed: it contains a slash")
    assert err.count("\n") == 1 and listing(tmp_path) == before


# ------------------------------------------------------------------------- where the folder is

def test_results_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "results").write_text("not a folder")
    assert run_cli(tmp_path) == 2
    assert one_sentence(capsys) == (f"--results-dir '{tmp_path / 'results'}' is a file, not a "
                                    "folder; give a folder for the run folders.")


def test_run_folder_that_is_a_file(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "ppo").write_text("x")
    assert run_cli(tmp_path, "--force") == 2
    assert "is a file, not a folder; remove it or give another --run-id." in one_sentence(capsys)
    assert (tmp_path / "results" / "ppo").read_text() == "x"


@pytest.mark.parametrize("flags", [[], ["--force"], ["--resume"]])
def test_run_folder_that_is_a_symlink_is_never_followed(tmp_path, capsys, flags):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "ppo").symlink_to(elsewhere)
    assert run_cli(tmp_path, *flags) == 2
    assert "is a symbolic link; jppo writes a run only into a real folder" in one_sentence(capsys)
    assert listing(elsewhere) == {"precious.txt"}


def test_read_only_results_dir_is_one_sentence(tmp_path, capsys, monkeypatch):
    real_mkdir = pathlib.Path.mkdir

    def read_only(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path / "results")):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", read_only)
    assert run_cli(tmp_path) == 2
    assert one_sentence(capsys) == (
        f"cannot prepare the run folder '{tmp_path / 'results' / 'ppo'}': Read-only file system "
        f"('{tmp_path / 'results' / 'ppo'}'); give a --results-dir you can write to.")


def test_full_disk_at_start_is_one_sentence_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    assert run_cli(tmp_path) == 2
    run = tmp_path / "results" / "ppo"
    assert one_sentence(capsys) == (
        f"cannot write the run folder '{run}': No space left on device "
        f"('{run / 'configuration.yaml'}'); free space or give a --results-dir you can write to.")
    assert not run.exists()  # no configuration.yaml to lock the user out, no temporary file


def test_full_disk_mid_run_stops_with_the_last_checkpoint_intact(tmp_path, capsys, monkeypatch):
    written = []
    real_save = checkpoint.write_atomic

    def fills_up(path, data, **kwargs):
        if written:  # the disk is full from the second checkpoint on
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        written.append(path)
        return real_save(path, data, **kwargs)

    monkeypatch.setattr(checkpoint, "write_atomic", fills_up)
    assert run_cli(tmp_path, "--no-export") == 1
    run = tmp_path / "results" / "ppo"
    message = one_sentence(capsys)
    assert message == (
        "cannot write the run's results: No space left on device "
        f"('{run / 'checkpoints' / 'checkpoint-000001024.msgpack'}'); run 'ppo' stopped at step "
        "1024, its last checkpoint (step 512) is intact: continue with --resume.")
    assert [p.name for p in checkpoint.list_checkpoints(run)] == ["checkpoint-000000512.msgpack"]
    assert checkpoint.read(checkpoint.latest(run))[0]["steps"] == 512


# ------------------------------------------------------------------------- one run at a time

LONG_RUN = r"""
import sys
from jppo.train import main
sys.exit(main(sys.argv[1:]))
"""


def start_run(tmp_path, *args) -> subprocess.Popen:
    config = config_file(tmp_path, tiny_cartpole(10**8), "long.yaml")
    return subprocess.Popen([sys.executable, "-c", LONG_RUN, config, "--results-dir",
                             str(tmp_path / "results"), "--quiet", "--no-export", *args],
                            stderr=subprocess.PIPE, text=True)


def wait_for(predicate, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_second_run_on_the_same_run_id_is_refused_naming_the_first(tmp_path, capsys):
    first = start_run(tmp_path)
    run = tmp_path / "results" / "ppo"
    try:
        wait_for(lambda: checkpoint.latest(run) is not None, first)
        holder = json.loads((run / folder.LOCK_NAME).read_text())
        assert holder["pid"] == first.pid
        configuration = (run / "configuration.yaml").stat()
        for flags in ([], ["--resume"], ["--force"]):
            assert run_cli(tmp_path, *flags) == 2
            message = one_sentence(capsys)
            assert message.startswith(f"run 'ppo' is in use by process {first.pid} on ")
            assert message.endswith("; wait for it to end (or stop it), or give another --run-id.")
            # --force deleted nothing: the first run's configuration is the same file.
            assert (run / "configuration.yaml").stat().st_ino == configuration.st_ino
    finally:
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=120) == 130
    assert not (run / folder.LOCK_NAME).exists()  # released with the run
    prepare(tmp_path, resume=True).release()  # the folder is free again


def prepare(tmp_path, resume=False, force=False) -> folder.RunFolder:
    """What a run does first with its folder (``--resume`` / ``--force`` as given)."""
    from jppo.runs.settings import load

    settings = load(config_file(tmp_path, name="prepare.yaml"))
    settings = dataclasses.replace(settings, results_dir=str(tmp_path / "results"))
    return folder.prepare(settings, resume, force)


def test_the_lock_goes_with_a_killed_process(tmp_path):
    run = tmp_path / "results" / "ppo"
    first = start_run(tmp_path)
    wait_for(lambda: (run / folder.LOCK_NAME).exists(), first)
    first.kill()
    first.wait()
    assert (run / folder.LOCK_NAME).exists()  # stale file, no lock
    taken = prepare(tmp_path, force=True)
    assert json.loads((run / folder.LOCK_NAME).read_text())["pid"] == os.getpid()
    taken.release()


# ------------------------------------------------------------------------- kill mid-write

KILL_ON_SECOND_CHECKPOINT = r"""
import os, signal, sys
from jppo import files
from jppo.train import main

real_replace, seen = os.replace, []

def replace(src, dst):
    if str(dst).endswith(".msgpack"):
        seen.append(dst)
        if len(seen) == 2:  # the temporary file is written and fsynced: die before the rename
            os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)

files.os.replace = replace
sys.exit(main(sys.argv[1:]))
"""


def test_a_kill_during_a_write_leaves_no_temporary_file_after_the_next_start(tmp_path):
    config = config_file(tmp_path)
    run = tmp_path / "results" / "ppo"
    done = subprocess.run([sys.executable, "-c", KILL_ON_SECOND_CHECKPOINT, config, "--results-dir",
                           str(tmp_path / "results"), "--quiet", "--no-export"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    left = [p for p in run.rglob("*") if files.is_temporary(p)]
    assert [p.parent.name for p in left] == ["checkpoints"]  # the cut write's temporary file
    assert [p.name for p in checkpoint.list_checkpoints(run)] == ["checkpoint-000000512.msgpack"]
    resumed = prepare(tmp_path, resume=True)  # the next start
    try:
        assert not [p for p in run.rglob("*") if files.is_temporary(p)]
        assert resumed.resume_from.name == "checkpoint-000000512.msgpack"
    finally:
        resumed.release()


def test_remove_temporaries_spares_other_files(tmp_path):
    keep = [tmp_path / "checkpoint-1.msgpack", tmp_path / ".hidden", tmp_path / "x.tmp",
            tmp_path / ".a.toolong123.tmp"]
    gone = [tmp_path / ".checkpoint-1.msgpack.0a1b2c3d.tmp", tmp_path / "sub" / ".run_info.json.k_9zq1x2.tmp"]
    for p in keep + gone:
        p.parent.mkdir(exist_ok=True)
        p.write_text("x")
    assert sorted(files.remove_temporaries(tmp_path)) == sorted(gone)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in gone)


# ------------------------------------------------------------------------- file modes

@pytest.mark.parametrize("umask, mode", [(0o027, 0o640), (0o022, 0o644), (0o077, 0o600)])
def test_files_follow_the_umask(tmp_path, umask, mode):
    """Every file goes through the one atomic writer (configuration.yaml, run_info.json,
    member.json, checkpoints) or is the ONNX model: each gets 0666 less the umask."""
    import jax
    import jppo
    from jppo.onnx.actor import export_onnx

    config = jppo.PPOConfig(hidden_units=8, num_layers=1)
    spec = jppo.ActionSpec.continuous(2)
    state = jppo.init_train_state(jax.random.PRNGKey(0), config, 4, spec)
    old = os.umask(umask)
    try:
        written = [files.write_atomic(tmp_path / "run_info.json", b"{}"),
                   checkpoint.save(tmp_path, 8, {"train": state},
                                   checkpoint.policy_meta(config, spec, 4, "B")),
                   export_onnx(tmp_path / "B.onnx", state.params, state.normalizer, config, spec, 4)]
    finally:
        os.umask(old)
    assert [oct(p.stat().st_mode & 0o777) for p in written] == [oct(mode)] * 3


def test_check_name_is_a_user_error_with_the_value_cut_short():
    with pytest.raises(UserError) as err:
        check_name("run id", "y" * 5000)
    assert len(str(err.value)) < 300
