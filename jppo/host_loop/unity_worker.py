"""One Unity worker process: a ``UnityEnvironment`` stepped on request from the trainer.

Started by ``jppo.host_loop.unity_env`` as a *script* (``python .../unity_worker.py FD``), not as a jppo
module, so it imports neither jppo nor JAX: mlagents-envs and numpy start in a fraction of
the time and memory ``import jppo`` takes (benchmarks/README.md). It talks over the socket
``FD`` with
``multiprocessing.connection`` messages (pickled tuples):

    trainer -> worker: first a settings dict (UnityEnvironment arguments, side channel values)
                       ("step", {behavior: actions [n, A] float32, [n, B] int32, or the pair
                                 of both for hybrid actions, in decision order})
                       ("close",)
    worker -> trainer: ("steps", specs or None, {behavior: (decision ids, obs list, rewards,
                        terminal ids, obs list, rewards, interrupted, allowed or None)})
                       ("error", kind, text)   then the worker exits
                       ("closed",)

``specs`` (a tuple of (name, observation shapes, continuous size, discrete branches, sensor
names, dimension properties)) is sent with the first report and whenever the set of behaviors
changes. ``allowed`` is ``[n, sum(branches)]`` bool, True where a discrete choice is allowed
(the negation of ``DecisionSteps.action_mask``, concatenated over branches), None for a
behavior without discrete actions. The Python side of the
protocol (protobuf parsing in pure Python) holds the GIL, so one
process per worker is what lets several Unity instances be served in parallel.
"""
import os
import sys

if __name__ == "__main__":
    # Run as a script, this file's folder (jppo/) leads sys.path, where config.py, export.py,
    # ... would shadow top-level modules of the same name.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

import signal  # noqa: E402
import traceback  # noqa: E402
from multiprocessing.connection import Connection  # noqa: E402

import numpy as np  # noqa: E402


def _make_env(settings: dict):
    from mlagents_envs.environment import UnityEnvironment
    from mlagents_envs.side_channel.engine_configuration_channel import EngineConfigurationChannel
    from mlagents_envs.side_channel.environment_parameters_channel import EnvironmentParametersChannel

    engine = EngineConfigurationChannel()
    # ML-Agents' EngineSettings defaults, time_scale from the run settings.
    engine.set_configuration_parameters(width=84, height=84, quality_level=5,
                                        time_scale=settings["time_scale"], target_frame_rate=-1,
                                        capture_frame_rate=60)
    parameters = EnvironmentParametersChannel()
    for name, value in settings["environment_parameters"].items():
        parameters.set_float_parameter(name, float(value))
    return UnityEnvironment(file_name=settings["file_name"], worker_id=settings["worker_id"],
                            base_port=settings["base_port"], seed=settings["seed"],
                            no_graphics=settings["no_graphics"],
                            timeout_wait=settings["timeout_wait"],
                            side_channels=[engine, parameters],
                            log_folder=settings.get("log_folder"))


def _specs(env) -> tuple:
    out = []
    for name, spec in env.behavior_specs.items():
        sensors = spec.observation_specs
        out.append((name, tuple(tuple(int(d) for d in o.shape) for o in sensors),
                    int(spec.action_spec.continuous_size),
                    tuple(int(b) for b in spec.action_spec.discrete_branches),
                    tuple(str(o.name) for o in sensors),
                    tuple(tuple(int(p) for p in o.dimension_property) for o in sensors)))
    return tuple(sorted(out))


def _allowed(steps, branches: tuple):
    """``[n, sum(branches)]`` bool, True where allowed, or None without discrete actions."""
    if not branches:
        return None
    if steps.action_mask is None:
        return np.ones((len(steps), sum(branches)), bool)
    return ~np.concatenate([np.asarray(m, bool) for m in steps.action_mask], axis=1)


def _report(env) -> dict:
    out = {}
    for name, spec in env.behavior_specs.items():
        d, t = env.get_steps(name)
        out[name] = (np.asarray(d.agent_id), [np.asarray(o, np.float32) for o in d.obs],
                     np.asarray(d.reward, np.float32), np.asarray(t.agent_id),
                     [np.asarray(o, np.float32) for o in t.obs], np.asarray(t.reward, np.float32),
                     np.asarray(t.interrupted, bool),
                     _allowed(d, tuple(spec.action_spec.discrete_branches)))
    return out


def _classify(error: BaseException) -> tuple:
    """``(kind, text)`` for the trainer; see ``jppo.host_loop.vec_env.EnvFault`` for the kinds."""
    from mlagents_envs import exception as ue

    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, ue.UnityTimeOutException):
        return "timeout", text
    if isinstance(error, ue.UnityWorkerInUseException):
        return "in_use", text
    if isinstance(error, ue.UnityCommunicatorStoppedException):
        return "exited", text
    if isinstance(error, ue.UnityEnvironmentException) and "shut down with return code" in text:
        return "exited", text
    if isinstance(error, RuntimeError) and ("NaN" in text or "Infinite" in text):
        return "nan", text  # mlagents_envs.rpc_utils checks every observation and reward
    if isinstance(error, ue.UnityException):
        return "unity", f"{type(error).__name__}: {text}"
    return "python", "".join(traceback.format_exception(type(error), error, error.__traceback__))


def _set_actions(env, actions: dict) -> None:
    from mlagents_envs.base_env import ActionTuple

    for name, values in actions.items():
        if isinstance(values, tuple):
            env.set_actions(name, ActionTuple(continuous=values[0], discrete=values[1]))
        elif values.dtype.kind == "f":
            env.set_actions(name, ActionTuple(continuous=values))
        else:
            env.set_actions(name, ActionTuple(discrete=values))


def serve(conn: Connection) -> int:
    """The worker loop; returns the process exit code."""
    settings = conn.recv()
    env, sent_specs = None, None
    try:
        env = _make_env(settings)
        env.reset()
        sent_specs = _specs(env)
        conn.send(("steps", sent_specs, _report(env)))
        while True:
            try:
                message = conn.recv()
            except EOFError:  # the trainer is gone
                return 0
            if message[0] == "close":
                env.close()
                env = None
                conn.send(("closed",))
                return 0
            _set_actions(env, message[1])
            env.step()
            specs = _specs(env)
            conn.send(("steps", None if specs == sent_specs else specs, _report(env)))
            sent_specs = specs
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return 0
    except Exception as error:  # reported to the trainer, which words the message
        try:
            conn.send(("error",) + _classify(error))
        except OSError:
            pass
        return 1
    finally:
        if env is not None:
            try:
                env.close()
            except Exception:
                pass


def main(argv) -> int:
    # Ctrl-C reaches the whole process group; the trainer decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return serve(Connection(int(argv[1])))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
