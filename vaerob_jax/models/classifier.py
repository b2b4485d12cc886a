"""Downstream attribute classifier of 000_2a5470c3dc126c07 (§6.2, Tables 1–2), as pure functions.

000 checks whether adversarial reconstructions "switch subgroup" by feeding direct images,
reconstructions g(μ(x)) and adversarial reconstructions g(μ(x+δ)) to CNN gender and age
classifiers (AlexNet-like, Adam 1e-4, 10 epochs) and reporting accuracy per subgroup.
This module is a small AlexNet-like CNN (conv 3×3 + ReLU + 2×2 max-pool stages, then dense
layers) sized to train on 64×64×3 on a CPU, with the same pure-function interface as the VAE.

The public code of 000 applied softmax twice (softmax of the softmax probabilities), which
flattens the probabilities; :meth:`Classifier.predict_proba` applies it once.
Classifiers train through the one grid trainer with the cross-entropy batch loss.

Example:
    >>> clf = make_classifier((64, 64, 3), num_classes=2)
    >>> res = train.train_grid(clf, objectives.cross_entropy(clf),
    ...                        {"x": images, "label": labels}, {},
    ...                        train.TrainConfig(steps=2000, batch_size=64), key)
    >>> params = jax.tree.map(lambda a: a[0], res.params)   # the grid's one model
    >>> accuracy(clf, params, images_test, labels_test)
    >>> accuracy_by_group(clf, params, recon, labels, ds.subgroup_ids, names=ds.subgroup_names)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Hashable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vaerob_jax.models.backbones import max_pool_2x2
from vaerob_jax.models.protocol import as_batch

Params = Any

__all__ = [
    "Classifier",
    "accuracy",
    "accuracy_by_group",
    "make_classifier",
    "make_mlp_classifier",
    "predict",
]


class MLPNet(nn.Module):
    """Flatten, Dense+ReLU per hidden width, linear head; ``hidden=()`` is a linear model."""

    num_classes: int
    hidden: Sequence[int] = (64, 64)

    @nn.compact
    def __call__(self, x, features: bool = False):
        h = x.reshape((x.shape[0], -1))
        for width in self.hidden:
            h = nn.relu(nn.Dense(width)(h))
        return h if features else nn.Dense(self.num_classes)(h)


class SmallAlexNet(nn.Module):
    """Conv(3×3)+ReLU+MaxPool(2) stages, then Dense+ReLU and a linear head (batched NHWC)."""

    num_classes: int
    channels: Sequence[int] = (32, 64, 128)
    hidden: int = 256

    @nn.compact
    def __call__(self, x, features: bool = False):
        h = x
        for ch in self.channels:
            h = nn.relu(nn.Conv(ch, (3, 3), padding="SAME")(h))
            h = max_pool_2x2(h)
        h = h.reshape((h.shape[0], -1))
        h = nn.relu(nn.Dense(self.hidden)(h))
        return h if features else nn.Dense(self.num_classes)(h)


@dataclasses.dataclass(frozen=True)
class Classifier:
    """An image classifier exposed as pure functions of (params, inputs).

    Attributes:
      module: the Flax Linen network (batched); private to the models package.
      image_shape: shape of one input: (H, W, C) images with pixels in [0, 1] for the CNN,
        any shape for the MLP (e.g. (2,) points of 004's Gaussian mixture).
      num_classes: number of classes.
    """

    module: nn.Module
    image_shape: tuple[int, ...]
    num_classes: int

    def init(self, key: jax.Array) -> Params:
        """Initial params from an explicit key (jit-compiled: eager Flax init is slow on CPU)."""
        return _init(self, key)

    def spec(self) -> dict[str, Any]:
        """JSON description of the architecture (checkpoint and cell fingerprints)."""
        return {
            "kind": "classifier",
            "arch": type(self.module).__name__,
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "channels": list(getattr(self.module, "channels", ())),
            "hidden": _jsonable(getattr(self.module, "hidden", None)),
        }

    def logits(self, params: Params, x: jax.Array) -> jax.Array:
        """Class logits, ``(num_classes,)`` for one image or ``(N, num_classes)`` for a batch."""
        xb, single = as_batch(x, self.image_shape)
        out: jax.Array = self.module.apply({"params": params}, xb)  # type: ignore[assignment]
        return out[0] if single else out

    def features(self, params: Params, x: jax.Array) -> jax.Array:
        """The penultimate activations (the input of the linear head), one row per input; the
        feature space of 003's FD-clf (:func:`vaerob_jax.robustness.frechet_distance`)."""
        xb, single = as_batch(x, self.image_shape)
        out: jax.Array = self.module.apply({"params": params}, xb, features=True)  # type: ignore[assignment]
        return out[0] if single else out

    def predict_proba(self, params: Params, x: jax.Array) -> jax.Array:
        """Class probabilities: softmax of the logits, applied exactly once."""
        return jax.nn.softmax(self.logits(params, x), axis=-1)


def _jsonable(hidden: Any) -> Any:
    return list(hidden) if isinstance(hidden, tuple | list) else hidden


@functools.partial(jax.jit, static_argnames=("clf",))
def _init(clf: Classifier, key: jax.Array) -> Params:
    return clf.module.init(key, jnp.zeros((1, *clf.image_shape)))["params"]


def make_classifier(
    image_shape: Sequence[int],
    num_classes: int,
    channels: Sequence[int] = (32, 64, 128),
    hidden: int = 256,
) -> Classifier:
    """Builds the small AlexNet-like attribute classifier of 000 (Tables 1–2).

    Args:
      image_shape: (H, W, C) of one image.
      num_classes: number of classes (2 for 000's gender and age classifiers).
      channels: output channels of the conv stages (each halves the spatial size).
      hidden: width of the hidden dense layer.

    Returns:
      A :class:`Classifier`.
    """
    if len(image_shape) != 3 or any(int(s) < 1 for s in image_shape):
        raise ValueError(f"image_shape must be (H, W, C) with positive sizes, got {image_shape}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if len(channels) == 0 or any(int(c) < 1 for c in channels) or hidden < 1:
        raise ValueError(
            f"channels must be non-empty positive ints and hidden >= 1, got "
            f"{tuple(channels)}, {hidden}"
        )
    shape = tuple(int(s) for s in image_shape)
    module = SmallAlexNet(int(num_classes), tuple(int(c) for c in channels), int(hidden))
    return Classifier(module, shape, int(num_classes))  # type: ignore[arg-type]


def make_mlp_classifier(
    input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (64, 64)
) -> Classifier:
    """An MLP classifier (004's mixture and CPU runs): flatten, ReLU layers, linear head.

    Args:
      input_shape: shape of one input, e.g. (2,) for 2-D points or (8, 8, 1) for images.
      num_classes: number of classes (>= 2).
      hidden: hidden widths; ``()`` gives a linear classifier z = Wx + b, whose decision
        boundary distances are exact (:func:`vaerob_jax.robustness.linear_distance`).

    Returns:
      A :class:`Classifier` (``spec()['arch'] == 'MLPNet'``).
    """
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must be non-empty positive sizes, got {input_shape}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if any(int(h) < 1 for h in hidden):
        raise ValueError(f"hidden widths must be positive ints, got {tuple(hidden)}")
    module = MLPNet(int(num_classes), tuple(int(h) for h in hidden))
    return Classifier(module, shape, int(num_classes))  # type: ignore[arg-type]


def _check_inputs(clf: Classifier, images: Any) -> jax.Array:
    x = jnp.asarray(images)
    if x.ndim != len(clf.image_shape) + 1 or tuple(x.shape[1:]) != tuple(clf.image_shape):
        raise ValueError(
            f"images must have shape (N, {', '.join(map(str, clf.image_shape))}), got {x.shape}"
        )
    return x


def _check_data(clf: Classifier, images: Any, labels: Any) -> tuple[jax.Array, jax.Array]:
    x = _check_inputs(clf, images)
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"labels must be 1-D with one label per image ({x.shape[0]}), got {y.shape}"
        )
    if x.shape[0] == 0:
        raise ValueError("no images given")
    if not np.issubdtype(y.dtype, np.integer) and y.dtype != np.bool_:
        raise ValueError(f"labels must be integers (or bools), got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= clf.num_classes:
        raise ValueError(
            f"labels must lie in [0, {clf.num_classes}), got range [{y.min()}, {y.max()}]"
        )
    return x, jnp.asarray(y, dtype=jnp.int32)


@functools.partial(jax.jit, static_argnames=("clf",))
def _predict_chunk(clf: Classifier, params: Params, x: jax.Array) -> jax.Array:
    return jnp.argmax(clf.logits(params, x), axis=-1)


def predict(clf: Classifier, params: Params, images: Any, batch_size: int = 256) -> np.ndarray:
    """Predicted class ids ``(N,)``, evaluated in fixed-size chunks (one compilation)."""
    x = _check_inputs(clf, images)
    n = x.shape[0]
    bs = max(1, min(batch_size, n))
    pad = (-n) % bs
    xp = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    preds = [_predict_chunk(clf, params, xp[s : s + bs]) for s in range(0, n + pad, bs)]
    return np.asarray(jnp.concatenate(preds))[:n]


def accuracy(clf: Classifier, params: Params, images: Any, labels: Any) -> float:
    """Share of images whose predicted class equals the label."""
    x, y = _check_data(clf, images, labels)
    return float(np.mean(predict(clf, params, x) == np.asarray(y)))


def accuracy_by_group(
    clf: Classifier,
    params: Params,
    images: Any,
    labels: Any,
    groups: Any,
    *,
    names: Sequence[str] | None = None,
) -> list[dict[str, Hashable]]:
    """Accuracy per subgroup, one row per group (the cells of Tables 1–2 of 000).

    Pass direct images, reconstructions or adversarial reconstructions as ``images`` to
    fill the respective table columns.

    Args:
      clf: the classifier.
      params: its params.
      images: ``(N, H, W, C)``.
      labels: ``(N,)`` true class ids.
      groups: ``(N,)`` group label per image.
      names: optional names indexed by integer group id.

    Returns:
      Rows ``{"group", "n", "correct", "accuracy"}`` for each distinct group, sorted.
    """
    x, y = _check_data(clf, images, labels)
    g = np.asarray(groups)
    if g.ndim != 1 or g.shape[0] != x.shape[0]:
        raise ValueError(
            f"groups must be 1-D with one label per image ({x.shape[0]}), got {g.shape}"
        )
    hit = predict(clf, params, x) == np.asarray(y)
    rows: list[dict[str, Hashable]] = []
    for lab in np.unique(g).tolist():
        m = g == lab
        name = names[int(lab)] if names is not None else lab
        rows.append(
            {
                "group": name,
                "n": int(m.sum()),
                "correct": int(hit[m].sum()),
                "accuracy": float(hit[m].mean()),
            }
        )
    return rows
