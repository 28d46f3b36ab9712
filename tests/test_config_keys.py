"""The key table (jppo.runs.keys): every ML-Agents key honoured, harmless or refused, never
dropped; default_settings merged as ML-Agents merges it; mlagents-learn's resolved
configuration.yaml and jppo's own accepted back."""
import pathlib
import warnings

import pytest
import yaml

from jppo.core.config import ConfigWarning
from jppo.errors import UserError
from jppo.runs import document, keys
from jppo.runs.settings import load, parse
from jppo.train import main
from tiny_config import tiny_cartpole

DATA = pathlib.Path(__file__).parent / "data"
README = pathlib.Path(__file__).parents[1] / "README.md"


def concrete(path: str) -> list[str]:
    return path.replace(keys.BEHAVIOR, "CartPole").replace(keys.PARAMETER, "mass").split(".")


def doc_with(path: str, value) -> dict:
    data = {"behaviors": {"CartPole": {}}}
    *parents, leaf = concrete(path)
    node = data
    for name in parents:
        node = node.setdefault(name, {})
    node[leaf] = value
    return data


def other_value(key: keys.Key):
    """A well-typed value that is neither ML-Agents' default nor inert."""
    if "|" in key.kind:
        return next((c for c in key.kind.split("|") if c != key.default and c not in key.inert),
                    None)
    return {"int": 7 if key.default != 7 else 8, "float": 0.375, "bool": not bool(key.default),
            "str": "x", "section": {}, "mapping": {}, "list": ["a"],
            "lessons": [{"name": "Lesson0", "value": 1.0}]}[key.kind]


def wrong_type(key: keys.Key):
    return 5 if key.kind == "str" else "bogus"


def refusing_ancestor(path: str) -> str:
    """The first not-implemented key on ``path`` (the one a refusal names)."""
    parts = path.split(".")
    for i in range(1, len(parts) + 1):
        key = keys.TABLE.get(".".join(parts[:i]))
        if key is not None and key.cls == keys.NOT_IMPLEMENTED:
            return ".".join(concrete(".".join(parts[:i])))
    raise AssertionError(path)


LEAVES = [k for k in keys.KEYS if k.path not in ("behaviors", f"behaviors.{keys.BEHAVIOR}")]


@pytest.mark.parametrize("key", LEAVES, ids=[k.path for k in LEAVES])
def test_every_key_is_in_one_class_and_behaves_as_its_class(key):
    assert key.cls in (keys.HONOURED, keys.HARMLESS, keys.NOT_IMPLEMENTED)
    # null is always accepted (under a not-implemented section, or in a parameter's sampler,
    # the section itself is not null)
    baseline = None
    if keys.PARAMETER not in key.path and (key.cls != keys.NOT_IMPLEMENTED or refusing_ancestor(
            key.path) == ".".join(concrete(key.path))):
        baseline = document.check(doc_with(key.path, None), "f").values
    named = ".".join(concrete(key.path)).replace("default_settings", "behaviors.CartPole")
    value = other_value(key)
    if key.cls == keys.HONOURED and key.target is None:  # a sampler's or curriculum's key:
        # kept in the parameter's mapping (jppo.runs.environment_parameters reads it)
        out = document.check(doc_with(key.path, value), "f")
        leaf = concrete(key.path)[-1]
        assert out.values["run.environment_parameters"]["mass"][leaf] == value
        assert out.warning() is None
    elif key.cls == keys.HONOURED:
        out = document.check(doc_with(key.path, value), "f")
        for target in key.target.split():
            assert out.values[target] == value
        assert out.warning() is None
    elif key.cls == keys.HARMLESS:
        out = document.check(doc_with(key.path, value), "f")
        assert out.values == baseline  # no effect
        if key.kind != "section":
            assert f"{named} = " in out.warning()
    elif value is None:  # every value is the default or inert: goal_conditioning_type
        assert key.default not in key.inert
        warning = document.check(doc_with(key.path, key.default), "f").warning()
        assert f"{named} = {key.default} (ML-Agents' defaults" in warning
    else:
        with pytest.raises(UserError) as err:
            document.check(doc_with(key.path, value), "f")
        assert f"{refusing_ancestor(key.path)} = " in str(err.value)
        assert "is not implemented by jppo" in str(err.value)
        assert str(err.value).count(". ") == 0  # one sentence
        for inert in key.inert:
            assert document.check(doc_with(key.path, inert), "f").warning() is None
    # type-checked in every class
    if key.kind not in ("section", "mapping"):
        with pytest.raises(UserError, match=r"has the wrong type|is not allowed"):
            document.check(doc_with(key.path, wrong_type(key)), "f")


def test_the_table_covers_ml_agents_release_19_schema():
    # Field names of mlagents 0.28.0's settings classes (mlagents/trainers/settings.py).
    trainer = ["trainer_type", "hyperparameters", "network_settings", "reward_signals",
               "init_path", "keep_checkpoints", "checkpoint_interval", "max_steps",
               "time_horizon", "summary_freq", "threaded", "self_play", "behavioral_cloning"]
    schema = {
        "": ["default_settings", "behaviors", "env_settings", "engine_settings",
             "environment_parameters", "checkpoint_settings", "torch_settings", "debug"],
        f"behaviors.{keys.BEHAVIOR}": trainer, "default_settings": trainer,
        f"behaviors.{keys.BEHAVIOR}.hyperparameters": [
            "batch_size", "buffer_size", "learning_rate", "learning_rate_schedule", "beta",
            "epsilon", "lambd", "num_epoch", "beta_schedule", "epsilon_schedule"],
        f"behaviors.{keys.BEHAVIOR}.network_settings": [
            "normalize", "hidden_units", "num_layers", "vis_encode_type", "memory",
            "goal_conditioning_type", "deterministic"],
        f"behaviors.{keys.BEHAVIOR}.network_settings.memory": ["sequence_length", "memory_size"],
        f"behaviors.{keys.BEHAVIOR}.reward_signals": ["extrinsic", "gail", "curiosity", "rnd"],
        f"behaviors.{keys.BEHAVIOR}.reward_signals.gail": [
            "gamma", "strength", "network_settings", "learning_rate", "encoding_size",
            "use_actions", "use_vail", "demo_path"],
        f"behaviors.{keys.BEHAVIOR}.self_play": [
            "save_steps", "team_change", "swap_steps", "window",
            "play_against_latest_model_ratio", "initial_elo"],
        f"behaviors.{keys.BEHAVIOR}.behavioral_cloning": [
            "demo_path", "steps", "strength", "samples_per_update", "num_epoch", "batch_size"],
        "env_settings": ["env_path", "env_args", "base_port", "num_envs", "num_areas", "seed",
                         "max_lifetime_restarts", "restarts_rate_limit_n",
                         "restarts_rate_limit_period_s"],
        "engine_settings": ["width", "height", "quality_level", "time_scale",
                            "target_frame_rate", "capture_frame_rate", "no_graphics"],
        "checkpoint_settings": ["run_id", "initialize_from", "load_model", "resume", "force",
                                "train_model", "inference", "results_dir"],
        "torch_settings": ["device"],
    }
    for section, names in schema.items():
        assert set(names) <= set(keys.children(section)), section


def test_the_readme_shows_the_table():
    assert keys.markdown() in README.read_text()


def test_mlagents_learn_resolved_configuration_loads_with_one_warning(recwarn):
    settings = load(DATA / "mlagents_resolved_3DBall.yaml")
    p = settings.ppo
    assert (settings.behavior, settings.run_id, settings.seed, settings.base_port) == (
        "3DBall", "3DBall", -1, 5005)
    assert (p.batch_size, p.buffer_size, p.learning_rate, p.beta, p.lambd, p.time_horizon) == (
        64, 12000, 3e-4, 1e-3, 0.99, 1000)
    assert (p.beta_schedule, p.epsilon_schedule, p.normalize, settings.summary_freq) == (
        "linear", "linear", True, 12000)
    assert (settings.max_lifetime_restarts, settings.restarts_rate_limit_n,
            settings.restarts_rate_limit_period_s) == (10, 1, 60)
    lines = [str(w.message) for w in recwarn.list if w.category is ConfigWarning]
    assert lines == [
        "accepted without effect: behaviors.3DBall.network_settings.goal_conditioning_type = "
        "hyper, env_settings.num_areas = 1 (ML-Agents' defaults, which jppo does not do); the "
        "README's configuration table says why."]


def test_a_non_default_value_of_the_same_key_is_refused():
    data = yaml.safe_load((DATA / "mlagents_resolved_3DBall.yaml").read_text())
    data["env_settings"]["num_areas"] = 3
    with pytest.raises(UserError, match=r"^env_settings.num_areas = 3 is not implemented by "
                                        r"jppo: jppo does not ask the build for more training"):
        parse(data)


def test_yaml_1_1_float_text_in_a_file():
    data = yaml.safe_load("behaviors: {CartPole: {hyperparameters: {learning_rate: 3e-4}}}")
    assert data["behaviors"]["CartPole"]["hyperparameters"]["learning_rate"] == "3e-4"
    assert parse(data).ppo.learning_rate == 3e-4


def test_env_settings_timeout_wait_is_honoured():
    assert parse({"behaviors": {"B": {}}, "env_settings": {"timeout_wait": 5}}).timeout_wait == 5.0


def test_default_settings_merge_as_ml_agents_merges_them():
    data = {"default_settings": {
                "hyperparameters": {"batch_size": 32, "learning_rate_schedule": "constant"},
                "reward_signals": {"extrinsic": {"gamma": 0.9}}, "max_steps": 1000},
            "behaviors": {"B": {"hyperparameters": {"buffer_size": 256,
                                                    "learning_rate_schedule": "linear"},
                                "reward_signals": {"extrinsic": {"strength": 0.5}}}}}
    p = parse(data).ppo
    assert (p.batch_size, p.buffer_size, p.max_steps, p.gamma, p.strength) == (
        32, 256, 1000, 0.9, 0.5)
    # ML-Agents completes default_settings first (beta/epsilon schedules follow *its*
    # learning_rate_schedule), then lays the behavior over it: the behavior's linear rate does
    # not carry to beta and epsilon.
    assert (p.learning_rate_schedule, p.beta_schedule, p.epsilon_schedule) == (
        "linear", "constant", "constant")
    # Keys the behavior leaves out take ML-Agents' defaults, not jppo's.
    assert (p.num_epoch, p.hidden_units, p.time_horizon) == (3, 128, 64)


def test_default_settings_refusals_name_default_settings():
    data = {"default_settings": {"network_settings": {"memory": {"memory_size": 64}}},
            "behaviors": {"B": {}}}
    with pytest.raises(UserError, match=r"^default_settings.network_settings.memory = "):
        parse(data)


def test_a_harmless_key_is_named_in_one_warning_line(recwarn):
    data = {"behaviors": {"B": {"threaded": True, "network_settings": {
        "vis_encode_type": "nature_cnn"}}}, "torch_settings": {"device": "cuda"}, "debug": True}
    parse(data)
    lines = [str(w.message) for w in recwarn.list if w.category is ConfigWarning]
    # vis_encode_type is honoured (issue 15): no longer among the keys without effect.
    assert lines == ["accepted without effect: behaviors.B.threaded = true, "
                     "torch_settings.device = cuda, "
                     "debug = true (no effect here); the README's configuration table says why."]


@pytest.mark.parametrize("path, value, message", [
    ("B.threaded", "yes please", "behaviors.B.threaded = 'yes please' has the wrong type"),
    # Honoured trainer keys are named as the PPOConfig field they set.
    ("B.network_settings.vis_encode_type", "bogus", "vis_encode_type = 'bogus' is not allowed; "
                                                   "vis_encode_type must be one of 'simple', "),
    ("B.network_settings.memory", {"memory_size": 128}, "behaviors.B.network_settings.memory = "),
    ("B.self_play", {"window": 10}, "behaviors.B.self_play = {'window': 10} is not implemented"),
    ("checkpoint_settings.resume", True, "checkpoint_settings.resume = True is not implemented"
                                         " by jppo: jppo reads it from the command line only; "
                                         "remove it and pass --resume"),
    ("env_settings.env_args", ["-x"], "env_settings.env_args = ['-x'] is not implemented"),
    ("engine_settings.capture_frame_rate", 30, "engine_settings.capture_frame_rate = 30 is not"),
])
def test_what_issue_14_found_dropped_is_now_refused(path, value, message):
    data = {"behaviors": {"B": {}}}
    *parents, leaf = path.replace("B.", "behaviors.B.", 1).split(".")
    node = data
    for name in parents:
        node = node.setdefault(name, {})
    node[leaf] = value
    with pytest.raises(UserError) as err:
        parse(data)
    assert str(err.value).startswith(message)


@pytest.mark.slow
def test_jppo_configuration_fed_back_reproduces_the_run(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_cartpole(768)))
    common = ["--results-dir", str(tmp_path / "results"), "--quiet", "--no-export"]
    assert main([str(config), "--run-id", "first", *common]) == 0
    resolved = tmp_path / "results" / "first" / "configuration.yaml"
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)  # accepted back without a warning
        assert load(resolved) == load(config).__class__(**{
            **load(config).__dict__, "run_id": "first", "results_dir": str(tmp_path / "results"),
            "env": "CartPole-v1", "export_onnx": False})
    assert main([str(resolved), "--run-id", "again", *common]) == 0

    def rows(run):
        lines = (tmp_path / "results" / run / "progress.csv").read_text().splitlines()
        timed = lines[0].split(",").index("wall_time_s")
        timing = {i for i, name in enumerate(lines[0].split(","))
                  if "time" in name or "per_s" in name}
        assert timed in timing
        return [[v for i, v in enumerate(line.split(",")) if i not in timing] for line in lines]

    assert rows("again") == rows("first") and len(rows("first")) == 4


def test_the_cli_prints_the_warning_once_on_stderr(tmp_path, capsys):
    data = tiny_cartpole(256, threaded=True)
    data["debug"] = True
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(data))
    # --resume of a run that does not exist: refused after the config is read, nothing trains
    assert main([str(config), "--results-dir", str(tmp_path / "r"), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == ("jppo: warning: accepted without effect: behaviors.CartPole.threaded = true, "
                      "debug = true (no effect here); the README's configuration table says why.")
    assert len(err) == 2 and err[1].startswith("jppo: error: --resume: run 'ppo' does not exist")
