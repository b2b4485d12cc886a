"""Registry, digits and the seeded per-subgroup sampler."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from sklearn.datasets import load_digits

from vaerob_jax.data import available_datasets, load, sample_per_subgroup, subgroup_presets


@pytest.fixture(scope="module")
def digits8():
    return load("digits", "train", image_size=8, seed=0)


def test_available_and_unknown_dataset():
    names = available_datasets()
    assert set(names) >= {
        "celeb_a",
        "mnist",
        "fashion_mnist",
        "svhn_cropped",
        "cifar10",
        "dsprites",
        "shapes",
        "digits",
    }
    with pytest.raises(ValueError, match=r"unknown dataset 'celeba'.*'celeb_a'"):
        load("celeba")
    with pytest.raises(ValueError, match=r"does not accept \['nn'\].*'n'"):
        load("shapes", nn=3)
    with pytest.raises(ValueError, match=r"unknown subgroup preset 'race'.*'age_gender'"):
        load("shapes", subgroups="race", n=4, image_size=16)
    with pytest.raises(ValueError, match="unknown attribute 'Race'"):
        load("shapes", subgroups=["Race"], n=4, image_size=16)
    assert subgroup_presets("celeb_a")[0] == "age_gender"


def test_digits_are_sklearn_digits_scaled(digits8):
    bunch = load_digits()
    ids = digits8.example_ids
    np.testing.assert_allclose(digits8.images[..., 0], bunch.images[ids] / 16.0, atol=1e-6)
    np.testing.assert_array_equal(digits8.labels, bunch.target[ids])
    np.testing.assert_array_equal(digits8.subgroup_ids, digits8.labels)
    assert digits8.subgroup_names == tuple(str(i) for i in range(10))
    assert digits8.counts()["3"] == np.sum(bunch.target[ids] == 3)
    test = load("digits", "test", image_size=8, seed=0)
    assert len(test) + len(digits8) == len(bunch.target)
    assert not set(test.example_ids) & set(digits8.example_ids)
    other = load("digits", "test", image_size=8, seed=1)
    assert set(other.example_ids) != set(test.example_ids)
    big = load("digits", "test", seed=0)
    assert big.images.shape[1:] == (32, 32, 1) and big.images.max() <= 1.0
    grouped = load("digits", image_size=8, subgroups="even_large")
    assert grouped.subgroup_names == ("odd-small", "odd-large", "even-small", "even-large")
    lab = grouped.labels
    np.testing.assert_array_equal(grouped.subgroup_ids, 2 * (lab % 2 == 0) + (lab >= 5))
    with pytest.raises(ValueError, match="splits"):
        load("digits", "validation")


def test_sampler_counts_membership_and_determinism(digits8):
    s = sample_per_subgroup(digits8, 7, jax.random.key(3))
    assert len(s) == 70
    np.testing.assert_array_equal(s.subgroup_ids, np.repeat(np.arange(10), 7))  # grouped
    assert all(c == 7 for c in s.counts().values())
    assert len(set(s.example_ids)) == 70  # without replacement
    lookup = dict(zip(digits8.example_ids, digits8.labels))
    assert all(lookup[e] == lab for e, lab in zip(s.example_ids, s.labels))
    again = sample_per_subgroup(digits8, 7, jax.random.key(3))
    np.testing.assert_array_equal(again.example_ids, s.example_ids)
    from_int = sample_per_subgroup(digits8, 7, 3)
    np.testing.assert_array_equal(from_int.example_ids, s.example_ids)
    other = sample_per_subgroup(digits8, 7, 4)
    assert not np.array_equal(other.example_ids, s.example_ids)
    two = sample_per_subgroup(digits8, 5, 3, subgroups=["9", "2"])
    assert two.subgroup_names == digits8.subgroup_names
    np.testing.assert_array_equal(two.labels, [9] * 5 + [2] * 5)


def test_sampler_is_uniform_over_members(digits8):
    # each member of a subgroup is picked with probability n / count
    ones = np.flatnonzero(digits8.subgroup_ids == 1)
    hits = np.zeros(len(digits8), int)
    for seed in range(200):
        s = sample_per_subgroup(digits8, 20, seed, subgroups=["1"])
        hits[np.searchsorted(digits8.example_ids, s.example_ids)] += 1
    freq = hits[ones] / 200
    p = 20 / len(ones)
    assert abs(freq.mean() - p) < 1e-9  # exactly n per draw
    assert freq.std() < 4 * np.sqrt(p * (1 - p) / 200)


def test_sampler_errors_and_replacement(digits8):
    with pytest.raises(ValueError, match=r"for n=1000 per subgroup: '0' has only \d+"):
        sample_per_subgroup(digits8, 1000, 0)
    big = sample_per_subgroup(digits8, 1000, 0, subgroups=["0"], replace=True)
    assert len(big) == 1000 and np.all(big.labels == 0)
    with pytest.raises(ValueError, match=r"unknown subgroup\(s\) \['ten'\].*'0', '1'"):
        sample_per_subgroup(digits8, 2, 0, subgroups=["ten"])
    with pytest.raises(ValueError, match="positive int"):
        sample_per_subgroup(digits8, 0, 0)
    no_fives = digits8.take(digits8.labels != 5)
    with pytest.raises(ValueError, match="subgroup '5' .* is empty"):
        sample_per_subgroup(no_fives, 2, 0)
    assert len(sample_per_subgroup(no_fives, 2, 0, subgroups=["4", "6"])) == 4
