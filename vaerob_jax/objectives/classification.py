"""Classifier losses as batch losses for the grid trainer (000's attribute classifiers)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import optax

from vaerob_jax.objectives.base import BatchLoss

__all__ = ["cross_entropy"]


def cross_entropy(clf: Any) -> BatchLoss:
    """Mean softmax cross-entropy of ``clf.logits`` on ``batch['x']`` against ``batch['label']``.

    Softmax is applied once, inside the loss (000's public code applied it twice).
    Aux: 'error', the batch's 0/1 error.
    """

    def fn(params, batch, key, hp):
        del key, hp
        logits = clf.logits(params, batch["x"])
        loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]))
        error = jnp.mean((jnp.argmax(logits, -1) != batch["label"]).astype(jnp.float32))
        return loss, {"error": error}

    return BatchLoss(
        fn, "cross_entropy", batch_keys=("x", "label"), options=(("model", clf.spec()),)
    )
