"""The downstream attribute classifier of 000 (Tables 1–2), trained by the one grid trainer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaerob_jax import objectives
from vaerob_jax.models.classifier import (
    accuracy,
    accuracy_by_group,
    make_classifier,
    predict,
)
from vaerob_jax.train import TrainConfig, train_grid

SHAPE = (8, 8, 3)
CFG = TrainConfig(
    steps=60, batch_size=16, learning_rate=1e-2, batch_sampling="replacement", log_every=10
)


def _fit(clf, images, labels, key, grid=None, config=CFG):
    data = {"x": images, "label": labels}
    loss = objectives.cross_entropy(clf)
    return train_grid(clf, loss, data, grid or {}, config, key, progress=False)


@pytest.fixture(scope="module")
def clf():
    return make_classifier(SHAPE, num_classes=2, channels=(4, 8), hidden=16)


@pytest.fixture(scope="module")
def bright_dark():
    """Bright (label 1) vs dark (label 0) noisy images: trivially separable."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=64)
    base = np.where(labels[:, None, None, None] == 1, 0.75, 0.25)
    images = np.clip(base + rng.uniform(-0.2, 0.2, size=(64, *SHAPE)), 0, 1).astype(np.float32)
    return images, labels


@pytest.fixture(scope="module")
def grid_result(clf, bright_dark):
    """A grid of two classifiers (seeds 0 and 1) in one compiled step."""
    images, labels = bright_dark
    return _fit(clf, images, labels, jax.random.key(0), {"seed": [0, 1]})


@pytest.fixture(scope="module")
def trained(grid_result):
    return jax.tree.map(lambda a: a[0], grid_result.params)


def test_classifier_grid_learns_separable_problem(clf, bright_dark, grid_result):
    images, labels = bright_dark
    rng = np.random.default_rng(1)  # held-out images from the same rule
    y = rng.integers(0, 2, size=32)
    x = np.clip(
        np.where(y[:, None, None, None] == 1, 0.75, 0.25) + rng.uniform(-0.2, 0.2, (32, *SHAPE)),
        0,
        1,
    ).astype(np.float32)
    assert set(grid_result.history) == {"step", "loss", "error"}
    for k in range(2):
        params = jax.tree.map(lambda a, k=k: a[k], grid_result.params)
        untrained = clf.init(jax.random.fold_in(jax.random.fold_in(jax.random.key(0), k), 0))
        acc0 = accuracy(clf, untrained, images, labels)
        acc = accuracy(clf, params, images, labels)
        assert acc > 0.95, (k, acc0, acc)
        assert accuracy(clf, params, x, y) > 0.95
        # The logged training error is the batch's 0/1 error: it falls with the loss.
        err = grid_result.history["error"][:, k]
        assert np.all((err >= 0) & (err <= 1)) and err[-1] <= 0.1
        assert grid_result.history["loss"][-1, k] < grid_result.history["loss"][0, k]
    # Two seeds, two different classifiers.
    assert not np.allclose(
        grid_result.params["Dense_1"]["kernel"][0], grid_result.params["Dense_1"]["kernel"][1]
    )


def test_proba_is_one_softmax(clf, bright_dark, trained):
    x = jnp.asarray(bright_dark[0][:10])
    logits = clf.logits(trained, x)
    proba = clf.predict_proba(trained, x)
    assert logits.shape == proba.shape == (10, 2)
    np.testing.assert_allclose(np.asarray(proba).sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(np.argmax(proba, 1), np.argmax(logits, 1))
    # Exactly one softmax: p1/p0 = exp(l1 − l0) (a second softmax would shrink this ratio).
    ratio = np.log(np.asarray(proba[:, 1])) - np.log(np.asarray(proba[:, 0]))
    np.testing.assert_allclose(ratio, np.asarray(logits[:, 1] - logits[:, 0]), rtol=1e-4, atol=1e-4)
    single = clf.predict_proba(trained, x[3])
    np.testing.assert_allclose(single, proba[3], rtol=1e-5)


def test_training_is_deterministic_for_a_key(clf, bright_dark):
    images, labels = bright_dark
    cfg = TrainConfig(steps=3, batch_size=16, batch_sampling="replacement")
    a, b, c = (
        _fit(clf, images, labels, jax.random.key(seed), config=cfg).params for seed in (5, 5, 6)
    )
    leaves = jax.tree.leaves
    for x, y in zip(leaves(a), leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(leaves(a), leaves(c)))


def test_accuracy_by_group_brute_force(clf, bright_dark, trained):
    images, labels = bright_dark
    rng = np.random.default_rng(3)
    groups = rng.integers(0, 3, size=labels.size)
    flipped = labels.copy()
    flipped[groups == 2] = 1 - flipped[groups == 2]  # group 2's labels are wrong on purpose
    rows = accuracy_by_group(clf, trained, images, flipped, groups, names=("a", "b", "c"))
    preds = np.asarray(jnp.argmax(clf.logits(trained, jnp.asarray(images)), axis=1))
    assert [r["group"] for r in rows] == ["a", "b", "c"]
    for g, r in enumerate(rows):
        m = groups == g
        assert r["n"] == m.sum()
        assert r["correct"] == sum(int(preds[i] == flipped[i]) for i in np.flatnonzero(m))
        assert r["accuracy"] == pytest.approx(r["correct"] / r["n"])
    assert rows[2]["accuracy"] < 0.1 < 0.9 < rows[0]["accuracy"]
    # Chunked prediction with padding agrees with one big batch.
    np.testing.assert_array_equal(predict(clf, trained, images, batch_size=5), preds)


def test_bad_inputs_raise(clf, bright_dark):
    images, labels = bright_dark
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"label must lie in \[0, 2\)"):
        _fit(clf, images, labels + 1, key)
    with pytest.raises(ValueError, match="label must be integers"):
        _fit(clf, images, labels + 0.5, key)
    with pytest.raises(ValueError, match=r"reads batch entries \['label'\]"):
        train_grid(clf, objectives.cross_entropy(clf), images, {}, CFG, key)
    with pytest.raises(ValueError, match="one label per image"):
        accuracy(clf, clf.init(key), images, labels[:-1])
    with pytest.raises(ValueError, match="per-image shape"):
        _fit(clf, images[..., :1], labels, key)
    with pytest.raises(ValueError, match="integers"):
        accuracy(clf, clf.init(key), images, labels.astype(float))
    with pytest.raises(ValueError, match="num_classes"):
        make_classifier(SHAPE, 1)
    with pytest.raises(ValueError, match="expected an image"):
        clf.logits(clf.init(key), images[0, :4])
