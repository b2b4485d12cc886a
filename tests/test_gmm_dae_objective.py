"""003's training objectives: FGSM inside the step (Eq. 6) and the three BatchLosses (Eqs. 4-11)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from vaerob_jax.models.dae import make_dae
from vaerob_jax.models.gmm_prior import make_gmm_prior
from vaerob_jax.objectives import gmm_dae as G
from vaerob_jax.objectives import gmm_losses as L
from vaerob_jax.objectives import gmm_weights as W

SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def dae():
    return make_dae("mlp", SHAPE, 3, hidden=(16,))


@pytest.fixture(scope="module")
def dae_params(dae):
    return dae.init(jax.random.key(0))


@pytest.fixture(scope="module")
def images():
    return jax.random.uniform(jax.random.key(1), (12, *SHAPE))


class LinearEncoder:
    """g(x) = A·vec(x) for one image or a batch."""

    latent_dim = 3

    def embed(self, params, x):
        return x.reshape(*x.shape[:-3], -1) @ params.T


def test_fgsm_matches_closed_form_on_linear_encoder(images):
    # spec 003 §4.5: δ = clip(clip(δ₀ + 1.25ε·sign(AᵀAδ₀), −ε, ε) + x, 0, 1) − x, same δ₀.
    a = jax.random.normal(jax.random.key(2), (3, 64))
    eps, key = 0.3, jax.random.key(3)
    x_adv = jax.jit(lambda p, x: G.fgsm_latent(LinearEncoder(), p, x, eps, key))(a, images)
    keys = jax.random.split(key, images.shape[0])
    d0s = jax.vmap(lambda k: eps * jax.random.uniform(k, SHAPE, jnp.float32, -1.0, 1.0))(keys)
    an = np.asarray(a, np.float64)
    for n in range(images.shape[0]):
        d0 = np.asarray(d0s[n])
        x = np.asarray(images[n])
        step = an.T @ an @ d0.ravel()
        d1 = np.clip(d0 + 1.25 * eps * np.sign(step).reshape(SHAPE), -eps, eps)
        want = np.clip(x + d1, 0.0, 1.0)
        np.testing.assert_allclose(x_adv[n], want, atol=1e-6)


def test_fgsm_stays_in_ball_and_box_without_gradient(dae, dae_params, images):
    eps = jnp.float32(0.2)
    x_adv = G.fgsm_latent(dae, dae_params, images, eps, jax.random.key(4))
    assert float(jnp.max(jnp.abs(x_adv - images))) <= 0.2 * (1 + 1e-6)
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    gx, gp = jax.grad(
        lambda x, p: jnp.sum(G.fgsm_latent(dae, p, x, eps, jax.random.key(4))), argnums=(0, 1)
    )(images, dae_params)
    np.testing.assert_array_equal(gx, 0.0)
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(gp))
    np.testing.assert_array_equal(
        G.fgsm_latent(dae, dae_params, images, 0.0, jax.random.key(4)), images
    )


def test_fgsm_increases_the_latent_distance_over_its_random_start(dae, dae_params, images):
    eps, key = 0.1, jax.random.key(5)
    z = dae.embed(dae_params, images)
    x_adv = G.fgsm_latent(dae, dae_params, images, eps, key)
    keys = jax.random.split(key, images.shape[0])
    d0 = jax.vmap(lambda k: eps * jax.random.uniform(k, SHAPE, jnp.float32, -1.0, 1.0))(keys)
    start = jnp.clip(images + d0, 0.0, 1.0)
    after = jnp.linalg.norm(dae.embed(dae_params, x_adv) - z, axis=-1)
    before = jnp.linalg.norm(dae.embed(dae_params, start) - z, axis=-1)
    assert float(jnp.mean(after)) > float(jnp.mean(before))


def _no_noise_no_attack(loss, params, batch, alpha=1.0):
    hp = {"latent_noise": jnp.float32(0.0), "eps": jnp.float32(0.0), "alpha": jnp.float32(alpha)}
    return loss(params, batch, jax.random.key(6), hp)


@pytest.mark.parametrize("variant", G.VARIANTS)
def test_total_loss_reduces_to_known_terms_without_noise_or_attack(
    dae, dae_params, images, variant
):
    # s = 0 and ε = 0 make z_adv = z: the two-point term vanishes, Eq. 7 is L_KS(z), and Eq. 10
    # at α = 1 is L_CV(z) (each of the four blocks of Ĉ is Σ̂).
    prior = make_gmm_prior(3, 3)
    loss = G.gmm_dae_objective(dae, prior, variant)
    value, aux = _no_noise_no_attack(loss, dae_params, {"x": images})
    z = dae.embed(dae_params, images)
    e = W.closed_form_expectations(prior, images.shape[0])
    recon = jnp.mean(jnp.square(dae.reconstruct(dae_params, images) - images))
    ks, cv = L.ks_loss(prior, z), L.covariance_loss(prior, z)
    if variant == "gmm_dae":
        want = 500 * recon + ks / e.ks + cv / e.cv
    elif variant == "augmented":  # α = 0 regardless of hp
        cv0 = L.coupled_covariance_loss(prior, z, z, 0.0)
        want = 500 * recon + ks / e.ks + cv0 / e.cv_adv0
    else:
        assert float(aux["ks2"]) == 0.0
        assert float(aux["cv"]) == pytest.approx(float(cv), rel=1e-5)
        mix = (2 / 3) * e.ks + e.ks2 / 3
        want = 500 * recon + (2 / 3) * ks / mix + cv / (e.cv_adv0 + e.cv_alpha2)
        assert float(aux["latent_shift"]) == 0.0
    assert float(aux["recon"]) == pytest.approx(float(recon), rel=1e-5)
    assert float(value) == pytest.approx(float(want), rel=1e-5)
    json.dumps(loss.spec())


def test_separate_weighting_and_union_pool(dae, dae_params, images):
    prior = make_gmm_prior(3, 3)
    n = images.shape[0]
    e = W.closed_form_expectations(prior, n)
    z = dae.embed(dae_params, images)
    sep = G.coupled_dae_loss(dae, prior, ks_weighting="separate", ks_pool="union")
    value, aux = _no_noise_no_attack(sep, dae_params, {"x": images})
    union = L.ks_union_loss(prior, z, z)
    assert float(aux["ks"]) == pytest.approx(float(union), rel=1e-6)
    assert float(aux["lambda_ks"]) == pytest.approx(1 / e.ks_union, rel=1e-6)
    recon = aux["recon"]
    want = 500 * recon + union / e.ks_union + aux["cv"] / (e.cv_adv0 + e.cv_alpha2)
    assert float(value) == pytest.approx(float(want), rel=1e-5)


def test_alpha_grid_gets_its_weight_without_recompiling():
    # N = 100, D = K = 10: λ_CV = 1.044 / 0.431 / 0.156 at α = 0 / 0.5 / 1 (spec 003 §1.4).
    model = make_dae("mlp", SHAPE, 10, hidden=(8,))
    params = model.init(jax.random.key(0))
    loss = G.coupled_dae_loss(model, make_gmm_prior(10, 10))
    x = jax.random.uniform(jax.random.key(1), (100, *SHAPE))
    traces = []

    @jax.jit
    def run(alpha):
        traces.append(1)
        return loss(params, {"x": x}, jax.random.key(2), {"alpha": alpha})[1]["lambda_cv"]

    for alpha, weight in [(0.0, 1.044), (0.5, 0.431), (1.0, 0.156)]:
        assert float(run(jnp.float32(alpha))) == pytest.approx(weight, rel=0.02)
    assert len(traces) == 1


def test_gradients_of_every_objective_match_finite_differences(dae):
    # spec 003 §4.4 for the total losses: directional derivatives in the params (FGSM, latent
    # noise, sorting and covariances inside) vs central differences, float64.
    prior = make_gmm_prior(3, 3)
    # The option forms (union pool, separate weights) are sums of the code-level terms whose
    # gradients tests/test_gmm_losses.py checks; here the three models' full objectives.
    configs = [("gmm_dae", {}), ("augmented", {}), ("coupled", {})]
    losses = [G.gmm_dae_objective(dae, prior, v, **kw) for v, kw in configs]
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: a.astype(jnp.float64), dae.init(jax.random.key(3)))
        x = jax.random.uniform(jax.random.key(4), (6, *SHAPE), jnp.float64)
        hp = {"eps": jnp.float64(0.1), "alpha": jnp.float64(0.5), "latent_noise": jnp.float64(1.0)}
        flat, unravel = ravel_pytree(params)

        def values(theta):
            p = unravel(theta)
            return jnp.stack([fn(p, {"x": x}, jax.random.key(5), hp)[0] for fn in losses])

        dirs = jax.random.normal(jax.random.key(6), (2, flat.size), jnp.float64)
        h = 1e-6
        jvp = jax.jit(jax.vmap(lambda v: jax.jvp(values, (flat,), (v,))[1]))(dirs)
        fd = jax.jit(jax.vmap(lambda v: (values(flat + h * v) - values(flat - h * v)) / (2 * h)))(
            dirs
        )
    assert np.all(np.isfinite(jvp)) and np.all(np.abs(jvp) > 0)
    np.testing.assert_allclose(jvp, fd, rtol=1e-5)


def test_hyperparameter_checks():
    G.check_gmm_hyperparameters({"alpha": [-1.0, 0.0, 1.0], "eps": 0.3, "beta": -5.0})
    for hp, name in [
        ({"alpha": [0.5, 1.5]}, "alpha"),
        ({"eps": -0.1}, "eps"),
        ({"latent_noise": float("nan")}, "latent_noise"),
        ({"lambda_rec": -1.0}, "lambda_rec"),
    ]:
        with pytest.raises(ValueError, match=name):
            G.check_gmm_hyperparameters(hp)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"variant": "ours"}, "variant"),
        ({"variant": "augmented", "ks_weighting": "separate"}, "separate"),
        ({"variant": "gmm_dae", "ks_pool": "union"}, "union"),
        ({"ks_pool": "pooled"}, "ks_pool"),
        ({"alpha": 2.0}, "alpha"),
        ({"eps": -1.0}, "eps"),
    ],
)
def test_bad_objective_options_raise(dae, kwargs, match):
    with pytest.raises(ValueError, match=match):
        G.gmm_dae_objective(dae, make_gmm_prior(3, 3), **kwargs)


def test_latent_size_and_expectation_mismatch_raise(dae, dae_params, images):
    with pytest.raises(ValueError, match="latent_dim"):
        G.gmm_dae_loss(dae, make_gmm_prior(4, 3))
    prior = make_gmm_prior(3, 3)
    loss = G.gmm_dae_loss(dae, prior, expectations=W.closed_form_expectations(prior, 5))
    with pytest.raises(ValueError, match="batch size 5"):
        loss(dae_params, {"x": images}, jax.random.key(0), {})
