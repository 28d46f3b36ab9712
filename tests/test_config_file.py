"""Reading a trainer config as ML-Agents reads it, and refusing what it would silently get
wrong: duplicate keys (naming both lines), alias bombs, numbers YAML 1.1 leaves as text,
integer fields given whole floats, and every run setting out of range. Each mistake: exit 2,
one sentence, nothing written."""
import math
import textwrap
import time

import pytest
import yaml

from jppo.runs.config_file import MAX_YAML_VALUES, number_text, read_yaml
from jppo.runs.settings import load
from jppo.train import main
from tiny_config import tiny_cartpole


def write(tmp_path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def refused(tmp_path, capsys, config, *args) -> str:
    """Run the CLI; it must exit 2 with one sentence and write nothing; returns the sentence."""
    code = main([config, "--results-dir", str(tmp_path / "results"), "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("jppo: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "results").exists()
    return err[len("jppo: error: "):-1]


def tiny(tmp_path, **changes) -> str:
    data = tiny_cartpole(512)
    for dotted, value in changes.items():
        *parents, leaf = dotted.replace("B.", "behaviors.CartPole.", 1).split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


# ------------------------------------------------------------------------- duplicates, bombs

def test_a_key_given_twice_is_refused_naming_the_key_and_both_lines(tmp_path, capsys):
    config = write(tmp_path, """\
        behaviors:
          CartPole:
            hyperparameters:
              learning_rate: 0.001
              batch_size: 32
              learning_rate: 0.1
        """)
    assert refused(tmp_path, capsys, config) == (
        f"config file {config!r} gives key 'learning_rate' twice in one mapping (lines 4 and 6); "
        "keep one.")


def test_a_section_given_twice_is_refused(tmp_path, capsys):
    config = write(tmp_path, """\
        behaviors:
          CartPole: {max_steps: 512}
        jppo: {env: CartPole-v1}
        behaviors:
          Other: {max_steps: 512}
        """)
    assert "gives key 'behaviors' twice in one mapping (lines 1 and 4)" in refused(
        tmp_path, capsys, config)


def test_a_merged_key_may_be_overridden_as_yaml_means():
    data = read_yaml("base: &b {gamma: 0.9, strength: 1.0}\nextrinsic:\n  <<: *b\n  gamma: 0.99\n",
                     "x")
    assert data["extrinsic"] == {"gamma": 0.99, "strength": 1.0}


def test_billion_laughs_is_refused_quickly_in_one_sentence(tmp_path, capsys):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    lines += ["behaviors:", "  CartPole:", "    hyperparameters: *a8"]  # 10**9 values
    config = write(tmp_path, "\n".join(lines) + "\n")
    started = time.monotonic()
    message = refused(tmp_path, capsys, config)
    assert time.monotonic() - started < 10
    assert message == (f"config file {config!r} expands its aliases (*references to &anchors) to "
                       f"more than {MAX_YAML_VALUES:,} values; a trainer config needs a few "
                       "hundred, so write it without the repeated aliases.")


def test_an_alias_used_a_few_times_is_fine():
    data = read_yaml("h: &h {batch_size: 32}\nb:\n  A: {hyperparameters: *h}\n  B: {hyperparameters: *h}\n", "x")
    assert data["b"]["A"]["hyperparameters"] == data["b"]["B"]["hyperparameters"] == {"batch_size": 32}


# ------------------------------------------------------------------------- YAML 1.1 numbers

@pytest.mark.parametrize("text, value", [("3e-4", 3e-4), ("1e3", 1000.0), ("1.0e3", 1000.0),
                                         ("-2.5E-2", -0.025), (".5", 0.5), ("1_000", 1000.0),
                                         ("abc", "abc"), ("nan", "nan"), ("1e", "1e")])
def test_number_text_reads_what_yaml_1_1_leaves_as_text(text, value):
    assert number_text(text) == value


def test_yaml_1_1_numbers_are_read_as_ml_agents_reads_them(tmp_path):
    # PyYAML reads 3e-4 and 1e-2 as strings and 2.048e+3 / 5.0e+3 as floats; ML-Agents' cattrs
    # calls float() and int() on them: learning_rate 0.0003, buffer_size 2048, max_steps 5000.
    config = write(tmp_path, """\
        behaviors:
          CartPole:
            hyperparameters: {learning_rate: 3e-4, beta: 1e-2, buffer_size: 2.048e+3, batch_size: 1.28e+2}
            max_steps: 5.0e+3
            time_horizon: 1e2
        jppo: {env: CartPole-v1}
        """)
    ppo = load(config).ppo
    assert (ppo.learning_rate, ppo.beta) == (3e-4, 1e-2)
    assert (ppo.buffer_size, ppo.batch_size, ppo.max_steps, ppo.time_horizon) == (2048, 128, 5000, 100)
    assert all(type(v) is int for v in (ppo.buffer_size, ppo.batch_size, ppo.max_steps, ppo.time_horizon))


def test_an_integer_field_refuses_a_number_that_is_not_whole(tmp_path, capsys):
    # ML-Agents' int(2048.5) would silently train with 2048.
    assert refused(tmp_path, capsys, tiny(tmp_path, **{"B.hyperparameters.buffer_size": 2048.5})) == (
        "buffer_size = 2048.5 is not a whole number; buffer_size must be an integer.")


def test_set_reads_numbers_the_same_way(tmp_path):
    assert main([tiny(tmp_path), "--results-dir", str(tmp_path / "r"), "--quiet", "--no-export",
                 "--set", "learning_rate=3e-4", "--set", "buffer_size=2.56e+2",
                 "--set", "max_steps=2.56e+2"]) == 0
    saved = yaml.safe_load((tmp_path / "r" / "ppo" / "configuration.yaml").read_text())
    hyper = saved["behaviors"]["CartPole"]["hyperparameters"]
    assert hyper["learning_rate"] == 3e-4 and hyper["buffer_size"] == 256


# ------------------------------------------------------------------------- ranges, one sentence

OUT_OF_RANGE = [
    ("buffer 10**12", {"B.hyperparameters.buffer_size": 10**12}, [],
     "buffer_size = 1000000000000 is not allowed; buffer_size must be an integer from 1 to 2147483647."),
    ("max_steps 10**20", {"B.max_steps": 10**20}, [],
     "max_steps = 100000000000000000000 is not allowed; max_steps must be an integer from 1 to "),
    ("Adam steps beyond int32", {"B.max_steps": 2**61}, [],
     "max_steps = 2305843009213693952 is not allowed with buffer_size = 128, batch_size = 32, "),
    ("seed 2**64", {}, ["--seed", str(2**64)],
     "seed = 18446744073709551616 is not allowed; seeds (seed to seed + num_seeds - 1) must lie "),
    ("timeout nan", {}, ["--timeout-wait", "nan"],
     "timeout_wait = nan is not allowed; --timeout-wait is a number of seconds > 0 and <= 86400."),
    ("timeout negative", {}, ["--timeout-wait", "-5"],
     "timeout_wait = -5.0 is not allowed; --timeout-wait is a number of seconds > 0 and <= 86400."),
    ("time scale nan", {}, ["--time-scale", "nan"],
     "time_scale = nan is not allowed; --time-scale is a number from 1 to 100 (Unity clamps it "),
    ("time scale 500", {}, ["--time-scale", "500"], "time_scale = 500.0 is not allowed; "),
    ("empty --env", {}, ["--env", ""],
     "--env '' is empty; give a JAX environment's name (CartPole-v1, Pendulum-v1, 3DBall, "),
    ("empty jppo.env", {"jppo.env": " "}, [], "env = '' is not allowed; give a JAX environment's "),
    ("bad port", {}, ["--base-port", "70000"], "base_port = 70000 is not allowed; a port is "),
    ("--bind with nothing to bind", {}, ["--bind", "0.0.0.0"],
     "--bind has nothing to bind with --env CartPole-v1: it places the sockets jppo listens on"),
    ("--bind elsewhere", {}, ["--env", "editor", "--bind", "192.0.2.1"],
     "--bind '192.0.2.1' is not an address this machine can listen on ("),
    ("--bind empty", {}, ["--env", "editor", "--bind", ""], "--bind '' is empty; "),
    ("gravity nan", {"environment_parameters": {"gravity": math.nan}}, [],
     "environment_parameters.gravity = nan is not allowed; an environment parameter must be a "),
    ("gravity inf", {"environment_parameters": {"gravity": math.inf}}, [],
     "environment_parameters.gravity = inf is not allowed; "),
    ("episode length -3", {"environment_parameters": {"max_steps_in_episode": -3}}, [],
     "environment_parameters.max_steps_in_episode = -3 is not allowed for CartPole-v1; "
     "max_steps_in_episode must be a whole number from 1 to 2147483647 (default 500)."),
    ("episode length 1e30", {"environment_parameters": {"max_steps_in_episode": 1.0e30}}, [],
     "environment_parameters.max_steps_in_episode = 1e+30 is not allowed for CartPole-v1; "),
    ("episode length 2.5", {"environment_parameters": {"max_steps_in_episode": 2.5}}, [],
     "environment_parameters.max_steps_in_episode = 2.5 is not allowed for CartPole-v1; "),
    ("negative mass", {"environment_parameters": {"masspole": -0.1}}, [],
     "environment_parameters.masspole = -0.1 is not allowed for CartPole-v1; masspole must be >= 0"),
    ("beyond float32", {"environment_parameters": {"gravity": 1e39}}, [],
     "environment_parameters.gravity = 1e+39 is not allowed for CartPole-v1; it must be a finite "),
    ("huge integer parameter", {"environment_parameters": {"gravity": 10**400}}, [],
     "environment_parameters.gravity = "),
]


@pytest.mark.parametrize("case, changes, args, message", OUT_OF_RANGE, ids=[c[0] for c in OUT_OF_RANGE])
def test_out_of_range_is_one_sentence_before_any_write(tmp_path, capsys, case, changes, args, message):
    assert refused(tmp_path, capsys, tiny(tmp_path, **changes), *args).startswith(message)


def test_a_huge_value_is_shown_cut_to_a_sentence(tmp_path, capsys):
    message = refused(tmp_path, capsys, tiny(tmp_path, **{"B.hyperparameters.batch_size": "x" * 5000}))
    assert len(message) < 200 and message.startswith("batch_size = 'xxx")
