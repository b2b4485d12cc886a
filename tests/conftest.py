"""Shared fixtures: tiny models and images so every test runs in seconds on 2 CPU cores."""

from __future__ import annotations

import os
import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaerob_jax.models import make_vae

# One persistent XLA compilation cache per test session, shared by the xdist workers and by
# the processes the tests start (notebook kernel, CLI subprocesses): many tests compile the
# same tiny programs (same shapes; grid values are array arguments), and on 2 CPU cores
# compiling is most of the suite's time. It never changes a result: a hit returns the same
# executable XLA would build. VAEROB_TEST_NO_JAX_CACHE=1 turns it off.
_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
_OWNED_CACHE: list[str] = []


def pytest_configure(config):
    if os.environ.get("VAEROB_TEST_NO_JAX_CACHE") == "1":
        return
    if os.environ.get(_CACHE_ENV) is None:  # the controller (or a plain run) makes the folder
        path = tempfile.mkdtemp(prefix="vaerob-test-xla-cache-")
        _OWNED_CACHE.append(path)
        os.environ[_CACHE_ENV] = path  # inherited by xdist workers and subprocesses
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_ENV])
    jax.config.update(
        "jax_persistent_cache_min_compile_time_secs",
        float(os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")),
    )


def pytest_unconfigure(config):
    for path in _OWNED_CACHE:
        shutil.rmtree(path, ignore_errors=True)


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
