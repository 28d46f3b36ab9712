"""ML-Agents' 19 config/ppo example files (their settings recorded in
tests/data/mlagents_ppo_examples.yaml): each one trains on a JAX port, is refused naming what
jppo does not do, or (scenes jppo has no port of) is parsed with every value checked. None is
accepted with a setting dropped."""
import pathlib
import warnings

import pytest
import yaml

from jppo.core.config import ConfigWarning
from jppo.errors import UserError
from jppo.runs import environment_parameters, keys
from jppo.runs.settings import parse
from jppo.train import main

EXAMPLES = yaml.safe_load((pathlib.Path(__file__).parent / "data" /
                           "mlagents_ppo_examples.yaml").read_text())

TRAINS = ["3DBall.yaml", "3DBallHard.yaml", "Basic.yaml", "GridWorld.yaml"]
REFUSED = {
    "Hallway.yaml": "behaviors.Hallway.network_settings.memory = ",
    "Pyramids.yaml": "behaviors.Pyramids.reward_signals.curiosity = ",
    "PyramidsRND.yaml": "behaviors.Pyramids.reward_signals.rnd = ",
    # The file's lessons are written "- Lesson0: {...}", which ML-Agents' own parser refuses
    # too (Lesson is structured by strict_to_cls: "The option Lesson0 ... is invalid"); its
    # documentation writes "- name: Lesson0".
    "WallJump_curriculum.yaml": "unknown key 'Lesson0' in "
                                "environment_parameters.big_wall_height.curriculum[0]",
}
# Several behaviors each: trained together through Unity (tests/test_unity_behaviors.py).
SEVERAL = ["FoodCollector.yaml", "Match3.yaml", "WallJump.yaml"]
PARSED = ["3DBall_randomize.yaml", "Crawler.yaml", "PushBlock.yaml", "Sorter_curriculum.yaml",
          "Visual3DBall.yaml", "VisualFoodCollector.yaml", "Walker.yaml", "Worm.yaml"] + SEVERAL


def test_the_19_files_are_each_in_one_group():
    assert not set(SEVERAL) - set(PARSED)
    assert sorted(TRAINS + list(REFUSED) + PARSED) == sorted(EXAMPLES) and len(EXAMPLES) == 19


def leaves(node, path=()):
    for name, value in node.items():
        if isinstance(value, dict):
            yield from leaves(value, path + (name,))
        else:
            yield path + (name,), value


def assert_nothing_dropped(config: dict, settings, warning: str):
    """Every value of the file is where the table says it goes: an honoured value in the
    settings, a harmless one at its default or named in the warning; samplers and curricula
    as jppo.runs.environment_parameters reads them."""
    if "environment_parameters" in config:
        assert settings.environment_parameters == environment_parameters.normalize(
            config["environment_parameters"])
        config = {k: v for k, v in config.items() if k != "environment_parameters"}
    for path, value in leaves(config):
        key = keys.TABLE[keys.pattern(list(path))]
        if key.cls == keys.HONOURED:
            # A behavior's keys land in its own settings (RunSettings.for_behavior).
            view = settings.for_behavior(path[1]) if path[0] == "behaviors" else settings
            for target in key.target.split():
                kind, field = target.split(".")
                got = getattr(view.ppo if kind == "ppo" else view, field)
                assert got == value, (path, got, value)
        elif key.cls == keys.HARMLESS:
            assert value == key.default or ".".join(path) in (warning or ""), path
        else:
            assert value in key.inert or value == key.default, path


@pytest.mark.parametrize("name", PARSED + TRAINS)
def test_accepted_files_keep_every_setting(name):
    config = EXAMPLES[name]["config"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        settings = parse(config)
    warning = next((str(w.message) for w in caught if w.category is ConfigWarning), None)
    assert_nothing_dropped(config, settings, warning)
    if "threaded: true" in yaml.safe_dump(config):
        assert "threaded = true" in warning


@pytest.mark.parametrize("name", SEVERAL)
def test_files_of_several_behaviors_keep_each_behaviors_own_settings(name):
    config = EXAMPLES[name]["config"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        settings = parse(config)
    assert settings.behavior_names == tuple(config["behaviors"])
    for behavior, section in config["behaviors"].items():
        view = settings.for_behavior(behavior)
        assert (view.behavior, view.ppo.max_steps, view.summary_freq) == (
            behavior, section["max_steps"], section["summary_freq"])
    with warnings.catch_warnings():  # jppo's resolved file reads back to the same settings
        warnings.simplefilter("ignore", ConfigWarning)
        assert parse(settings.to_yaml_dict()) == settings


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_files_name_what_jppo_does_not_do(name):
    with pytest.raises(UserError) as err:
        parse(EXAMPLES[name]["config"])
    assert REFUSED[name] in str(err.value)


@pytest.mark.slow
# Two of the four, to keep the suite short (a compile each, about a minute on 2 cores): 3DBall
# and GridWorld train on the same ports and code path (their values are checked above, and
# configs/3DBall.yaml holds 3DBall's unchanged).
@pytest.mark.parametrize("name, env", [("3DBallHard.yaml", "3DBallHard"), ("Basic.yaml", "Basic")])
def test_port_trains_a_few_thousand_steps(tmp_path, name, env):
    # The file as it is, with the run shortened on the command line to one update (a whole
    # buffer: 12000 steps for 3DBall, 256 for Basic).
    config = tmp_path / name
    config.write_text(yaml.safe_dump(EXAMPLES[name]["config"]))
    (behavior,) = EXAMPLES[name]["config"]["behaviors"].values()
    buffer = behavior["hyperparameters"]["buffer_size"]
    assert main([str(config), "--env", env, "--results-dir", str(tmp_path / "r"), "--quiet",
                 "--no-export", "--set", f"max_steps={buffer}"]) == 0
    rows = (tmp_path / "r" / "ppo" / "progress.csv").read_text().splitlines()
    assert len(rows) >= 2 and int(rows[-1].split(",")[0]) >= buffer
