"""003's batch regularisers (Eqs. 4-10) and their prior expectations (loss weights of Eq. 11)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaerob_jax.models.gmm_prior import make_gmm_prior
from vaerob_jax.objectives import gmm_losses as L
from vaerob_jax.objectives import gmm_weights as W

N = 100
PRIOR = make_gmm_prior(10, 10)


@pytest.fixture(scope="module")
def mc():
    """Seeded Monte-Carlo expectations on 4000 pairs of independent prior batches (N = 100)."""
    return W.monte_carlo_expectations(PRIOR, N, jax.random.key(0), num_batches=4000, chunk=1000)


@pytest.fixture(scope="module")
def closed():
    return W.closed_form_expectations(PRIOR, N)


@pytest.fixture(scope="module")
def batches():
    """(2, 500, N, D): 500 pairs of independent prior batches."""
    z = PRIOR.sample(jax.random.key(7), 2 * 500 * N)
    return z.reshape(2, 500, N, 10)


def test_closed_forms_match_the_spec_numbers(closed):
    # spec 003 §1.4 / §4.2-4.3 (N = 100, D = K = 10).
    assert closed.ks == pytest.approx(101 / 60000)  # 1.6833e-3, weight 594.06
    assert 1 / closed.ks == pytest.approx(594.06, abs=0.01)
    assert 1 / closed.ks_union == pytest.approx(1194.03, abs=0.01)
    assert 1 / closed.ks2 == pytest.approx(303.0)
    assert 1 / W.ks_expectation(closed, "mean", two_point=True) == pytest.approx(449.98, abs=0.01)
    assert closed.cv_alpha2 == pytest.approx(5.45)
    for alpha, weight in [(0.0, 1.044), (0.5, 0.431), (1.0, 0.156)]:
        lam = 1 / W.coupled_covariance_expectation(closed, alpha)
        assert lam == pytest.approx(weight, rel=0.02)


def test_monte_carlo_agrees_with_closed_forms(mc, closed):
    # spec 003 §4.2-4.3: every expectation within 2 % on >= 2000 seeded batches, i.e. the
    # weighted losses λ·L average 1 on prior batches.
    for name in ("ks", "ks_union", "ks2", "cv", "cv_adv0", "cv_alpha2"):
        got, want = getattr(mc, name), getattr(closed, name)
        assert got == pytest.approx(want, rel=0.02), name
    mix = W.ks_expectation(mc, "mean", two_point=True)
    assert mix * 449.98 == pytest.approx(1.0, rel=0.02)
    for alpha, weight in [(0.0, 1.044), (0.5, 0.431), (1.0, 0.156)]:
        e = W.coupled_covariance_expectation(mc, alpha)
        assert e * weight == pytest.approx(1.0, rel=0.02)


def test_covariance_closed_form_by_brute_force_at_small_n():
    # Independent numpy Monte Carlo where the finite-N terms of the closed form are large.
    prior = make_gmm_prior(3, 2, scale=2.0, sigma=0.7)
    n, reps = 4, 400_000
    rng = np.random.default_rng(0)

    def draw():
        modes = rng.integers(0, 2, size=(reps, n))
        return prior.means()[modes] + 0.7 * rng.standard_normal((reps, n, 3))

    def cov(z):
        zc = z - z.mean(axis=1, keepdims=True)
        return np.einsum("bnl,bnd->bld", zc, zc) / n

    z, z2 = draw(), draw()
    sigma = prior.covariance()
    cv = np.mean((cov(z) - sigma) ** 2)
    c = cov(np.concatenate([z, z2], axis=2))
    t0 = np.kron(np.eye(2), sigma)
    cv0 = np.mean((c - t0) ** 2)
    e = W.closed_form_expectations(prior, n)
    assert e.cv == pytest.approx(cv, rel=0.01)
    assert e.cv_adv0 == pytest.approx(cv0, rel=0.01)


def test_ks_misspecification_raises_the_loss(batches):
    # spec 003 §4.2: shifting the codes by +1 raises L_KS ≈ 34×, σ = 2 in the CDF ≈ 6.4×.
    z = batches[0]
    base = jnp.mean(jax.vmap(lambda b: L.ks_loss(PRIOR, b))(z))
    shifted = jnp.mean(jax.vmap(lambda b: L.ks_loss(PRIOR, b + 1.0))(z))
    wide = make_gmm_prior(10, 10, sigma=2.0)
    wrong_sigma = jnp.mean(jax.vmap(lambda b: L.ks_loss(wide, b))(z))
    assert float(shifted / base) > 10
    assert float(wrong_sigma / base) > 3


def test_two_point_ks_of_identical_batches_is_exactly_zero(batches):
    z = batches[0, 0]
    assert float(L.two_point_ks_loss(PRIOR, z, z)) == 0.0
    # Sorting decouples the pairing: any permutation of z_adv gives the same value.
    perm = jax.random.permutation(jax.random.key(1), N)
    assert float(L.two_point_ks_loss(PRIOR, z, batches[1, 0][perm])) == pytest.approx(
        float(L.two_point_ks_loss(PRIOR, z, batches[1, 0])), rel=1e-6
    )


def test_ks_forms_agree_with_brute_force_definitions():
    rng = np.random.default_rng(2)
    prior = make_gmm_prior(3, 2, scale=3.0)
    z, za = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) + 1.0
    with jax.enable_x64(True):
        f = lambda v: np.asarray(prior.marginal_cdf(jnp.asarray(v)))  # noqa: E731
        ecdf = np.arange(1, 7)[:, None] / 6
        ks = np.mean((f(np.sort(z, 0)) - ecdf) ** 2)
        ks_a = np.mean((f(np.sort(za, 0)) - ecdf) ** 2)
        u = np.sort(np.concatenate([z, za]), 0)
        union = np.mean((f(u) - np.arange(1, 13)[:, None] / 12) ** 2)
        ks2 = np.mean((f(np.sort(z, 0)) - f(np.sort(za, 0))) ** 2)
        zj, zaj = jnp.asarray(z), jnp.asarray(za)
        assert float(L.ks_loss(prior, zj)) == pytest.approx(ks, rel=1e-12)
        assert float(L.augmented_ks_loss(prior, zj, zaj)) == pytest.approx(0.5 * (ks + ks_a))
        assert float(L.augmented_ks_loss(prior, zj, zaj, "union")) == pytest.approx(union)
        assert float(L.two_point_ks_loss(prior, zj, zaj)) == pytest.approx(ks2, rel=1e-12)
        want = (2 / 3) * 0.5 * (ks + ks_a) + ks2 / 3
        assert float(L.adversarial_ks_loss(prior, zj, zaj)) == pytest.approx(want, rel=1e-12)


def test_coupled_covariance_alpha_identity(batches):
    # E[L_CV^adv(α)] − E[L_CV^adv(0)] = α²‖Σ‖²_F/(2D²) = 5.45α² on independent batches; per
    # batch the difference is that plus −(α/D²) Σ Ĉ_cross∘Σ (mean zero).
    z, z2 = batches
    sigma = jnp.asarray(PRIOR.covariance(), z.dtype)

    def diff(a, b, alpha):
        return L.coupled_covariance_loss(PRIOR, a, b, alpha) - L.coupled_covariance_loss(
            PRIOR, a, b, 0.0
        )

    def cross_term(a, b, alpha):
        zc, bc = a - a.mean(0), b - b.mean(0)
        return -alpha * jnp.sum((zc.T @ bc / N) * sigma) / 100

    for alpha in (0.5, 1.0):
        d = jax.vmap(diff, in_axes=(0, 0, None))(z, z2, alpha)
        np.testing.assert_allclose(
            d,
            5.45 * alpha**2 + jax.vmap(cross_term, in_axes=(0, 0, None))(z, z2, alpha),
            rtol=1e-4,
            atol=1e-4,
        )
        assert float(jnp.mean(d)) == pytest.approx(5.45 * alpha**2, rel=0.02)


def test_coupled_covariance_with_identical_codes():
    # spec 003 §4.3: z_adv = z on 10⁵ prior codes: L_CV^adv(1) < 0.01, L_CV^adv(0) ≈ 5.45.
    z = PRIOR.sample(jax.random.key(5), 100_000)
    assert float(L.coupled_covariance_loss(PRIOR, z, z, 1.0)) < 0.01
    assert float(L.coupled_covariance_loss(PRIOR, z, z, 0.0)) == pytest.approx(5.45, rel=0.02)
    # Eq. 8 is Eq. 10 at α = 0; the target's blocks are Σ and αΣ.
    t = np.asarray(L.coupled_covariance_target(PRIOR, 0.3))
    np.testing.assert_allclose(t[:10, 10:], 0.3 * PRIOR.covariance(), rtol=1e-6)
    np.testing.assert_allclose(t[10:, 10:], PRIOR.covariance(), rtol=1e-6)


def test_gradients_of_every_regulariser_match_finite_differences():
    # spec 003 §4.4: gradients in the codes (and α) are finite, nonzero and agree with central
    # differences in float64. One stacked function, so one Jacobian and one FD program.
    prior = make_gmm_prior(3, 3, scale=2.0)
    n, d = 7, 3
    with jax.enable_x64(True):
        zs = prior.sample(jax.random.key(0), 2 * n, jnp.float64)
        theta = jnp.concatenate([zs[:n].ravel(), (zs[n:] * 1.1 + 0.2).ravel(), jnp.array([0.4])])

        def losses(t):
            z, za, alpha = t[: n * d].reshape(n, d), t[n * d : 2 * n * d].reshape(n, d), t[-1]
            return jnp.stack(
                [
                    L.ks_loss(prior, z),
                    L.covariance_loss(prior, z),
                    L.augmented_ks_loss(prior, z, za, "mean"),
                    L.augmented_ks_loss(prior, z, za, "union"),
                    L.adversarial_ks_loss(prior, z, za, "mean"),
                    L.adversarial_ks_loss(prior, z, za, "union"),
                    L.two_point_ks_loss(prior, z, za),
                    L.coupled_covariance_loss(prior, z, za, alpha),
                ]
            )

        h = 1e-6
        jac = np.asarray(jax.jit(jax.jacrev(losses))(theta))  # (8, P)
        eye = jnp.eye(theta.size, dtype=theta.dtype)
        fd = jax.jit(jax.vmap(lambda e: (losses(theta + h * e) - losses(theta - h * e)) / (2 * h)))
        fd_jac = np.asarray(fd(eye)).T
    assert np.all(np.isfinite(jac))
    assert np.all(np.abs(jac[:, : n * d]).max(axis=1) > 0)  # every loss moves with z
    assert np.abs(jac[-1, -1]) > 0  # ... and the coupled covariance with α
    scale = np.abs(jac).max(axis=1, keepdims=True)
    # Relative to each loss's largest partial derivative (measured ~1e-9 with h = 1e-6).
    np.testing.assert_allclose(jac, fd_jac, rtol=1e-5, atol=1e-7 * scale.min())
    assert np.all(np.abs(jac - fd_jac) <= 1e-5 * scale)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: L.ks_loss(PRIOR, jnp.zeros((5, 3))), "codes"),
        (lambda: L.ks_loss(PRIOR, jnp.zeros((1, 10))), "at least 2"),
        (lambda: L.two_point_ks_loss(PRIOR, jnp.zeros((5, 10)), jnp.zeros((4, 10))), "same"),
        (lambda: L.augmented_ks_loss(PRIOR, jnp.ones((3, 10)), jnp.ones((3, 10)), "x"), "ks_pool"),
        (lambda: W.closed_form_expectations(PRIOR, 1), "batch_size"),
        (
            lambda: W.closed_form_expectations(
                make_gmm_prior(2, sigma=2.0, component_cov="reference_std"), 10
            ),
            "monte_carlo",
        ),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()
