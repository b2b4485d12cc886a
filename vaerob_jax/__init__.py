"""vaerob_jax: adversarial robustness of autoencoders per intersectional subgroup, in JAX."""

__version__ = "0.1.0"
