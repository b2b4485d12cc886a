"""Seeded per-subgroup sampling (000 §4: n random examples from every subgroup)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from vaerob_jax.data.dataset import Dataset

__all__ = ["as_key", "sample_per_subgroup"]


def as_key(key_or_seed: Any) -> jax.Array:
    """A JAX PRNG key from a key (typed or raw uint32) or an int seed."""
    if isinstance(key_or_seed, int | np.integer):
        return jax.random.key(int(key_or_seed))
    return key_or_seed


def sample_per_subgroup(
    ds: Dataset,
    n: int,
    key: Any,
    subgroups: Sequence[str] | None = None,
    replace: bool = False,
) -> Dataset:
    """``n`` examples drawn at random from each subgroup, grouped by subgroup.

    000 attacks 60 random training images per subgroup; here the choice is a pure function
    of ``key``: one uniform score per example, and each subgroup keeps its ``n`` lowest-scored
    members (a uniformly random subset without replacement), listed in dataset order. With
    ``replace=True`` each subgroup draws ``n`` members with replacement from
    ``fold_in(key, subgroup_id)``.

    Args:
      ds: the dataset.
      n: examples per subgroup (>= 1).
      key: a JAX PRNG key or an int seed; the same key gives the same sample.
      subgroups: names of the subgroups to sample, in the order wanted; default all, in id
        order.
      replace: allow drawing a member more than once (needed when a subgroup has fewer than
        ``n`` members).

    Returns:
      A Dataset of ``n * len(subgroups)`` examples, subgroup by subgroup.

    Raises:
      ValueError: ``n < 1``, an unknown subgroup name (the message lists the names), an empty
        subgroup, or (without ``replace``) a subgroup with fewer than ``n`` members (its name
        and count are given).
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    names = list(ds.subgroup_names)
    wanted = names if subgroups is None else list(subgroups)
    if isinstance(subgroups, str):
        raise ValueError(f"subgroups must be a sequence of names, got the string {subgroups!r}")
    unknown = [g for g in wanted if g not in names]
    if unknown:
        raise ValueError(f"unknown subgroup(s) {unknown}; subgroups of {ds.name!r}: {names}")
    counts = ds.counts()
    for g in wanted:
        if counts[g] == 0:
            raise ValueError(
                f"subgroup {g!r} of {ds.name!r} ({ds.split}) is empty: nothing to sample; "
                f"counts: {counts}; pass subgroups= without it"
            )

    small = {g: counts[g] for g in wanted if counts[g] < n}
    if small and not replace:
        listed = ", ".join(f"{g!r} has only {c}" for g, c in small.items())
        raise ValueError(
            f"too few examples in {ds.name!r} ({ds.split}) for n={n} per subgroup: {listed}; "
            "use a smaller n, a larger split or replace=True"
        )
    key = as_key(key)
    score = np.asarray(jax.random.uniform(key, (len(ds),)))
    picks = []
    for g in wanted:
        gid = names.index(g)
        members = np.flatnonzero(ds.subgroup_ids == gid)
        if replace:
            draw = jax.random.randint(jax.random.fold_in(key, gid), (n,), 0, len(members))
            picks.append(members[np.asarray(draw)])
        else:
            order = np.argsort(score[members], kind="stable")[:n]
            picks.append(np.sort(members[order]))
    return ds.take(np.concatenate(picks))
