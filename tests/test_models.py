"""Model contract: shapes, ranges, single-vs-batch agreement, safe log-variance, bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaerob_jax.models import BACKBONES, DiagGaussian, make_vae
from vaerob_jax.models.vae import soft_clamp

SHAPES = {
    "ref64": (64, 64, 3),
    "burgess64": (64, 64, 3),
    "conv32": (32, 32, 1),
    "mlp": (28, 28, 1),
}


@pytest.mark.parametrize("backbone", BACKBONES)
def test_shapes_and_ranges(backbone):
    shape = SHAPES[backbone]
    model = make_vae(backbone, shape, latent_dim=5)
    # jitted: eager op-by-op dispatch of the 64x64 nets costs ~20 s of per-op compiles here
    params = jax.jit(model.init)(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (2, *shape))
    posterior, reconstruct = jax.jit(model.posterior), jax.jit(model.reconstruct)
    mu, logvar = posterior(params, x)
    assert mu.shape == (2, 5) and logvar.shape == (2, 5)
    recon = reconstruct(params, x)
    assert recon.shape == (2, *shape)
    assert float(recon.min()) >= 0.0 and float(recon.max()) <= 1.0
    # One example and a batch agree.
    mu0, logvar0 = posterior(params, x[0])
    np.testing.assert_allclose(mu0, mu[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logvar0, logvar[0], rtol=1e-5, atol=1e-5)


def test_ref64_flattens_to_1024_features():
    # REFERENCE_NOTES: unpadded convs take 64x64 to 2x2x256 = 1024 features before the heads.
    model = make_vae("ref64", (64, 64, 3), latent_dim=7)
    params = jax.eval_shape(model.init, jax.random.key(0))
    assert params["encoder"]["GaussianHead_0"]["mu"]["kernel"].shape == (1024, 7)


def test_vmap_matches_batch(tiny_model, tiny_params, tiny_images):
    per_example = jax.vmap(lambda x: tiny_model.reconstruct(tiny_params, x))(tiny_images)
    batched = tiny_model.reconstruct(tiny_params, tiny_images)
    np.testing.assert_allclose(per_example, batched, rtol=1e-5, atol=1e-6)


def test_soft_clamp_bounds_and_slope():
    x = jnp.array([-1e6, -30.0, -2.0, 0.0, 5.0, 1e6])
    y = soft_clamp(x, -12.0, 8.0)
    assert bool(jnp.all((y >= -12.0) & (y <= 8.0)))
    slope = jax.grad(lambda v: soft_clamp(v, -12.0, 8.0))(-2.0)  # the midpoint
    np.testing.assert_allclose(slope, 1.0, rtol=1e-6)
    assert bool(jnp.all(jnp.isfinite(jnp.exp(y))))


def test_extreme_inputs_give_finite_variance(tiny_model, tiny_params):
    x = jnp.full((8, 8, 1), 1e4)  # far outside the data range: logvar must still be bounded
    _, logvar = tiny_model.posterior(tiny_params, x)
    assert bool(jnp.all(jnp.isfinite(jnp.exp(logvar))))


def test_posterior_sample_moments():
    mu = jnp.array([1.0, -2.0, 0.0, 3.0])
    logvar = jnp.log(jnp.array([0.25, 1.0, 4.0, 0.01]))
    keys = jax.random.split(jax.random.key(3), 20000)
    z = jax.vmap(lambda k: DiagGaussian(mu, logvar).sample(k, 0.5))(keys)
    np.testing.assert_allclose(z.mean(0), mu, atol=0.05)
    np.testing.assert_allclose(z.std(0), jnp.exp(0.5 * logvar) + 0.5, rtol=0.03)


def test_gaussian_likelihood_closed_form():
    model = make_vae("mlp", (2, 2, 1), latent_dim=2, likelihood="gaussian", obs_std=0.5)
    params = model.init(jax.random.key(0))
    z = jnp.array([0.3, -0.1])
    x = jnp.full((2, 2, 1), 0.25)
    mean = model.decode(params, z)
    expected = np.sum(
        -0.5 * ((0.25 - np.asarray(mean)) / 0.5) ** 2 - np.log(0.5) - 0.5 * np.log(2 * np.pi)
    )
    np.testing.assert_allclose(model.log_likelihood(params, x, z), expected, rtol=1e-5)


def test_bernoulli_likelihood_closed_form(tiny_model, tiny_params, tiny_images):
    x = tiny_images[0]
    z = jnp.array([0.1, 0.2, -0.3, 0.4])
    p = np.asarray(tiny_model.decode(tiny_params, z), dtype=np.float64)
    xn = np.asarray(x, dtype=np.float64)
    expected = np.sum(xn * np.log(p) + (1 - xn) * np.log(1 - p))
    np.testing.assert_allclose(tiny_model.log_likelihood(tiny_params, x, z), expected, rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backbone": "resnet"}, "unknown backbone"),
        ({"backbone": "ref64", "image_shape": (32, 32, 3)}, "64x64"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"likelihood": "poisson"}, "likelihood"),
        ({"image_shape": (8, 8)}, "image_shape"),
    ],
)
def test_bad_construction(kwargs, message):
    args = {"backbone": "mlp", "image_shape": (8, 8, 1), "latent_dim": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        make_vae(**args)


def test_wrong_input_shape_is_named(tiny_model, tiny_params):
    with pytest.raises(ValueError, match=r"\(8, 8, 1\)"):
        tiny_model.posterior(tiny_params, jnp.zeros((9, 8, 1)))
    with pytest.raises(ValueError, match="expected z"):
        tiny_model.decode(tiny_params, jnp.zeros((5,)))


def test_bfloat16_compute_runs_the_layers_in_bfloat16_and_returns_float32():
    from vaerob_jax.models import with_compute_dtype

    model = make_vae("conv32", (32, 32, 3), latent_dim=8)
    params = model.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (4, 32, 32, 3))
    mixed = with_compute_dtype(model, "bfloat16")
    assert mixed.spec() == {**model.spec(), "compute_dtype": "bfloat16"}
    assert with_compute_dtype(mixed, "float32").spec() == model.spec()  # old fingerprints kept
    jaxpr = str(jax.make_jaxpr(mixed.embed)(params, x))
    # every convolution and matmul of the encoder takes bfloat16 operands
    convs = [ln for ln in jaxpr.splitlines() if "conv_general_dilated" in ln or "dot_general" in ln]
    assert convs and all("bf16" in ln for ln in convs), convs
    assert "bf16" not in str(jax.make_jaxpr(model.embed)(params, x))
    mu32, mu16 = model.embed(params, x), mixed.embed(params, x)
    assert mu16.dtype == jnp.float32 and mixed.decode(params, mu16).dtype == jnp.float32
    # bfloat16 keeps 8 bits of mantissa: agreement to a few parts in a hundred, not better
    err = float(jnp.max(jnp.abs(mu16 - mu32)) / jnp.max(jnp.abs(mu32)))
    assert 1e-5 < err < 5e-2, err
    grads = jax.grad(lambda d: jnp.sum(mixed.embed(params, x + d) ** 2))(jnp.zeros_like(x))
    assert grads.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(grads)))


def test_compute_dtype_errors_are_named():
    from vaerob_jax.models import make_dae, with_compute_dtype

    model = make_vae("mlp", (6, 6, 1), latent_dim=3, hidden=(8,))
    with pytest.raises(ValueError, match="compute dtype must be one of"):
        with_compute_dtype(model, "float16")
    with pytest.raises(TypeError, match="Gaussian VAE"):
        with_compute_dtype(make_dae("mlp", (6, 6, 1), latent_dim=3, hidden=(8,)), "bfloat16")
