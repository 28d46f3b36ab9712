"""python -m jppo.train: bad input gets one sentence and exit code 2; runs resume exactly."""
import hashlib
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import yaml

from jppo.runs import checkpoint
from jppo.train import main
from event_files import scalars
from tiny_config import tiny_cartpole

TINY = tiny_cartpole(1536, keep_checkpoints=2)


def write_config(tmp_path, data=TINY, name="tiny.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


def run_cli(tmp_path, *args, config=None):
    config = config or write_config(tmp_path)
    return main([config, "--results-dir", str(tmp_path / "results"), "--quiet", "--no-export", *args])


def tree_digest(folder: pathlib.Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def with_changes(path: str, value):
    """TINY with the key at dotted ``path`` (``B`` stands for behaviors.CartPole) set to ``value``."""
    data = yaml.safe_load(yaml.safe_dump(TINY))
    *parents, leaf = path.replace("B.", "behaviors.CartPole.", 1).split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return data


BAD_CONFIGS = [
    ("unknown hyperparameter key", with_changes("B.hyperparameters.lr", 0.1),
     "unknown key 'lr' in behaviors.CartPole.hyperparameters; allowed keys are: batch_size, "),
    ("unknown top-level key", with_changes("trainer", "x"),
     "unknown key 'trainer' in the top level; allowed keys are: "),
    ("wrong type", with_changes("B.hyperparameters.batch_size", "sixty-four"),
     "batch_size = 'sixty-four' has the wrong type; batch_size must be an integer."),
    ("value rejected", with_changes("B.reward_signals.extrinsic.gamma", 1.5),
     "gamma = 1.5 is not allowed; gamma must be a number in (0, 1]."),
    ("batch larger than buffer", with_changes("B.hyperparameters.batch_size", 256),
     "batch_size = 256 is larger than buffer_size = 128; batch_size must be <= buffer_size."),
    ("unknown environment", with_changes("jppo.env", "MountainCar-v9"),
     "unknown environment 'MountainCar-v9'; known environments are: CartPole-v1, Pendulum-v1, "
     "3DBall, 3DBallHard, Basic, GridWorld, VisualGridWorld (and gymnax:<id>, "
     "package.module:factory); or pass a "
     "Unity build path, 'editor', or gymnasium:<id>."),
    ("unsupported trainer", with_changes("B.trainer_type", "sac"),
     "behaviors.CartPole.trainer_type = 'sac' is not implemented by jppo: jppo trains trainer_type 'ppo' only."),
]


@pytest.mark.parametrize("case, data, message", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_is_one_sentence_and_exit_code_2(tmp_path, capsys, case, data, message):
    assert run_cli(tmp_path, config=write_config(tmp_path, data)) == 2
    err = capsys.readouterr().err
    assert err.startswith("jppo: error: " + message)
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "results").exists()  # nothing written


def test_missing_config_file(tmp_path, capsys):
    assert main([str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err == (f"jppo: error: config file '{tmp_path / 'nope.yaml'}' does not "
                                       "exist; give the path of a trainer YAML such as configs/3DBall.yaml.\n")


def test_malformed_yaml(tmp_path, capsys):
    path = write_config(tmp_path, "behaviors:\n  CartPole: [unclosed\n")
    assert main([path]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"jppo: error: config file '{path}' is malformed YAML at line 3")


def test_bad_override_names_the_allowed_names(tmp_path, capsys):
    assert run_cli(tmp_path, "--set", "learning_rat=1e-3") == 2
    assert capsys.readouterr().err.startswith(
        "jppo: error: --set learning_rat: unknown hyperparameter; allowed names are: batch_size, ")
    assert run_cli(tmp_path, "--set", "learning_rate=-1") == 2
    assert "learning_rate = -1.0 is not allowed" in capsys.readouterr().err


def test_resume_without_a_run(tmp_path, capsys):
    assert run_cli(tmp_path, "--run-id", "ghost", "--resume") == 2
    assert capsys.readouterr().err == (f"jppo: error: --resume: run 'ghost' does not exist in "
                                       f"'{tmp_path / 'results'}'; check --run-id and --results-dir, "
                                       "or start it without --resume.\n")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One tiny CartPole run to completion (1536 steps, 12 updates), shared by several tests."""
    tmp = tmp_path_factory.mktemp("run")
    assert run_cli(tmp, "--run-id", "done") == 0
    return tmp


def test_existing_run_is_refused_and_left_untouched(finished_run, capsys):
    folder = finished_run / "results" / "done"
    before = tree_digest(folder)
    assert run_cli(finished_run, "--run-id", "done") == 2
    assert capsys.readouterr().err == (f"jppo: error: run 'done' already exists in "
                                       f"'{finished_run / 'results'}'; use --resume to continue it, "
                                       "--force to overwrite it, or another --run-id.\n")
    # A bad config with --force must not delete the old run either.
    bad = write_config(finished_run, with_changes("B.hyperparameters.batch_size", 512), "bad.yaml")
    assert run_cli(finished_run, "--run-id", "done", "--force", config=bad) == 2
    assert tree_digest(folder) == before


def test_corrupt_checkpoint_is_refused(finished_run, capsys):
    folder = finished_run / "results" / "done"
    last = checkpoint.latest(folder)
    original = last.read_bytes()
    try:
        last.write_bytes(original[: len(original) // 2])
        before = tree_digest(folder)
        assert run_cli(finished_run, "--run-id", "done", "--resume") == 2
        err = capsys.readouterr().err
        assert err.startswith(f"jppo: error: checkpoint '{last}' is corrupt or not a jppo checkpoint")
        assert tree_digest(folder) == before
    finally:
        last.write_bytes(original)


def read_event_tags(folder: pathlib.Path) -> set:
    """Scalar tags in TensorBoard event files."""
    return set(scalars(folder))


def test_run_folder_contents(finished_run):
    folder = finished_run / "results" / "done"
    assert (folder / "configuration.yaml").is_file()
    resolved = yaml.safe_load((folder / "configuration.yaml").read_text())
    assert resolved["behaviors"]["CartPole"]["hyperparameters"]["batch_size"] == 32
    assert resolved["jppo"]["env"] == resolved["jppo"]["run_record"]["env"] == "CartPole-v1"
    rows = (folder / "progress.csv").read_text().splitlines()
    assert rows[0].startswith("step,seed,wall_time_s,cumulative_reward,episode_length,policy_loss")
    assert [int(r.split(",")[0]) for r in rows[1:]] == [256 * i for i in range(1, 7)]
    tags = read_event_tags(folder / "CartPole")
    for tag in ("Environment/Cumulative Reward", "Environment/Episode Length", "Losses/Policy Loss",
                "Losses/Value Loss", "Policy/Entropy", "Policy/Learning Rate", "Policy/Epsilon",
                "Policy/Beta"):
        assert tag in tags
    # checkpoint_interval 512 over 1536 steps, keep_checkpoints 2: the last two remain.
    assert [p.name for p in checkpoint.list_checkpoints(folder)] == [
        "checkpoint-000001024.msgpack", "checkpoint-000001536.msgpack"]
    assert (folder / "learning_curve.png").stat().st_size > 1000
    assert not list(folder.rglob("*.tmp"))


def final_state(folder: pathlib.Path):
    meta, raw = checkpoint.read(checkpoint.latest(folder))
    return meta["steps"], raw


def assert_same_tree(a, b, atol=0.0):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same_tree(a[k], b[k], atol)
    elif atol:
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=atol)
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_stopped_and_resumed_run_ends_exactly_like_a_straight_run(finished_run):
    tmp = finished_run
    assert run_cli(tmp, "--run-id", "split", "--stop-after-steps", "512") == 0
    split = tmp / "results" / "split"
    assert checkpoint.latest(split).name == "checkpoint-000000512.msgpack"
    assert run_cli(tmp, "--run-id", "split", "--resume") == 0
    steps_a, a = final_state(tmp / "results" / "done")
    steps_b, b = final_state(split)
    assert steps_a == steps_b == 1536
    assert_same_tree(a, b)
    drop_time = lambda text: [",".join(r.split(",")[:2] + r.split(",")[3:-1]) for r in text.splitlines()]
    assert drop_time((split / "progress.csv").read_text()) == drop_time(
        (tmp / "results" / "done" / "progress.csv").read_text())


def test_stop_after_steps_stops_at_the_first_update_past_it(finished_run):
    """128 steps per update, 2 updates per summary: 300 steps end after update 3 (384), not at
    the next summary (512); resumed, the run's summaries fall at 512, 768, ... again and it ends
    with the straight run's parameters."""
    tmp = finished_run
    assert run_cli(tmp, "--run-id", "cut", "--stop-after-steps", "300") == 0
    cut = tmp / "results" / "cut"
    steps = lambda: [int(r.split(",")[0]) for r in (cut / "progress.csv").read_text().splitlines()[1:]]
    assert [p.name for p in checkpoint.list_checkpoints(cut)] == ["checkpoint-000000384.msgpack"]
    assert steps() == [256, 384]
    assert run_cli(tmp, "--run-id", "cut", "--resume", "--stop-after-steps", "1") == 0
    assert checkpoint.latest(cut).name == "checkpoint-000000512.msgpack"
    assert run_cli(tmp, "--run-id", "cut", "--resume") == 0
    assert steps() == [256, 384, 512, 768, 1024, 1280, 1536]
    assert_same_tree(final_state(tmp / "results" / "done")[1], final_state(cut)[1])


def test_seed_member_zero_equals_a_single_seed_run(finished_run):
    tmp = finished_run
    assert run_cli(tmp, "--run-id", "two", "--num-seeds", "2") == 0
    _, single = final_state(tmp / "results" / "done")
    _, pair = final_state(tmp / "results" / "two")
    first = lambda tree: {k: first(v) for k, v in tree.items()} if isinstance(tree, dict) else np.asarray(tree)[0]
    # A batch of two seeds runs batched matmuls, which sum in another order: equal up to rounding.
    assert_same_tree(first(single["train"]["params"]), first(pair["train"]["params"]), atol=1e-6)
    rows = (tmp / "results" / "two" / "progress.csv").read_text().splitlines()[1:]
    assert {r.split(",")[1] for r in rows} == {"0", "1"}


def test_cli_process_prints_no_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "jppo.train", str(tmp_path / "missing.yaml")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and out.stderr.startswith("jppo: error: config file")


@pytest.mark.slow
def test_piped_output_and_seeds_labelled_by_their_seed(tmp_path):
    """``--seed 5 --num-seeds 2`` as a user pipes it to a log: progress on stdout, whole lines
    (never wrapped at 80 columns), no colour codes, nothing on stderr; both seeds called 5 and 6
    in the table, progress.csv, the TensorBoard folders, the ONNX files and run_info.json, and
    python -m jppo.export --seed 6 exports the second."""
    from jppo.export import main as export_main

    out = subprocess.run([sys.executable, "-m", "jppo.train", write_config(tmp_path), "--run-id",
                          "pair", "--results-dir", str(tmp_path / "results"), "--seed", "5",
                          "--num-seeds", "2"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    lines = out.stdout.splitlines()
    assert "\x1b" not in out.stdout
    assert lines[0].startswith("compiled 2 x 4 CartPole-v1 environment(s) in ") and len(lines[0]) > 80
    info = [line for line in lines if line.startswith("[INFO]")]
    assert [line.split(". ")[1] for line in info] == [f"Step: {256 * i}" for i in range(1, 7)]
    assert all(line.endswith(". Training.") for line in info)
    assert all(line == line.rstrip() for line in lines)
    (header,) = [line.split("┃")[1:-1] for line in lines if line.startswith("┃")]
    assert [c.strip() for c in header] == ["seed", "steps", "final reward", "best reward",
                                           "episode length", "steps/s, last period"]
    body = [line.split("│")[1:-1] for line in lines if line.startswith("│")]
    assert [cells[0].strip() for cells in body] == ["5", "6"]
    folder = tmp_path / "results" / "pair"
    run_info = json.loads((folder / "run_info.json").read_text())
    assert [s["seed"] for s in run_info["seeds"]] == [5, 6]
    assert lines[-1] == (f"whole run: {run_info['steps_per_second']:,.0f} steps/s (1,536 steps in "
                         f"{run_info['train_s']:,.1f} s, compile excluded; run_info.json)")
    rows = [r.split(",") for r in (folder / "progress.csv").read_text().splitlines()[1:]]
    assert sorted({r[1] for r in rows}) == ["5", "6"]
    assert sorted(p.name for p in folder.glob("CartPole*")) == [
        "CartPole-seed5", "CartPole-seed5.onnx", "CartPole-seed6", "CartPole-seed6.onnx"]
    assert export_main([str(folder), "--seed", "6", "--output", str(tmp_path / "six.onnx")]) == 0
    assert (tmp_path / "six.onnx").read_bytes() == (folder / "CartPole-seed6.onnx").read_bytes()
    assert export_main([str(folder), "--seed", "0"]) == 2
