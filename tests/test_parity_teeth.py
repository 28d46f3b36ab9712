"""The parity checks have teeth: a reference that differs from the JAX core in one small way
(a hyperparameter, the LayerNorm epsilon, the minibatch order, a missing feature) fails them.

Each perturbation touches only the torch side; the JAX side is the real core, unchanged. The
assertion is that the error exceeds the very tolerance ``test_parity_torch.py`` asserts under.
"""
import numpy as np
import pytest

pytest.importorskip("torch")

import parity_helpers as ph  # noqa: E402
from parity_helpers import Case, TOL  # noqa: E402

# (check, tolerance name, case, reference changes, reference LayerNorm epsilon)
PERTURBATIONS = {
    "gamma 0.98": (ph.gae_errors, "gae", Case(), dict(gamma=0.98), 1e-5),
    "lambda 0.94": (ph.gae_errors, "gae", Case(), dict(lambd=0.94), 1e-5),
    "LayerNorm eps 1e-4": (ph.forward_errors, "forward", Case(), {}, 1e-4),
    "no normalizer": (ph.forward_errors, "forward", Case("mlagents", "discrete"),
                      dict(normalize=False), 1e-5),
    "clip 0.21": (ph.loss_errors, "loss", Case(), dict(epsilon=0.21), 1e-5),
    "clip 0.21 (discrete)": (ph.loss_errors, "loss", Case("mlagents", "discrete"),
                             dict(epsilon=0.21), 1e-5),
    "value coefficient 0.55": (ph.loss_errors, "loss", Case(), dict(value_coef=0.55), 1e-5),
    "no value clipping": (ph.loss_errors, "loss", Case(), dict(clip_value=False), 1e-5),
    "beta 0.011": (ph.loss_errors, "loss", Case(), dict(beta=0.011), 1e-5),
    "kl coefficient 0.75": (ph.loss_errors, "loss", Case(loss="kl_penalty"), dict(kl_coef=0.75),
                            1e-5),
    "value coefficient 0.55 (grads)": (ph.grad_errors, "grad", Case(), dict(value_coef=0.55), 1e-5),
    "LayerNorm eps 1e-4 (grads)": (ph.grad_errors, "grad", Case(), {}, 1e-4),
    "constant learning rate": (ph.adam_errors, "adam", Case(max_grad_norm=1.0),
                               dict(learning_rate_schedule="constant"), 1e-5),
    "no gradient clipping": (ph.adam_errors, "adam", Case(max_grad_norm=1.0),
                             dict(max_grad_norm=None), 1e-5),
    "Adam eps 1e-7": (ph.adam_errors, "adam", Case(max_grad_norm=1.0), dict(adam_eps=1e-7), 1e-5),
    "gamma 0.98 (update)": (ph.update_errors, "update", Case(), dict(gamma=0.98), 1e-5),
    "clip 0.21 (update)": (ph.update_errors, "update", Case("mlagents", "discrete"),
                           dict(epsilon=0.21), 1e-5),
    "LayerNorm eps 1e-4 (update)": (ph.update_errors, "update", Case(), {}, 1e-4),
    "no value clipping (update)": (ph.update_errors, "update", Case("mlagents", "discrete"),
                                   dict(clip_value=False), 1e-5),
    "reward strength 0.9 (update)": (ph.update_errors, "update", Case(), dict(strength=0.9),
                                     1e-5),
}


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_a_perturbed_reference_fails_the_parity_check(name):
    check, tol, case, changes, layer_norm_eps = PERTURBATIONS[name]
    errors = check(case, ref_changes=changes, layer_norm_eps=layer_norm_eps)
    assert max(errors.values()) > TOL[tol], f"{name}: {errors}"


@pytest.mark.parametrize("reorder", ["reversed minibatches", "epochs swapped"])
def test_a_different_minibatch_order_fails_the_update_check(reorder):
    def order(o):
        return o[:, ::-1] if reorder == "reversed minibatches" else o[::-1]

    errors = ph.update_errors(Case(), order=order)
    assert max(v for k, v in errors.items() if k.startswith("params")) > TOL["update"]


def test_the_unperturbed_reference_passes_the_same_checks():
    """The control: with no perturbation the same calls stay under tolerance, so the failures
    above come from the perturbations alone."""
    for check, tol, case in [(ph.gae_errors, "gae", Case()), (ph.forward_errors, "forward", Case()),
                             (ph.loss_errors, "loss", Case()), (ph.grad_errors, "grad", Case()),
                             (ph.adam_errors, "adam", Case(max_grad_norm=1.0)),
                             (ph.update_errors, "update", Case())]:
        errors = check(case, ref_changes={}, layer_norm_eps=1e-5)
        assert np.isfinite(max(errors.values())) and max(errors.values()) <= TOL[tol], errors
