"""Tests for the downstream attribute classifier of 000 (Tables 1–2)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaerob_jax.models.classifier import (
    accuracy,
    accuracy_by_group,
    make_classifier,
    predict,
    train_classifier,
)

SHAPE = (8, 8, 3)


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
def trained(clf, bright_dark):
    images, labels = bright_dark
    return train_classifier(
        clf, images, labels, jax.random.key(0), steps=60, batch_size=16, lr=1e-2
    )


def test_learns_separable_problem(clf, bright_dark, trained):
    images, labels = bright_dark
    untrained = clf.init(jax.random.key(0))
    acc0 = accuracy(clf, untrained, images, labels)
    acc = accuracy(clf, trained, images, labels)
    assert acc > 0.95, (acc0, acc)
    # Held-out images from the same rule.
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=32)
    x = np.clip(
        np.where(y[:, None, None, None] == 1, 0.75, 0.25) + rng.uniform(-0.2, 0.2, (32, *SHAPE)),
        0,
        1,
    )
    assert accuracy(clf, trained, x.astype(np.float32), y) > 0.95


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
    a = train_classifier(clf, images, labels, jax.random.key(5), steps=3, batch_size=16)
    b = train_classifier(clf, images, labels, jax.random.key(5), steps=3, batch_size=16)
    c = train_classifier(clf, images, labels, jax.random.key(6), steps=3, batch_size=16)
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
    with pytest.raises(ValueError, match="labels must lie"):
        train_classifier(clf, images, labels + 1, key, 1, 4)
    with pytest.raises(ValueError, match="one label per image"):
        accuracy(clf, clf.init(key), images, labels[:-1])
    with pytest.raises(ValueError, match="images must have shape"):
        train_classifier(clf, images[..., :1], labels, key, 1, 4)
    with pytest.raises(ValueError, match="integers"):
        accuracy(clf, clf.init(key), images, labels.astype(float))
    with pytest.raises(ValueError, match="num_classes"):
        make_classifier(SHAPE, 1)
    with pytest.raises(ValueError, match="steps"):
        train_classifier(clf, images, labels, key, 0, 4)
    with pytest.raises(ValueError, match="expected an image"):
        clf.logits(clf.init(key), images[0, :4])
