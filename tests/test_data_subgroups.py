"""Intersectional subgroups (Eq. 1 of 000) against brute-force counting; Dataset methods."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from vaerob_jax.data import CELEBA_SUBGROUPS, Dataset, Protected, make_subgroups


@pytest.fixture(scope="module")
def attrs():
    rng = np.random.default_rng(0)
    n = 500
    return {
        "Young": rng.random(n) < 0.75,
        "Male": rng.random(n) < 0.4,
        "Gray_Hair": rng.random(n) < 0.2,
        "Smiling": rng.random(n) < 0.5,
    }


def _name_young_male(young: bool, male: bool) -> str:
    return ("young" if young else "old") + "-" + ("men" if male else "women")


def test_celeba_default_names_membership_and_counts(attrs):
    ids, names = make_subgroups(attrs, CELEBA_SUBGROUPS["age_gender"])
    assert names == ("young-women", "young-men", "old-women", "old-men")
    assert ids.dtype == np.int32
    expected = [_name_young_male(y, m) for y, m in zip(attrs["Young"], attrs["Male"])]
    assert [names[i] for i in ids] == expected
    for g in names:  # cardinalities vs brute force
        assert np.sum(ids == names.index(g)) == expected.count(g)


def test_gray_hair_variant_excludes_old_without_gray_hair(attrs):
    ids, names = make_subgroups(attrs, CELEBA_SUBGROUPS["gray_hair"])
    assert names == ("young-women", "young-men", "old-women", "old-men")
    for i in range(len(ids)):
        y, m, g = attrs["Young"][i], attrs["Male"][i], attrs["Gray_Hair"][i]
        want = -1 if (not y and not g) else names.index(_name_young_male(y, m))
        assert ids[i] == want
    assert np.sum(ids == -1) == np.sum(~attrs["Young"] & ~attrs["Gray_Hair"]) > 0


def test_generic_names_and_mixed_radix_ids_for_three_attributes(attrs):
    spec = ["Male", "Young", "Smiling"]
    ids, names = make_subgroups(attrs, spec)
    assert len(names) == 8
    assert names[0] == "Male=0|Young=0|Smiling=0" and names[5] == "Male=1|Young=0|Smiling=1"
    for combo in itertools.product([False, True], repeat=3):
        name = "|".join(f"{a}={int(v)}" for a, v in zip(spec, combo))
        mask = np.ones(len(ids), bool)
        for a, v in zip(spec, combo):
            mask &= attrs[a] == v
        assert np.array_equal(ids == names.index(name), mask)


def test_single_attribute_groupings(attrs):
    ids, names = make_subgroups(attrs, CELEBA_SUBGROUPS["age"])
    assert names == ("young", "old")
    np.testing.assert_array_equal(ids, np.where(attrs["Young"], 0, 1))
    ids, names = make_subgroups(attrs, {"Male": ("women", "men")})
    assert names == ("women", "men")
    np.testing.assert_array_equal(ids, attrs["Male"].astype(int))
    ids, names = make_subgroups(attrs, "Smiling")
    assert names == ("Smiling=0", "Smiling=1")


def test_empty_subgroup_keeps_its_id_and_name():
    a = {"A": np.array([True, True, False]), "B": np.array([True, True, True])}
    ids, names = make_subgroups(a, [("A", ("a0", "a1")), ("B", ("b0", "b1"))])
    assert names == ("a0-b0", "a0-b1", "a1-b0", "a1-b1")
    np.testing.assert_array_equal(ids, [3, 3, 1])
    ds = _tiny_dataset(ids, names)
    assert ds.counts() == {"a0-b0": 0, "a0-b1": 1, "a1-b0": 0, "a1-b1": 2}


def test_true_first_only_reorders_ids():
    a = {"A": np.array([True, False])}
    ids, names = make_subgroups(a, Protected("A", ("no", "yes"), true_first=True))
    assert names == ("yes", "no")
    np.testing.assert_array_equal(ids, [0, 1])


def test_subgroup_errors(attrs):
    with pytest.raises(ValueError, match=r"unknown attribute 'Age'.*\['Gray_Hair', 'Male'"):
        make_subgroups(attrs, ["Age", "Male"])
    with pytest.raises(ValueError, match="more than once"):
        make_subgroups(attrs, ["Male", "Male"])
    with pytest.raises(ValueError, match="binary"):
        make_subgroups({"A": np.array([0, 1, 2])}, ["A"])
    with pytest.raises(ValueError, match="unknown subgroup 'old-people'"):
        make_subgroups(
            attrs, CELEBA_SUBGROUPS["age_gender"], require={"old-people": {"Male": True}}
        )
    with pytest.raises(ValueError, match="unknown attribute 'Bald'"):
        make_subgroups(attrs, CELEBA_SUBGROUPS["age_gender"], require={"old-men": {"Bald": True}})
    with pytest.raises(ValueError, match="at least one attribute"):
        make_subgroups(attrs, [])
    with pytest.raises(ValueError, match="none"):
        make_subgroups({}, ["Male"])


def _tiny_dataset(ids, names, n_extra_attr=True):
    n = len(ids)
    return Dataset(
        name="tiny",
        split="train",
        images=np.arange(n * 4, dtype=np.float32).reshape(n, 2, 2, 1) / (n * 4),
        attributes={"A": np.arange(n) % 2 == 0},
        subgroup_ids=np.asarray(ids, np.int32),
        subgroup_names=tuple(names),
        example_ids=np.arange(n, dtype=np.int64) + 100,
        labels=np.arange(n),
        factors={"f": np.arange(n, dtype=np.float32)},
    )


def test_dataset_take_and_counts():
    ds = _tiny_dataset([0, 1, -1, 1, 0, 1], ("a", "b", "c"))
    assert ds.counts() == {"a": 2, "b": 3, "c": 0}  # -1 not counted, c listed with 0
    sub = ds.take([5, 0])
    np.testing.assert_array_equal(sub.example_ids, [105, 100])
    np.testing.assert_array_equal(sub.images, ds.images[[5, 0]])
    np.testing.assert_array_equal(sub.attributes["A"], [False, True])
    np.testing.assert_array_equal(sub.factors["f"], [5.0, 0.0])
    np.testing.assert_array_equal(sub.labels, [5, 0])
    assert sub.subgroup_names == ds.subgroup_names
    masked = ds.take(ds.subgroup_ids == 1)
    assert masked.counts() == {"a": 0, "b": 3, "c": 0}
    assert len(ds.take(slice(1, 3))) == 2
    assert len(ds.take([])) == 0


def test_dataset_rejects_inconsistent_columns():
    ds = _tiny_dataset([0, 1], ("a", "b"))
    with pytest.raises(ValueError, match="subgroup_ids must lie in"):
        ds.with_subgroups(np.array([0, 2]), ("a", "b"))
    with pytest.raises(ValueError, match="labels has length 3"):
        Dataset(
            "t", "train", ds.images, {}, ds.subgroup_ids, ("a", "b"), ds.example_ids, np.arange(3)
        )
