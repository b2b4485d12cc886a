"""Models as pure functions over params pytrees."""

from vaerob_jax.models.backbones import BACKBONES, make_backbone
from vaerob_jax.models.classifier import (
    Classifier,
    accuracy,
    accuracy_by_group,
    make_classifier,
    predict,
    train_classifier,
)
from vaerob_jax.models.vae import (
    LIKELIHOODS,
    VAE,
    log_likelihood_from_logits,
    make_vae,
    soft_clamp,
)

__all__ = [
    "BACKBONES",
    "Classifier",
    "accuracy",
    "accuracy_by_group",
    "make_classifier",
    "predict",
    "train_classifier",
    "LIKELIHOODS",
    "VAE",
    "log_likelihood_from_logits",
    "make_backbone",
    "make_vae",
    "soft_clamp",
]
