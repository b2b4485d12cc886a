"""Stride-2 convolutions in their polyphase forms against XLA's own (issue 10).

The CPU path computes the decoders' ``lax.conv_transpose(x, w, (2, 2), 'SAME')`` for 4×4
kernels as one 2×2 stride-1 convolution whose channels are the four output phases, and the
encoders' stride-2 convolutions as a stride-1 convolution of the space-to-depth input. Each
must be the same function: equal values and equal gradients (training and attacks
differentiate through them, the margin study also forward-mode), the same parameters
(checkpoints trained either way are interchangeable), the same attack results, and a fallback
to flax for every other configuration.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from vaerob_jax.attacks import latent_damage, pgd, run_attack
from vaerob_jax.models import make_vae
from vaerob_jax.models.backbones import (
    STRIDED_CONV_ENV_VAR,
    Conv,
    ConvTranspose,
    max_pool_2x2,
    space_to_depth_conv,
    strided_conv_impl,
    subpixel_conv_transpose,
    subpixel_kernel,
)

DN = ("NHWC", "HWIO", "NHWC")


def _reference(x, w):
    return lax.conv_transpose(x, w, (2, 2), "SAME", dimension_numbers=DN)


@pytest.mark.parametrize(
    ("shape", "out"), [((2, 5, 5, 3), 7), ((3, 4, 6, 1), 2), ((1, 1, 1, 4), 3)]
)
def test_subpixel_equals_lax_conv_transpose_in_value_and_gradient(shape, out):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=(4, 4, shape[-1], out)), jnp.float32)
    got, want = subpixel_conv_transpose(x, w), _reference(x, w)
    assert got.shape == want.shape == (shape[0], 2 * shape[1], 2 * shape[2], out)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    cot = jnp.asarray(rng.normal(size=want.shape), jnp.float32)
    g_got = jax.vjp(subpixel_conv_transpose, x, w)[1](cot)
    g_want = jax.vjp(_reference, x, w)[1](cot)
    for a, b in zip(g_got, g_want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    tx, tw = (jnp.asarray(rng.normal(size=v.shape), jnp.float32) for v in (x, w))
    np.testing.assert_allclose(
        jax.jvp(subpixel_conv_transpose, (x, w), (tx, tw))[1],
        jax.jvp(_reference, (x, w), (tx, tw))[1],
        rtol=1e-4,
        atol=1e-4,
    )


def _convolutions(jaxpr) -> list:
    """Every conv_general_dilated equation in a closed jaxpr, nested jaxprs included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            found.append(eqn)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found += _convolutions(sub)
    return found


def test_phase_forms_differentiate_into_stride_one_convolutions_without_zero_taps():
    """What the phase forms are for: forward, input gradient and kernel gradient of both layers
    are stride-1, undilated convolutions, and the transposed convolution's kernel has no zero
    taps (each of its 2×2 windows multiplies 4·I·O real weights, 16·I·O per input pixel)."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(4, 4, 3, 5)), jnp.float32)

    def loss(x, w):
        h = space_to_depth_conv(x, w, ((1, 1), (1, 1)))  # (2, 4, 4, 5)
        return jnp.sum(subpixel_conv_transpose(h, jnp.swapaxes(w, 2, 3)) ** 2)

    eqns = _convolutions(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(x, w).jaxpr)
    assert len(eqns) == 6  # two forwards, two input gradients, two kernel gradients
    for eqn in eqns:
        assert tuple(eqn.params["window_strides"]) == (1, 1), eqn
        assert tuple(eqn.params["lhs_dilation"]) == (1, 1), eqn
        assert tuple(eqn.params["rhs_dilation"]) == (1, 1), eqn
    fwd = _convolutions(jax.make_jaxpr(subpixel_conv_transpose)(x, w).jaxpr)
    assert [e.invars[1].aval.shape for e in fwd] == [(2, 2, 3, 20)]
    k = subpixel_kernel(jnp.arange(1.0, 17.0).reshape(4, 4, 1, 1))
    assert sorted(np.asarray(k).ravel().tolist()) == list(range(1, 17))  # each tap once


def test_every_output_pixel_reads_the_taps_lax_uses():
    """One-hot kernels and inputs: each (tap, input pixel) lands on the same output pixel."""
    for t in range(4):
        for i in range(3):
            x = jnp.zeros((1, 3, 3, 1)).at[0, i, 1, 0].set(1.0)
            w = jnp.zeros((4, 4, 1, 1)).at[t, 2, 0, 0].set(1.0)
            np.testing.assert_array_equal(subpixel_conv_transpose(x, w), _reference(x, w))


def test_impl_is_chosen_per_backend_and_by_the_environment(monkeypatch):
    monkeypatch.delenv(STRIDED_CONV_ENV_VAR, raising=False)
    assert strided_conv_impl() == ("phases" if jax.default_backend() == "cpu" else "lax")
    monkeypatch.setenv(STRIDED_CONV_ENV_VAR, "lax")
    assert strided_conv_impl() == "lax"
    assert strided_conv_impl("phases") == "phases"
    with pytest.raises(ValueError, match="unknown strided-convolution impl 'fft'"):
        strided_conv_impl("fft")


def _decoder_loss(model, params, z, target):
    logits = model.decode_logits(params, z)
    return jnp.mean(jnp.maximum(logits, 0) - logits * target + jnp.log1p(jnp.exp(-jnp.abs(logits))))


@pytest.mark.parametrize(
    ("backbone", "shape"), [("burgess64", (32, 32, 3)), ("conv32", (32, 32, 1))]
)
def test_decoders_give_the_same_params_values_and_gradients_either_way(
    backbone, shape, monkeypatch
):
    model = make_vae(backbone, shape, latent_dim=4)
    rng = np.random.default_rng(1)
    z = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    target = jnp.asarray(rng.uniform(size=(3, *shape)), jnp.float32)
    results = {}
    for impl in ("lax", "phases"):
        monkeypatch.setenv(STRIDED_CONV_ENV_VAR, impl)
        # fresh closures: the impl is read when the model is traced
        params = jax.jit(lambda k: model.init(k))(jax.random.key(0))
        loss, grads = jax.jit(
            lambda p: jax.value_and_grad(lambda q: _decoder_loss(model, q, z, target))(p)
        )(params)
        results[impl] = (params, loss, grads)
    (p_lax, l_lax, g_lax), (p_sub, l_sub, g_sub) = results["lax"], results["phases"]
    assert jax.tree_util.tree_structure(p_lax) == jax.tree_util.tree_structure(p_sub)
    for a, b in zip(jax.tree.leaves(p_lax), jax.tree.leaves(p_sub), strict=True):
        np.testing.assert_array_equal(a, b)  # same names, shapes and initial values
    np.testing.assert_allclose(l_sub, l_lax, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g_lax), jax.tree.leaves(g_sub), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=(3, 3), strides=(2, 2), padding="SAME"),
        dict(kernel_size=(4, 4), strides=(1, 1), padding="SAME"),
        dict(kernel_size=(4, 4), strides=(2, 2), padding="VALID"),
    ],
)
def test_other_configurations_fall_back_to_flax(kwargs, monkeypatch):
    monkeypatch.setenv(STRIDED_CONV_ENV_VAR, "phases")
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 5, 5, 3)), jnp.float32)
    ours, flax_layer = ConvTranspose(4, **kwargs), nn.ConvTranspose(4, **kwargs)
    params = flax_layer.init(jax.random.key(0), x)
    np.testing.assert_array_equal(ours.apply(params, x), flax_layer.apply(params, x))


def _strided_reference(x, w, padding):
    return lax.conv_general_dilated(x, w, (2, 2), padding, dimension_numbers=DN)


@pytest.mark.parametrize(
    ("shape", "kernel", "padding"),
    [
        ((2, 8, 8, 3), (4, 4), ((1, 1), (1, 1))),  # the encoders' layer
        ((2, 7, 9, 2), (4, 4), ((0, 0), (0, 0))),  # odd sides: a last row no output reads
        ((1, 31, 31, 4), (4, 4), ((0, 0), (0, 0))),  # ref64's second strided layer
        ((3, 5, 6, 1), (2, 2), ((1, 2), (0, 1))),  # uneven pads, a 2x2 kernel
        ((2, 6, 6, 2), (6, 4), ((2, 2), (1, 1))),
    ],
)
def test_space_to_depth_equals_the_strided_convolution_in_value_and_gradients(
    shape, kernel, padding
):
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=(*kernel, shape[-1], 5)), jnp.float32)

    def ours(x, w):
        return space_to_depth_conv(x, w, padding)

    def ref(x, w):
        return _strided_reference(x, w, padding)

    got, want = ours(x, w), ref(x, w)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    cot = jnp.asarray(rng.normal(size=want.shape), jnp.float32)
    for a, b in zip(jax.vjp(ours, x, w)[1](cot), jax.vjp(ref, x, w)[1](cot), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # forward mode too (the margin study's Jacobian probes may use it): no custom rule blocks it
    tx, tw = (jnp.asarray(rng.normal(size=v.shape), jnp.float32) for v in (x, w))
    np.testing.assert_allclose(
        jax.jvp(ours, (x, w), (tx, tw))[1], jax.jvp(ref, (x, w), (tx, tw))[1], rtol=1e-4, atol=1e-4
    )


def test_every_strided_output_reads_the_taps_lax_uses():
    """One-hot kernels and inputs: each (tap, input pixel) lands on the same output pixel."""
    for t in range(4):
        for i in range(6):
            x = jnp.zeros((1, 6, 6, 1)).at[0, i, 2, 0].set(1.0)
            w = jnp.zeros((4, 4, 1, 1)).at[t, 1, 0, 0].set(1.0)
            pads = ((1, 1), (1, 1))
            np.testing.assert_array_equal(
                space_to_depth_conv(x, w, pads), _strided_reference(x, w, pads)
            )


@pytest.mark.parametrize(
    ("kwargs", "shape"),
    [
        (dict(kernel_size=(4, 4), strides=2, padding=1), (2, 8, 8, 3)),
        (dict(kernel_size=(4, 4), strides=2, padding="SAME"), (2, 7, 9, 3)),
        (dict(kernel_size=(4, 4), strides=2, padding="VALID"), (2, 9, 8, 3)),
        (dict(kernel_size=(4, 4), strides=2, padding=1, use_bias=False), (2, 8, 8, 3)),
    ],
)
def test_conv_layer_matches_flax_with_the_same_params(kwargs, shape, monkeypatch):
    monkeypatch.setenv(STRIDED_CONV_ENV_VAR, "phases")
    x = jnp.asarray(np.random.default_rng(4).normal(size=shape), jnp.float32)
    ours, flax_layer = Conv(4, **kwargs), nn.Conv(4, **kwargs)
    params = flax_layer.init(jax.random.key(0), x)
    ours_params = ours.init(jax.random.key(0), x)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ours_params), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(ours.apply(params, x), flax_layer.apply(params, x), atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "shape"),
    [
        (dict(kernel_size=(3, 3), strides=2, padding=1), (2, 8, 8, 3)),  # odd kernel
        (dict(kernel_size=(4, 4), strides=1, padding=1), (2, 8, 8, 3)),  # stride 1
        (dict(kernel_size=(4, 4), strides=2, padding="CIRCULAR"), (2, 8, 8, 3)),
        (dict(kernel_size=(4, 4), strides=2, padding=-1), (2, 8, 8, 3)),  # negative pads
        (dict(kernel_size=(4, 4), strides=2, kernel_dilation=2), (2, 12, 12, 3)),
        (dict(kernel_size=(4, 4), strides=2, feature_group_count=3), (2, 8, 8, 3)),
        (dict(kernel_size=(4, 4), strides=2, padding=1), (8, 8, 3)),  # unbatched input
    ],
)
def test_other_conv_configurations_are_flax_s_own(kwargs, shape, monkeypatch):
    monkeypatch.setenv(STRIDED_CONV_ENV_VAR, "phases")
    x = jnp.asarray(np.random.default_rng(5).normal(size=shape), jnp.float32)
    ours, flax_layer = Conv(6, **kwargs), nn.Conv(6, **kwargs)
    params = flax_layer.init(jax.random.key(0), x)
    np.testing.assert_array_equal(ours.apply(params, x), flax_layer.apply(params, x))


@pytest.mark.parametrize(
    ("backbone", "shape"),
    [("burgess64", (32, 32, 3)), ("conv32", (32, 32, 1)), ("ref64", (64, 64, 1))],
)
def test_encoders_give_the_same_params_codes_and_attacks_either_way(backbone, shape, monkeypatch):
    model = make_vae(backbone, shape, latent_dim=4)
    x = jnp.asarray(np.random.default_rng(6).uniform(size=(3, *shape)), jnp.float32)
    results = {}
    for impl in ("lax", "phases"):
        monkeypatch.setenv(STRIDED_CONV_ENV_VAR, impl)
        params = jax.jit(lambda k: model.init(k))(jax.random.key(0))
        mu = jax.jit(lambda p: model.embed(p, x))(params)
        grad = jax.jit(jax.grad(lambda xx, p: jnp.sum(jnp.sin(model.embed(p, xx)))))(x, params)
        attack = pgd(latent_damage(model), "linf", steps=5, step_size=lambda e: e / 4)
        res = run_attack(attack, params, {"x": x}, jnp.array([0.05]), jax.random.key(1))
        results[impl] = (params, mu, grad, res)
    (p_lax, mu_lax, g_lax, r_lax), (p_ph, mu_ph, g_ph, r_ph) = results["lax"], results["phases"]
    for a, b in zip(jax.tree.leaves(p_lax), jax.tree.leaves(p_ph), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(mu_ph, mu_lax, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_ph, g_lax, rtol=1e-4, atol=1e-6 * float(jnp.max(jnp.abs(g_lax))))
    assert float(jnp.max(r_lax.value)) > 0  # the attack moved
    np.testing.assert_allclose(r_ph.value, r_lax.value, rtol=1e-4)
    np.testing.assert_allclose(r_ph.delta, r_lax.delta, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 8, 6, 3), (1, 4, 4, 1), (2, 7, 6, 2)])
def test_phase_max_pool_equals_flax_in_value_and_gradient(shape, monkeypatch):
    monkeypatch.setenv(STRIDED_CONV_ENV_VAR, "phases")
    x = jnp.asarray(np.random.default_rng(7).normal(size=shape), jnp.float32)
    x = jnp.maximum(x, 0.0)  # as after the classifier's ReLU: tied zeros in some windows

    def flax_pool(v):
        return nn.max_pool(v, (2, 2), strides=(2, 2), padding="SAME")

    def loss(pool, v):
        return jnp.sum(jnp.sin(3.0 * pool(jax.nn.relu(v))))

    np.testing.assert_array_equal(max_pool_2x2(x), flax_pool(x))
    np.testing.assert_allclose(
        jax.grad(lambda v: loss(max_pool_2x2, v))(x), jax.grad(lambda v: loss(flax_pool, v))(x)
    )


def test_classifier_gives_the_same_logits_and_gradients_either_way(monkeypatch):
    from vaerob_jax.models import make_classifier

    clf = make_classifier((16, 16, 3), num_classes=2)
    x = jnp.asarray(np.random.default_rng(8).uniform(size=(4, 16, 16, 3)), jnp.float32)
    results = {}
    for impl in ("lax", "phases"):
        monkeypatch.setenv(STRIDED_CONV_ENV_VAR, impl)
        params = jax.jit(clf.init)(jax.random.key(0))
        results[impl] = jax.jit(
            jax.value_and_grad(lambda p: jnp.sum(jax.nn.log_softmax(clf.logits(p, x))[:, 0]))
        )(params)
    (v_lax, g_lax), (v_ph, g_ph) = results["lax"], results["phases"]
    np.testing.assert_allclose(v_ph, v_lax, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g_lax), jax.tree.leaves(g_ph), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
