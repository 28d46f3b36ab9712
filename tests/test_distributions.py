"""Action specs and the policy's distribution over them: multi-branch and hybrid heads against
hand-computed log-probs and entropies, masks (masked choices never chosen, probabilities and
entropies of the masked distribution), the array form, and the checkpoint format."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jppo
from jppo.core.distributions import MASKED_LOGIT, ActionDistribution, ActionSpec, sample_noise

HYBRID = ActionSpec.hybrid(2, (3, 2))
MULTI = ActionSpec.discrete(3, 2)


def softmax(x):
    e = np.exp(x - np.max(x))
    return e / e.sum()


def test_spec_kinds_sizes_and_array_forms():
    cases = [(ActionSpec.continuous(2), "continuous", 2, 2, (2,), 0),
             (ActionSpec.discrete(3), "discrete", 3, 1, (), 3),
             (ActionSpec.discrete(3, 2), "discrete", 5, 2, (2,), 5),
             (ActionSpec.discrete([3, 2]), "discrete", 5, 2, (2,), 5),
             (HYBRID, "hybrid", 7, 4, (4,), 5)]
    for spec, kind, size, columns, shape, mask in cases:
        assert (spec.kind, spec.size, spec.log_prob_dims, spec.action_shape, spec.mask_size) == (
            kind, size, columns, shape, mask)
    assert ActionSpec.continuous(2).is_continuous and not HYBRID.is_continuous
    with pytest.raises(ValueError):
        ActionSpec(0, ())
    with pytest.raises(ValueError):
        ActionSpec.discrete(3, 0)


def test_checkpoint_format_keeps_the_old_kinds_and_round_trips():
    # What jppo always wrote for 3DBall-shaped runs stays byte for byte the same.
    assert ActionSpec.continuous(2).to_meta() == ["continuous", 2]
    assert ActionSpec.discrete(4).to_meta() == ["discrete", 4]
    assert ActionSpec.from_meta(["continuous", 2]) == ActionSpec.continuous(2)
    assert ActionSpec.from_meta(("discrete", 4)) == ActionSpec.discrete(4)
    for spec in (MULTI, HYBRID):
        assert ActionSpec.from_meta(spec.to_meta()) == spec
    assert HYBRID.to_meta() == {"continuous": 2, "discrete": [3, 2]}


def test_split_and_join_are_inverse():
    actions = jnp.array([[0.5, -1.5, 2.0, 1.0], [1.0, 2.0, 0.0, 0.0]])
    continuous, discrete = HYBRID.split(actions)
    np.testing.assert_array_equal(continuous, actions[:, :2])
    assert discrete.dtype == jnp.int32 and discrete.tolist() == [[2, 1], [0, 0]]
    np.testing.assert_array_equal(HYBRID.join(continuous, discrete), actions)
    one = ActionSpec.discrete(3)
    assert one.split(jnp.array([2, 0]))[1].tolist() == [[2], [0]]
    assert one.join(None, jnp.array([[2], [0]])).tolist() == [2, 0]


def hybrid_dist(mask=None):
    mean = jnp.array([[0.3, -0.7]])
    std = jnp.array([[0.5, 2.0]])
    logits = jnp.array([[1.0, 2.0, 0.5, -1.0, 0.25]])
    if mask is not None:
        logits = jnp.where(jnp.asarray(mask)[None] > 0, logits, MASKED_LOGIT)
    return ActionDistribution(mean, std, logits, HYBRID)


def test_hybrid_log_probs_and_entropy_by_hand():
    dist = hybrid_dist()
    action = jnp.array([[0.8, 1.3, 2.0, 1.0]])  # Gaussian sample, branch 0 -> 2, branch 1 -> 1
    gauss = lambda x, m, s: -0.5 * ((x - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)
    p0, p1 = softmax(np.array([1.0, 2.0, 0.5])), softmax(np.array([-1.0, 0.25]))
    want = [gauss(0.8, 0.3, 0.5), gauss(1.3, -0.7, 2.0), math.log(p0[2]), math.log(p1[1])]
    np.testing.assert_allclose(dist.log_prob(action)[0], want, rtol=1e-6)
    # ML-Agents' entropy: the Gaussian's mean over its dimensions plus every branch's.
    h_gauss = np.mean([0.5 * math.log(2 * math.pi * math.e * s * s) for s in (0.5, 2.0)])
    h = h_gauss - (p0 * np.log(p0)).sum() - (p1 * np.log(p1)).sum()
    assert dist.entropy_terms().shape == (1, 1)
    np.testing.assert_allclose(dist.entropy_terms()[0, 0], h, rtol=1e-6)
    np.testing.assert_allclose(dist.mode()[0], [0.3, -0.7, 1.0, 1.0])


def test_masked_branches_score_and_sum_the_masked_distributions():
    mask = np.array([1, 0, 1, 0, 1], bool)  # branch 0: choice 1 forbidden; branch 1: choice 0
    dist = hybrid_dist(mask)
    p0 = softmax(np.array([1.0, 0.5]))  # the allowed choices 0 and 2 of branch 0
    np.testing.assert_allclose(dist.log_prob(jnp.array([[0.3, -0.7, 2.0, 1.0]]))[0, 2:],
                               [math.log(p0[1]), 0.0], atol=1e-6)
    np.testing.assert_allclose(dist.probs()[0], [p0[0], 0.0, p0[1], 0.0, 1.0], atol=1e-7)
    h_gauss = np.mean([0.5 * math.log(2 * math.pi * math.e * s * s) for s in (0.5, 2.0)])
    # Branch 1 has one allowed choice: entropy 0; masked choices add nothing (no NaN).
    np.testing.assert_allclose(dist.entropy_terms()[0, 0], h_gauss - (p0 * np.log(p0)).sum(),
                               rtol=1e-6)
    assert dist.mode()[0, 2:].tolist() == [0.0, 1.0]  # argmax among the allowed (2 is masked)


def test_masked_choices_are_never_sampled_and_the_rest_follow_the_softmax():
    config = jppo.PPOConfig(hidden_units=8, num_layers=1, batch_size=8, buffer_size=8)
    policy = jppo.make_policy(config, MULTI)
    params = policy.init_params(jax.random.PRNGKey(0), 4)
    n = 40_000
    obs = jnp.tile(jnp.array([[0.5, -1.0, 2.0, 0.1]]), (n, 1))
    mask = jnp.tile(jnp.array([[True, False, True, False, True]]), (n, 1))
    noise = policy.sample_noise(jax.random.PRNGKey(1), (n,))
    actions, log_probs = jax.jit(policy.act_with_noise)(params, jppo.normalizer.init(4), obs,
                                                        noise, mask)
    actions = np.asarray(actions)
    assert actions.shape == (n, 2)
    assert not (actions[:, 0] == 1).any() and (actions[:, 1] == 1).all()
    probs = np.asarray(policy.forward(params, jppo.normalizer.init(4), obs[:1], mask[:1])[0]
                       .probs()[0])
    freq = np.bincount(actions[:, 0], minlength=3) / n
    se = np.sqrt(probs[:3] * (1 - probs[:3]) / n)
    np.testing.assert_array_less(np.abs(freq - probs[:3]), 5 * se + 1e-9)
    # The acting log-probs are those of the masked distribution.
    np.testing.assert_allclose(np.exp(log_probs[:, 0]), probs[actions[:, 0]], rtol=1e-5)
    np.testing.assert_allclose(log_probs[:, 1], 0.0, atol=1e-6)
    # act (a key) and act_with_noise draw from the same masked distribution.
    sampled = policy.act(params, jppo.normalizer.init(4), obs[:2000], jax.random.PRNGKey(2),
                         mask[:2000])[0]
    assert not (np.asarray(sampled)[:, 0] == 1).any()


def test_noise_is_gaussian_then_gumbel():
    noise = np.asarray(sample_noise(HYBRID, jax.random.PRNGKey(0), (50_000,)))
    assert noise.shape == (50_000, 7)
    assert abs(noise[:, :2].mean()) < 0.02 and abs(noise[:, :2].std() - 1) < 0.02
    # Gumbel(0, 1): mean Euler's gamma, std pi / sqrt(6).
    assert abs(noise[:, 2:].mean() - 0.5772) < 0.02 and abs(noise[:, 2:].std() - 1.2825) < 0.02


@pytest.mark.parametrize("spec", [MULTI, HYBRID, ActionSpec.discrete(4), ActionSpec.continuous(3)],
                         ids=["multi", "hybrid", "discrete", "continuous"])
def test_act_evaluate_and_mode_agree_for_every_kind(spec):
    config = jppo.PPOConfig(hidden_units=16, num_layers=2, batch_size=8, buffer_size=8)
    policy = jppo.make_policy(config, spec)
    sizes = (3, 2)  # two sensors
    params = policy.init_params(jax.random.PRNGKey(0), sizes)
    norm = jppo.normalizer.init(sizes)
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    obs = (jax.random.normal(keys[0], (64, 3)), jax.random.normal(keys[1], (64, 2)))
    mask = None
    if spec.mask_size:
        mask = jax.random.uniform(keys[2], (64, spec.mask_size)) < 0.6
        mask = mask.at[:, 0].set(True).at[:, spec.discrete_branches[0]].set(True)  # one each
    action, log_prob, value = policy.act(params, norm, obs, jax.random.PRNGKey(3), mask)
    assert action.shape == (64,) + spec.action_shape and log_prob.shape == (64, spec.log_prob_dims)
    lp, ent, v = policy.evaluate(params, norm, obs, action, mask)
    np.testing.assert_allclose(lp, log_prob, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(v, value)
    assert np.isfinite(np.asarray(ent)).all() and np.isfinite(np.asarray(lp)).all()
    mode = policy.mode(params, norm, obs, mask)
    assert mode.shape == action.shape
    if mask is not None:  # neither the sample nor the mode is ever a masked choice
        for a in (action, mode):
            _, discrete = spec.split(a)
            offsets = np.cumsum((0,) + spec.discrete_branches)[:-1]
            allowed = np.take_along_axis(np.asarray(mask), offsets + np.asarray(discrete), -1)
            assert allowed.all()
