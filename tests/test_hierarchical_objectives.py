"""β-TCDLGM / Seatbelt losses (002 Eqs. 5-11; spec 002 §4 tests 5 and 9): identities, free bits."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers_002 import random_params
from vaerob_jax.models import make_vae
from vaerob_jax.models.hierarchical import make_hierarchical
from vaerob_jax.objectives.hierarchical import hierarchical_tc_loss, seatbelt_loss, tcdlgm_loss
from vaerob_jax.objectives.tc import beta_tcvae_loss

SHAPE = (8, 8, 1)
HIDDEN = (32, 16)
N_DATA = 100


# Compiling is most of the cost of these tests: models (their jitted init is cached per model)
# and jitted losses are shared between tests.
def _model(dims, kind="seatbelt"):
    return make_hierarchical("mlp", SHAPE, dims, kind=kind, hidden=HIDDEN, layer_hidden=(16,))


def _loss(model, estimator="mws", layer_kl="mc", free_bits_layers="below_top"):
    return _jitted_loss(model, estimator, layer_kl, free_bits_layers)


@functools.cache
def _jitted_loss(model, estimator, layer_kl, free_bits_layers):
    loss = hierarchical_tc_loss(
        model, estimator, dataset_size=N_DATA, layer_kl=layer_kl, free_bits_layers=free_bits_layers
    )
    return jax.jit(loss)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return {"x": jnp.asarray(rng.uniform(size=(8, *SHAPE)).astype(np.float32))}


@pytest.fixture(scope="module")
def sb2():
    model = _model((4, 3))
    return model, random_params(model, 1)


def _hp(beta, free_bits=None):
    hp = {"beta": jnp.asarray(beta, jnp.float32)}
    if free_bits is not None:
        hp["free_bits"] = jnp.asarray(free_bits, jnp.float32)
    return hp


@pytest.mark.parametrize("est", ["mss"])
def test_one_layer_seatbelt_is_beta_tcvae_bit_for_bit(batch, est):
    vae = make_vae("mlp", SHAPE, latent_dim=4, hidden=HIDDEN)
    hv = _model((4,))
    params = random_params(hv, 3)  # the VAE reads the same 'encoder'/'decoder' entries
    key, hp = jax.random.key(5), _hp(7.0)
    a, aux_a = jax.jit(beta_tcvae_loss(vae, est, dataset_size=N_DATA))(params, batch, key, hp)
    b, aux_b = jax.jit(seatbelt_loss(hv, est, dataset_size=N_DATA))(params, batch, key, hp)
    assert np.asarray(a) == np.asarray(b)
    for name in ("recon", "kl", "tc_minibatch", "mi_minibatch", "dwkl_minibatch"):
        assert np.asarray(aux_a[name]) == np.asarray(aux_b[name])


def _mc_negative_elbo(model, params, xs, key):
    """Independent MC negative ELBO with the documented per-example chain keys."""

    @jax.jit
    @jax.vmap
    def one(x, k):
        zs, qs = model.sample_chain(params, x, k)
        ps = model.prior(params, zs)
        kl = sum(jnp.sum(q.log_prob(z) - p.log_prob(z)) for z, q, p in zip(zs, qs, ps))
        return -model.log_likelihood(params, x, zs) + kl

    return float(jnp.mean(one(xs, jax.random.split(key, xs.shape[0]))))


@pytest.mark.parametrize(
    ("kind", "dims", "est"), [("seatbelt", (4, 3, 2), "mws"), ("dlgm", (4, 3), "mss")]
)
def test_beta_one_is_mc_negative_elbo_for_any_estimator(batch, kind, dims, est):
    model = _model(dims, kind)
    params = random_params(model, 2)
    key = jax.random.key(9)
    value, aux = _loss(model, est, free_bits_layers="none")(params, batch, key, _hp(1.0))
    ref = _mc_negative_elbo(model, params, batch["x"], key)
    assert float(value) == pytest.approx(ref, rel=1e-5)
    assert float(aux["elbo"]) == pytest.approx(-ref, rel=1e-5)


def test_tcdlgm_and_seatbelt_differ_only_in_the_decoder_input(batch):
    sb, dl = _model((4, 3)), _model((4, 3), "dlgm")
    p_sb = random_params(sb, 4)
    p_dl = dict(p_sb, decoder=random_params(dl, 4)["decoder"])  # decoder widths differ
    key, hp = jax.random.key(1), _hp(4.0)
    v_sb, a_sb = _loss(sb)(p_sb, batch, key, hp)
    v_dl, a_dl = _loss(dl)(p_dl, batch, key, hp)
    for name in ("kl", "kl1", "kl2", "tc_minibatch", "mi_minibatch", "dwkl_minibatch"):
        assert float(a_sb[name]) == pytest.approx(float(a_dl[name]), rel=1e-6)
    assert float(a_sb["recon"]) != pytest.approx(float(a_dl["recon"]), rel=1e-3)
    assert float(v_dl - v_sb) == pytest.approx(float(a_dl["recon"] - a_sb["recon"]), rel=1e-4)
    with pytest.raises(ValueError, match="kind='dlgm'"):
        tcdlgm_loss(sb, dataset_size=N_DATA)
    with pytest.raises(ValueError, match="kind='seatbelt'"):
        seatbelt_loss(dl, dataset_size=N_DATA)


@pytest.mark.parametrize("layer_kl", ["mc", "analytic"])
def test_free_bits_zero_threshold_recovers_the_plain_loss(sb2, batch, layer_kl):
    model, params = sb2
    key = jax.random.key(3)
    a, _ = _loss(model, layer_kl=layer_kl, free_bits_layers="none")(params, batch, key, _hp(3.0))
    b, _ = _loss(model, layer_kl=layer_kl)(params, batch, key, _hp(3.0, 0.0))
    assert np.asarray(a) == np.asarray(b)


def _layer1_kl_per_dim(model, params, xs, key):
    def one(x, k):
        zs, qs = model.sample_chain(params, x, k)
        return qs[0].kl(model.prior(params, zs)[0])

    return np.asarray(jnp.mean(jax.vmap(one)(xs, jax.random.split(key, xs.shape[0])), 0))


def test_free_bits_value_is_sum_of_max_tau_batch_mean_kl(sb2, batch):
    model, params = sb2
    key = jax.random.key(3)
    kl_d = _layer1_kl_per_dim(model, params, batch["x"], key)
    tau = float(np.median(kl_d))  # some dims below, some above
    a, _ = _loss(model, layer_kl="analytic", free_bits_layers="none")(params, batch, key, _hp(3.0))
    b, _ = _loss(model, layer_kl="analytic")(params, batch, key, _hp(3.0, tau))
    expected = np.sum(np.maximum(tau, kl_d)) - np.sum(kl_d)
    assert float(b - a) == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_free_bits_zero_gradient_below_threshold(sb2, batch):
    """p(z^1|z^2) (the 'down' nets) enters only layer 1's KL: gated off, its gradient is 0."""
    model, params = sb2
    key = jax.random.key(3)
    loss = hierarchical_tc_loss(model, dataset_size=N_DATA)

    @jax.jit
    def down_grad(tau):
        g = jax.grad(lambda p: loss(p, batch, key, _hp(3.0, tau))[0])(params)
        return g["down"], g

    def leaves(tau):
        down, every = down_grad(jnp.asarray(tau, jnp.float32))
        return jax.tree.leaves(down), jax.tree.leaves(every)

    below, every = leaves(1e4)
    assert all(bool(jnp.all(leaf == 0)) for leaf in below)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in every)
    above, _ = leaves(0.0)
    assert any(float(jnp.max(jnp.abs(leaf))) > 0 for leaf in above)


def test_free_bits_all_layers_gate_the_top_as_one_group(sb2, batch):
    model, params = sb2
    tau = 1e3
    value, aux = _loss(model, free_bits_layers="all")(
        params, batch, jax.random.key(0), _hp(5.0, tau)
    )
    assert float(value - aux["recon"]) == pytest.approx(tau * sum(model.layer_dims), rel=1e-6)


def test_validation_errors(sb2):
    model, _ = sb2
    with pytest.raises(ValueError, match="layer_kl"):
        hierarchical_tc_loss(model, dataset_size=N_DATA, layer_kl="exact")
    with pytest.raises(ValueError, match="free_bits_layers"):
        hierarchical_tc_loss(model, dataset_size=N_DATA, free_bits_layers="top")
    with pytest.raises(ValueError, match="HierarchicalVAE"):
        hierarchical_tc_loss(make_vae("mlp", SHAPE, 4, hidden=HIDDEN), dataset_size=N_DATA)
    with pytest.raises(ValueError, match="dataset_size"):
        hierarchical_tc_loss(model, "mss", dataset_size=1)
    spec = hierarchical_tc_loss(model, dataset_size=N_DATA).spec()
    assert spec["defaults"] == {"free_bits": 0.125} and spec["required"] == ["beta"]
