"""Targeted attacks of 002 (Eqs. 12-15): objectives, λ grid, pairs, records (spec §4.6, §4.8)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers_002 import random_params
from vaerob_jax.attacks.targeted import (
    NLL_STREAM,
    attack_record,
    dlgm_latent_objective,
    lambda_grid,
    latent_objective,
    output_objective,
    sample_pairs,
    seatbelt_latent_objective,
    target_nll,
)
from vaerob_jax.attacks.threats import exact_norm
from vaerob_jax.models import make_vae
from vaerob_jax.models.distributions import DiagGaussian
from vaerob_jax.models.hierarchical import make_hierarchical

SHAPE = (8, 8, 1)
HIDDEN = (32, 16)


def _hier(dims, kind="seatbelt"):
    return make_hierarchical("mlp", SHAPE, dims, kind=kind, hidden=HIDDEN, layer_hidden=(16,))


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    x, x_t = rng.uniform(size=(2, *SHAPE)).astype(np.float32)
    d = (0.05 * rng.normal(size=SHAPE)).astype(np.float32)
    return {"x": jnp.asarray(x), "target": jnp.asarray(x_t)}, jnp.asarray(d)


@pytest.fixture(scope="module")
def vae():
    model = make_vae("mlp", SHAPE, latent_dim=4, hidden=HIDDEN)
    return model, random_params(model, 0)


@pytest.fixture(scope="module")
def hv3():
    model = _hier((4, 3, 2))
    return model, random_params(model, 1)


KEY = jax.random.key(11)
# Eager evaluation of vmapped model code costs more CPU than compiling it: jit every call.
_jit = functools.cache(jax.jit)


# -- the Gaussian KL (spec §4.6) -------------------------------------------------------------------
def _tabacof_kl(q1: DiagGaussian, q2: DiagGaussian) -> jax.Array:
    """The public attack code's formula (std where the variance belongs, logs not halved)."""
    s1, s2 = q1.std, q2.std
    return jnp.sum((s1 + jnp.square(q1.mean - q2.mean)) / s2 + q2.logvar - q1.logvar - 0.5)


def test_closed_form_kl_matches_monte_carlo_and_the_copied_formula_does_not():
    q1 = DiagGaussian(jnp.array([0.3, -1.0, 2.0]), jnp.log(jnp.array([0.5, 2.0, 1.5])))
    q2 = DiagGaussian(jnp.array([-0.2, 0.5, 1.0]), jnp.log(jnp.array([1.2, 0.7, 3.0])))
    eta = jax.random.normal(jax.random.key(0), (1_000_000, 3))
    z = q1.mean + q1.std * eta
    ratio = np.asarray(jnp.sum(q1.log_prob(z) - q2.log_prob(z), axis=1), np.float64)
    mc, se = ratio.mean(), ratio.std() / np.sqrt(ratio.size)
    exact = float(jnp.sum(q1.kl(q2)))
    assert abs(mc - exact) < 3 * se
    assert abs(mc - float(_tabacof_kl(q1, q2))) > 10 * se
    assert float(jnp.sum(q1.kl(q1))) == pytest.approx(0.0, abs=1e-6)


def test_latent_objective_uses_the_correct_kl_at_d0(vae, pair):
    model, params = vae
    inputs, _ = pair
    value = latent_objective(model)(params, inputs, jnp.zeros(SHAPE), KEY)
    q, q_t = model.posterior(params, inputs["x"]), model.posterior(params, inputs["target"])
    assert float(value) == pytest.approx(-float(jnp.sum(q.kl(q_t))), rel=1e-6)
    assert abs(float(value) + float(_tabacof_kl(q, q_t))) > 1e-2  # the wrong-KL regression


# -- a linear-Gaussian encoder: the latent objective is a convex quadratic ----------------------
@dataclasses.dataclass(frozen=True)
class LinearGaussianEncoder:
    """q(z|x) = N(A vec(x) + b, diag exp(logvar)) with a fixed variance."""

    image_shape: tuple[int, int, int] = (2, 2, 1)

    def posterior(self, params, x):
        return DiagGaussian(params["A"] @ x.reshape(-1) + params["b"], params["logvar"])


def test_linear_encoder_latent_objective_is_convex_quadratic_with_exact_gradient():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        enc = LinearGaussianEncoder()
        params = {
            "A": jnp.asarray(rng.normal(size=(3, 4))),
            "b": jnp.asarray(rng.normal(size=3)),
            "logvar": jnp.asarray(rng.uniform(-1, 1, size=3)),
        }
        x, x_t = (jnp.asarray(rng.uniform(size=(2, 2, 1))) for _ in range(2))
        inputs = {"x": x, "target": x_t}
        obj = latent_objective(enc)

        def delta_value(d):  # the paper's divergence, −objective
            return -obj(params, inputs, d, KEY)

        inv_var = jnp.exp(-params["logvar"])
        hess = params["A"].T @ (inv_var[:, None] * params["A"])
        for d in (jnp.zeros((2, 2, 1)), jnp.asarray(rng.normal(size=(2, 2, 1)))):
            resid = params["A"] @ (x + d).reshape(-1) - params["A"] @ x_t.reshape(-1)
            assert float(delta_value(d)) == pytest.approx(0.5 * float(resid @ (inv_var * resid)))
            h = jax.hessian(delta_value)(d).reshape(4, 4)
            np.testing.assert_allclose(np.asarray(h), np.asarray(hess), atol=1e-10)
            g = np.asarray(jax.grad(delta_value)(d)).reshape(-1)
            fd = np.zeros(4)
            for i in range(4):
                e = jnp.zeros(4).at[i].set(1e-6).reshape(2, 2, 1)
                fd[i] = (delta_value(d + e) - delta_value(d - e)) / 2e-6
            np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
        assert np.linalg.eigvalsh(np.asarray(hess)).min() >= -1e-12  # convex


# -- the hierarchical forms ------------------------------------------------------------------------
def test_eq14_at_one_layer_equals_eq13(pair):
    vae = make_vae("mlp", SHAPE, latent_dim=4, hidden=HIDDEN)
    hv = _hier((4,))
    params = random_params(hv, 2)  # the VAE reads the same encoder entries
    inputs, d = pair
    f13, f14 = latent_objective(vae), dlgm_latent_objective(hv)
    assert float(_jit(f13)(params, inputs, d, KEY)) == pytest.approx(
        float(_jit(f14)(params, inputs, d, KEY)), rel=1e-6
    )
    g13 = jax.jit(jax.grad(f13, argnums=2))(params, inputs, d, KEY)
    g14 = jax.jit(jax.grad(f14, argnums=2))(params, inputs, d, KEY)
    np.testing.assert_allclose(np.asarray(g13), np.asarray(g14), rtol=1e-5, atol=1e-7)


def test_eq15_layer_choices_and_d0_value(hv3, pair):
    model, params = hv3
    inputs, d = pair

    def value(fn, delta=d):
        return float(_jit(fn)(params, inputs, delta, KEY))

    assert value(seatbelt_latent_objective(model, "bottom")) == pytest.approx(
        value(dlgm_latent_objective(model)), rel=1e-6
    )
    per_layer = [value(seatbelt_latent_objective(model, [i])) for i in (1, 2, 3)]
    assert value(seatbelt_latent_objective(model)) == pytest.approx(sum(per_layer), rel=1e-5)
    assert value(seatbelt_latent_objective(model, "top")) == pytest.approx(per_layer[2], rel=1e-6)
    qs, qs_t = model.posterior(params, inputs["x"]), model.posterior(params, inputs["target"])
    clean = -sum(float(jnp.sum(q.kl(q_t))) for q, q_t in zip(qs, qs_t))
    assert value(seatbelt_latent_objective(model), jnp.zeros(SHAPE)) == pytest.approx(
        clean, rel=1e-6
    )
    with pytest.raises(ValueError, match="1..3"):
        seatbelt_latent_objective(model, [0])
    with pytest.raises(ValueError, match="layers"):
        seatbelt_latent_objective(model, "middle")


def test_eq15_sampled_layers_use_common_fixed_noise(hv3, pair):
    model, params = hv3
    inputs, d = pair
    one = seatbelt_latent_objective(model, layer_dist="sampled", n_draws=1)

    @jax.jit
    def reference(params, x_adv, x_t):
        chain_key = jax.random.fold_in(KEY, 0)  # draw 0's chain key, for x + d and x_t alike
        _, qs = model.sample_chain(params, x_adv, chain_key)
        _, qs_t = model.sample_chain(params, x_t, chain_key)
        return -sum(jnp.sum(q.kl(q_t)) for q, q_t in zip(qs, qs_t))

    ref = float(reference(params, inputs["x"] + d, inputs["target"]))
    assert float(_jit(one)(params, inputs, d, KEY)) == pytest.approx(ref, rel=1e-5)
    four = _jit(seatbelt_latent_objective(model, layer_dist="sampled"))
    assert float(four(params, inputs, d, KEY)) == float(four(params, inputs, d, KEY))
    assert float(four(params, inputs, d, KEY)) != float(four(params, inputs, d, jax.random.key(0)))
    # layer 1 is Gaussian: sampled and mean path agree there
    s1 = _jit(seatbelt_latent_objective(model, [1], layer_dist="sampled"))(params, inputs, d, KEY)
    m1 = _jit(seatbelt_latent_objective(model, [1]))(params, inputs, d, KEY)
    assert float(s1) == pytest.approx(float(m1), rel=1e-6)
    # the same image on both sides with common noise: zero divergence on every layer
    same = {"x": inputs["target"], "target": inputs["target"]}
    assert abs(float(four(params, same, jnp.zeros(SHAPE), KEY))) < 1e-5


def test_latent_objectives_hold_the_target_side_constant(vae, hv3, pair):
    inputs, d = pair
    for params, obj in (
        (vae[1], latent_objective(vae[0])),
        (hv3[1], seatbelt_latent_objective(hv3[0])),
    ):
        g = jax.jit(
            jax.grad(lambda t, p=params, o=obj: o(p, {"x": inputs["x"], "target": t}, d, KEY))
        )(inputs["target"])
        assert float(jnp.max(jnp.abs(g))) == 0.0


# -- the output attack (Eq. 12) --------------------------------------------------------------------
def test_output_objective_vae_matches_its_definition(vae, pair):
    model, params = vae
    inputs, d = pair
    value = _jit(output_objective(model, n_draws=3))(params, inputs, d, KEY)
    q = model.posterior(params, inputs["x"] + d)
    lls = [
        model.log_likelihood(
            params, inputs["target"], q.sample(jax.random.fold_in(jax.random.fold_in(KEY, k), 0))
        )
        for k in range(3)
    ]
    ref = float(jnp.mean(jnp.stack(lls)) - jnp.sum(q.kl_standard()))
    assert float(value) == pytest.approx(ref, rel=1e-5)


def test_output_objective_one_layer_hierarchy_equals_vae_mc_form(pair):
    vae, hv = make_vae("mlp", SHAPE, latent_dim=4, hidden=HIDDEN), _hier((4,))
    params = random_params(hv, 3)
    inputs, d = pair
    a = _jit(output_objective(vae, kl="mc"))(params, inputs, d, KEY)
    b = _jit(output_objective(hv))(params, inputs, d, KEY)
    assert float(a) == pytest.approx(float(b), rel=1e-5)


def test_output_objective_hierarchical_is_the_targets_mc_elbo(hv3, pair):
    model, params = hv3
    inputs, _ = pair
    x_t = inputs["target"]
    obj = _jit(output_objective(model, n_draws=2))
    value = obj(params, {"x": x_t, "target": x_t}, 0 * x_t, KEY)

    @jax.jit
    def elbo(params, k):
        zs, qs = model.sample_chain(params, x_t, jax.random.fold_in(KEY, k))
        ps = model.prior(params, zs)
        kl = sum(jnp.sum(q.log_prob(z) - p.log_prob(z)) for z, q, p in zip(zs, qs, ps))
        return model.log_likelihood(params, x_t, zs) - kl

    ref = 0.5 * (float(elbo(params, 0)) + float(elbo(params, 1)))
    assert float(value) == pytest.approx(ref, rel=1e-5)


def test_gradients_finite_everywhere_including_d0(vae, hv3, pair):
    inputs, d = pair
    dl = _hier((4, 3, 2), "dlgm")
    cases = [
        (vae, latent_objective(vae[0])),
        (vae, output_objective(vae[0])),
        (hv3, seatbelt_latent_objective(hv3[0])),
        (hv3, seatbelt_latent_objective(hv3[0], layer_dist="sampled", n_draws=2)),
        (hv3, output_objective(hv3[0], n_draws=2)),
        ((dl, random_params(dl, 1)), dlgm_latent_objective(dl)),
    ]
    for (_, params), obj in cases:
        grad = jax.jit(jax.grad(obj, argnums=2))
        for delta in (jnp.zeros(SHAPE), d):
            g = grad(params, inputs, delta, KEY)
            assert bool(jnp.all(jnp.isfinite(g))), obj.__name__
            assert float(jnp.max(jnp.abs(g))) > 0, obj.__name__  # x ≠ x_t: never stuck at d=0


def test_objectives_validate_inputs(vae, hv3):
    with pytest.raises(ValueError, match="target"):
        latent_objective(vae[0])(vae[1], {"x": jnp.zeros(SHAPE)}, jnp.zeros(SHAPE), KEY)
    with pytest.raises(ValueError, match="Eq. 15"):
        latent_objective(hv3[0])
    with pytest.raises(ValueError, match="hierarchical"):
        dlgm_latent_objective(vae[0])
    with pytest.raises(ValueError, match="layer_dist"):
        seatbelt_latent_objective(hv3[0], layer_dist="marginal")
    with pytest.raises(ValueError, match="n_draws"):
        output_objective(vae[0], n_draws=0)
    bad = {"x": jnp.zeros((4, 4, 1)), "target": jnp.zeros((4, 4, 1))}
    with pytest.raises(ValueError, match="one image"):
        latent_objective(vae[0])(vae[1], bad, jnp.zeros((4, 4, 1)), KEY)


# -- λ grid, pairs, records ------------------------------------------------------------------------
def test_lambda_grid_is_the_papers_geometric_grid():
    lam = lambda_grid()
    assert lam.shape == (50,) and lam[0] == 2.0**-20 and lam[-1] == 2.0**20
    np.testing.assert_allclose(lam, 2.0 ** (-20 + 40 * np.arange(50) / 49), rtol=1e-15)
    np.testing.assert_allclose(np.diff(np.log2(lam)), 40 / 49, rtol=1e-12)
    np.testing.assert_allclose(lambda_grid(13, -20, 20)[[0, -1]], [2.0**-20, 2.0**20])
    with pytest.raises(ValueError, match="lo < hi"):
        lambda_grid(5, 3, 3)
    with pytest.raises(ValueError, match="positive int"):
        lambda_grid(0)


def test_sample_pairs_seeded_distinct_and_class_aware():
    p = sample_pairs(100, 10, 0)
    assert p.shape == (10, 2) and len(np.unique(p)) == 20
    np.testing.assert_array_equal(p, sample_pairs(100, 10, 0))
    assert not np.array_equal(p, sample_pairs(100, 10, 1))
    k = sample_pairs(100, 10, jax.random.key(3))
    np.testing.assert_array_equal(k, sample_pairs(100, 10, jax.random.key(3)))
    labels = np.repeat(np.arange(3), 10)
    q = sample_pairs(labels, 8, 0, different_class=True)
    assert len(np.unique(q)) == 16 and np.all(labels[q[:, 0]] != labels[q[:, 1]])
    with pytest.raises(ValueError, match="distinct images"):
        sample_pairs(10, 6, 0)
    with pytest.raises(ValueError, match="needs labels"):
        sample_pairs(10, 2, 0, different_class=True)
    with pytest.raises(ValueError, match="different classes"):
        sample_pairs(np.zeros(10, int), 2, 0, different_class=True)


def test_l2_norm_is_exact_with_zero_gradient_at_zero():
    assert float(exact_norm(jnp.array([3.0, 4.0]))) == 5.0
    assert float(exact_norm(jnp.zeros(3))) == 0.0
    g0 = jax.grad(exact_norm)(jnp.zeros(3))
    assert bool(jnp.all(g0 == 0))
    np.testing.assert_allclose(np.asarray(jax.grad(exact_norm)(jnp.array([3.0, 4.0]))), [0.6, 0.8])
    big = 2.0**20 * exact_norm(jnp.full((8, 8, 1), 1e-9))  # no ε: λ·‖d‖ stays tiny
    assert float(big) == pytest.approx(2.0**20 * 8e-9, rel=1e-5)


def test_attack_record_references_and_vmapping(vae, pair):
    model, params = vae
    inputs, d = pair
    obj = latent_objective(model)
    lam = jnp.asarray(0.5)
    record = jax.jit(functools.partial(attack_record, model, obj), static_argnames="penalty")
    rec0 = record(params, inputs, jnp.zeros(SHAPE), lam, KEY)
    assert float(rec0["d_norm"]) == 0.0
    assert float(rec0["divergence"]) == float(rec0["divergence_d0"])
    assert float(rec0["delta_value"]) == float(rec0["divergence"])
    assert float(rec0["target_nll"]) == float(rec0["target_nll_d0"])
    assert float(rec0["recon_to_target"]) == pytest.approx(float(rec0["ref_input_to_target"]))
    assert float(rec0["recon_to_input"]) == pytest.approx(float(rec0["ref_input_recon"]))
    rec = record(params, inputs, d, lam, KEY)
    norm = float(np.linalg.norm(np.asarray(d, np.float64)))
    assert float(rec["d_norm"]) == pytest.approx(norm, rel=1e-6)
    assert float(rec["delta_value"]) == pytest.approx(float(rec["divergence"]) + 0.5 * norm, 1e-6)
    sq = record(params, inputs, d, lam, KEY, penalty="l2_squared")
    assert float(sq["delta_value"]) == pytest.approx(float(rec["divergence"]) + 0.5 * norm**2)
    # −log p(x_t | z̃) is the mean of 16 draws from the record's stream
    nll_key = jax.random.fold_in(KEY, NLL_STREAM)

    @jax.jit
    def draws(params):
        q = model.posterior(params, inputs["x"] + d)
        zs = jnp.stack(
            [q.sample(jax.random.fold_in(jax.random.fold_in(nll_key, k), 0)) for k in range(16)]
        )
        return -model.log_likelihood(params, inputs["target"], zs)  # a batch of 16 codes

    assert float(rec["target_nll"]) == pytest.approx(float(jnp.mean(draws(params))), rel=1e-5)
    g_t = model.reconstruct(params, inputs["target"])
    assert float(rec["ref_target_recon"]) == pytest.approx(
        float(jnp.linalg.norm((g_t - inputs["target"]).ravel())), rel=1e-5
    )
    # pure and vmappable over pairs × λ
    lams = jnp.asarray(lambda_grid(3))
    both = jax.jit(
        jax.vmap(jax.vmap(lambda dd, lm: record(params, inputs, dd, lm, KEY), (None, 0)), (0, None))
    )(jnp.stack([jnp.zeros(SHAPE), d]), lams)
    assert both["delta_value"].shape == (2, 3)
    assert float(both["delta_value"][1, 1]) == pytest.approx(
        float(rec["divergence"]) + float(lams[1]) * norm, rel=1e-5
    )
    nll = jax.jit(functools.partial(target_nll, model))
    assert float(nll(params, inputs["x"], inputs["target"], nll_key)) == (
        pytest.approx(float(rec["target_nll_d0"]), rel=1e-6)
    )
