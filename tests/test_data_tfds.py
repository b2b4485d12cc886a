"""TFDS-backed loaders on tfds.testing.mock_data (no downloads, no TensorFlow)."""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from vaerob_jax.data import (
    TFDS_DATASETS,
    DatasetNotPreparedError,
    centre_crop,
    load,
    resize_images,
)
from vaerob_jax.data import prepare as prepare_mod
from vaerob_jax.data import tfds_sources as ts

N_MOCK = 10

EXPECTED = {  # name: (native image shape, label names head, attribute names)
    "mnist": ((28, 28, 1), ("0", "1"), ("even", "large")),
    "fashion_mnist": ((28, 28, 1), ("T-shirt/top", "Trouser"), ()),
    "svhn_cropped": ((32, 32, 3), ("0", "1"), ("even", "large")),
    "cifar10": ((32, 32, 3), ("airplane", "automobile"), ()),
    "dsprites": ((64, 64, 1), ("square", "ellipse"), ()),
}


@pytest.fixture
def mock():
    with tfds.testing.mock_data(num_examples=N_MOCK):
        yield


def _raw(name, i):
    return tfds.data_source(name, split="train")[int(i)]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_label_datasets_on_mock(mock, name):
    shape, head, attr_names = EXPECTED[name]
    ds = load(name, "train", limit=6, seed=3)
    assert ds.images.shape == (6, *shape) and ds.images.dtype == np.float32
    assert ds.images.min() >= 0.0 and ds.images.max() <= 1.0
    assert tuple(sorted(ds.attributes)) == attr_names
    assert ds.subgroup_names[:2] == head
    np.testing.assert_array_equal(ds.subgroup_ids, ds.labels)  # default: labels as subgroups
    assert sum(ds.counts().values()) == 6
    if attr_names:
        np.testing.assert_array_equal(ds.attributes["even"], ds.labels % 2 == 0)
        np.testing.assert_array_equal(ds.attributes["large"], ds.labels >= 5)
    for j, i in enumerate(ds.example_ids):  # each row is the record it claims to be
        rec = _raw(name, i)
        key = "label_shape" if name == "dsprites" else "label"
        assert ds.labels[j] == rec[key]
        want = (rec["image"] > 0) if name == "dsprites" else rec["image"] / 255.0
        np.testing.assert_allclose(ds.images[j], want, atol=1e-6)


def test_limit_is_seeded_subset_and_dsprites_is_shuffled(mock):
    a = load("mnist", limit=6, seed=1)
    b = load("mnist", limit=6, seed=1)
    c = load("mnist", limit=6, seed=2)
    np.testing.assert_array_equal(a.example_ids, b.example_ids)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.example_ids, c.example_ids)
    assert len(set(a.example_ids)) == 6 and np.all(np.diff(a.example_ids) > 0)  # sorted
    full = load("mnist")
    np.testing.assert_array_equal(full.example_ids, np.arange(N_MOCK))
    np.testing.assert_array_equal(full.images[a.example_ids], a.images)
    d = load("dsprites", seed=0)  # TFDS stores dSprites in factor order: we shuffle
    assert sorted(d.example_ids) == list(range(N_MOCK))
    assert not np.array_equal(d.example_ids, np.arange(N_MOCK))
    assert set(d.factors) >= {"shape", "scale", "orientation", "x_position", "y_position"}
    for j, i in enumerate(d.example_ids):
        rec = _raw("dsprites", i)
        assert d.factors["orientation"][j] == rec["label_orientation"]
        assert d.factors["value_scale"][j] == pytest.approx(rec["value_scale"])
    np.testing.assert_array_equal(d.labels, d.factors["shape"])


def test_chunked_reading_matches_one_chunk(mock):
    a = load("cifar10", image_size=16, chunk_size=3)
    b = load("cifar10", image_size=16, chunk_size=64)
    np.testing.assert_allclose(a.images, b.images, atol=1e-6)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_celeb_a_on_mock_crop_resize_attributes_subgroups(mock):
    ds = load("celeb_a", "train", limit=8, seed=0)
    assert ds.images.shape == (8, 64, 64, 3) and ds.images.dtype == np.float32
    assert len(ds.attributes) == 40 and {"Young", "Male", "Gray_Hair"} <= set(ds.attributes)
    assert ds.subgroup_names == ("young-women", "young-men", "old-women", "old-men")
    for j, i in enumerate(ds.example_ids):
        rec = _raw("celeb_a", i)
        y, m = bool(rec["attributes"]["Young"]), bool(rec["attributes"]["Male"])
        assert ds.subgroup_names[ds.subgroup_ids[j]] == ("young" if y else "old") + "-" + (
            "men" if m else "women"
        )
        assert ds.attributes["Gray_Hair"][j] == rec["attributes"]["Gray_Hair"]
        # documented crop: rows 20..197 (the centred 178x178 square), then resize to 64
        crop = rec["image"][None, 20:198].astype(np.float32) / 255.0
        np.testing.assert_allclose(ds.images[j], resize_images(crop, 64)[0], atol=1e-5)
    gray = load("celeb_a", limit=8, seed=0, subgroups="gray_hair")
    old_no_gray = ~gray.attributes["Young"] & ~gray.attributes["Gray_Hair"]
    np.testing.assert_array_equal(gray.subgroup_ids == -1, old_no_gray)
    tight = load("celeb_a", limit=2, image_size=32, crop=148)
    assert tight.images.shape == (2, 32, 32, 3)


def test_converters_on_hand_made_records():
    recs = [{"image": np.full((4, 4, 1), 255, np.uint8) * (i % 2), "label": i} for i in range(3)]
    out = ts.convert_label_records(recs)
    assert out["image"].shape == (3, 4, 4, 1) and out["label"].tolist() == [0, 1, 2]
    celeb = [
        {"image": np.zeros((6, 5, 3), np.uint8), "attributes": {"Male": b, "Young": not b}}
        for b in (True, False)
    ]
    out = ts.convert_celeba_records(celeb)
    assert out["attributes"]["Male"].tolist() == [True, False]
    assert out["attributes"]["Young"].dtype == bool
    sprite = {f"label_{f}": 1 for f in ts._DSPRITES_FACTORS}
    sprite.update({f"value_{f}": 0.5 for f in ts._DSPRITES_FACTORS})
    out = ts.convert_dsprites_records([{"image": np.zeros((3, 3, 1), np.uint8), **sprite}])
    assert out["label_scale"].tolist() == [1] and out["value_x_position"].dtype == np.float32


def test_bulk_read_uses_getitems():
    class Source:
        calls: list[list[int]] = []

        def __len__(self):
            return 5

        def __getitems__(self, keys):
            self.calls.append(list(keys))
            return [{"k": k} for k in keys]

        def __getitem__(self, k):
            raise AssertionError("single reads should not be used")

    src = Source()
    assert [r["k"] for r in ts._get_many(src, [1, 3])] == [1, 3]
    assert src.calls == [[1, 3]]


def test_select_indices():
    idx = ts.select_indices(100, 10, seed=0, shuffle=False)
    assert len(np.unique(idx)) == 10 and np.all(np.diff(idx) > 0) and idx.max() < 100
    np.testing.assert_array_equal(ts.select_indices(5, None, 0, False), np.arange(5))
    shuffled = ts.select_indices(50, None, 4, True)
    assert sorted(shuffled) == list(range(50))
    with pytest.raises(ValueError, match="limit"):
        ts.select_indices(5, -1, 0, False)


def test_centre_crop_and_resize_known_answers():
    x = np.arange(2 * 6 * 4 * 1, dtype=np.float32).reshape(2, 6, 4, 1)
    np.testing.assert_array_equal(centre_crop(x, 4, 4), x[:, 1:5])
    np.testing.assert_array_equal(centre_crop(x, 2, 2, top=0), x[:, 0:2, 1:3])
    with pytest.raises(ValueError, match="cannot crop"):
        centre_crop(x, 7, 4)
    const = np.full((3, 20, 20, 2), 0.3, np.float32)
    np.testing.assert_allclose(resize_images(const, 7), 0.3, atol=1e-6)  # constants stay
    rng = np.random.default_rng(0)
    img = rng.random((2, 16, 16, 1)).astype(np.float32)
    small = resize_images(img, 8)  # antialiased shrink: a weighted average, mean kept
    np.testing.assert_allclose(small.mean(axis=(1, 2, 3)), img.mean(axis=(1, 2, 3)), atol=0.02)
    assert small.std() < img.std()


@pytest.mark.parametrize("name", ["mnist", "celeb_a", "dsprites"])
def test_not_prepared_dataset_fails_fast_with_instructions(tmp_path, name):
    t0 = time.perf_counter()
    with pytest.raises(DatasetNotPreparedError) as err:
        load(name, data_dir=str(tmp_path))
    assert time.perf_counter() - t0 < 10.0
    msg = str(err.value)
    assert "pip install 'vaerob_jax[prepare]'" in msg
    assert f"tfds build {name} --file_format=array_record --data_dir {tmp_path}" in msg
    assert f"python -m vaerob_jax.data.prepare {name}" in msg
    if name == "celeb_a":
        assert "quota" in msg and f"{tmp_path}/downloads/manual" in msg
        assert all(f in msg for f in ts.CELEBA_MANUAL_FILES)
    else:
        assert "quota" not in msg
    assert isinstance(err.value, RuntimeError)


def test_tfds_errors(mock):
    with pytest.raises(ValueError, match=r"splits \['train'\]"):
        load("dsprites", "test")
    with pytest.raises(ValueError, match="crop is only supported for celeb_a"):
        load("mnist", crop=20)
    with pytest.raises(ValueError, match="crop must be"):
        load("celeb_a", crop=300)
    assert set(TFDS_DATASETS) == {
        "celeb_a",
        "mnist",
        "fashion_mnist",
        "svhn_cropped",
        "cifar10",
        "dsprites",
    }


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None, reason="TF installed")
def test_prepare_without_tensorflow_says_how_to_install(capsys):
    with pytest.raises(
        prepare_mod.TensorFlowMissingError, match=r"pip install 'vaerob_jax\[prepare\]'"
    ):
        prepare_mod.prepare("mnist")
    assert prepare_mod.main(["celeb_a"]) == 1
    assert "needs TensorFlow" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown TFDS dataset 'imagenet'"):
        prepare_mod.prepare("imagenet")


def test_resize_runs_under_jax_without_host_loops():
    # the resize is one compiled op per (batch shape, size): a second call does not retrace
    x = np.zeros((4, 10, 10, 1), np.float32)
    resize_images(x, 5)
    before = resize_images.__globals__["_resize"]._cache_size()
    resize_images(x + 0.5, 5)
    assert resize_images.__globals__["_resize"]._cache_size() == before
