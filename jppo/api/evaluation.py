"""``evaluate_run``: a trained run's policy (any seed, any kept checkpoint) played for whole
episodes on its environment, stochastic and deterministic, with an animation of one episode.

    result = jppo.evaluate_run("results/cartpole", seed=3, episodes=100)   # seed 3 of the run
    result.deterministic.mean, result.stochastic.std, result.animation   # a .gif path

The environment is remade from the run (its checkpoint's ``env``: a built-in, registered,
``gymnax:<id>`` or ``module:factory`` name, with the run's ``environment_parameters``), or given
as ``env=``. The deterministic policy takes the mean action (the argmax for discrete actions),
which is what an exported ONNX model does in Unity; the stochastic one samples, as training did.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Optional

import jax
import numpy as np
import yaml

from jppo import envs, render
from jppo.core import observations
from jppo.core.policy import make_policy
from jppo.errors import UserError
from jppo.jax_loop.evaluate import episode_returns, episode_states
from jppo.jax_loop.rollout import observation_spec
from jppo.jax_loop.setup import make_env
from jppo.runs import checkpoint
from jppo.runs.checkpoint import add_policy_arguments  # for python -m jppo.evaluate


@dataclasses.dataclass(frozen=True)
class Scores:
    """Returns of ``episodes`` fresh episodes (``std`` over episodes, as ML-Agents reports it)."""

    mean: float
    std: float
    min: float
    max: float
    episodes: int
    mean_length: float

    @classmethod
    def of(cls, returns, lengths) -> "Scores":
        r, n = np.asarray(returns, np.float64), np.asarray(lengths, np.float64)
        return cls(float(r.mean()), float(r.std()), float(r.min()), float(r.max()), int(r.size),
                   float(n.mean()))


@dataclasses.dataclass(frozen=True)
class Evaluation:
    run: pathlib.Path
    env: str
    seed: int  # the seed the agent started from, as the run labels it
    steps: int  # the checkpoint's step count
    stochastic: Scores
    deterministic: Scores
    animation: Optional[pathlib.Path]  # None where not asked for or no renderer exists
    frames: int  # frames in the animation
    still: Optional[pathlib.Path]  # a PNG of the animation's middle frame
    member: Optional[int] = None  # a sweep's member (its member.json index)


def evaluate_run(run_dir, *, seed: Optional[int] = None, member: Optional[int] = None,
                 checkpoint_step: Optional[int] = None,
                 episodes: int = 100, max_steps: int = 1000, env: Any = None,
                 env_params: Any = None, animation: Any = "auto", frames: int = 200,
                 fps: int = 25, key: int = 0) -> Evaluation:
    """Scores of the run's policy over ``episodes`` episodes (each at most ``max_steps``
    decisions) and, for an environment with a renderer (``jppo.render``), an animation of one
    deterministic episode's first ``frames`` states.

    ``seed``: which of the run's seeds, by its value (``--seed 5 --num-seeds 2`` trained
    seeds 5 and 6); ``member``: a sweep's member, by its member.json index; neither: the first.
    ``animation``: ``"auto"`` writes ``RUN/evaluation/seed<S>-step<N>.gif`` (``member<I>-...``) (and a ``.png`` of
    its middle frame), a path writes there (``.gif`` or ``.mp4``), None writes none. ``key``
    seeds the evaluation episodes. A mistake raises ``UserError`` with one sentence.
    """
    for name, value, low in (("episodes", episodes, 1), ("max_steps", max_steps, 1),
                             ("frames", frames, 1), ("fps", fps, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UserError(f"{name} = {value!r} is not allowed; {name} must be an integer >= "
                            f"{low}.")
    run_dir = pathlib.Path(run_dir)
    saved = checkpoint.load_policy(run_dir, steps=checkpoint_step, seed=seed, member=member)
    env_name, environment = _environment(run_dir, env, env_params)
    params = environment.default_params  # an adapter, or adapt(env, env_params), holds them
    gives = observation_spec(environment, params)
    if observations.canonical(gives) != observations.canonical(saved.observation_size):
        raise UserError(f"the policy of {str(run_dir)!r} takes "
                        f"{observations.describe(saved.observation_size)}, but environment "
                        f"{env_name!r} gives {observations.describe(gives)}.")
    policy = make_policy(saved.config, saved.action_spec, saved.observation_size)
    base = jax.random.PRNGKey(key)
    scores = {}
    for deterministic in (False, True):
        returns, lengths = episode_returns(environment, params, policy, saved.params,
                                           saved.normalizer, base, episodes, max_steps,
                                           deterministic=deterministic)
        scores[deterministic] = Scores.of(jax.device_get(returns), jax.device_get(lengths))
    who = f"seed{saved.seed}" if member is None else f"member{member}"
    movie, still, count = _animate(run_dir, animation, env_name, environment, params, policy,
                                   saved, who, max_steps, frames, fps, base)
    return Evaluation(run_dir, env_name, saved.seed, saved.steps, scores[False], scores[True],
                      movie, count, still, member)


def _environment(run_dir: pathlib.Path, env: Any, env_params: Any):
    """``(name, Environment)``: ``env`` adapted, or the run's own environment remade."""
    if env is not None:
        return str(getattr(env, "name", None) or type(env).__name__), envs.adapt(env, env_params)
    meta, _ = checkpoint.read(checkpoint.latest(run_dir))
    name = meta.get("env")
    if not name or meta.get("driver") == "host":
        raise UserError(f"run {str(run_dir)!r} was not trained on a JAX environment "
                        f"({name or 'unknown'}); evaluate_run plays JAX environments only.")
    config = run_dir / "configuration.yaml"
    parameters = {}
    if config.is_file():
        resolved = yaml.safe_load(config.read_text()) or {}
        # ML-Agents' place, else the "run" section of runs written before issue 14.
        parameters = (resolved.get("environment_parameters")
                      or (resolved.get("run") or {}).get("environment_parameters") or {})
        # Sampled parameters and curricula are training's; the policy is evaluated at the
        # environment's defaults for them (the constants stay).
        parameters = {k: v for k, v in parameters.items() if not isinstance(v, dict)}
    try:
        return name, make_env(name, parameters)
    except UserError as err:
        raise UserError(f"cannot remake the environment of run {str(run_dir)!r}: {err} An "
                        "environment object given to jppo.fit is evaluated with "
                        "jppo.evaluate_run(run, env=...).") from None


def _animate(run_dir, animation, env_name, environment, params, policy, saved, who,
             max_steps, frames, fps, key):
    renderer = render.renderer_for(env_name)
    if animation is None or (animation == "auto" and renderer is None):
        return None, None, 0
    if renderer is None:
        raise UserError(f"there is no renderer for environment {env_name!r} (there are for "
                        f"{', '.join(render.renderer_names())}); add one with "
                        "jppo.render.register.")
    path = (run_dir / "evaluation" / f"{who}-step{saved.steps}.gif" if animation == "auto"
            else pathlib.Path(animation))
    states, rewards, length = jax.device_get(episode_states(
        environment, params, policy, saved.params, saved.normalizer, key, max_steps))
    count = min(int(length) + 1, frames)
    pick = [jax.tree_util.tree_map(lambda x, i=i: np.asarray(x[i]), states) for i in range(count)]
    totals = np.concatenate([[0.0], np.cumsum(rewards)])
    captions = [f"{env_name}  step {i}  return {totals[i]:.1f}" for i in range(count)]
    try:
        movie = render.animate(pick, params, renderer, path, fps=fps, captions=captions)
    except ValueError as err:
        raise UserError(str(err)) from None
    still = render.still(pick[count // 2], params, renderer, path.with_suffix(".png"),
                         captions[count // 2])
    return movie, still, count


__all__ = ["Evaluation", "Scores", "add_policy_arguments", "evaluate_run"]

