"""One Unity worker process: a ``UnityEnvironment`` stepped on request from the trainer.

Started by ``jppo.host_loop.unity_env`` as a *script* (``python .../unity_worker.py FD``), not as a jppo
module, so it imports neither jppo nor JAX: mlagents-envs and numpy start in a fraction of
the time and memory ``import jppo`` takes (benchmarks/README.md). It talks over the socket
``FD`` with
``multiprocessing.connection`` messages (pickled tuples):

    trainer -> worker: first a settings dict (UnityEnvironment arguments, side channel values:
                       ``environment_parameters`` a list of EnvironmentParametersChannel calls
                       ``(method, name, *arguments)``, made before the first reset;
                       ``port_wait``: seconds a restarted worker waits for its port to be
                       freed by the failed worker it replaces)
                       ("step", {behavior: actions [n, A] float32, [n, B] int32, or the pair
                                 of both for hybrid actions, in decision order}[, calls])
                       (calls: environment parameter calls made before this step: a lesson
                       changed)
                       ("close",)
    worker -> trainer: ("steps", specs or None, {behavior: (decision ids, obs list, rewards,
                        terminal ids, obs list, rewards, interrupted, allowed or None)})
                       ("error", kind, text, exception classes)   then the worker exits
                       (the class names of the exception and its bases, for the restart rules
                       of ``jppo.host_loop.restarts``)
                       ("closed",)

``specs`` (a tuple of (name, observation shapes, continuous size, discrete branches, sensor
names, dimension properties)) is sent with the first report and whenever the set of behaviors
changes. ``allowed`` is ``[n, sum(branches)]`` bool, True where a discrete choice is allowed
(the negation of ``DecisionSteps.action_mask``, concatenated over branches), None for a
behavior without discrete actions. The Python side of the
protocol (protobuf parsing in pure Python) holds the GIL, so one
process per worker is what lets several Unity instances be served in parallel.

The gRPC server Unity connects to listens on the settings' ``bind`` address (mlagents-envs'
own ``RpcCommunicator`` listens on every interface, "[::]"). The worker ignores SIGINT and
SIGTERM (a terminal's Ctrl-C and Slurm's SIGTERM reach the whole process group): the trainer
decides when it stops, after saving its checkpoint. SIGUSR1 is the trainer's "close now" for a
worker inside one of Unity's waits (connecting, a step): the wait ends, the environment closes
without waiting for a build to quit, the worker exits. mlagents-envs' ``atexit`` hook, which
printed a traceback when UnityEnvironment never started (a port in use), does nothing then.
"""
import os
import sys

if __name__ == "__main__":
    # Run as a script, this file's folder (jppo/) leads sys.path, where config.py, export.py,
    # ... would shadow top-level modules of the same name.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

import signal  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from multiprocessing.connection import Connection  # noqa: E402

import numpy as np  # noqa: E402


class _CloseNow(Exception):
    """The trainer sent SIGUSR1: stop waiting for Unity and exit."""


_closing = False


def _close_now(signum, frame):
    global _closing
    _closing = True
    raise _CloseNow


def _bound_environment(host: str, port_wait: float = 0.0):
    """``UnityEnvironment`` whose gRPC server listens on ``host`` only (same options and
    checks as mlagents-envs' own server otherwise). ``port_wait``: seconds a restarted worker
    waits for its port, which the failed worker it replaces frees as it closes."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from mlagents_envs import rpc_communicator as rpc
    from mlagents_envs.communicator_objects.unity_to_external_pb2_grpc import (
        add_UnityToExternalProtoServicer_to_server)
    from mlagents_envs.environment import UnityEnvironment
    from mlagents_envs.exception import UnityWorkerInUseException

    class BoundCommunicator(rpc.RpcCommunicator):
        def create_server(self):
            deadline = time.monotonic() + port_wait
            while True:
                try:
                    self.check_port(self.port)  # mlagents-envs' test that nothing holds the port
                    break
                except UnityWorkerInUseException:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.1)
            try:
                self.server = grpc.server(thread_pool=ThreadPoolExecutor(max_workers=10),
                                          options=(("grpc.so_reuseport", 1),))
                self.unity_to_external = rpc.UnityToExternalServicerImplementation()
                add_UnityToExternalProtoServicer_to_server(self.unity_to_external, self.server)
                address = f"[{host}]" if ":" in host else host
                if not self.server.add_insecure_port(f"{address}:{self.port}"):
                    raise OSError(f"cannot listen on {address}:{self.port}")
                self.server.start()
                self.is_open = True
            except Exception:
                raise UnityWorkerInUseException(self.worker_id) from None

    class BoundEnvironment(UnityEnvironment):
        def _get_communicator(self, worker_id, base_port, timeout_wait):
            return BoundCommunicator(worker_id, base_port, timeout_wait)

        def _close(self, timeout=None):
            if not hasattr(self, "_communicator"):  # never started (the port was in use)
                return
            super()._close(0 if _closing else timeout)  # closing now: a build is killed at once

    return BoundEnvironment


def _make_env(settings: dict):
    from mlagents_envs.side_channel.engine_configuration_channel import EngineConfigurationChannel
    from mlagents_envs.side_channel.environment_parameters_channel import EnvironmentParametersChannel

    engine = EngineConfigurationChannel()
    # ML-Agents' EngineSettings defaults, time_scale from the run settings.
    engine.set_configuration_parameters(width=84, height=84, quality_level=5,
                                        time_scale=settings["time_scale"], target_frame_rate=-1,
                                        capture_frame_rate=60)
    parameters = EnvironmentParametersChannel()
    _set_parameters(parameters, settings["environment_parameters"])
    environment = _bound_environment(settings.get("bind", "localhost"),
                                     settings.get("port_wait", 0.0))
    return parameters, environment(file_name=settings["file_name"], worker_id=settings["worker_id"],
                            base_port=settings["base_port"], seed=settings["seed"],
                            no_graphics=settings["no_graphics"],
                            timeout_wait=settings["timeout_wait"],
                            side_channels=[engine, parameters],
                            log_folder=settings.get("log_folder"))


# The EnvironmentParametersChannel methods a trainer may ask for (mlagents-learn's calls).
_PARAMETER_CALLS = ("set_float_parameter", "set_uniform_sampler_parameters",
                    "set_gaussian_sampler_parameters", "set_multirangeuniform_sampler_parameters")


def _set_parameters(channel, calls) -> None:
    for method, *arguments in calls:
        if method not in _PARAMETER_CALLS:
            raise ValueError(f"unknown environment parameter call {method!r}")
        getattr(channel, method)(*arguments)


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
        parameters, env = _make_env(settings)
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
            if len(message) > 2:
                _set_parameters(parameters, message[2])
            _set_actions(env, message[1])
            env.step()
            specs = _specs(env)
            conn.send(("steps", None if specs == sent_specs else specs, _report(env)))
            sent_specs = specs
    except (EOFError, BrokenPipeError, ConnectionResetError, _CloseNow):
        return 0
    except Exception as error:  # reported to the trainer, which words the message
        try:
            conn.send(("error",) + _classify(error)
                      + (tuple(c.__name__ for c in type(error).__mro__),))
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
    # Ctrl-C and SIGTERM reach the whole process group; the trainer decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, _close_now)
    try:
        return serve(Connection(int(argv[1])))
    except _CloseNow:
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
