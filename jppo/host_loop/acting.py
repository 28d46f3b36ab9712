"""The host loop's policy call: one jitted act for the deciding agents of every worker that
reported, padded to a few batch sizes so a run compiles a handful of programs."""
from __future__ import annotations

import jax
import numpy as np

from jppo import distributed
from jppo.core.config import PPOConfig
from jppo.core.networks import ActionSpec
from jppo.core.policy import make_policy

_MIN_BATCH = 8


def bucket(n: int) -> int:
    """Padded batch size for ``n`` agents: a power of two, so a run compiles a handful."""
    return max(_MIN_BATCH, 1 << max(0, n - 1).bit_length())


class Acting:
    """``acting(obs [n, D]) -> (actions, log_probs)`` as numpy, sampled with the parameters
    last given to ``use``. Each call draws fresh randomness: the key is folded with a counter
    that starts at the run's step count, so a resumed run does not replay its first actions."""

    def __init__(self, config: PPOConfig, action_spec: ActionSpec, observation_size: int,
                 seed: int, counter: int):
        policy = make_policy(config, action_spec)

        def act(params, normalizer, obs, key, counter):
            action, log_prob, _ = policy.act(params, normalizer, obs, jax.random.fold_in(key, counter))
            return action, log_prob

        self._act = jax.jit(act)
        self._key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
        if jax.process_count() > 1:  # each process samples its own actions
            self._key = jax.random.fold_in(self._key, jax.process_index())
        self._counter = counter
        self._rows = 0
        self._observation_size = observation_size
        self._params = None

    def use(self, params, normalizer) -> None:
        """Act with these (replicated) parameters from now on: this process's own copy."""
        self._params = distributed.local_replica((params, normalizer))

    def __call__(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(obs)
        # The widest batch so far: the number of workers reporting together varies, and a
        # narrower padding would compile the policy again.
        self._rows = max(self._rows, bucket(n))
        batch = np.zeros((self._rows, self._observation_size), np.float32)
        batch[:n] = obs
        actions, log_probs = self._act(*self._params, batch, self._key, self._counter)
        self._counter += 1
        return np.asarray(actions)[:n], np.asarray(log_probs)[:n]


__all__ = ["Acting", "bucket"]
