"""Per-subgroup reductions of per-example metrics, on the host (§6.1, Figs. 3–4 of 000).

000 compares subgroups by the distribution of the adversarial deviation Δc (Eq. 5 of 000):
medians and spreads per subgroup (Fig. 4), and single attributes (Fig. 3) — which here are
just a different ``groups`` array. We add what the paper's box plots leave implicit:

* :func:`summarize`: n, median, quartiles, IQR, mean and a percentile-bootstrap confidence
  interval of the MEDIAN per group. All resamples of a group are drawn at once
  (``(n_boot, n)`` index matrix), never one Python iteration per resample.
* :func:`median_range_test`: the omnibus test of "every group has the same distribution",
  whose statistic is the spread max − min of the group medians, recomputed — groups
  re-selected — on every permutation of ALL group labels. Because the permutation null
  includes the choice of which groups are highest and lowest, its p-value is valid for the
  headline "group A has the highest median, group B the lowest" read off the same data
  (the two-sample p-value of A against B is not: 4 equal groups of 64 give p < 0.05 in about
  23 % of null trials).
* :func:`disparity`: per group, the ratio of its median to that of a reference group fixed in
  advance (by default the largest group) and a two-sided permutation-test p-value for the
  difference of medians, raw and Holm-adjusted over the family of comparisons (all
  permutations drawn at once, or enumerated exactly when there are few enough).
* :func:`holm`: Holm's step-down adjustment, controlling the family-wise error rate.
* :func:`friedman_test`: whether several independent replicates of a whole study (e.g.
  models trained from other seeds) rank the groups alike — Friedman's rank statistic with
  the replicates as blocks and an exact permutation p-value (every within-block ordering
  enumerated), plus Kendall's concordance W. It treats the trained model as random, which
  the tests above (conditional on one model) cannot.

Everything is seeded (``key_or_seed``: an int, a ``numpy.random.Generator`` or a JAX key)
and deterministic; reductions are the LAST step, after the compiled per-example metrics.

Example:
    >>> rows = summarize(delta_c, ds.subgroup_ids, 0, names=ds.subgroup_names)
    >>> rows = disparity(delta_c, ds.subgroup_ids, 0, names=ds.subgroup_names)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "bootstrap_medians",
    "disparity",
    "friedman_test",
    "holm",
    "median_range_test",
    "permutation_test_median",
    "summarize",
]

# Upper bound on the number of array elements materialised at once by the vectorised
# bootstrap/permutation draws (chunks of whole resamples beyond that).
_MAX_ELEMENTS = 1 << 24


def _rng(key_or_seed: Any) -> np.random.Generator:
    """A numpy Generator from an int seed, a Generator (used as is) or a JAX PRNG key."""
    if isinstance(key_or_seed, np.random.Generator):
        return key_or_seed
    if isinstance(key_or_seed, (int, np.integer)) and not isinstance(key_or_seed, bool):
        if key_or_seed < 0:
            raise ValueError(f"seed must be non-negative, got {key_or_seed}")
        return np.random.default_rng(int(key_or_seed))
    try:
        import jax

        data = np.asarray(jax.random.key_data(key_or_seed)).astype(np.uint64).ravel()
    except Exception as err:  # re-raised as a clear ValueError
        raise ValueError(
            f"key_or_seed must be an int, a numpy Generator or a JAX PRNG key, got {key_or_seed!r}"
        ) from err
    return np.random.default_rng([int(v) for v in data])


def _validate(
    values: Any, groups: Any, names: Sequence[str] | None, order: Sequence[Hashable] | None
) -> tuple[np.ndarray, np.ndarray, list[Hashable]]:
    """Checks inputs and returns (values float64, groups, ordered distinct group labels)."""
    v = np.asarray(values, dtype=np.float64)
    g = np.asarray(groups)
    if v.ndim != 1 or g.ndim != 1:
        raise ValueError(f"values and groups must be 1-D, got shapes {v.shape} and {g.shape}")
    if v.shape[0] != g.shape[0]:
        raise ValueError(f"length mismatch: {v.shape[0]} values but {g.shape[0]} group labels")
    if v.shape[0] == 0:
        raise ValueError("values is empty: nothing to summarize")
    bad = ~np.isfinite(v)
    if bad.any():
        raise ValueError(
            f"values contain {int(bad.sum())} NaN/inf entries (first at index "
            f"{int(np.argmax(bad))}); drop or fix them before reducing"
        )
    labels: list[Hashable] = list(order) if order is not None else np.unique(g).tolist()
    for lab in labels:
        if not np.any(g == lab):
            raise ValueError(f"group {lab!r} has no examples")
    if names is not None:
        for lab in labels:
            if not (isinstance(lab, (int, np.integer)) and 0 <= int(lab) < len(names)):
                raise ValueError(
                    f"names given, so groups must be ids in [0, {len(names)}), got {lab!r}"
                )
    return v, g, labels


def _label(lab: Hashable, names: Sequence[str] | None) -> Hashable:
    return names[int(lab)] if names is not None else lab  # type: ignore[call-overload]


def _chunked_rows(total: int, row_len: int) -> list[int]:
    """Sizes of chunks of whole rows such that each chunk has at most _MAX_ELEMENTS entries."""
    per = max(1, _MAX_ELEMENTS // max(1, row_len))
    return [min(per, total - s) for s in range(0, total, per)]


def bootstrap_medians(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Medians of ``n_boot`` bootstrap resamples of ``x`` (all drawn at once per chunk)."""
    n = x.shape[0]
    out = [np.median(x[rng.integers(0, n, size=(m, n))], axis=1) for m in _chunked_rows(n_boot, n)]
    return np.concatenate(out)


def summarize(
    values: Any,
    groups: Any,
    key_or_seed: Any,
    n_boot: int = 2000,
    ci: float = 0.95,
    *,
    names: Sequence[str] | None = None,
    order: Sequence[Hashable] | None = None,
) -> list[dict[str, Any]]:
    """Per-group summary of a per-example metric (Figs. 3–4 of 000), one row per group.

    Args:
      values: per-example metric, shape ``(N,)`` (e.g. Δc of Eq. 5 of 000); finite.
      groups: group label per example, shape ``(N,)`` (subgroup ids, or a single attribute for
        Fig. 3's age/gender views).
      key_or_seed: seed of the bootstrap (int, numpy Generator or JAX key).
      n_boot: number of bootstrap resamples.
      ci: confidence level of the percentile interval, in (0, 1).
      names: optional names indexed by integer group id (``Dataset.subgroup_names``).
      order: optional explicit list of groups to report, in this order; each must be
        non-empty. Default: every distinct label, sorted.

    Returns:
      Rows ``{"group", "n", "median", "q25", "q75", "iqr", "mean", "std", "ci_low",
      "ci_high"}``; ``ci_*`` bound the median (percentile bootstrap).
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must lie in (0, 1), got {ci}")
    v, g, labels = _validate(values, groups, names, order)
    root = _rng(key_or_seed)
    # One independent child stream per reported group (spawned in report order).
    children = root.spawn(len(labels))
    alpha = 0.5 * (1.0 - ci)
    rows = []
    for lab, child in zip(labels, children):
        x = v[g == lab]
        meds = bootstrap_medians(x, n_boot, child)
        q25, med, q75 = np.percentile(x, [25.0, 50.0, 75.0])
        lo, hi = np.quantile(meds, [alpha, 1.0 - alpha])
        rows.append(
            {
                "group": _label(lab, names),
                "n": int(x.shape[0]),
                "median": float(med),
                "q25": float(q25),
                "q75": float(q75),
                "iqr": float(q75 - q25),
                "mean": float(np.mean(x)),
                "std": float(np.std(x, ddof=1)) if x.shape[0] > 1 else 0.0,
                "ci_low": float(lo),
                "ci_high": float(hi),
            }
        )
    return rows


def _abs_median_diff(perm_a: np.ndarray, perm_b: np.ndarray) -> np.ndarray:
    return np.abs(np.median(perm_a, axis=1) - np.median(perm_b, axis=1))


def permutation_test_median(
    a: Any, b: Any, key_or_seed: Any, n_perm: int = 10000, method: str = "auto"
) -> float:
    """Two-sided permutation p-value for ``median(a) − median(b)`` (vectorised).

    Statistic ``T = |median(a) − median(b)|``; under H0 (exchangeable labels) the pooled
    sample is re-split into groups of the original sizes.

    Args:
      a, b: the two samples (1-D, finite, non-empty).
      key_or_seed: seed of the random permutations.
      n_perm: number of random permutations (``method="monte_carlo"``).
      method: ``"exact"`` enumerates every one of the C(n_a+n_b, n_a) splits (p = share with
        T ≥ T_obs); ``"monte_carlo"`` draws ``n_perm`` permutations at once and returns
        ``(1 + #{T ≥ T_obs}) / (1 + n_perm)`` (never 0, valid at any n_perm); ``"auto"`` is
        exact when there are at most ``n_perm`` splits.

    Returns:
      The p-value in (0, 1].
    """
    if method not in ("auto", "exact", "monte_carlo"):
        raise ValueError(f"unknown method {method!r}; choose 'auto', 'exact' or 'monte_carlo'")
    if n_perm < 1:
        raise ValueError(f"n_perm must be >= 1, got {n_perm}")
    xa = np.asarray(a, dtype=np.float64).ravel()
    xb = np.asarray(b, dtype=np.float64).ravel()
    if xa.size == 0 or xb.size == 0:
        raise ValueError("both samples must be non-empty")
    if not (np.all(np.isfinite(xa)) and np.all(np.isfinite(xb))):
        raise ValueError("samples contain NaN/inf values")
    pooled = np.concatenate([xa, xb])
    n, na = pooled.size, xa.size
    t_obs = abs(float(np.median(xa) - np.median(xb)))
    # Equal statistics must count as "at least as extreme" despite float rounding.
    tol = 1e-12 * max(1.0, float(np.max(np.abs(pooled))))
    n_splits = math.comb(n, na)
    if method == "exact" or (method == "auto" and n_splits <= n_perm):
        if n_splits > 5_000_000:
            raise ValueError(f"exact test would enumerate {n_splits} splits; use monte_carlo")
        in_a = np.zeros((n_splits, n), dtype=bool)
        combos = np.fromiter(
            itertools.chain.from_iterable(itertools.combinations(range(n), na)),
            dtype=np.int64,
            count=n_splits * na,
        ).reshape(n_splits, na)
        np.put_along_axis(in_a, combos, True, axis=1)
        order = np.argsort(~in_a, axis=1, kind="stable")  # a-members first, then b-members
        perm = pooled[order]
        t = _abs_median_diff(perm[:, :na], perm[:, na:])
        return float(np.mean(t >= t_obs - tol))
    rng = _rng(key_or_seed)
    count = 0
    for m in _chunked_rows(n_perm, n):
        perm = rng.permuted(np.broadcast_to(pooled, (m, n)), axis=1)
        count += int(np.sum(_abs_median_diff(perm[:, :na], perm[:, na:]) >= t_obs - tol))
    return (1.0 + count) / (1.0 + n_perm)


def disparity(
    values: Any,
    groups: Any,
    key_or_seed: Any,
    reference: Hashable = "largest",
    n_perm: int = 10000,
    *,
    names: Sequence[str] | None = None,
    order: Sequence[Hashable] | None = None,
    method: str = "auto",
) -> list[dict[str, Any]]:
    """Robustness disparity of each group relative to a reference group (§6.1 of 000).

    Lower Δc means more robust; a ratio of 1.8 reads "this group's median deviation is 1.8×
    the reference group's". The reference must be fixed before looking at the values for the
    p-values to mean what they say: ``"largest"`` (the group with the most examples, ties to
    the first in ``order``) or a named group. ``"most_robust"`` (the lowest median) picks the
    reference FROM the data; its p-values are then not selection-aware (use
    :func:`median_range_test` for the headline) and are kept only for exploration.

    Args:
      values: per-example metric ``(N,)`` (Δc of Eq. 5 of 000), finite.
      groups: group label per example ``(N,)``.
      key_or_seed: seed of the permutation test (each group gets its own child stream).
      reference: ``"largest"``, ``"most_robust"`` or a group label (a name when ``names``
        is given, else a value occurring in ``groups``).
      n_perm: permutations per comparison.
      names: optional names indexed by integer group id.
      order: optional explicit list of groups, see :func:`summarize`.
      method: permutation method, see :func:`permutation_test_median`.

    Returns:
      Rows ``{"group", "n", "median", "reference", "ratio", "difference", "p_value",
      "p_holm"}``; ``ratio = median / median_ref`` (inf if the reference median is 0 and this
      one is not); ``p_holm`` is Holm-adjusted over the ``len(groups) − 1`` comparisons; the
      reference's own row has ratio 1, difference 0 and NaN p-values.
    """
    v, g, labels = _validate(values, groups, names, order)
    if len(labels) < 2:
        raise ValueError(f"disparity needs at least 2 groups, got {len(labels)}")
    medians = {lab: float(np.median(v[g == lab])) for lab in labels}
    if reference == "most_robust":
        ref = min(labels, key=lambda lab: (medians[lab], labels.index(lab)))
    elif reference == "largest":
        ref = max(labels, key=lambda lab: (int(np.sum(g == lab)), -labels.index(lab)))
    else:
        display = [_label(lab, names) for lab in labels]
        if reference not in display:
            raise ValueError(f"reference {reference!r} is not one of the groups {display}")
        ref = labels[display.index(reference)]
    root = _rng(key_or_seed)
    children = root.spawn(len(labels))
    ref_vals = v[g == ref]
    rows = []
    for lab, child in zip(labels, children):
        x = v[g == lab]
        if lab == ref:
            ratio, p = 1.0, float("nan")
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = float(np.divide(medians[lab], medians[ref]))
            p = permutation_test_median(x, ref_vals, child, n_perm=n_perm, method=method)
        rows.append(
            {
                "group": _label(lab, names),
                "n": int(x.shape[0]),
                "median": medians[lab],
                "reference": _label(ref, names),
                "ratio": ratio,
                "difference": medians[lab] - medians[ref],
                "p_value": p,
            }
        )
    others = [i for i, lab in enumerate(labels) if lab != ref]
    adjusted = holm([rows[i]["p_value"] for i in others])
    for r in rows:
        r["p_holm"] = float("nan")
    for i, p_adj in zip(others, adjusted):
        rows[i]["p_holm"] = float(p_adj)
    return rows


def holm(p_values: Any) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control at any level).

    With the m p-values sorted ascending, ``p_adj(k) = max_{j ≤ k} min(1, (m − j + 1) p(j))``;
    rejecting every hypothesis with ``p_adj ≤ α`` keeps the chance of any false rejection
    ≤ α whatever the dependence between the tests. Returned in the input order.
    """
    p = np.asarray(p_values, dtype=np.float64).ravel()
    if p.size == 0:
        return p
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.maximum.accumulate(scaled)
    return out


def median_range_test(
    values: Any,
    groups: Any,
    key_or_seed: Any,
    n_perm: int = 10000,
    *,
    names: Sequence[str] | None = None,
    order: Sequence[Hashable] | None = None,
) -> dict[str, Any]:
    """Omnibus permutation test that all groups share one distribution, read through the
    spread of their medians; the p-value to quote with "A has the highest median, B the
    lowest" when A and B were picked from the same data.

    Statistic ``T = max_g median_g − min_g median_g``. Under H0 (labels exchangeable) every
    group label of the N examples is permuted at once and T — with the highest and lowest
    groups chosen afresh — is recomputed for each of ``n_perm`` permutations (all drawn in
    chunks of whole permutations, never one Python iteration per permutation).
    ``p = (1 + #{T_perm ≥ T_obs}) / (1 + n_perm)``, never 0, valid at any ``n_perm``.

    Args:
      values: per-example metric ``(N,)``, finite.
      groups: group label per example ``(N,)``; at least 2 groups.
      key_or_seed: seed of the permutations.
      n_perm: number of random permutations.
      names, order: as in :func:`summarize`.

    Returns:
      ``{"statistic", "p_value", "n_perm", "n_groups", "highest", "lowest"}`` (the groups
      with the highest and the lowest observed median).
    """
    if n_perm < 1:
        raise ValueError(f"n_perm must be >= 1, got {n_perm}")
    v, g, labels = _validate(values, groups, names, order)
    if len(labels) < 2:
        raise ValueError(f"median_range_test needs at least 2 groups, got {len(labels)}")
    keep = np.isin(g, np.asarray(labels, dtype=g.dtype))
    v, g = v[keep], g[keep]
    # Contiguous blocks of the original group sizes: a permutation of the pooled values then
    # re-assigns every label at once, and group medians are medians of column slices.
    pooled = np.concatenate([v[g == lab] for lab in labels])
    bounds = np.cumsum([0] + [int(np.sum(g == lab)) for lab in labels])

    def spread(x: np.ndarray) -> np.ndarray:
        med = np.stack(
            [np.median(x[:, a:b], axis=1) for a, b in zip(bounds[:-1], bounds[1:])], axis=1
        )
        return np.max(med, axis=1) - np.min(med, axis=1)

    medians = [float(np.median(pooled[a:b])) for a, b in zip(bounds[:-1], bounds[1:])]
    t_obs = float(spread(pooled[None, :])[0])
    tol = 1e-12 * max(1.0, float(np.max(np.abs(pooled))))
    rng = _rng(key_or_seed)
    n = pooled.size
    count = 0
    for m in _chunked_rows(n_perm, n):
        perm = rng.permuted(np.broadcast_to(pooled, (m, n)), axis=1)
        count += int(np.sum(spread(perm) >= t_obs - tol))
    hi = int(np.argmax(medians))
    lo = int(np.argmin(medians))
    return {
        "statistic": t_obs,
        "p_value": (1.0 + count) / (1.0 + n_perm),
        "n_perm": int(n_perm),
        "n_groups": len(labels),
        "highest": _label(labels[hi], names),
        "lowest": _label(labels[lo], names),
    }


# Exact Friedman distributions are enumerated while (orderings per block) x (distinct rank-sum
# vectors) stays below this; beyond it the p-value is a Monte-Carlo estimate.
_FRIEDMAN_EXACT_WORK = 1 << 23


def _block_ranks(row: np.ndarray) -> np.ndarray:
    """Ranks 1..G of one block, ties given their average rank."""
    order = np.argsort(row, kind="stable")
    ranks = np.empty(row.size)
    ranks[order] = np.arange(1, row.size + 1)
    for v in np.unique(row):
        tied = row == v
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def friedman_test(
    table: Any,
    key_or_seed: Any = 0,
    n_perm: int = 100_000,
    *,
    names: Sequence[str] | None = None,
    method: str = "auto",
) -> dict[str, Any]:
    """Friedman's test that K independent replicates (blocks) do not rank G groups alike.

    Each row of ``table`` is one replicate (e.g. a study repeated with another training seed:
    new model, new examples, new attack), each column one group, each entry the replicate's
    summary of that group (e.g. its median Δc). Within every row the groups are ranked 1..G
    (ties: average ranks); with rank sums R_g over the rows,

        Q = 12 / (K G (G + 1)) · Σ_g R_g² − 3 K (G + 1),      W = Q / (K (G − 1)),

    Friedman's statistic and Kendall's coefficient of concordance (W = 1: every replicate
    ranks the groups the same; ≈ 0: no agreement). Under H0 — in each replicate every ordering
    of the groups is equally likely, i.e. no group is systematically higher over replicates —
    the p-value ``P(Q* ≥ Q)`` is exact: the distribution of the rank-sum vector is built by
    adding, replicate by replicate, every one of the G! orderings of that row's ranks
    (enumerated as a histogram of rank-sum vectors, not as (G!)^K arrangements). When that
    would take more than about 8·10⁶ operations it is estimated from ``n_perm`` random
    orderings per row instead (``exact`` False), ``(1 + #{Q* ≥ Q}) / (1 + n_perm)``.

    With few replicates the test is coarse: K = 3, G = 4 can reach at best p = 1/576 (the
    same ordering three times) and one group highest in all three runs alone has probability
    1/16 under H0; ``min_p`` reports the smallest attainable p-value.

    Args:
      table: ``(K, G)`` finite values, K >= 2 replicates, G >= 2 groups.
      key_or_seed: seed of the Monte-Carlo fallback (unused when exact).
      n_perm: Monte-Carlo orderings when the exact distribution is too large.
      names: G group names for ``highest``/``mean_ranks`` (default: column indices).
      method: 'auto' (exact where feasible, else Monte Carlo), 'exact' (raises where the
        enumeration is too large) or 'monte_carlo'.

    Returns:
      ``{"statistic", "kendall_w", "p_value", "min_p", "exact", "n_blocks", "n_groups",
      "mean_ranks", "highest", "lowest", "times_highest"}``: ``mean_ranks`` per group (G is
      the highest value), ``highest``/``lowest`` the groups of largest / smallest mean rank,
      ``times_highest`` in how many replicates ``highest`` ranked first.
    """
    x = np.asarray(table, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise ValueError(
            f"friedman_test needs a (replicates K >= 2, groups G >= 2) table, got shape {x.shape}"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError("friedman_test: the table contains NaN/inf entries")
    if names is not None and len(names) != x.shape[1]:
        raise ValueError(f"{len(names)} names for {x.shape[1]} groups")
    if n_perm < 1:
        raise ValueError(f"n_perm must be >= 1, got {n_perm}")
    if method not in ("auto", "exact", "monte_carlo"):
        raise ValueError(f"method must be 'auto', 'exact' or 'monte_carlo', got {method!r}")
    k, g = x.shape
    ranks = np.stack([_block_ranks(row) for row in x])
    twice = np.rint(2 * ranks).astype(np.int64)  # average ranks are multiples of 1/2

    def q_of(sum_sq: np.ndarray) -> np.ndarray:  # Q from Σ R_g², R in rank units
        return 12.0 / (k * g * (g + 1)) * sum_sq - 3.0 * k * (g + 1)

    q_obs = float(q_of(np.sum(np.sum(ranks, axis=0) ** 2)))
    tol = 1e-9 * max(1.0, abs(q_obs))
    perms = np.asarray(list(itertools.permutations(range(g))), np.int64)
    base = 2 * g * k + 1  # rank sums (doubled) lie in [0, 2 g k]: one mixed-radix digit each
    exact = method != "monte_carlo" and math.factorial(g) <= 40320 and g * math.log2(base) < 62
    if exact:
        weights = base ** np.arange(g, dtype=np.int64)
        codes, counts = np.zeros(1, np.int64), np.ones(1, np.float64)
        for row in twice:
            if codes.size * perms.shape[0] > _FRIEDMAN_EXACT_WORK:
                exact = False
                break
            shifts = row[perms] @ weights  # one code offset per ordering of this row's ranks
            merged = (codes[:, None] + shifts[None, :]).ravel()
            codes, inverse = np.unique(merged, return_inverse=True)
            counts = np.bincount(
                inverse, np.repeat(counts, shifts.size), minlength=codes.size
            ).astype(np.float64)
            counts /= counts.sum()  # probabilities (each ordering equally likely)
    if method == "exact" and not exact:
        raise ValueError(
            f"the exact Friedman distribution of {k} blocks x {g} groups is too large to "
            "enumerate here; use method='auto' or 'monte_carlo'"
        )
    if exact:
        digits = (codes[:, None] // weights[None, :]) % base
        q_all = q_of(np.sum((digits / 2.0) ** 2, axis=1))
        p = float(np.sum(counts[q_all >= q_obs - tol]))
        p_min = float(np.sum(counts[q_all >= q_all.max() - tol]))
    else:
        rng = _rng(key_or_seed)
        hits = 0
        for m in _chunked_rows(n_perm, k * g):
            shuffled = rng.permuted(np.broadcast_to(ranks, (m, k, g)), axis=2)
            hits += int(np.sum(q_of(np.sum(shuffled.sum(axis=1) ** 2, axis=1)) >= q_obs - tol))
        p = (1.0 + hits) / (1.0 + n_perm)
        p_min = 1.0 / (1.0 + n_perm)
    mean_ranks = ranks.mean(axis=0)
    hi, lo = int(np.argmax(mean_ranks)), int(np.argmin(mean_ranks))
    label = (lambda j: names[j]) if names is not None else (lambda j: j)
    return {
        "statistic": q_obs,
        "kendall_w": q_obs / (k * (g - 1)),
        "p_value": min(1.0, p),
        "min_p": p_min,
        "exact": bool(exact),
        "n_blocks": int(k),
        "n_groups": int(g),
        "mean_ranks": {label(j): float(mean_ranks[j]) for j in range(g)},
        "highest": label(hi),
        "lowest": label(lo),
        "times_highest": int(np.sum(np.argmax(x, axis=1) == hi)),
    }
