"""The UTKFace folder loader on a temporary folder of tiny generated images."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from vaerob_jax.data import load
from vaerob_jax.data.utkface import (
    AGE_BIN_NAMES,
    RACE_NAMES,
    age_bin,
    load_utkface,
    parse_utkface_name,
    scan_utkface,
)

# (age, gender, race) of the generated files; the colour encodes the race (R) and gender (G).
FACES = [
    (1, 0, 0),
    (9, 1, 1),
    (10, 0, 2),
    (25, 1, 3),
    (34, 0, 4),
    (47, 1, 0),
    (58, 0, 1),
    (63, 1, 2),
    (79, 0, 3),
    (80, 1, 4),
    (95, 0, 0),
    (116, 1, 1),
]
MALFORMED = ["61_1_20170109142408075.jpg", "notes.txt", "x_0_0_20170101.jpg"]


def _colour(gender, race):
    return (40 * race + 20, 200 * gender + 30, 128)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("utk")
    for i, (age, gender, race) in enumerate(FACES):
        suffix = ".jpg.chip.jpg" if i % 2 else ".jpg"
        name = f"{age}_{gender}_{race}_2017010{i % 10}1{i:02d}00000{suffix}"
        Image.new("RGB", (20, 24), _colour(gender, race)).save(
            root / name, format="JPEG", quality=95
        )
    for name in MALFORMED:
        (root / name).write_bytes(b"not an image")
    return root


def test_names_parse_and_age_bins():
    assert parse_utkface_name("26_1_3_20170119164828839.jpg.chip.jpg") == (26, 1, 3)
    assert parse_utkface_name("100_0_0_20170112213500903.jpg") == (100, 0, 0)
    for bad in MALFORMED + ["26_2_3_2017.jpg", "26_1_5_2017.jpg", "26_1_3.jpg"]:
        assert parse_utkface_name(bad) is None, bad
    np.testing.assert_array_equal(age_bin([0, 9, 10, 79, 80, 116]), [0, 0, 1, 7, 8, 8])
    assert len(AGE_BIN_NAMES) == 9 and AGE_BIN_NAMES[-1] == "80+"


def test_malformed_names_are_reported_not_dropped_silently(folder):
    with pytest.warns(UserWarning, match=r"3 file\(s\).*61_1_20170109142408075\.jpg"):
        index = scan_utkface(folder)
    assert sorted(index.malformed) == sorted(MALFORMED)
    assert len(index.files) == len(FACES)


def test_loader_labels_images_and_subgroups(folder):
    with pytest.warns(UserWarning, match="do not match"):
        raw = load_utkface("all", image_size=8, data_dir=folder)
    assert raw.images.shape == (len(FACES), 8, 8, 3) and raw.images.dtype == np.float32
    order = np.argsort(raw.example_ids)
    got = {
        (int(a), int(g), int(r))
        for a, g, r in zip(raw.factors["age"], raw.factors["gender"], raw.factors["race"])
    }
    assert got == set(FACES)
    np.testing.assert_array_equal(raw.labels, raw.factors["race"])
    assert raw.label_names == RACE_NAMES
    np.testing.assert_array_equal(raw.factors["age_bin"], age_bin(raw.factors["age"]))
    # Decoded and resized: each solid image keeps its colour (JPEG, a few levels off).
    for i in order:
        want = np.array(_colour(int(raw.factors["gender"][i]), int(raw.factors["race"][i]))) / 255
        np.testing.assert_allclose(raw.images[i].mean(axis=(0, 1)), want, atol=0.03)
    np.testing.assert_array_equal(raw.attributes["male"], raw.factors["gender"] == 0)
    np.testing.assert_array_equal(raw.attributes["race_Asian"], raw.factors["race"] == 2)
    # Through the registry: label subgroups by default, the gender preset, the age label.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ds = load("utkface", "all", image_size=4, data_dir=folder)
        assert ds.subgroup_names == RACE_NAMES
        assert ds.counts() == {name: 3 if r < 2 else 2 for r, name in enumerate(RACE_NAMES)}
        men = load("utkface", "all", image_size=4, data_dir=folder, subgroups="gender")
        assert men.counts() == {"women": 6, "men": 6}
        ages = load("utkface", "all", image_size=4, data_dir=folder, label="age_bin")
        assert ages.subgroup_names == AGE_BIN_NAMES
        assert ages.counts()["80+"] == 3


def test_splits_limit_and_errors(folder, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        train = load_utkface("train", image_size=4, data_dir=folder, seed=3)
        test = load_utkface("test", image_size=4, data_dir=folder, seed=3)
        assert set(train.example_ids).isdisjoint(test.example_ids)
        assert len(train.example_ids) + len(test.example_ids) == len(FACES)
        a = load_utkface("all", image_size=4, data_dir=folder, limit=5, seed=1)
        b = load_utkface("all", image_size=4, data_dir=folder, limit=5, seed=1)
        assert len(a.example_ids) == 5
        np.testing.assert_array_equal(a.example_ids, b.example_ids)
    (tmp_path / "readme.txt").write_text("x")
    (tmp_path / "1_2_3.jpg").write_text("x")
    with (
        pytest.raises(ValueError, match="no file .* has a parseable name"),
        pytest.warns(UserWarning),
    ):
        load_utkface(data_dir=tmp_path)
    with pytest.raises(ValueError, match="needs data_dir"):
        load_utkface()
    with pytest.raises(ValueError, match="is not a folder"):
        load_utkface(data_dir=tmp_path / "missing")
    with pytest.raises(ValueError, match="label must be one of"):
        load_utkface(data_dir=folder, label="ethnicity")
