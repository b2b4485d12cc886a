"""Latent neighbourhoods per subgroup and the adversarial "pull" (Figs. 7–9 of 000).

§6.2–6.3 of 000 argue that attacked examples of minority subgroups (old women, old men) move
into neighbourhoods dominated by majority subgroups, so their reconstructions "switch
subgroup". The public code found each sample's k = 10 nearest neighbours in a 2-D t-SNE
map; t-SNE distorts distances, so we find neighbours EXACTLY in the latent space of posterior
means μ (squared Euclidean distance, a jit-compiled matmul plus ``lax.top_k``) and use t-SNE
only to draw the picture (:func:`tsne_embedding`).

* :func:`knn` — indices and squared distances of the k nearest reference points per query;
  ties go to the lower reference index (documented behaviour of ``lax.top_k``).
* :func:`knn_subgroup_shares` — share of each subgroup among those k neighbours.
* :func:`neighbourhood_pull` — per attacked example, the share of neighbours from OTHER
  subgroups around μ(x) and around μ(x+δ), and per-subgroup summaries.

Example:
    >>> shares = knn_subgroup_shares(mu_all, ds.subgroup_ids, mu_attacked, k=10)
    >>> pull = neighbourhood_pull(mu_clean, mu_adv, ds.subgroup_ids, mu_all, sample_groups)
    >>> pull.summary   # rows per subgroup: mean other-group share before/after the attack
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "NeighbourhoodPull",
    "knn",
    "knn_subgroup_shares",
    "neighbourhood_pull",
    "tsne_embedding",
]


def _as_points(name: str, a: Any) -> np.ndarray:
    x = np.asarray(a, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (n, latent_dim) array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN/inf values")
    return x


def _exclusions(exclude_self: Any, n_query: int, n_ref: int) -> np.ndarray:
    """Reference index to exclude per query (-1 = none)."""
    if exclude_self is False or exclude_self is None:
        return np.full(n_query, -1, dtype=np.int32)
    if exclude_self is True:
        if n_query > n_ref:
            raise ValueError(
                f"exclude_self=True means query i is reference point i, but there are "
                f"{n_query} queries and only {n_ref} reference points"
            )
        return np.arange(n_query, dtype=np.int32)
    idx = np.asarray(exclude_self)
    if idx.shape != (n_query,) or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(
            f"exclude_self must be a bool or an int array of shape ({n_query},) giving each "
            f"query's own reference index (-1 = none), got {idx.dtype} {idx.shape}"
        )
    if idx.size and (idx.min() < -1 or idx.max() >= n_ref):
        raise ValueError(
            f"exclude_self indices must lie in [-1, {n_ref}), got {idx.min()}..{idx.max()}"
        )
    return idx.astype(np.int32)


@functools.partial(jax.jit, static_argnames=("k",))
def _knn(ref: jax.Array, query: jax.Array, exclude: jax.Array, k: int):
    # ‖q − r‖² = ‖q‖² + ‖r‖² − 2 q·r: one (Q, R) matmul instead of a (Q, R, D) difference.
    d2 = (
        jnp.sum(query * query, axis=1)[:, None]
        + jnp.sum(ref * ref, axis=1)[None, :]
        - 2.0 * jnp.matmul(query, ref.T, precision=jax.lax.Precision.HIGHEST)
    )
    d2 = jnp.maximum(d2, 0.0)
    own = jnp.arange(ref.shape[0])[None, :] == exclude[:, None]
    d2 = jnp.where(own, jnp.inf, d2)
    neg, idx = jax.lax.top_k(-d2, k)  # equal values: lower index first
    return idx, -neg


def knn(mu_ref: Any, mu_query: Any, k: int = 10, exclude_self: Any = False):
    """Exact k nearest reference points of each query in latent (μ) space.

    Args:
      mu_ref: reference latent means ``(R, d)`` (e.g. the whole dataset).
      mu_query: query latent means ``(Q, d)``.
      k: number of neighbours, ``1 <= k <= R`` (``R − 1`` when excluding self).
      exclude_self: ``False``; ``True`` when query ``i`` IS reference point ``i``; or an int
        array ``(Q,)`` with each query's own reference index (``-1`` = none) to leave out.

    Returns:
      ``(indices, sq_distances)``, both ``(Q, k)`` numpy arrays, nearest first; ties are
      broken towards the lower reference index.
    """
    ref = _as_points("mu_ref", mu_ref)
    query = _as_points("mu_query", mu_query)
    if ref.shape[1] != query.shape[1]:
        raise ValueError(f"latent dims differ: mu_ref {ref.shape} vs mu_query {query.shape}")
    excl = _exclusions(exclude_self, query.shape[0], ref.shape[0])
    available = ref.shape[0] - (1 if np.any(excl >= 0) else 0)
    if not 1 <= k <= available:
        raise ValueError(
            f"k must lie in [1, {available}] for {ref.shape[0]} reference points, got {k}"
        )
    idx, d2 = _knn(jnp.asarray(ref), jnp.asarray(query), jnp.asarray(excl), int(k))
    return np.asarray(idx), np.asarray(d2)


def _group_ids(groups_ref: Any, n_ref: int, num_groups: int | None) -> tuple[np.ndarray, int]:
    g = np.asarray(groups_ref)
    if g.shape != (n_ref,):
        raise ValueError(f"groups_ref must have shape ({n_ref},) like mu_ref, got {g.shape}")
    if not np.issubdtype(g.dtype, np.integer) or g.min() < 0:
        raise ValueError(
            "groups_ref must be non-negative integer subgroup ids (drop examples in no "
            "subgroup, id -1, first)"
        )
    n_groups = int(g.max()) + 1 if num_groups is None else int(num_groups)
    if g.max() >= n_groups:
        raise ValueError(f"groups_ref has id {g.max()} but num_groups={n_groups}")
    return g, n_groups


def knn_subgroup_shares(
    mu_ref: Any,
    groups_ref: Any,
    mu_query: Any,
    k: int = 10,
    exclude_self: Any = False,
    num_groups: int | None = None,
) -> np.ndarray:
    """Share of each subgroup among the k nearest latent neighbours of each query.

    Args:
      mu_ref: reference latent means ``(R, d)``.
      groups_ref: subgroup id per reference point ``(R,)``, ints in ``[0, G)``.
      mu_query: query latent means ``(Q, d)``.
      k: number of neighbours (000 used 10).
      exclude_self: see :func:`knn`.
      num_groups: G (default: ``max(groups_ref) + 1``).

    Returns:
      ``(Q, G)`` shares; each row sums to 1.
    """
    idx, _ = knn(mu_ref, mu_query, k, exclude_self)
    g, n_groups = _group_ids(groups_ref, np.asarray(mu_ref).shape[0], num_groups)
    onehot = np.eye(n_groups)[g[idx]]  # (Q, k, G)
    return onehot.mean(axis=1)


class NeighbourhoodPull(NamedTuple):
    """Result of :func:`neighbourhood_pull` (per-example arrays and per-subgroup rows)."""

    other_before: np.ndarray  # (Q,) share of neighbours of μ(x) from other subgroups
    other_after: np.ndarray  # (Q,) same around μ(x+δ)
    shares_before: np.ndarray  # (Q, G)
    shares_after: np.ndarray  # (Q, G)
    summary: list[dict[str, Any]]


def neighbourhood_pull(
    mu_clean: Any,
    mu_adv: Any,
    groups_ref: Any,
    mu_ref: Any,
    query_groups: Any,
    k: int = 10,
    exclude_self: Any = False,
    *,
    names: Sequence[str] | None = None,
) -> NeighbourhoodPull:
    """How far an attack pulls each example into other subgroups' neighbourhoods (Figs. 8–9).

    For attacked example i of subgroup s_i, ``other_before[i]`` is the share of the k nearest
    reference neighbours of μ(x_i) whose subgroup differs from s_i, and ``other_after[i]`` the
    same around μ(x_i + δ_i). ``pull = other_after − other_before`` > 0 means the attack moved
    the embedding towards other subgroups.

    Args:
      mu_clean: latent means of the clean examples ``(Q, d)``.
      mu_adv: latent means of their attacked versions ``(Q, d)``.
      groups_ref: subgroup id per reference point ``(R,)``.
      mu_ref: reference latent means ``(R, d)`` (e.g. the whole dataset's μ).
      query_groups: subgroup id of each attacked example ``(Q,)``.
      k: number of neighbours.
      exclude_self: see :func:`knn`; when the attacked examples are themselves reference
        points, pass their reference indices so that the clean copy of an example is left
        out of BOTH neighbourhoods (only other examples count).
      names: optional subgroup names indexed by id, used in the summary rows.

    Returns:
      :class:`NeighbourhoodPull`; ``summary`` has one row per query subgroup with ``n``,
      ``other_before``, ``other_after`` (means), ``pull`` (mean difference),
      ``dominant_switched`` (share of examples whose most common neighbour subgroup was their
      own before the attack and another one after), ``other_base_rate`` — the share expected
      with NO latent structure (neighbours a random draw from the reference set: one minus
      the subgroup's share of it), so a small subgroup has many other-subgroup neighbours by
      construction — and ``excess_before`` / ``excess_after`` (observed minus base rate).
    """
    clean = _as_points("mu_clean", mu_clean)
    adv = _as_points("mu_adv", mu_adv)
    if clean.shape != adv.shape:
        raise ValueError(f"mu_clean {clean.shape} and mu_adv {adv.shape} must have equal shapes")
    ref = _as_points("mu_ref", mu_ref)
    _, n_groups = _group_ids(groups_ref, ref.shape[0], None)
    qg = np.asarray(query_groups)
    if qg.shape != (clean.shape[0],) or not np.issubdtype(qg.dtype, np.integer):
        raise ValueError(f"query_groups must be ({clean.shape[0]},) integer ids, got {qg.shape}")
    if qg.min() < 0:
        raise ValueError("query_groups must be non-negative subgroup ids")
    n_groups = max(n_groups, int(qg.max()) + 1)
    both = np.concatenate([clean, adv])
    excl = _exclusions(exclude_self, clean.shape[0], ref.shape[0])
    shares = knn_subgroup_shares(ref, groups_ref, both, k, np.concatenate([excl, excl]), n_groups)
    before, after = shares[: clean.shape[0]], shares[clean.shape[0] :]
    rows_q = np.arange(clean.shape[0])
    other_before = 1.0 - before[rows_q, qg]
    other_after = 1.0 - after[rows_q, qg]
    switched = (before.argmax(axis=1) == qg) & (after.argmax(axis=1) != qg)
    ref_ids = np.asarray(groups_ref)
    ref_share = np.bincount(ref_ids[ref_ids >= 0], minlength=n_groups) / max(
        1, int(np.sum(ref_ids >= 0))
    )
    summary = []
    for s in np.unique(qg).tolist():
        m = qg == s
        base = float(1.0 - ref_share[s])
        summary.append(
            {
                "group": names[s] if names is not None else s,
                "n": int(m.sum()),
                "other_before": float(other_before[m].mean()),
                "other_after": float(other_after[m].mean()),
                "pull": float((other_after[m] - other_before[m]).mean()),
                "dominant_switched": float(switched[m].mean()),
                "other_base_rate": base,
                "excess_before": float(other_before[m].mean()) - base,
                "excess_after": float(other_after[m].mean()) - base,
            }
        )
    return NeighbourhoodPull(other_before, other_after, before, after, summary)


def tsne_embedding(
    mu: Any,
    seed: int,
    perplexity: float = 30.0,
    metric: str = "cosine",
    max_points: int = 5000,
    max_iter: int = 1000,
) -> np.ndarray:
    """2-D t-SNE map of latent means, for the PICTURE only (Fig. 7 of 000).

    000 used openTSNE (2-D, perplexity 30, cosine metric); we use scikit-learn's TSNE with
    the same settings. Distances in the map are not faithful: compute neighbours with
    :func:`knn` in μ space instead. t-SNE is O(n log n) per iteration on the host, hence
    ``max_points``: subsample first (e.g. with ``sample_per_subgroup``).

    Args:
      mu: latent means ``(n, d)``.
      seed: random state of the embedding (same seed, same map).
      perplexity: t-SNE perplexity, must be < n.
      metric: distance in latent space (sklearn metric name).
      max_points: refuse larger inputs (a clear error instead of a very long run).
      max_iter: optimisation iterations (sklearn requires >= 250).

    Returns:
      ``(n, 2)`` float32 coordinates.
    """
    from sklearn.manifold import TSNE

    x = _as_points("mu", mu)
    n = x.shape[0]
    if n > max_points:
        raise ValueError(f"{n} points exceed max_points={max_points}; subsample first")
    if max_iter < 250:
        raise ValueError(f"max_iter must be >= 250 (sklearn's minimum), got {max_iter}")
    if not 0 < perplexity < n:
        raise ValueError(f"perplexity must lie in (0, {n}) for {n} points, got {perplexity}")
    tsne = TSNE(
        n_components=2,
        perplexity=perplexity,
        metric=metric,
        init="pca",
        random_state=int(seed),
        max_iter=int(max_iter),
    )
    return np.asarray(tsne.fit_transform(x.astype(np.float64)), dtype=np.float32)
