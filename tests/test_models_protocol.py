"""Every model family satisfies the models protocol (docs/CONTRACTS.md), with known answers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaerob_jax.models import (
    Autoencoder,
    ClassifierModel,
    DiagGaussian,
    check_autoencoder,
    check_classifier,
    make_classifier,
    make_dae,
    make_hierarchical,
    make_vae,
)

SHAPE = (8, 8, 1)


def _x(n=3, seed=1):
    return jax.random.uniform(jax.random.key(seed), (n, *SHAPE))


@pytest.fixture(scope="module")
def family():
    return {
        "vae": make_vae("mlp", SHAPE, 4, hidden=(16,)),
        "dae": make_dae("mlp", SHAPE, 4, hidden=(16,)),
        "seatbelt": make_hierarchical("mlp", SHAPE, (4, 3), hidden=(16,), layer_hidden=(8,)),
        "dlgm": make_hierarchical(
            "mlp", SHAPE, (4, 3), kind="dlgm", hidden=(16,), layer_hidden=(8,)
        ),
    }


@pytest.mark.parametrize("name", ["vae", "dae", "seatbelt", "dlgm"])
def test_protocol_shapes_and_single_vs_batch(family, name):
    model = family[name]
    check_autoencoder(model)
    assert isinstance(model, Autoencoder)
    params = model.init(jax.random.key(0))
    xs = _x()
    z = model.embed(params, xs)
    assert z.ndim == 2 and z.shape[0] == 3
    np.testing.assert_allclose(model.embed(params, xs[0]), z[0], rtol=1e-5, atol=1e-6)
    rec = model.reconstruct(params, xs)
    assert rec.shape == (3, *SHAPE)
    assert float(rec.min()) >= 0.0 and float(rec.max()) <= 1.0
    np.testing.assert_allclose(model.reconstruct(params, xs[1]), rec[1], rtol=1e-5, atol=1e-6)
    spec = model.spec()
    assert spec["image_shape"] == list(SHAPE) and isinstance(spec["kind"], str)


def test_dae_has_no_posterior_and_reconstructs_through_its_code(family):
    dae = family["dae"]
    params = dae.init(jax.random.key(0))
    xs = _x()
    assert dae.posterior(params, xs) is None
    np.testing.assert_allclose(
        dae.reconstruct(params, xs), dae.decode(params, dae.embed(params, xs)), rtol=1e-6
    )
    assert "z" in params["encoder"]  # the point head, not a Gaussian one


def test_vae_embed_is_posterior_mean(family):
    vae = family["vae"]
    params = vae.init(jax.random.key(0))
    q = vae.posterior(params, _x())
    assert isinstance(q, DiagGaussian)
    np.testing.assert_array_equal(vae.embed(params, _x()), q.mean)


def test_hierarchical_mean_path_feeds_each_layer_the_parents_mean(family):
    hv = family["seatbelt"]
    params = hv.init(jax.random.key(0))
    x = _x(1)[0]
    q1, q2 = hv.posterior(params, x)
    assert q1.mean.shape == (4,) and q2.mean.shape == (3,)
    # The sampled chain starts from the same q(z¹|x); its layer 2 is conditioned on a sampled
    # z¹, the mean path's on z¹'s mean.
    _, (c1, c2) = hv.sample_chain(params, x, jax.random.key(3))
    np.testing.assert_allclose(c1.mean, q1.mean, rtol=1e-6)  # q(z¹|x) is the same Gaussian
    assert not np.allclose(c2.mean, q2.mean)  # layer 2 is conditioned on a SAMPLED z¹ here
    np.testing.assert_allclose(hv.embed(params, x), q2.mean, rtol=1e-6)  # top layer by default


def test_hierarchical_prior_chain_and_decoder_inputs(family):
    hv, dl = family["seatbelt"], family["dlgm"]
    p_s, p_d = hv.init(jax.random.key(0)), dl.init(jax.random.key(0))
    assert hv.decoder_dim == 7 and dl.decoder_dim == 4
    zs, _ = hv.sample_chain(p_s, _x(), jax.random.key(1))
    assert [z.shape for z in zs] == [(3, 4), (3, 3)]
    p1, p_top = hv.prior(p_s, zs)
    assert p1.mean.shape == (3, 4)
    np.testing.assert_array_equal(p_top.mean, jnp.zeros((3, 3)))
    np.testing.assert_array_equal(p_top.logvar, jnp.zeros((3, 3)))
    # A DLGM's likelihood reads z¹ only: changing z² leaves the image unchanged...
    z1, z2 = zs
    np.testing.assert_allclose(dl.decode(p_d, (z1, z2)), dl.decode(p_d, (z1, z2 + 5.0)))
    # ...while the Seatbelt decoder reads every layer.
    assert not np.allclose(hv.decode(p_s, (z1, z2)), hv.decode(p_s, (z1, z2 + 5.0)))
    with pytest.raises(ValueError, match="2 latent layer"):
        hv.decode(p_s, (z1,))


def test_one_layer_hierarchical_is_a_vae_architecture():
    hv = make_hierarchical("mlp", SHAPE, (4,), hidden=(16,))
    vae = make_vae("mlp", SHAPE, 4, hidden=(16,))
    params = hv.init(jax.random.key(0))
    vparams = {"encoder": params["encoder"], "decoder": params["decoder"]}
    xs = _x()
    (q,) = hv.posterior(params, xs)
    qv = vae.posterior(vparams, xs)
    np.testing.assert_allclose(q.mean, qv.mean, rtol=1e-6)
    np.testing.assert_allclose(q.logvar, qv.logvar, rtol=1e-6)
    np.testing.assert_allclose(hv.reconstruct(params, xs), vae.reconstruct(vparams, xs), rtol=1e-6)


def test_diag_gaussian_kl_and_log_prob_known_answers():
    a = DiagGaussian(jnp.array([0.5, -1.0]), jnp.log(jnp.array([0.3, 2.0])))
    b = DiagGaussian(jnp.array([0.0, 1.0]), jnp.log(jnp.array([1.5, 0.7])))
    np.testing.assert_allclose(a.kl(a), 0.0, atol=1e-7)
    # KL against N(0, 1) two ways.
    np.testing.assert_allclose(
        a.kl(DiagGaussian(jnp.zeros(2), jnp.zeros(2))), a.kl_standard(), rtol=1e-6
    )
    # Monte Carlo: E_a[log a(z) - log b(z)].
    z = jax.vmap(a.sample)(jax.random.split(jax.random.key(0), 200_000))
    mc = jnp.mean(a.log_prob(z) - b.log_prob(z), axis=0)
    np.testing.assert_allclose(a.kl(b), mc, atol=0.02)
    # The std-for-variance formula of 002's public code gives a different (wrong) value.
    s1, s2 = a.std, b.std
    wrong = (s1 + (a.mean - b.mean) ** 2) / s2 + 2 * jnp.log(s2) - 2 * jnp.log(s1) - 0.5
    assert not np.allclose(wrong, a.kl(b), atol=0.05)


def test_classifier_protocol_and_check_messages():
    clf = make_classifier(SHAPE, 3, channels=(4,), hidden=8)
    check_classifier(clf)
    assert isinstance(clf, ClassifierModel)
    params = clf.init(jax.random.key(0))
    assert clf.logits(params, _x()).shape == (3, 3)
    with pytest.raises(TypeError, match="embed"):
        check_autoencoder(clf)

    class Half:
        image_shape = SHAPE

        def init(self, key):
            return {}

    with pytest.raises(TypeError, match="posterior"):
        check_autoencoder(Half())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layer_dims": ()}, "layer_dims"),
        ({"layer_dims": (4, 0)}, "layer_dims"),
        ({"kind": "ladder"}, "unknown kind"),
        ({"embed_layer": 2}, "embed_layer"),
    ],
)
def test_hierarchical_bad_construction(kwargs, message):
    args = {"backbone": "mlp", "image_shape": SHAPE, "layer_dims": (4, 3), **kwargs}
    with pytest.raises(ValueError, match=message):
        make_hierarchical(**args)
