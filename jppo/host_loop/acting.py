"""The host loop's policy call: one jitted act for the deciding agents of every worker that
reported, padded to a few batch sizes so a run compiles a handful of programs."""
from __future__ import annotations

import jax
import numpy as np

from jppo import distributed
from jppo.core import observations
from jppo.core.config import PPOConfig
from jppo.core.networks import ActionSpec
from jppo.core.policy import make_policy

_MIN_BATCH = 8


def bucket(n: int) -> int:
    """Padded batch size for ``n`` agents: a power of two, so a run compiles a handful."""
    return max(_MIN_BATCH, 1 << max(0, n - 1).bit_length())


class Acting:
    """``acting(obs [n, D], masks [n, M] or None) -> (actions, log_probs)`` as numpy, sampled
    with the parameters last given to ``use``; ``obs`` is a tuple of ``[n, D_i]`` for several
    sensors, ``masks`` (True: allowed) the agents' action masks for a behavior with discrete
    branches. Each call draws fresh randomness: the key is folded with a counter that starts at
    the run's step count, so a resumed run does not replay its first actions."""

    def __init__(self, config: PPOConfig, action_spec: ActionSpec, observation_size,
                 seed: int, counter: int):
        policy = make_policy(config, action_spec)

        def act(params, normalizer, obs, masks, key, counter):
            action, log_prob, _ = policy.act(params, normalizer, obs,
                                             jax.random.fold_in(key, counter), masks)
            return action, log_prob

        self._act = jax.jit(act)
        self._key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
        if jax.process_count() > 1:  # each process samples its own actions
            self._key = jax.random.fold_in(self._key, jax.process_index())
        self._counter = counter
        self._rows = 0
        self._shapes = observations.sensor_shapes(observation_size)
        self._single = observations.is_single(observation_size)
        self._mask_size = action_spec.mask_size
        self._params = None

    def use(self, params, normalizer) -> None:
        """Act with these (replicated) parameters from now on: this process's own copy."""
        self._params = distributed.local_replica((params, normalizer))

    def __call__(self, obs, masks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        sensors = (obs,) if self._single else tuple(obs)
        n = len(sensors[0])
        # The widest batch so far: the number of workers reporting together varies, and a
        # narrower padding would compile the policy again.
        self._rows = max(self._rows, bucket(n))
        padded = []
        for values, shape in zip(sensors, self._shapes):
            batch = np.zeros((self._rows,) + shape, np.float32)
            batch[:n] = values
            padded.append(batch)
        batch_masks = None
        if self._mask_size:  # padding rows allow every choice
            batch_masks = np.ones((self._rows, self._mask_size), bool)
            if masks is not None:
                batch_masks[:n] = masks
        actions, log_probs = self._act(*self._params, padded[0] if self._single else tuple(padded),
                                       batch_masks, self._key, self._counter)
        self._counter += 1
        return np.asarray(actions)[:n], np.asarray(log_probs)[:n]


__all__ = ["Acting", "bucket"]
