"""β-TCVAE estimators and loss (002 §2.1; spec 002 §4 tests 1-5): weights, unbiasedness."""

from __future__ import annotations

import functools
import itertools
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
from vaerob_jax.objectives.tc import (
    aggregate_log_densities,
    beta_tcvae_loss,
    encode_chains,
    importance_weights,
    log_importance_weights,
    stride_bug_importance_weights,
    tc_decomposition,
    tc_decomposition_from_samples,
    tc_penalty,
)


def _conditional_errors(w: np.ndarray, n: int, f: np.ndarray) -> np.ndarray:
    """|E[Σ_j W_ij f(b_j) | b_i = n*] − mean(f)| over all rows i and anchors n*, by enumeration."""
    b = w.shape[0]
    batches = np.array(list(itertools.permutations(range(n), b)))  # every ordered distinct batch
    errs = np.zeros((b, n))
    for i in range(b):
        for anchor in range(n):
            sel = batches[batches[:, i] == anchor]
            est = (f[sel] * w[i][None, :]).sum(axis=1)
            errs[i, anchor] = abs(est.mean() - f.mean())
    return errs


def test_mss_matrix_structure_and_exact_conditional_unbiasedness():
    """Spec §4.1: N=6, B=3, every row, every anchor, random f (exact enumeration)."""
    n, b = 6, 3
    w = importance_weights(b, n, "mss")
    m = b - 1
    s = (n - m) / (n * m)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-15)
    np.testing.assert_allclose(np.diag(w), 1.0 / n, atol=1e-15)
    for i in range(b):
        assert np.flatnonzero(np.isclose(w[i], s)).tolist() == [(i + 1) % b]
    rng = np.random.default_rng(0)
    for _ in range(3):
        f = rng.normal(size=n)
        assert _conditional_errors(w, n, f).max() < 1e-12


def test_stride_bug_matrix_fails_conditional_unbiasedness_though_rows_mostly_sum_to_one():
    n, b = 6, 3
    bug = stride_bug_importance_weights(b, n)
    sums_ok = np.isclose(bug.sum(axis=1), 1.0)
    assert sums_ok.sum() == b - 1  # the row-sum check catches only one row
    assert not np.allclose(np.diag(bug), 1.0 / n)  # 1/N went down column 0
    f = np.random.default_rng(0).normal(size=n)
    assert _conditional_errors(bug, n, f).max() > 0.05
    # ... while ours passes on the same f (test above) and the two differ off column 0/1 only
    ours = importance_weights(b, n, "mss")
    assert not np.allclose(bug, ours)


def test_mss_rows_sum_to_one_and_mws_weights_sum_to_one_over_n():
    for b, n in [(2, 2), (2, 10), (5, 5), (16, 1000)]:
        np.testing.assert_allclose(importance_weights(b, n, "mss").sum(1), 1.0, rtol=1e-12)
        np.testing.assert_allclose(importance_weights(b, n, "mws").sum(1), 1.0 / n, rtol=1e-12)
        lw = log_importance_weights(b, n, "mss")
        assert lw.shape == (b, b) and lw.dtype == jnp.float32


@pytest.mark.parametrize(
    ("b", "n", "est", "msg"),
    [
        (8, 4, "mss", "smaller than the batch"),
        (1, 10, "mss", "batch_size >= 2"),
        (4, 10, "bogus", "unknown tc estimator"),
        (4, 10.0, "mws", "dataset_size must be an int"),
    ],
)
def test_bad_sizes_raise(b, n, est, msg):
    with pytest.raises(ValueError, match=msg):
        importance_weights(b, n, est)


@jax.jit
def _batch_tc_impl(z, q, log_w):
    _, parts = tc_penalty(z, q, log_w, jnp.asarray(1.0))
    return jnp.mean(parts["tc"]), jnp.mean(parts["mi"])


def _batch_tc(z, q, log_w):
    tc, mi = _batch_tc_impl(z, q, log_w)
    return float(tc), float(mi)


def test_collapsed_posteriors_mss_zero_and_mws_offset_exact():
    """Spec §4.2: all q(z|x_n) = N(0, I): MSS TC = I = 0; MWS TC = (D−1) log N, I = log N."""
    b, n, d = 64, 4096, 4
    z = jax.random.normal(jax.random.key(0), (b, d))
    q = DiagGaussian(jnp.zeros((b, d)), jnp.zeros((b, d)))
    tc, mi = _batch_tc(z, q, log_importance_weights(b, n, "mss"))
    assert abs(tc) < 1e-5 and abs(mi) < 1e-5
    tc, mi = _batch_tc(z, q, log_importance_weights(b, n, "mws"))
    assert tc == pytest.approx((d - 1) * math.log(n), rel=1e-6)  # 24.95
    assert mi == pytest.approx(math.log(n), rel=1e-6)
    # the full-data estimator: every component identical, so I = TC = 0 up to rounding
    full = tc_decomposition_from_samples(z, q)
    assert abs(float(full["tc"])) < 1e-5 and abs(float(full["mi"])) < 1e-5


def _gaussian_aggregate(rho, n=4096, seed=0):
    rng = np.random.default_rng(seed)
    a = np.array([[1.0, rho], [rho, 1.0]])
    mu = rng.multivariate_normal(np.zeros(2), a, size=n).astype(np.float32)
    z = (mu + rng.normal(size=mu.shape)).astype(np.float32)
    q = DiagGaussian(jnp.asarray(mu), jnp.zeros_like(jnp.asarray(mu)))
    return jnp.asarray(z), q, rng


@pytest.mark.parametrize("rho", [0.9, 0.0])
def test_gaussian_aggregate_tc_closed_form(rho):
    """Spec §4.3: μ_n ~ N(0, A), q = N(μ_n, I) ⇒ q(z) ≈ N(0, A + I), TC = −½ log(1 − ρ²/4)."""
    n = 4096
    truth = -0.5 * math.log(1 - rho**2 / 4)
    z, q, rng = _gaussian_aggregate(rho, n)
    full = tc_decomposition_from_samples(z, q)
    assert abs(float(full["tc"]) - truth) < 0.02
    # the decomposition adds up to the MC KL and the dimension-wise part is per dim
    assert float(full["kl"]) == pytest.approx(
        float(full["mi"] + full["tc"] + full["dwkl"]), rel=1e-6
    )
    assert full["dwkl_per_dim"].shape == (2,)
    # minibatch estimators on 16 disjoint batches of 256 (distinct indices, as trained)
    perm = rng.permutation(n).reshape(16, 256)
    tcs = {}
    for est in ("mss", "mws"):
        lw = log_importance_weights(256, n, est)
        vals = [_batch_tc(z[i], DiagGaussian(q.mean[i], q.logvar[i]), lw)[0] for i in perm]
        tcs[est] = float(np.mean(vals))
    assert abs(tcs["mss"] - truth) < 0.05
    # MWS values are off by (D - 1) log N: never report them as TC
    assert tcs["mws"] > 5.0
    assert abs(tcs["mws"] - math.log(n) - truth) < 0.2


def _posterior_table(n, d, seed):
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(n, d)).astype(np.float32)
    logvar = rng.uniform(-0.5, 0.5, size=(n, d)).astype(np.float32)
    return DiagGaussian(jnp.asarray(mu), jnp.asarray(logvar)), rng


@functools.partial(jax.jit, static_argnames="row")
def _row_log_qhat(z_anchor, q_all, batches, log_w, row):
    def one(idx):
        qb = DiagGaussian(q_all.mean[idx], q_all.logvar[idx])
        zb = qb.mean.at[row].set(z_anchor)  # other rows' samples do not enter this row
        return aggregate_log_densities(zb, qb, log_w)[0][row]

    return jax.vmap(one)(batches)


def _row_qhat(z_anchor, q_all, batches, log_w, row=0):
    """exp(log q̂) of row ``row`` of each batch (the anchor's row), via aggregate_log_densities."""
    out = _row_log_qhat(z_anchor, q_all, jnp.asarray(batches), log_w, row)
    return np.exp(np.asarray(out, np.float64))


def test_mss_and_mws_vs_brute_force_exact_density():
    """Spec §4.4: N ≤ 64, mean of q̂ over random batches vs (1/N) Σ_n q(z|x_n) (1 %)."""
    n, d, b, anchor = 64, 2, 8, 5
    q, rng = _posterior_table(n, d, 1)
    z = q.mean[anchor] + jnp.exp(0.5 * q.logvar[anchor]) * 0.7
    dens = np.exp(np.asarray(jnp.sum(q.log_prob(z[None]), -1), np.float64))  # q(z|x_n), (N,)
    exact = dens.mean()
    others = np.array([i for i in range(n) if i != anchor])
    reps = 20000
    rest = np.stack([rng.permutation(others)[: b - 1] for _ in range(reps)])
    batches = np.concatenate([np.full((reps, 1), anchor), rest], axis=1)
    mss = _row_qhat(z, q, batches, log_importance_weights(b, n, "mss")).mean()
    assert mss == pytest.approx(exact, rel=0.01)
    mws = _row_qhat(z, q, batches, log_importance_weights(b, n, "mws")).mean()
    mws_expect = (dens[anchor] + (b - 1) * dens[others].mean()) / (n * b)  # by linearity
    assert mws == pytest.approx(mws_expect, rel=0.01)
    assert abs(mws / exact - 1) > 0.5  # MWS is not an estimate of q(z)


def test_mss_exact_enumeration_through_aggregate_log_densities():
    """Unbiasedness of q̂ itself (not only of the weights) for every row, N = 7, B = 3."""
    n, d, b = 7, 2, 3
    q, _ = _posterior_table(n, d, 2)
    lw = log_importance_weights(b, n, "mss")
    perms = np.array(list(itertools.permutations(range(n), b)))
    zs = q.mean + 0.3  # one evaluation point per anchor
    exact = np.exp(np.asarray(jnp.sum(q.log_prob(zs[:, None]), -1), np.float64)).mean(1)
    for row in range(b):
        batches = np.stack([perms[perms[:, row] == a] for a in range(n)])  # (N, 30, B)
        est = jax.vmap(lambda z, bt, r=row: _row_log_qhat(z, q, bt, lw, r))(zs, batches)
        np.testing.assert_allclose(np.exp(np.asarray(est, np.float64)).mean(1), exact, rtol=1e-5)


def _chen_log_densities(z, mu, log_sigma, log_w):
    """Chen et al.'s code formula on numpy arrays, Normal parameterised by (μ, log σ)."""
    diff = (z[:, None, :] - mu[None]) / np.exp(log_sigma[None])
    ell = -0.5 * math.log(2 * math.pi) - log_sigma[None] - 0.5 * diff**2
    log_qz = logsumexp(log_w + ell.sum(2), axis=1)
    log_prod = logsumexp(log_w[:, :, None] + ell, axis=1).sum(1)
    return log_qz, log_prod


@pytest.mark.parametrize("est", ["mws", "mss"])
def test_matches_chen_code_formula_on_fixed_arrays(est):
    rng = np.random.default_rng(3)
    b, d, n = 6, 3, 50
    mu = rng.normal(size=(b, d))
    log_sigma = rng.uniform(-1, 0.5, size=(b, d))
    z = rng.normal(size=(b, d))
    lw = np.log(importance_weights(b, n, est))
    ref = _chen_log_densities(z, mu, log_sigma, lw)
    q = DiagGaussian(jnp.asarray(mu, jnp.float32), jnp.asarray(2 * log_sigma, jnp.float32))
    ours = aggregate_log_densities(jnp.asarray(z, jnp.float32), q, jnp.asarray(lw, jnp.float32))
    np.testing.assert_allclose(np.asarray(ours[0]), ref[0], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ours[1]), ref[1], rtol=1e-5)


@pytest.fixture(scope="module")
def vae():
    return make_vae("mlp", (8, 8, 1), latent_dim=4, hidden=(32, 16))


@pytest.mark.parametrize("est", ["mws", "mss"])
def test_beta_tcvae_at_beta_one_is_mc_negative_elbo(vae, tiny_images, est):
    """Spec §1.1/§4.5: the decomposition telescopes at β = 1 for any estimator."""
    params = random_params(vae, 0)
    xs, key = tiny_images[:8], jax.random.key(7)
    loss, aux = jax.jit(beta_tcvae_loss(vae, est, dataset_size=100))(
        params, {"x": xs}, key, {"beta": jnp.asarray(1.0)}
    )

    @jax.jit
    @jax.vmap
    def neg_elbo(x, k):  # the documented key convention: z from fold_in(split(key, B)[i], 0)
        q = vae.posterior(params, x)
        z = q.sample(jax.random.fold_in(k, 0))
        log_pz = DiagGaussian(jnp.zeros(4), jnp.zeros(4)).log_prob(z)
        return -vae.log_likelihood(params, x, z) + jnp.sum(q.log_prob(z) - log_pz)

    ref = jnp.mean(neg_elbo(xs, jax.random.split(key, 8)))
    assert float(loss) == pytest.approx(float(ref), rel=1e-5)
    assert float(aux["elbo"]) == pytest.approx(-float(ref), rel=1e-5)


def test_beta_tcvae_beta_enters_only_through_tc(vae, tiny_images):
    params = random_params(vae, 0)
    loss = jax.jit(beta_tcvae_loss(vae, "mss", dataset_size=64))
    batch, key = {"x": tiny_images[:8]}, jax.random.key(1)
    l1, aux = loss(params, batch, key, {"beta": jnp.asarray(1.0)})
    l6, _ = loss(params, batch, key, {"beta": jnp.asarray(6.0)})
    assert float(l6 - l1) == pytest.approx(5.0 * float(aux["tc_minibatch"]), rel=1e-4, abs=1e-4)
    grads = jax.grad(lambda p: loss(p, batch, key, {"beta": jnp.asarray(6.0)})[0])(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_beta_tcvae_validates_sizes(vae, tiny_images):
    with pytest.raises(ValueError, match="dataset_size must be an int"):
        beta_tcvae_loss(vae, dataset_size=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="single-layer"):
        beta_tcvae_loss(make_hierarchical("mlp", (8, 8, 1), (4,), hidden=(32, 16)), dataset_size=9)
    loss = beta_tcvae_loss(vae, "mss", dataset_size=4)
    with pytest.raises(ValueError, match="smaller than the batch"):
        loss(random_params(vae, 0), {"x": tiny_images[:8]}, jax.random.key(0), {"beta": 1.0})


def test_tc_decomposition_of_a_model_matches_sample_version(vae, tiny_images):
    params = random_params(vae, 0)
    key = jax.random.key(2)
    out = tc_decomposition(vae, params, tiny_images, key, batch_size=5)  # 16 = 3 chunks + 1
    enc = encode_chains(vae, params, tiny_images, jax.random.fold_in(key, 0), batch_size=5)
    np.testing.assert_allclose(  # chunked encoding == one vmapped pass, image n: fold_in(key, n)
        np.asarray(enc["z"][3]),
        np.asarray(
            vae.posterior(params, tiny_images[3]).sample(
                jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, 0), 3), 0)
            )
        ),
        rtol=1e-6,
    )
    ref = tc_decomposition_from_samples(enc["z"], DiagGaussian(enc["mean"], enc["logvar"]))
    for name in ("mi", "tc", "dwkl", "kl"):
        assert float(out[name]) == pytest.approx(float(ref[name]), rel=1e-5, abs=1e-6)
    assert float(out["kl"]) == pytest.approx(float(out["mi"] + out["tc"] + out["dwkl"]), rel=1e-5)
    # per sample log q(z_s|x_s) <= log Σ_n q(z_s|x_n), so the MI estimate is at most log N
    assert float(out["mi"]) <= math.log(tiny_images.shape[0]) + 1e-5
