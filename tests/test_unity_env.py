"""UnityVecEnv's pieces that need no Unity: the worker script's isolation, the checks on what
workers declare, and the wording of each fault."""
import subprocess
import sys

import pytest

from jppo.host_loop import unity_env
from jppo.host_loop.unity_env import UnityVecEnv
from jppo.core.networks import ActionSpec
from jppo.host_loop.vec_env import BehaviorSpec, EnvFault

B = "3DBall?team=0"


def test_worker_script_imports_neither_jax_nor_jppo():
    """Run as a script the worker starts in 0.7 s and 60 MB, not the 3 s and 240 MB of JAX."""
    out = subprocess.run(
        [sys.executable, "-c", "import runpy, sys; "
         f"runpy.run_path({str(unity_env.WORKER_SCRIPT)!r}, run_name='not_main'); "
         "import mlagents_envs.environment; print('jax' in sys.modules, 'jppo' in sys.modules)"],
        capture_output=True, text=True, timeout=60, cwd="/")
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_workers_must_declare_the_same_behavior():
    env = UnityVecEnv(None, 2, 6000)
    declared = (B, ((8,),), 2, (), ("VectorSensor_size8",), ((1,),))
    env._check_specs(0, (declared,))
    env._check_specs(1, (declared,))  # the same again: fine
    assert env.specs == {B: BehaviorSpec(B, ((8,),), 2, (), ("VectorSensor_size8",), ((1,),))}
    with pytest.raises(EnvFault) as fault:
        env._check_specs(1, ((B, ((7,),), 2, (), ("VectorSensor_size7",), ((1,),)),))
    assert fault.value.kind == "shape" and fault.value.worker == 1
    assert str(fault.value) == (
        "Unity worker 1 (port 6001) declares behavior '3DBall?team=0' with observations [(7,)] "
        "and 2 continuous actions, but another worker declared [(8,)] and 2 continuous; every "
        "worker must run the same scene.")


@pytest.mark.parametrize("file_name, kind, text, starting, message", [
    ("build/3DBall.x86_64", "exited", "Environment shut down with return code -9 (SIGKILL).", False,
     "Unity worker 1 (port 5006) ended unexpectedly (Environment shut down with return code -9 (SIGKILL))"),
    ("build/3DBall.x86_64", "timeout", "...", True,
     "Unity worker 1 (port 5006) did not answer within 5 s after starting 'build/3DBall.x86_64': "
     "check that it is a build of a scene with ML-Agents, or raise --timeout-wait"),
    (None, "timeout", "...", False,
     "Unity worker 1 (port 5005) stopped answering for 5 s: Unity crashed, froze or was closed"),
    (None, "in_use", "...", True,
     "port 5005 is already in use (another training run or Unity environment holds it): stop it "
     "or pass another --base-port"),
])
def test_fault_messages_name_the_worker_and_the_cause(file_name, kind, text, starting, message):
    env = UnityVecEnv(file_name, 2, None, timeout_wait=5)
    fault = env._fault(1, kind, text, starting)
    assert (fault.kind, fault.worker, str(fault)) == (kind, 1, message)


class _Specs:
    """What ``pick_behaviors`` reads of a VecEnv."""

    def __init__(self, *specs):
        self.specs = {s.name: s for s in specs}


SUPPORTED = ("jppo trains vector sensors (any number, stacked or not) with continuous actions, "
             "discrete branches (with action masks) or both.")


@pytest.mark.parametrize("specs, message", [
    ((BehaviorSpec("Walker?team=0", ((8,),), 2),),
     "the scene's behavior is 'Walker' but the config trains '3DBall'; name the behavior in the "
     "config's 'behaviors' section as in Behavior Parameters."),
    ((BehaviorSpec(B, ((8,), (84, 84, 3)), 2, (), ("VectorSensor_size8", "CameraSensor"),
                   ((1,), (2, 2, 1))),),
     "behavior '3DBall?team=0' has sensor 'CameraSensor' of shape (84, 84, 3), an image (visual "
     "observation); " + SUPPORTED),
    ((BehaviorSpec(B, ((4,), (20, 23)), 0, (3, 3, 3), ("VectorSensor_size4", "BufferSensor"),
                   ((1,), (4, 1))),),
     "behavior '3DBall?team=0' has sensor 'BufferSensor' of shape (20, 23), a variable-length "
     "buffer sensor; " + SUPPORTED),
    ((BehaviorSpec(B, ((8,),), 0, ()),), "behavior '3DBall?team=0' has no actions; " + SUPPORTED),
    ((), "the environment has 0 behaviors (none); the configuration trains '3DBall' alone, so "
         "add a section under 'behaviors' for each of the others (jppo trains them together), or "
         "give them a model or Heuristic Only in Behavior Parameters."),
    ((BehaviorSpec(B, ((8,),), 2), BehaviorSpec("3DBallCopy?team=0", ((8,),), 2)),
     "the environment has 2 behaviors (3DBall?team=0, 3DBallCopy?team=0); the configuration "
     "trains '3DBall' alone, so add a section under 'behaviors' for each of the others (jppo "
     "trains them together), or give them a model or Heuristic Only in Behavior Parameters."),
])
def test_behaviors_jppo_cannot_train_are_named(specs, message):
    from jppo.host_loop.connect import pick_behaviors
    from jppo.runs.settings import DEFAULT_CONFIG, load

    with pytest.raises(EnvFault) as fault:
        pick_behaviors(_Specs(*specs), load(DEFAULT_CONFIG).behavior_names, "editor")
    assert str(fault.value) == message


@pytest.mark.parametrize("specs, message", [
    ((), "the environment has no behavior; the configuration trains A, B."),
    ((BehaviorSpec("A?team=0", ((8,),), 2), BehaviorSpec("C?team=0", ((8,),), 2)),
     "the scene has behavior 'C', which the configuration does not train (A, B); add a section "
     "for it under 'behaviors', or give it a model or Heuristic Only in Behavior Parameters."),
    ((BehaviorSpec("A?team=0", ((8,),), 2), BehaviorSpec("A?team=1", ((8,),), 2)),
     "behavior 'A' plays as several teams (A?team=0, A?team=1): that is self-play, which jppo "
     "does not implement; give every agent of the behavior team id 0."),
])
def test_a_run_of_several_behaviors_names_what_it_cannot_train(specs, message):
    from jppo.host_loop.connect import pick_behaviors

    with pytest.raises(EnvFault) as fault:
        pick_behaviors(_Specs(*specs), ("A", "B"), "editor")
    assert str(fault.value) == message


def test_a_run_of_several_behaviors_takes_those_present_and_admits_the_others_later():
    from jppo.host_loop.connect import admit_behavior, pick_behaviors

    scene = _Specs(BehaviorSpec("B?team=0", ((20,),), 0, (3,)))
    assert pick_behaviors(scene, ("A", "B"), "editor") == [("B?team=0", 20, ActionSpec.discrete(3))]
    scene.specs["A?team=0"] = BehaviorSpec("A?team=0", ((8,), (2,)), 2)
    assert admit_behavior(scene, "A?team=0", ("A", "B"), "editor", True) == (
        "A?team=0", ((8,), (2,)), ActionSpec.continuous(2))
    with pytest.raises(EnvFault, match="the environment now has 2 behaviors"):
        admit_behavior(scene, "A?team=0", ("B",), "editor", False)


def test_the_one_behavior_is_picked_with_its_sizes():
    from jppo.host_loop.connect import pick_behaviors
    from jppo.runs.settings import DEFAULT_CONFIG, load

    names = load(DEFAULT_CONFIG).behavior_names
    (got,) = pick_behaviors(_Specs(BehaviorSpec(B, ((8,),), 2)), names, "editor")
    assert got == (B, 8, ActionSpec.continuous(2))
    (got,) = pick_behaviors(_Specs(BehaviorSpec("CartPole", ((4,),), 0, (2,))), names,
                            "gymnasium:CartPole-v1")  # no name check: Gymnasium has no behavior names
    assert got == ("CartPole", 4, ActionSpec.discrete(2))
    # Several vector sensors (stacked or not) and any mix of actions are trained.
    (got,) = pick_behaviors(_Specs(BehaviorSpec(B, ((27,), (18,)), 2, (3, 2))), names, "editor")
    assert got == (B, ((27,), (18,)), ActionSpec.hybrid(2, (3, 2)))


def test_unity_workers_come_from_num_envs_or_env_settings_never_from_jppo_num_envs(tmp_path):
    import yaml

    from jppo.host_loop.connect import num_workers
    from jppo.runs.settings import DEFAULT_CONFIG
    from jppo.train import build_parser, resolve

    data = yaml.safe_load(DEFAULT_CONFIG.read_text())  # jppo.num_envs: 12 (JAX copies)
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(data))
    data["env_settings"] = {"num_envs": 3}
    with_env = tmp_path / "env.yaml"
    with_env.write_text(yaml.safe_dump(data))
    def settings(path, n=None):  # as the command line resolves them
        flags = [str(path)] + ([] if n is None else ["--num-envs", str(n)])
        return resolve(build_parser().parse_args(flags)).settings

    assert num_workers(settings(plain), "editor") == 1
    assert num_workers(settings(with_env), "builds/3DBall.x86_64") == 3
    assert num_workers(settings(with_env, 2), "editor") == 2
    assert num_workers(settings(plain), "gymnasium:CartPole-v1") == 12
