"""Sweeps: every (value, seed) pair is a member of one compiled program, in its own folder.

Member (v, s) starts from the same state as ``--set name=v --seed s`` and runs the same
updates, batched: it equals that single run up to the rounding of batched matmuls and of the
swept value being a float32 argument instead of a constant (the 2-seed test in
test_train_cli.py uses the same 1e-6 tolerance). A stopped and resumed sweep equals a straight
one exactly.
"""
import csv
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import yaml

from jppo.errors import UserError
from jppo.runs import checkpoint
from jppo.train import main
from tiny_config import tiny_cartpole

TINY = tiny_cartpole(1024, keep_checkpoints=2)
SWEEP = ["--sweep", "learning_rate=1e-3,3e-3", "--num-seeds", "2", "--seed", "5"]


def run_cli(tmp, *args):
    config = tmp / "tiny.yaml"
    if not config.exists():
        config.write_text(yaml.safe_dump(TINY))
    return main([str(config), "--results-dir", str(tmp / "results"), "--quiet", *args])


DRIVER = r"""
import json, sys
from jppo.train import main
print("CODES " + json.dumps([main(args) for args in json.loads(sys.argv[1])]))
"""


def run_sequence(tmp, runs: list[list[str]]) -> tuple[list[int], str]:
    """CLI runs one after the other in one fresh process with JAX's persistent compilation
    cache on: the straight, stopped and resumed sweeps are one program, compiled once, and
    Python and JAX start once."""
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    common = [str(config), "--results-dir", str(tmp / "results"), "--quiet"]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    # The test session's cache (tests/compile_cache.py) where there is one, else its own.
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(tmp / "jax-cache"))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    out = subprocess.run([sys.executable, "-c", DRIVER, json.dumps([common + r for r in runs])],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [l for l in out.stdout.splitlines() if l.startswith("CODES ")][-1]
    return json.loads(line[len("CODES "):]), out.stderr


def final_state(folder: pathlib.Path):
    meta, raw = checkpoint.read(checkpoint.latest(folder))
    return meta, raw


def flat(tree, prefix=""):
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(flat(v, f"{prefix}/{k}"))
        return out
    return {prefix: np.asarray(tree)}


MEMBERS = [("0.001", 5), ("0.001", 6), ("0.003", 5), ("0.003", 6)]


def test_sweep(tmp_path):
    """The runs in sequence in one test (pytest-xdist would repeat a shared fixture per worker)."""
    codes, err = run_sequence(tmp_path, [
        ["--run-id", "sweep", *SWEEP],  # exports the members' ONNX models
        ["--run-id", "single", "--set", "learning_rate=3e-3", "--seed", "6", "--no-export"],
        ["--run-id", "split", *SWEEP, "--no-export", "--stop-after-steps", "512"],
        ["--run-id", "split", *SWEEP, "--no-export", "--resume"],
        ["--run-id", "sweep", "--resume", "--sweep", "learning_rate=1e-3,2e-3", "--num-seeds", "2",
         "--seed", "5"],
    ])
    assert codes == [0, 0, 0, 0, 2], err[-3000:]
    check_folders(tmp_path / "results" / "sweep")
    check_member_equals_single_run(tmp_path, member=3, run_id="single")
    check_resumed_equals_straight(tmp_path)
    errors = [l for l in err.splitlines() if "error" in l.lower()]
    assert errors == ["jppo: error: cannot resume: the checkpoint was made with sweep = "
                      "{'learning_rate': [0.001, 0.003]}, this command asks for "
                      "{'learning_rate': [0.001, 0.002]}; give the same --sweep flags."]


def check_folders(folder):
    for index, (value, seed) in enumerate(MEMBERS):
        member = folder / f"learning_rate={value}" / f"seed-{seed}"
        info = json.loads((member / "member.json").read_text())
        assert info["index"] == index and info["seed"] == seed
        assert info["values"] == {"learning_rate": float(value)}
        rows = list(csv.DictReader((member / "progress.csv").open()))
        assert [int(r["step"]) for r in rows] == [256, 512, 768, 1024]
        assert list((member / "CartPole").glob("events.out.tfevents.*"))
        assert (member / "learning_curve.png").stat().st_size > 1000
        assert (member / "CartPole.onnx").stat().st_size > 1000
    summary = list(csv.DictReader((folder / "sweep_summary.csv").open()))
    assert [(r["learning_rate"], r["seeds"]) for r in summary] == [("0.001", "2"), ("0.003", "2")]
    info = json.loads((folder / "run_info.json").read_text())
    assert info["num_members"] == 4 and info["sweep"] == {"learning_rate": [0.001, 0.003]}
    # The table's mean and std are over the seeds' final rewards.
    for row, setting in zip(summary, info["summary"]):
        finals = [m["final_reward"] for m in info["members"]
                  if m["learning_rate"] == setting["learning_rate"]]
        assert len(finals) == 2
        assert float(row["final_reward_mean"]) == pytest.approx(np.mean(finals))
        assert float(row["final_reward_std"]) == pytest.approx(np.std(finals))
    assert (folder / "sweep_comparison.png").stat().st_size > 1000
    # One checkpoint of the whole batch: 4 members on the leading axis.
    meta, raw = final_state(folder)
    assert meta["num_members"] == 4 and meta["steps"] == 1024
    assert np.asarray(raw["updates"]).tolist() == [8, 8, 8, 8]
    # A member is picked by its index (its seeds are shared), and knows its seed.
    assert checkpoint.load_policy(folder, member=3).seed == 6
    with pytest.raises(UserError, match=r"is a sweep, whose members share seeds; pick one with "
                                        r"--member from 0 to 3"):
        checkpoint.load_policy(folder, seed=5)


def check_member_equals_single_run(tmp, member, run_id):
    value, seed = MEMBERS[member]
    _, single = final_state(tmp / "results" / run_id)
    _, batch = final_state(tmp / "results" / "sweep")
    a, b = flat(single["train"]), flat(batch["train"])
    assert a.keys() == b.keys()
    for name in a:
        if a[name].dtype.kind == "f":
            np.testing.assert_allclose(b[name][member], a[name][0], rtol=1e-4, atol=1e-6,
                                       err_msg=name)
        else:
            np.testing.assert_array_equal(b[name][member], a[name][0], err_msg=name)
    # The member's environments saw the same episodes.
    rows = lambda f: [(r["step"], r["episodes"]) for r in csv.DictReader(f.open())]
    assert rows(tmp / "results" / "sweep" / f"learning_rate={value}" / f"seed-{seed}" /
                "progress.csv") == rows(tmp / "results" / run_id / "progress.csv")


def check_resumed_equals_straight(tmp):
    _, straight = final_state(tmp / "results" / "sweep")
    _, resumed = final_state(tmp / "results" / "split")
    a, b = flat(straight), flat(resumed)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    drop_time = lambda p: [",".join(r.split(",")[:2] + r.split(",")[3:-1])
                           for r in p.read_text().splitlines()]
    for value, seed in MEMBERS:
        rel = pathlib.Path(f"learning_rate={value}", f"seed-{seed}", "progress.csv")
        assert drop_time(tmp / "results" / "split" / rel) == drop_time(tmp / "results" / "sweep" / rel)


BAD_SWEEPS = [
    (["--sweep", "batch_size=32,64"],
     "--sweep batch_size: not sweepable (it fixes array shapes or code paths, so it cannot vary "
     "inside one compiled program); sweepable hyperparameters are: learning_rate, beta, epsilon, "
     "lambd, gamma, strength, value_coef, kl_target, kl_coef."),
    (["--sweep", "learning_rat=1e-3"],
     "--sweep learning_rat: unknown hyperparameter; sweepable hyperparameters are: learning_rate, "),
    (["--sweep", "learning_rate"],
     "--sweep 'learning_rate' is not of the form name=value,value,..., e.g. --sweep "
     "learning_rate=1e-4,3e-4,1e-3."),
    (["--sweep", "learning_rate=1e-3,fast"],
     "--sweep learning_rate: 'fast' is not a number; give numbers separated by commas"),
    (["--sweep", "gamma=0.9,1.5"],
     "--sweep gamma: gamma = 1.5 is not allowed; gamma must be a number in (0, 1]."),
    (["--sweep", "gamma=0.9,0.9"], "--sweep gamma lists 0.9 twice; give each value once"),
    (["--sweep", "gamma=0.9", "--sweep", "gamma=0.8"], "--sweep gamma is given twice;"),
    (["--sweep", "gamma=0.9,0.8", "--set", "gamma=0.9"],
     "--sweep gamma and --set gamma contradict each other;"),
]


@pytest.mark.parametrize("args, message", BAD_SWEEPS, ids=[" ".join(a) for a, _ in BAD_SWEEPS])
def test_bad_sweep_is_one_sentence_and_exit_code_2(tmp_path, capsys, args, message):
    assert run_cli(tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("jppo: error: " + message)
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "results").exists()
