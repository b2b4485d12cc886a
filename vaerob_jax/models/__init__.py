"""Models as pure functions over params pytrees (the protocol: docs/CONTRACTS.md).

Autoencoders — :class:`VAE` (``make_vae``), :class:`HierarchicalVAE` (``make_hierarchical``),
:class:`DeterministicAE` (``make_dae``) — expose ``init``, ``embed``, ``posterior``,
``decode``, ``reconstruct`` and ``spec``; classifiers (``make_classifier``) expose ``init``,
``logits`` and ``spec``. ``check_autoencoder`` / ``check_classifier`` say what an object
lacks to satisfy the protocol.
"""

from vaerob_jax.models.backbones import BACKBONES
from vaerob_jax.models.classifier import (
    Classifier,
    accuracy,
    accuracy_by_group,
    make_classifier,
    make_mlp_classifier,
    predict,
)
from vaerob_jax.models.dae import DeterministicAE, make_dae
from vaerob_jax.models.distributions import DiagGaussian
from vaerob_jax.models.gmm_prior import GMMPrior, make_gmm_prior
from vaerob_jax.models.hierarchical import HIERARCHICAL_KINDS, HierarchicalVAE, make_hierarchical
from vaerob_jax.models.protocol import (
    Autoencoder,
    ClassifierModel,
    check_autoencoder,
    check_classifier,
)
from vaerob_jax.models.vae import COMPUTE_DTYPES, LIKELIHOODS, VAE, make_vae, with_compute_dtype

__all__ = [
    "COMPUTE_DTYPES",
    "BACKBONES",
    "HIERARCHICAL_KINDS",
    "LIKELIHOODS",
    "VAE",
    "Autoencoder",
    "Classifier",
    "ClassifierModel",
    "DeterministicAE",
    "DiagGaussian",
    "GMMPrior",
    "HierarchicalVAE",
    "accuracy",
    "accuracy_by_group",
    "check_autoencoder",
    "check_classifier",
    "make_classifier",
    "make_mlp_classifier",
    "make_dae",
    "make_gmm_prior",
    "make_hierarchical",
    "make_vae",
    "with_compute_dtype",
    "predict",
]
