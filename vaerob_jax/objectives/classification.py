"""Classifier losses as batch losses for the grid trainer (000's attribute classifiers)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax

from vaerob_jax.objectives.base import BatchLoss

__all__ = ["cross_entropy"]


def cross_entropy(clf: Any) -> BatchLoss:
    """Mean softmax cross-entropy of ``clf.logits`` on ``batch['x']`` against ``batch['label']``.

    Softmax is applied once, inside the loss (000's public code applied it twice).
    Aux: 'error', the batch's 0/1 error. Before training, the labels are checked to be integers
    (or bools) in ``[0, clf.num_classes)``. The same classifier gives the same loss object (the
    trainer's compiled step is cached per loss).
    """
    return _cross_entropy(clf)


@functools.lru_cache(maxsize=64)
def _cross_entropy(clf: Any) -> BatchLoss:
    num_classes = int(clf.num_classes)

    def fn(params, batch, key, hp):
        del key, hp
        logits = clf.logits(params, batch["x"])
        loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]))
        error = jnp.mean((jnp.argmax(logits, -1) != batch["label"]).astype(jnp.float32))
        return loss, {"error": error}

    def validate(grid: Mapping[str, np.ndarray], data: Mapping[str, np.ndarray]) -> None:
        del grid
        y = np.asarray(data["label"])
        if y.ndim != 1:
            raise ValueError(f"label must hold one class id per example, got shape {y.shape}")
        if not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
            raise ValueError(f"label must be integers (or bools), got dtype {y.dtype}")
        if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(
                f"label must lie in [0, {num_classes}), got range [{int(y.min())}, {int(y.max())}]"
            )

    return BatchLoss(
        fn,
        "cross_entropy",
        batch_keys=("x", "label"),
        options=(("model", clf.spec()),),
        validate=validate,
    )
