"""002's metrics: MIG (spec §4.7), β = 1 ELBO, Gaussian-noise robustness, weight-norm changes."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from tests.helpers_002 import random_params
from vaerob_jax.models import make_vae
from vaerob_jax.models.distributions import DiagGaussian
from vaerob_jax.models.hierarchical import make_hierarchical
from vaerob_jax.robustness.disentangle import (
    discretize_factors,
    elbo_evaluation,
    mig_from_samples,
    mutual_information_gap,
    noise_log_likelihood,
    noise_robustness,
    relative_weight_norm_change,
    weight_norms,
)

SHAPE = (8, 8, 1)
HIDDEN = (32, 16)


def _grid_factors(values=20, repeats=2):
    v1, v2 = np.meshgrid(np.arange(values), np.arange(values), indexing="ij")
    v = np.stack([v1.ravel(), v2.ravel()], 1)
    return np.tile(v, (repeats, 1))  # (values² · repeats, 2)


def _standardise(v):
    return (v - v.mean(0)) / v.std(0)


def _code(mean, std, seed):
    mean = jnp.asarray(mean, jnp.float32)
    logvar = jnp.full_like(mean, 2 * math.log(std))
    z = mean + std * jax.random.normal(jax.random.key(seed), mean.shape)
    return z, DiagGaussian(mean, logvar)


def test_mig_identity_representation_scores_high():
    v = _grid_factors()
    z, q = _code(_standardise(v), 0.01, 0)
    out = mig_from_samples(z, q, v)
    assert float(out["mig"]) >= 0.9
    np.testing.assert_allclose(out["factor_entropies"], math.log(20), rtol=1e-9)


def test_mig_constant_representation_scores_zero():
    v = _grid_factors()
    z, q = _code(np.zeros((v.shape[0], 3)), 1.0, 1)
    assert float(mig_from_samples(z, q, v)["mig"]) <= 0.02


def test_mig_duplicated_dimension_closes_that_factors_gap():
    v = _grid_factors()
    s = _standardise(v)
    mean = np.stack([s[:, 0], s[:, 0], s[:, 1]], 1)  # z_1 = z_2 = v_1, z_3 = v_2
    z, q = _code(mean, 0.01, 2)
    z = z.at[:, 1].set(z[:, 0])  # the very same sample in both dims
    out = mig_from_samples(z, q, v)
    assert float(out["gaps"][0]) < 0.02
    assert float(out["gaps"][1]) >= 0.9


def test_mig_entropies_match_brute_force():
    rng = np.random.default_rng(0)
    n, d = 30, 2
    mean = rng.normal(size=(n, d))
    std = rng.uniform(0.3, 1.0, size=(n, d))
    z = mean + std * rng.normal(size=(n, d))
    codes = rng.integers(0, 3, size=(n, 1))
    q = DiagGaussian(jnp.asarray(mean, jnp.float32), jnp.asarray(2 * np.log(std), jnp.float32))
    out = mig_from_samples(jnp.asarray(z, jnp.float32), q, codes, sample_chunk=8, component_chunk=8)
    ell = (
        -0.5 * np.log(2 * np.pi) - np.log(std[None]) - 0.5 * ((z[:, None] - mean[None]) / std) ** 2
    )
    h = -np.mean(logsumexp(ell, axis=1) - np.log(n), axis=0)
    np.testing.assert_allclose(out["marginal_entropies"], h, rtol=1e-5)
    c = codes[:, 0]
    h_cond = np.zeros(d)
    for value in np.unique(c):
        idx = np.flatnonzero(c == value)
        sub = ell[np.ix_(idx, idx)]
        h_v = -np.mean(logsumexp(sub, axis=1) - np.log(idx.size), axis=0)
        h_cond += idx.size / n * h_v
    np.testing.assert_allclose(out["cond_entropies"][:, 0], h_cond, rtol=1e-5)
    p = np.bincount(c) / n
    np.testing.assert_allclose(out["factor_entropies"], [-np.sum(p * np.log(p))], rtol=1e-9)


def test_discretize_factors_bins_continuous_and_keeps_discrete():
    rng = np.random.default_rng(0)
    factors = {
        "size": rng.uniform(size=1000),
        "male": (rng.uniform(size=1000) > 0.5).astype(np.float32),
        "five": rng.integers(0, 5, size=1000).astype(np.float32),
        "shape": rng.integers(0, 3, size=1000),
    }
    codes, names = discretize_factors(factors, exclude=("shape",))
    assert names == ("size", "male", "five") and codes.shape == (1000, 3)
    counts = np.bincount(codes[:, 0])
    assert counts.size == 10 and counts.min() >= 95 and counts.max() <= 105  # quantile bins
    np.testing.assert_array_equal(codes[:, 1], factors["male"].astype(int))
    assert set(np.unique(codes[:, 2])) == set(range(5))
    with pytest.raises(ValueError, match="single value"):
        discretize_factors({"const": np.ones(10)})
    with pytest.raises(ValueError, match="has none"):
        discretize_factors(None)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def vae():
    model = make_vae("mlp", SHAPE, latent_dim=4, hidden=HIDDEN)
    return model, random_params(model, 0)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    return jnp.asarray(rng.uniform(size=(12, *SHAPE)).astype(np.float32))


def test_mutual_information_gap_of_models_top_layer(vae, images):
    hv = make_hierarchical("mlp", SHAPE, (4, 3), hidden=HIDDEN, layer_hidden=(16,))
    rng = np.random.default_rng(2)
    factors = {"a": rng.integers(0, 3, 12), "b": rng.uniform(size=12)}
    for model, params in (vae, (hv, random_params(hv, 1))):
        out = mutual_information_gap(model, params, images, factors, jax.random.key(0))
        assert out["mi"].shape == (model.latent_dim, 2) and out["factor_names"] == ("a", "b")
        assert 0.0 <= float(out["mig"]) <= 1.0
    with pytest.raises(ValueError, match="factor rows"):
        mutual_information_gap(*vae, images[:5], factors, jax.random.key(0))
    with pytest.raises(ValueError, match="has none"):
        mutual_information_gap(*vae, images, None, jax.random.key(0))


def test_elbo_evaluation_single_layer_closed_form_and_one_layer_hierarchy(vae, images):
    model, params = vae
    key = jax.random.key(3)
    out = elbo_evaluation(model, params, images, key, n_draws=4, batch_size=5)
    q = model.posterior(params, images)
    np.testing.assert_allclose(out["kl"], np.asarray(jnp.sum(q.kl_standard(), -1)), rtol=1e-5)
    np.testing.assert_allclose(out["elbo"], -(out["recon"] + out["kl"]), rtol=1e-6)

    @jax.jit
    def recon0(params):  # image 0, draws k = 0..3, the documented keys
        k0, q0 = jax.random.fold_in(key, 0), model.posterior(params, images[0])
        zs = jnp.stack(
            [q0.sample(jax.random.fold_in(jax.random.fold_in(k0, k), 0)) for k in range(4)]
        )
        return jnp.mean(-model.log_likelihood(params, jnp.stack([images[0]] * 4), zs))

    assert float(out["recon"][0]) == pytest.approx(float(recon0(params)), rel=1e-5)
    hv = make_hierarchical("mlp", SHAPE, (4,), hidden=HIDDEN)
    same = elbo_evaluation(hv, params, images, key, n_draws=4, batch_size=5)
    for name in ("recon", "kl", "elbo"):
        np.testing.assert_allclose(same[name], out[name], rtol=1e-5)


def test_elbo_evaluation_hierarchical_mc_kl(images):
    hv = make_hierarchical("mlp", SHAPE, (4, 3), hidden=HIDDEN, layer_hidden=(16,))
    params = random_params(hv, 2)
    key = jax.random.key(4)
    out = elbo_evaluation(hv, params, images[:4], key, n_draws=3)

    @jax.jit
    def chain_terms(params, k):
        zs, qs = hv.sample_chain(
            params, images[1], jax.random.fold_in(jax.random.fold_in(key, 1), k)
        )
        ps = hv.prior(params, zs)
        kl = sum(jnp.sum(qq.log_prob(z) - p.log_prob(z)) for z, qq, p in zip(zs, qs, ps))
        return -hv.log_likelihood(params, images[1], zs), kl

    terms = np.array([chain_terms(params, jnp.asarray(k)) for k in range(3)])
    assert float(out["recon"][1]) == pytest.approx(terms[:, 0].mean(), rel=1e-5)
    assert float(out["kl"][1]) == pytest.approx(terms[:, 1].mean(), rel=1e-5)


def test_noise_log_likelihood_zero_scale_clip_and_pairing(vae, images):
    model, params = vae
    key = jax.random.key(5)
    x = images[0]
    nll = jax.jit(
        functools.partial(noise_log_likelihood, model), static_argnames=("clip", "n_draws")
    )
    # draw 0's chain key is fold_in(fold_in(key, 1), 0); a VAE's layer-1 noise is fold_in(·, 0)
    chain0 = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, 1), 0), 0)
    z = model.posterior(params, x).sample(chain0)
    clean = model.log_likelihood(params, x, z)
    assert float(nll(params, x, key, 0.0)) == pytest.approx(float(clean), rel=1e-6)
    # clip: the encoder sees clip(x + s ε, 0, 1)
    eps = jax.random.normal(jax.random.fold_in(key, 0), x.shape)
    x_clip = jnp.clip(x + 3.0 * eps, 0.0, 1.0)
    z_c = model.posterior(params, x_clip).sample(chain0)
    assert float(nll(params, x, key, 3.0, clip=True)) == pytest.approx(
        float(model.log_likelihood(params, x, z_c)), rel=1e-5
    )
    grid = noise_robustness(model, params, images[:3], key, [0.0, 0.1, 0.5])
    assert grid.shape == (3, 3) and np.all(np.isfinite(grid))
    k2 = jax.random.fold_in(key, 2)  # image 2's key, the same ε at every scale
    assert float(grid[1, 2]) == pytest.approx(float(nll(params, images[2], k2, 0.1)), rel=1e-5)
    with pytest.raises(ValueError, match=">= 0"):
        noise_robustness(model, params, images[:3], key, [-0.1])


def _toy_params(enc=1.0, dec=1.0, bias=0.0):
    k = np.ones((2, 2))
    return {
        "encoder": {"Dense_0": {"kernel": enc * 3 * k, "bias": bias + np.ones(2)}},
        "up": {"1": {"mean": {"kernel": enc * 4 * k[:1], "bias": np.zeros(2)}}},
        "decoder": {"Dense_0": {"kernel": dec * k, "bias": np.ones(2)}},
        "down": {"1": {"mean": {"kernel": dec * 2 * k[:1], "bias": np.zeros(2)}}},
    }


def test_weight_norms_groups_and_relative_changes():
    norms = weight_norms(_toy_params())
    assert norms["encoder"] == pytest.approx(math.sqrt(4 * 9 + 2 * 16))
    assert norms["decoder"] == pytest.approx(math.sqrt(4 * 1 + 2 * 4))
    with_bias = weight_norms(_toy_params(), include_bias=True)
    assert with_bias["encoder"] == pytest.approx(math.sqrt(4 * 9 + 2 * 16 + 2))
    change = relative_weight_norm_change(_toy_params(), _toy_params(enc=1.1, dec=0.8, bias=5.0))
    assert change["encoder"] == pytest.approx(0.1) and change["decoder"] == pytest.approx(-0.2)
    with pytest.raises(ValueError, match="unknown parameter groups"):
        weight_norms({"encoder": {}, "classifier": {}})
