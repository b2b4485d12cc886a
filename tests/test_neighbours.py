"""Tests for latent kNN subgroup shares, the adversarial pull and the t-SNE picture."""

from __future__ import annotations

import numpy as np
import pytest

from vaerob_jax.robustness.neighbours import (
    knn,
    knn_subgroup_shares,
    neighbourhood_pull,
    tsne_embedding,
)


def _brute_knn(ref, query, k, exclude=None):
    d = ((query[:, None, :].astype(np.float64) - ref[None, :, :]) ** 2).sum(-1)
    if exclude is not None:
        for i, j in enumerate(exclude):
            if j >= 0:
                d[i, j] = np.inf
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]  # ties: lower index first
    return idx, np.take_along_axis(d, idx, axis=1)


def test_knn_matches_brute_force_on_random_points():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(120, 6)).astype(np.float32)
    query = rng.normal(size=(15, 6)).astype(np.float32)
    idx, d2 = knn(ref, query, k=7)
    want_idx, want_d2 = _brute_knn(ref, query, 7)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(d2, want_d2, rtol=1e-4, atol=1e-5)


def test_knn_ties_go_to_lower_index_and_exclude_self():
    # Integer points: distances are exact in float32, so ties are real ties.
    ref = np.array([[1, 0], [0, 1], [-1, 0], [0, -1], [0, 0], [2, 0], [1, 0]], np.float32)
    query = np.array([[0, 0], [1, 0]], np.float32)
    idx, d2 = knn(ref, query, k=5)
    want, _ = _brute_knn(ref, query, 5)
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_array_equal(idx[0], [4, 0, 1, 2, 3])
    np.testing.assert_array_equal(idx[1, :3], [0, 6, 4])  # duplicate points 0 and 6: 0 first
    # Queries that are reference points 4 and 0: leave themselves out.
    idx, _ = knn(ref, query, k=3, exclude_self=np.array([4, 0]))
    np.testing.assert_array_equal(idx, [[0, 1, 2], [6, 4, 5]])
    idx, _ = knn(ref, ref, k=2, exclude_self=True)
    assert not np.any(idx == np.arange(len(ref))[:, None])


def test_shares_sum_to_one_and_count_neighbours():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(80, 4)).astype(np.float32)
    groups = rng.integers(0, 4, size=80)
    query = rng.normal(size=(9, 4)).astype(np.float32)
    shares = knn_subgroup_shares(ref, groups, query, k=10)
    assert shares.shape == (9, 4)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    want_idx, _ = _brute_knn(ref, query, 10)
    for q in range(9):
        counts = np.bincount(groups[want_idx[q]], minlength=4)
        np.testing.assert_allclose(shares[q], counts / 10)


def _clusters():
    """Two well-separated clusters: group 0 around (0, 0), group 1 around (10, 10)."""
    rng = np.random.default_rng(2)
    a = rng.normal(0.0, 0.3, size=(20, 2))
    b = rng.normal(10.0, 0.3, size=(20, 2))
    return np.concatenate([a, b]).astype(np.float32), np.repeat([0, 1], 20)


def test_pull_is_zero_inside_own_cluster_and_one_when_moved_across():
    ref, groups = _clusters()
    mu_clean = np.array([[0.1, 0.0], [10.0, 9.9], [0.0, 0.2]], np.float32)
    mu_adv = np.array([[10.1, 10.0], [10.1, 10.0], [0.1, 0.1]], np.float32)
    qg = np.array([0, 1, 0])
    pull = neighbourhood_pull(mu_clean, mu_adv, groups, ref, qg, k=5, names=("old", "young"))
    np.testing.assert_array_equal(pull.other_before, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(pull.other_after, [1.0, 0.0, 0.0])
    np.testing.assert_allclose(pull.shares_after.sum(1), 1.0)
    rows = {r["group"]: r for r in pull.summary}
    assert rows["old"]["n"] == 2
    assert rows["old"]["pull"] == pytest.approx(0.5)
    assert rows["old"]["dominant_switched"] == pytest.approx(0.5)
    assert rows["young"]["pull"] == 0.0


def test_pull_excludes_the_examples_own_clean_copy():
    ref, groups = _clusters()
    # A group-0 outlier (index 40) sitting inside group 1's cluster, then attacked into
    # group 0's cluster. Counting its own clean copy, its nearest neighbour is itself.
    ref = np.concatenate([ref, [[10.0, 10.0]]]).astype(np.float32)
    groups = np.append(groups, 0)
    clean, moved, qg = ref[[40]], ref[[3]] + 0.01, np.array([0])
    with_self = neighbourhood_pull(clean, moved, groups, ref, qg, k=1)
    np.testing.assert_array_equal(with_self.other_before, [0.0])
    no_self = neighbourhood_pull(clean, moved, groups, ref, qg, k=1, exclude_self=np.array([40]))
    np.testing.assert_array_equal(no_self.other_before, [1.0])
    np.testing.assert_array_equal(no_self.other_after, [0.0])
    assert no_self.summary[0]["pull"] == -1.0


def test_tsne_shape_determinism_and_clusters():
    rng = np.random.default_rng(3)
    centres = np.zeros((2, 5))
    centres[1, 0] = 1.0  # orthogonal directions: far apart in cosine distance
    centres[0, 1] = 1.0
    labels = np.repeat([0, 1], 25)
    mu = 5.0 * centres[labels] + rng.normal(0, 0.3, size=(50, 5))
    a = tsne_embedding(mu, seed=0, perplexity=10, max_iter=500)
    b = tsne_embedding(mu, seed=0, perplexity=10, max_iter=500)
    assert a.shape == (50, 2)
    assert np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, b)
    # The picture keeps the two clusters apart: every point's 2-D nearest neighbour is a
    # member of its own cluster.
    nn_idx, _ = knn(a, a, k=1, exclude_self=True)
    np.testing.assert_array_equal(labels[nn_idx[:, 0]], labels)


def test_bad_inputs_raise():
    ref = np.zeros((5, 2), np.float32)
    with pytest.raises(ValueError, match="k must lie"):
        knn(ref, ref, k=6)
    with pytest.raises(ValueError, match="k must lie"):
        knn(ref, ref, k=5, exclude_self=True)
    with pytest.raises(ValueError, match="latent dims"):
        knn(ref, np.zeros((2, 3)), k=1)
    with pytest.raises(ValueError, match="NaN"):
        knn(ref, np.full((1, 2), np.nan), k=1)
    with pytest.raises(ValueError, match="groups_ref"):
        knn_subgroup_shares(ref, np.array([0, 1, -1, 0, 1]), ref, k=1)
    with pytest.raises(ValueError, match="groups_ref must have shape"):
        knn_subgroup_shares(ref, np.zeros(4, int), ref, k=1)
    with pytest.raises(ValueError, match="equal shapes"):
        neighbourhood_pull(ref, ref[:2], np.zeros(5, int), ref, np.zeros(5, int), k=1)
    with pytest.raises(ValueError, match="perplexity"):
        tsne_embedding(np.random.default_rng(0).normal(size=(10, 3)), 0, perplexity=30)
    with pytest.raises(ValueError, match="max_points"):
        tsne_embedding(np.zeros((20, 3)), 0, perplexity=5, max_points=10)


def test_base_rate_is_what_an_embedding_without_structure_gives():
    """Latents independent of the subgroup: the observed other-subgroup share of each
    subgroup matches one minus its share of the reference set (a small subgroup has many
    other-subgroup neighbours by construction), and the excess over it is ~0."""
    rng = np.random.default_rng(5)
    shares = np.array([0.51, 0.30, 0.07, 0.12])
    groups = rng.choice(4, size=4000, p=shares)
    ref = rng.normal(size=(4000, 3)).astype(np.float32)
    qg = np.repeat(np.arange(4), 100)
    query = rng.normal(size=(400, 3)).astype(np.float32)
    pull = neighbourhood_pull(query, query, groups, ref, qg, k=25)
    for row in pull.summary:
        g = row["group"]
        expect = 1.0 - np.mean(groups == g)
        assert row["other_base_rate"] == pytest.approx(expect)
        # 100 queries x 25 neighbours: standard error of the mean share < 0.01
        assert abs(row["excess_before"]) < 0.04
        assert row["pull"] == 0.0 and row["excess_after"] == row["excess_before"]
    smallest = min(pull.summary, key=lambda r: r["other_base_rate"] * -1)
    assert smallest["group"] == 2 and smallest["other_before"] > 0.85
