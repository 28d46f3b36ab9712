"""The JAX core against the PyTorch reference: same weights, data and minibatch order, same numbers.

The checks live in ``parity_helpers`` (they return max errors; ``test_parity_teeth.py`` shows they
fail for a perturbed reference). Tolerances: GAE and Adam steps 1e-6 absolute; log-probs,
entropies, values and loss terms 1e-6 absolute, relative above magnitude 1; gradients 1e-5
relative to ``|g| + max|g|`` per tensor; whole updates 1e-4 after 100 Adam steps. See
``parity_helpers.TOL`` and ``GRAD_FLOOR`` for why each is what it is.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402

import jppo  # noqa: E402
import parity_helpers as ph  # noqa: E402
from parity_helpers import Case, TOL  # noqa: E402
from jppo.reference import torch_ppo as ref  # noqa: E402
from jppo.reference.transfer import flax_to_torch, load_flax_params, torch_to_flax  # noqa: E402

# "multi": two masked branches (3, 2); "hybrid": 2 continuous + the same two masked branches;
# sensors=2: the observation as two sensors, one normalizer each.
NETS = [Case("seed", "continuous"), Case("mlagents", "continuous"), Case("cleanrl", "discrete"),
        Case("seed", "discrete"),
        Case("mlagents", "discrete"), Case("mlagents", "multi"), Case("seed", "hybrid"),
        Case("mlagents", "hybrid", sensors=2), Case("seed", "continuous", sensors=2)]
LOSSES = NETS + [Case(loss="kl_penalty"), Case(loss="a2c"), Case(clip_value=False),
                 Case("mlagents", "hybrid", loss="kl_penalty")]
UPDATES = [Case("seed", "continuous"), Case("mlagents", "continuous", max_grad_norm=0.5),
           Case("seed", "discrete", loss="kl_penalty"), Case("mlagents", "discrete"),
           Case("cleanrl", "discrete", max_grad_norm=0.5), Case("mlagents", "multi"),
           Case("mlagents", "hybrid", sensors=2), Case("seed", "continuous", sensors=2)]


def ids(cases):
    return [f"{c.preset}-{c.action}-{c.loss}" + ("" if c.clip_value else "-noclipv")
            + ("" if c.max_grad_norm is None else "-gradclip")
            + ("" if c.sensors == 1 else f"-{c.sensors}sensors") for c in cases]


def assert_under(errors: dict, tol: float):
    over = {name: err for name, err in errors.items() if not err <= tol}
    assert not over, f"over {tol:g}: {over}"


def test_transfer_round_trips_jppo_params_exactly():
    case = Case()  # the "seed" preset: Dense and LayerNorm parameters, and the log-std
    init = jax.jit(jppo.init_train_state, static_argnums=(1, 2, 3))
    params = init(jax.random.PRNGKey(0), case.config, ph.OBS, case.spec).params
    model = ph.reference_model(case)
    assert sorted(flax_to_torch(params)) == sorted(model.state_dict())
    load_flax_params(model, params)  # strict: every tensor named and shaped alike
    back = torch_to_flax(model.state_dict())
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(params)
    assert ph.tree_max_abs(back, params) == 0.0
    # Kernels are [in, out] in Flax, weights [out, in] in torch.
    kernel = np.asarray(params["params"]["actor"]["Dense_0"]["kernel"])
    np.testing.assert_array_equal(model.actor.dense0.weight.detach().numpy(), kernel.T)
    np.testing.assert_array_equal(model.actor.norm1.weight.detach().numpy(),
                                  params["params"]["actor"]["LayerNorm_1"]["scale"])


@pytest.mark.parametrize("case", NETS, ids=ids(NETS))
def test_transferred_torch_weights_make_the_train_state_jppo_makes(case):
    """The parity checks start from the reference's initialisation moved to Flax: the same
    pytree (structure, shapes, dtypes) as ``jppo.init_train_state``, and back to torch exactly."""
    expected = jax.eval_shape(
        lambda key: jppo.init_train_state(key, case.config, case.obs_size, case.spec),
        jax.random.PRNGKey(0))
    state = ph.initial_state(case)
    assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(expected)
    for x, y in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(expected)):
        assert (x.shape, x.dtype) == (y.shape, y.dtype)
    fresh = ph.reference_model(case)
    again = flax_to_torch(torch_to_flax(fresh.state_dict()))
    assert list(again) == list(fresh.state_dict())
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(again[name], tensor), name


def test_reference_initialisation_follows_the_presets():
    seed = ref.ActorCritic(4, "continuous", 2, 64, 2, "seed")
    biases = [m.bias for m in seed.modules() if isinstance(m, torch.nn.Linear)]
    assert all(torch.all(b == 0.1) for b in biases)
    assert abs(seed.actor.dense1.weight.std().item() - 0.1) < 0.01
    ml = ref.ActorCritic(4, "continuous", 2, 64, 2, "mlagents")
    assert all(torch.all(m.bias == 0) for m in ml.modules() if isinstance(m, torch.nn.Linear))
    assert abs(ml.actor.dense1.weight.std().item() - (2 / 64) ** 0.5) < 0.02
    assert torch.all(ml.log_std == 0)


def test_gae_advantages_and_returns_match():
    r = ph.rollout(Case())
    # The rollout exercises real ends, truncations, and steps that are both.
    assert float(r.dones.sum()) > 5 and float((r.truncations * (1 - r.dones)).sum()) > 5
    assert float((r.truncations * r.dones).sum()) >= 1
    assert_under(ph.gae_errors(), TOL["gae"])


@pytest.mark.parametrize("case", NETS, ids=ids(NETS))
def test_log_probs_entropy_and_values_match(case):
    errors = ph.forward_errors(case)
    assert_under({k: v for k, v in errors.items() if k != "value"}, TOL["forward"])
    assert_under({"value": errors["value"]}, TOL["value"])


@pytest.mark.parametrize("case", LOSSES, ids=ids(LOSSES))
def test_every_loss_term_matches(case):
    metrics, _ = ph._jax_loss_and_grads(case)
    assert 0.1 < metrics["clip_fraction"] < 0.9  # both sides of the ratio clip are exercised
    assert_under(ph.loss_errors(case), TOL["loss"])


@pytest.mark.parametrize("case", LOSSES, ids=ids(LOSSES))
def test_every_gradient_matches(case):
    errors = ph.grad_errors(case)
    assert len(errors) == len(jax.tree_util.tree_leaves(ph.initial_params(case)))
    assert_under(errors, TOL["grad"])


@pytest.mark.parametrize("max_grad_norm", [None, 1.0])
def test_adam_steps_match_with_the_schedule_and_clipping(max_grad_norm):
    case = Case(max_grad_norm=max_grad_norm)
    norms = [float(np.sqrt(sum(np.sum(x ** 2) for x in jax.tree_util.tree_leaves(g))))
             for g in ph._adam_grads(case)]
    assert min(norms) < 1.0 < max(norms)  # clipping triggers on some steps only
    assert ph.ADAM_STEPS > ph.ADAM_TOTAL  # the learning rate decays, then stays at its end
    errors = ph.adam_errors(case)
    assert len(errors) == ph.ADAM_STEPS
    assert_under(errors, TOL["adam"])


@pytest.mark.parametrize("case", UPDATES, ids=ids(UPDATES))
def test_whole_updates_match(case):
    states, _ = ph._jax_updates(case)
    assert int(states[-1].step) >= 100
    assert_under(ph.update_errors(case), TOL["update"])


def test_reference_trains_on_its_own_order():
    """The reference is usable alone: its own shuffle, and its updates fit the critic."""
    case = Case(clip_value=False)
    learner = ph.torch_learner(case, {}, 1e-5)
    data = ph.torch_rollout(ph.rollout(case))
    order = ref.shuffled_indices(ph.T * ph.B, ph.MINIBATCH, 3, torch.Generator().manual_seed(0))
    assert order.shape == (3, ph.T * ph.B // ph.MINIBATCH, ph.MINIBATCH)
    assert all(len(set(epoch.flatten().tolist())) == order[0].numel() for epoch in order)
    assert not torch.equal(order[0], order[1])  # a fresh permutation per epoch

    def value_error():
        batch = ref.prepare_batch(case.config, data)
        with torch.no_grad():
            _, _, values = learner.evaluate(batch["obs"], batch["actions"])
        return ((batch["returns"] - values) ** 2).mean().item()

    learner.normalizer.update(data["obs"])
    before = value_error()
    learner.normalizer = ref.RunningNormalizer(ph.OBS)  # ppo_update merges the rollout itself
    for _ in range(4):
        metrics = ref.ppo_update(learner, data, order)
    assert learner.step == 4 * order.shape[0] * order.shape[1]
    assert value_error() < 0.7 * before
    assert np.isfinite(list(metrics.values())).all()
