"""Shared fixtures: tiny models and images so every test runs in seconds on 2 CPU cores."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaerob_jax.models import make_vae


@pytest.fixture(scope="session")
def tiny_model():
    """MLP VAE on 8x8x1 images with a 4-dim latent."""
    return make_vae("mlp", (8, 8, 1), latent_dim=4, hidden=(32, 16))


@pytest.fixture(scope="session")
def tiny_params(tiny_model):
    return tiny_model.init(jax.random.key(0))


@pytest.fixture(scope="session")
def tiny_images():
    """16 images of shape (8, 8, 1) in [0, 1], deterministic."""
    rng = np.random.default_rng(0)
    return jnp.asarray(rng.uniform(0.0, 1.0, size=(16, 8, 8, 1)).astype(np.float32))


@pytest.fixture(scope="session")
def tiny_conv_model():
    """Conv32 VAE on 16x16x3 images with a 3-dim latent."""
    return make_vae("conv32", (16, 16, 3), latent_dim=3)
