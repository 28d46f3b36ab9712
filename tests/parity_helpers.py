"""Parity checks between jppo's JAX core and the PyTorch reference (jppo.reference.torch_ppo).

Each ``*_errors`` function feeds the same weights, data and minibatch order to both and returns
the largest discrepancies as ``{name: float}``; ``tests/test_parity_torch.py`` asserts they are
under ``TOL`` and ``tests/test_parity_teeth.py`` asserts that a perturbed reference pushes them
over it. The perturbation only ever touches the torch side: ``ref_changes`` are ``PPOConfig``
fields replaced for the reference, ``layer_norm_eps`` is the reference's LayerNorm epsilon.
JAX results are cached per ``Case`` so both files compile and run each JAX function once.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional

import jax
import numpy as np
import optax
import torch

import jppo
from jppo import ActionSpec, PPOConfig, Rollout
from jppo.reference import torch_ppo as ref
from jppo.reference.transfer import flax_to_torch, grads_to_flax, load_flax_params, torch_to_flax

OBS = 4
T, B = 40, 8  # 320 samples
MINIBATCH = 32  # 10 minibatches per epoch
EPOCHS = 5  # per update; two updates make 100 Adam steps

TOL = dict(gae=1e-6, forward=1e-6, value=2e-6, loss=1e-6, grad=1e-5, adam=1e-6, update=1e-4)
# Per-sample values (not in the 1e-6 list; the value *loss* is, and meets it) come out
# of three 128-term float32 sums that the two libraries order differently: measured up to 12
# ulps (1.0e-6 scaled at |V| = 2.7), hence 2e-6.
# Log-probs, values and loss terms of size above 1 are compared relative to their size
# (|a - b| / max(1, |a|), ``max_scaled``): Gaussian log-probs of tail actions reach -7 here, where
# one float32 ulp is already 5e-7 and the two libraries round differently by a few ulps (XLA
# fuses multiply-adds, torch does not). Rewards are kept small so that GAE's outputs stay below
# 4 and its absolute 1e-6 is a few ulps, not one.

# A gradient entry g_jax matches when |g_torch - g_jax| <= 1e-5 (|g_jax| + max|g_jax|), the max
# over that parameter tensor: relative 1e-5 for the entries that carry the gradient, absolute
# 1e-5 of the tensor's scale for entries that are near zero by cancellation. Backprop sums O(max)
# terms in float32, so every entry carries ~1e-7 * max absolute error whatever its own size
# (measured: <= 8e-7 * max on every tensor); a relative error of a near-zero entry means nothing.
GRAD_FLOOR = 1.0

torch.set_num_threads(1)  # tiny shapes: extra threads only compete with XLA for two cores


SPECS = {"continuous": ActionSpec.continuous(2), "discrete": ActionSpec.discrete(3),
         "multi": ActionSpec.discrete(3, 2), "hybrid": ActionSpec.hybrid(2, (3, 2))}
SENSORS = {1: OBS, 2: (2, 2)}  # observation_size: one array, or two sensors of 2


@dataclasses.dataclass(frozen=True)
class Case:
    preset: str = "seed"
    action: str = "continuous"  # a key of SPECS: "multi" (two branches) and "hybrid" are masked
    loss: str = "clip"
    clip_value: bool = True
    max_grad_norm: Optional[float] = None
    sensors: int = 1

    @property
    def spec(self) -> ActionSpec:
        return SPECS[self.action]

    @property
    def obs_size(self):
        return SENSORS[self.sensors]

    @property
    def config(self) -> PPOConfig:
        return PPOConfig(batch_size=MINIBATCH, buffer_size=T * B, num_epoch=EPOCHS,
                         hidden_units=32, num_layers=2, network=self.preset, normalize=True,
                         learning_rate=1e-3, beta=1e-2, epsilon=0.2, lambd=0.95, gamma=0.99,
                         max_steps=4 * T * B, loss=self.loss, clip_value=self.clip_value,
                         max_grad_norm=self.max_grad_norm, kl_coef=0.7)

    @property
    def total_adam_steps(self) -> int:
        return self.config.total_adam_steps(T * B)  # 4 updates' worth: the schedules decay


def to_torch(x) -> torch.Tensor:
    return torch.from_numpy(np.array(x))


def torch_obs(obs):
    return [to_torch(x) for x in obs] if isinstance(obs, tuple) else to_torch(obs)


def torch_or_none(x):
    return None if x is None else to_torch(x)


def max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def max_scaled(a, b) -> float:
    """max |a - b| / max(1, |a|): absolute for entries up to 1, relative above."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(a))))


def tree_max_abs(a, b) -> float:
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    return max(max_abs(x, y) for x, y in zip(jax.tree_util.tree_leaves(a),
                                              jax.tree_util.tree_leaves(b)))


# ----------------------------------------------------------------------------------- data

def _net(case: Case) -> Case:
    # Weights and rollouts depend on the network only; sharing them saves compiles.
    return Case(case.preset, case.action, sensors=case.sensors)


def sensors_of(case: Case, obs):
    """``obs [..., OBS]`` in the case's observation form: as is, or split into two sensors."""
    return obs if case.sensors == 1 else (obs[..., :2], obs[..., 2:])


def reference_model(case: Case, config: PPOConfig = None) -> ref.ActorCritic:
    config = config or case.config
    return ref.ActorCritic.for_spec(case.obs_size, case.spec, config.hidden_units,
                                    config.num_layers, config.network)


@functools.lru_cache(maxsize=None)
def initial_params(case: Case) -> dict:
    """The reference's own preset initialisation (torch seed 3) as Flax params. (Flax's init
    compiles for seconds per network; its tree structure is checked against this one in
    ``test_parity_torch``.)"""
    case = _net(case)
    torch.manual_seed(3)
    return torch_to_flax(reference_model(case).state_dict())


def initial_state(case: Case) -> jppo.TrainState:
    """A fresh ``TrainState`` as ``jppo.init_train_state`` makes it, with ``initial_params``."""
    state = jppo.init_train_state(jax.random.PRNGKey(0), case.config, case.obs_size, case.spec,
                                  params=initial_params(case))
    return state.replace(key=jax.random.PRNGKey(3))


@functools.lru_cache(maxsize=None)
def evaluate_fn(case: Case):
    """The jitted ``Policy.evaluate`` of the case's network."""
    case = _net(case)
    return jax.jit(jppo.make_policy(case.config, case.spec).evaluate)


def rollout(case: Case, seed: int = 0) -> Rollout:
    return _rollout(_net(case), seed)


@functools.lru_cache(maxsize=None)
def _rollout(case: Case, seed: int) -> Rollout:
    """Made-up experience scored by the initial policy, with real episode ends and time-limit
    cuts (some steps both).

    Two float32 implementations agree to ~1e-6 over 100 Adam steps unless, somewhere along
    the way, a ratio lands within rounding of a clip boundary (1 +- epsilon): then one side
    clips and the other does not, and Adam carries the difference (measured: ~1e-3 on about one
    random dataset in eight; ~1e-6 on the rest). The seed is one whose trajectories stay clear
    of that, so the suite tests the algorithm rather than a coin flip.
    """
    rng = np.random.default_rng(110 + seed)
    f32 = np.float32
    obs = (rng.standard_normal((T, B, OBS)) * [2.0, 0.5, 1.0, 3.0] + 1.0).astype(f32)
    spec = case.spec
    continuous = rng.standard_normal((T, B, spec.continuous_size)).astype(f32)
    choices = np.stack([rng.integers(0, n, (T, B)) for n in spec.discrete_branches]
                       or [np.zeros((T, B), int)], -1)
    masks = None
    if spec.kind == "continuous":
        actions = continuous
    elif spec.kind == "discrete" and spec.num_branches == 1:
        actions = choices[..., 0].astype(np.int32)  # one branch: unmasked, as jppo always was
    else:
        # Masks forbid about a third of the choices, never the one taken.
        masks = rng.random((T, B, spec.mask_size)) < 0.65
        offsets = np.cumsum((0,) + spec.discrete_branches)[:-1]
        np.put_along_axis(masks, offsets + choices, True, axis=-1)
        actions = (choices.astype(np.int32) if spec.kind == "discrete"
                   else np.concatenate([continuous, choices.astype(f32)], -1))
    flat = lambda x: None if x is None else x.reshape((T * B,) + x.shape[2:])
    log_probs, _, values = evaluate_fn(case)(initial_params(case),
                                             jppo.normalizer.init(case.obs_size),
                                             sensors_of(case, flat(obs)), flat(actions), flat(masks))
    return Rollout(
        obs=sensors_of(case, obs), actions=actions, action_masks=masks,
        log_probs=np.asarray(log_probs).reshape(T, B, -1),
        values=np.asarray(values).reshape(T, B),
        rewards=(0.25 * np.tanh(obs[..., 0] - 0.5 * obs[..., 1])).astype(f32),
        dones=(rng.random((T, B)) < 0.08).astype(f32),
        last_value=rng.standard_normal(B).astype(f32),
        truncations=(rng.random((T, B)) < 0.08).astype(f32),
        final_values=rng.standard_normal((T, B)).astype(f32))


def torch_rollout(r: Rollout) -> dict:
    convert = lambda v: [to_torch(x) for x in v] if isinstance(v, tuple) else to_torch(v)
    return {name: convert(value) for name, value in r._asdict().items() if value is not None}


def torch_learner(case: Case, ref_changes: dict, layer_norm_eps: float) -> ref.Learner:
    """A reference learner with the JAX initial weights and the (perturbed) config."""
    config = case.config.replace(**ref_changes)
    spec = case.spec
    size = spec.continuous_size or spec.discrete_branches[0]
    learner = ref.Learner.create(config, case.obs_size, spec.kind, size, case.total_adam_steps,
                                 layer_norm_eps, spec.discrete_branches)
    load_flax_params(learner.model, initial_params(case))
    return learner


def minibatch(case: Case):
    return _minibatch(_net(case))


@functools.lru_cache(maxsize=None)
def _minibatch(case: Case):
    """64 prepared samples whose stored log-probs and values are moved off the current policy,
    so the ratio and value clips are active for part of them. Returns (normalizer, Batch)."""
    r = rollout(case)
    normalizer = jppo.normalizer.update(jppo.normalizer.init(case.obs_size), r.obs)
    batch = _prepare_batch()(r)
    rng = np.random.default_rng(9)
    mb = jax.tree_util.tree_map(lambda x: np.asarray(x[:64]), batch)
    noise = lambda x: (x + 0.3 * rng.standard_normal(x.shape)).astype(np.float32)  # noqa: E731
    return normalizer, mb._replace(log_probs=noise(mb.log_probs), values=noise(mb.values))


@functools.lru_cache(maxsize=None)
def _prepare_batch():
    # GAE's settings are the same in every Case: one compile.
    return jax.jit(functools.partial(jppo.prepare_batch, Case().config))


# --------------------------------------------------------------------------------- checks

@functools.lru_cache(maxsize=None)
def _jax_gae(case: Case):
    r, c = rollout(case), case.config
    return jax.tree_util.tree_map(np.asarray, jppo.gae(
        r.rewards, r.values, r.dones, r.last_value, gamma=c.gamma, lam=c.lambd,
        truncations=r.truncations, final_values=r.final_values))


def gae_errors(case: Case = Case(), ref_changes: dict = {}, **_) -> dict:
    """Advantages and returns on the rollout (episode ends and truncations)."""
    adv, ret = _jax_gae(case)
    c = case.config.replace(**ref_changes)
    r = torch_rollout(rollout(case))
    t_adv, t_ret = ref.compute_gae(r["last_value"], r["rewards"], 1.0 - r["dones"], r["values"],
                                   c.gamma, c.lambd, r["truncations"], r["final_values"])
    return dict(advantages=max_abs(adv, t_adv), returns=max_abs(ret, t_ret))


def _flat_rollout(case: Case):
    """(obs, actions, masks) of the rollout, flattened to ``[T * B, ...]``."""
    r = rollout(case)
    flat = lambda x: None if x is None else x.reshape((T * B,) + x.shape[2:])
    return jax.tree_util.tree_map(flat, r.obs), flat(r.actions), flat(r.action_masks)


@functools.lru_cache(maxsize=None)
def _jax_forward(case: Case):
    normalizer, _ = minibatch(case)
    return jax.tree_util.tree_map(np.asarray, evaluate_fn(case)(
        initial_params(case), normalizer, *_flat_rollout(case)))


def forward_errors(case: Case = Case(), ref_changes: dict = {}, layer_norm_eps=1e-5) -> dict:
    """Log-probs, entropies and values (``max_scaled``) of the rollout's actions, with the
    normalizer on."""
    log_prob, entropy, value = _jax_forward(case)
    learner = torch_learner(case, ref_changes, layer_norm_eps)
    learner.normalizer.update(torch_rollout(rollout(case))["obs"])
    obs, actions, masks = _flat_rollout(case)
    with torch.no_grad():
        t_log_prob, t_entropy, t_value = learner.evaluate(torch_obs(obs), to_torch(actions),
                                                          torch_or_none(masks))
    return dict(log_prob=max_scaled(log_prob, t_log_prob), entropy=max_scaled(entropy, t_entropy),
                value=max_scaled(value, t_value))


@functools.lru_cache(maxsize=None)
def _jax_loss_and_grads(case: Case):
    config, policy = case.config, jppo.make_policy(case.config, case.spec)

    def loss(params, normalizer, mb):
        log_probs, entropy, values = policy.evaluate(params, normalizer, mb.obs, mb.actions,
                                                     mb.action_masks)
        return jppo.ppo_loss(log_probs, mb.log_probs, mb.advantages, values, mb.values,
                             mb.returns, entropy, epsilon=config.epsilon, beta=config.beta,
                             value_coef=config.value_coef, kind=config.loss,
                             clip_value=config.clip_value, kl_coef=config.kl_coef)

    (_, metrics), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
        initial_params(case), *minibatch(case))
    return {k: float(v) for k, v in metrics._asdict().items()}, grads


def _torch_loss_and_grads(case: Case, ref_changes: dict, layer_norm_eps: float):
    learner = torch_learner(case, ref_changes, layer_norm_eps)
    learner.normalizer.update(torch_rollout(rollout(case))["obs"])
    c = learner.config
    _, mb = minibatch(case)
    log_probs, entropy, values = learner.evaluate(torch_obs(mb.obs), to_torch(mb.actions),
                                                  torch_or_none(mb.action_masks))
    loss, terms = ref.ppo_loss(log_probs, to_torch(mb.log_probs), to_torch(mb.advantages), values,
                               to_torch(mb.values), to_torch(mb.returns), entropy,
                               epsilon=c.epsilon, beta=c.beta, value_coef=c.value_coef,
                               kind=c.loss, clip_value=c.clip_value, kl_coef=c.kl_coef)
    loss.backward()
    return {k: v.item() for k, v in dict(terms, loss=loss).items()}, grads_to_flax(learner.model)


def loss_errors(case: Case = Case(), ref_changes: dict = {}, layer_norm_eps=1e-5) -> dict:
    """Every loss term and metric (``max_scaled``) on one minibatch with the clips active."""
    metrics, _ = _jax_loss_and_grads(case)
    terms, _ = _torch_loss_and_grads(case, ref_changes, layer_norm_eps)
    return {name: max_scaled(metrics[name], terms[name]) for name in metrics}


def grad_errors(case: Case = Case(), ref_changes: dict = {}, layer_norm_eps=1e-5) -> dict:
    """Per parameter: max |g_torch - g_jax| / (|g_jax| + GRAD_FLOOR * max|g_jax|)."""
    _, grads = _jax_loss_and_grads(case)
    _, t_grads = _torch_loss_and_grads(case, ref_changes, layer_norm_eps)
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(t_grads)
    errors = {}
    for (path, g), t in zip(jax.tree_util.tree_leaves_with_path(grads),
                            jax.tree_util.tree_leaves(t_grads)):
        g, t = np.asarray(g, np.float64), np.asarray(t, np.float64)
        floor = GRAD_FLOOR * np.max(np.abs(g))
        errors[jax.tree_util.keystr(path)] = float(np.max(np.abs(t - g) / (np.abs(g) + floor)))
    return errors


ADAM_STEPS = 6  # the schedule ends after ADAM_TOTAL; the last steps run at the end value
ADAM_TOTAL = 4
ADAM_SCALES = (1e-3, 1.0, 3.0, 0.5, 2.0, 1e-3)  # the first and last stay under the clip norm


@functools.lru_cache(maxsize=None)
def _adam_grads(case: Case):
    leaves, treedef = jax.tree_util.tree_flatten(initial_params(case))
    rng = np.random.default_rng(50)
    return [jax.tree_util.tree_unflatten(treedef, [
        (scale * rng.standard_normal(x.shape)).astype(np.float32) for x in leaves])
        for scale in ADAM_SCALES[:ADAM_STEPS]]


@functools.lru_cache(maxsize=None)
def _jax_adam(case: Case):
    optimizer = jppo.make_optimizer(case.config.replace(learning_rate=1e-2), ADAM_TOTAL)

    @jax.jit
    def step(params, state, grads):
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params = initial_params(case)
    state, trajectory = optimizer.init(params), []
    for grads in _adam_grads(case):
        params, state = step(params, state, grads)
        trajectory.append(jax.tree_util.tree_map(np.asarray, params))
    return trajectory


def adam_errors(case: Case = Case(max_grad_norm=1.0), ref_changes: dict = {}, **_) -> dict:
    """Parameters after each of ADAM_STEPS optimizer steps on the same given gradients, with
    the learning rate decaying over ADAM_TOTAL steps and (if set) global-norm clipping."""
    config = case.config.replace(learning_rate=1e-2, **ref_changes)
    model = reference_model(case, config)
    load_flax_params(model, initial_params(case))
    optimizer = ref.make_optimizer(model, config)
    learning_rate = ref.make_schedules(config, ADAM_TOTAL).learning_rate
    errors = {}
    for step, (grads, expected) in enumerate(zip(_adam_grads(case), _jax_adam(case))):
        torch_grads = flax_to_torch(grads)
        for name, p in model.named_parameters():
            p.grad = torch_grads[name]
        ref.adam_step(model, optimizer, learning_rate(step), config.max_grad_norm)
        errors[f"step {step}"] = tree_max_abs(expected, torch_to_flax(model.state_dict()))
    return errors


UPDATES = 2


@functools.lru_cache(maxsize=None)
def _jax_updates(case: Case):
    """UPDATES calls of ``jppo.make_update`` on two rollouts; the states, and each update's
    minibatch order as the update derives it from the state's key."""
    update = jppo.make_update(case.config, case.spec, case.total_adam_steps)
    state, states, orders = initial_state(case), [], []
    for i in range(UPDATES):
        _, order_key = jax.random.split(state.key)
        orders.append(np.asarray(jppo.minibatch_indices(order_key, T * B, MINIBATCH, EPOCHS)))
        state, _ = update(state, rollout(case, i))
        states.append(jax.tree_util.tree_map(np.asarray, state))
    return states, orders


def update_errors(case: Case = Case(), ref_changes: dict = {}, layer_norm_eps=1e-5,
                  order: Callable = lambda o: o) -> dict:
    """Whole updates (UPDATES x EPOCHS x 10 Adam steps, normalizer on): parameters, normalizer
    statistics, Adam step count and KL coefficient after each. ``order`` may perturb the
    minibatch order given to the reference."""
    states, orders = _jax_updates(case)
    learner = torch_learner(case, ref_changes, layer_norm_eps)
    errors = {}
    for i, (state, o) in enumerate(zip(states, orders)):
        ref.ppo_update(learner, torch_rollout(rollout(case, i)), order(o))
        params = torch_to_flax(learner.model.state_dict())
        errors[f"params {i}"] = tree_max_abs(state.params, params)
        jax_norms = state.normalizer if case.sensors > 1 else (state.normalizer,)
        torch_norms = learner.normalizer.parts if case.sensors > 1 else (learner.normalizer,)
        for k, (mine, theirs) in enumerate(zip(jax_norms, torch_norms)):
            errors[f"normalizer {k} mean {i}"] = max_abs(mine.mean, theirs.mean)
            errors[f"normalizer {k} variance {i}"] = max_scaled(mine.m2 / mine.count,
                                                               theirs.variance())
        errors[f"steps {i}"] = float(abs(int(state.step) - learner.step))
        errors[f"kl_coef {i}"] = abs(float(state.kl_coef) - learner.kl_coef)
    return errors
