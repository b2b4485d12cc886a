"""The decoders' sub-pixel transposed convolution against lax.conv_transpose (issue 10).

The CPU path computes ``lax.conv_transpose(x, w, (2, 2), 'SAME')`` for 4×4 kernels as one 3×3
convolution whose channels are the four output phases. It must be the same function: equal
values and equal gradients (training and output attacks differentiate through it), the same
parameters (checkpoints trained either way are interchangeable), and a fallback to flax for
every other configuration.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from vaerob_jax.models import make_vae
from vaerob_jax.models.backbones import (
    CONV_TRANSPOSE_ENV_VAR,
    ConvTranspose,
    conv_transpose_impl,
    subpixel_conv_transpose,
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


def test_every_output_pixel_reads_the_taps_lax_uses():
    """One-hot kernels and inputs: each (tap, input pixel) lands on the same output pixel."""
    for t in range(4):
        for i in range(3):
            x = jnp.zeros((1, 3, 3, 1)).at[0, i, 1, 0].set(1.0)
            w = jnp.zeros((4, 4, 1, 1)).at[t, 2, 0, 0].set(1.0)
            np.testing.assert_array_equal(subpixel_conv_transpose(x, w), _reference(x, w))


def test_impl_is_chosen_per_backend_and_by_the_environment(monkeypatch):
    monkeypatch.delenv(CONV_TRANSPOSE_ENV_VAR, raising=False)
    assert conv_transpose_impl() == ("subpixel" if jax.default_backend() == "cpu" else "lax")
    monkeypatch.setenv(CONV_TRANSPOSE_ENV_VAR, "lax")
    assert conv_transpose_impl() == "lax"
    assert conv_transpose_impl("subpixel") == "subpixel"
    with pytest.raises(ValueError, match="unknown transposed-convolution impl 'fft'"):
        conv_transpose_impl("fft")


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
    for impl in ("lax", "subpixel"):
        monkeypatch.setenv(CONV_TRANSPOSE_ENV_VAR, impl)
        # fresh closures: the impl is read when the model is traced
        params = jax.jit(lambda k: model.init(k))(jax.random.key(0))
        loss, grads = jax.jit(
            lambda p: jax.value_and_grad(lambda q: _decoder_loss(model, q, z, target))(p)
        )(params)
        results[impl] = (params, loss, grads)
    (p_lax, l_lax, g_lax), (p_sub, l_sub, g_sub) = results["lax"], results["subpixel"]
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
    monkeypatch.setenv(CONV_TRANSPOSE_ENV_VAR, "subpixel")
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 5, 5, 3)), jnp.float32)
    ours, flax_layer = ConvTranspose(4, **kwargs), nn.ConvTranspose(4, **kwargs)
    params = flax_layer.init(jax.random.key(0), x)
    np.testing.assert_array_equal(ours.apply(params, x), flax_layer.apply(params, x))
