"""Checkpoints: exact resumption, finished runs load, mismatched/corrupted ones are refused."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaerob_jax import objectives
from vaerob_jax.models import make_vae
from vaerob_jax.sweeps import params_digest, stack_digests
from vaerob_jax.train import (
    CheckpointError,
    GridCheckpointer,
    TrainConfig,
    load_params,
    read_metrics,
    save_params,
    train_grid,
)
from vaerob_jax.train.checkpoint import CheckpointCorruptError, CheckpointMismatchError

BETAS = [1.0, 2.0, 3.0]
GRID = {"beta": BETAS}
KEY = jax.random.key(5)


def _cfg(steps: int, every: int = 2) -> TrainConfig:
    return TrainConfig(
        steps=steps,
        batch_size=4,
        learning_rate=1e-3,
        log_every=1,
        checkpoint_every=every,
        max_to_keep=2,
    )


def _equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def elbo(tiny_model):
    return objectives.beta_elbo(tiny_model)


def _train(model, loss, images, cfg, workdir=None, grid=None, key=KEY):
    return train_grid(
        model,
        loss,
        images,
        GRID if grid is None else grid,
        cfg,
        key,
        workdir=workdir,
        progress=False,
    )


@pytest.fixture(scope="module")
def uninterrupted(tiny_model, tiny_images, elbo):
    return _train(tiny_model, elbo, tiny_images, _cfg(6))


class _CtrlCAt:
    """A progress display whose update raises KeyboardInterrupt after step ``at`` (Ctrl-C)."""

    def __init__(self, at: int):
        self.at = at

    def __call__(self, *args, **kwargs):
        from vaerob_jax.sweeps.progress import Progress

        at = self.at

        class Interrupting(Progress):
            def update(self, done, *a, **k):
                if done == at:
                    raise KeyboardInterrupt
                return super().update(done, *a, **k)

        return Interrupting(*args, **kwargs)


def test_resumed_run_equals_uninterrupted_run(
    tiny_model, tiny_images, elbo, uninterrupted, tmp_path, monkeypatch
):
    # A 6-step run stopped by Ctrl-C after step 3: its last checkpoint is at step 2 and
    # metrics.csv already holds step 3, which the resumed run must log again only once.
    import vaerob_jax.train.trainer as trainer_mod

    chex.clear_trace_counter()
    # One trace for both calls: restored state reuses the compiled step.
    counted = dataclasses.replace(elbo, fn=chex.assert_max_traces(elbo.fn, n=1))
    with monkeypatch.context() as m:
        m.setattr(trainer_mod, "Progress", _CtrlCAt(3))
        with pytest.raises(KeyboardInterrupt):
            _train(tiny_model, counted, tiny_images, _cfg(6), tmp_path)
    ckpt = tmp_path / "checkpoints"
    assert sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) == [2]
    assert read_metrics(tmp_path / "metrics.csv")["step"].max() == 3

    resumed = _train(tiny_model, counted, tiny_images, _cfg(6), tmp_path)
    assert resumed.resumed_from == 2
    assert _equal(resumed.params, uninterrupted.params)
    assert _equal(resumed.opt_state, uninterrupted.opt_state)
    np.testing.assert_array_equal(resumed.history["step"], [3, 4, 5, 6])

    m = read_metrics(tmp_path / "metrics.csv")
    assert len(m["step"]) == 6 * 3  # one row per (step, model), no duplicates
    pairs = set(zip(m["step"].tolist(), m["model"].tolist()))
    assert pairs == {(s, k) for s in range(1, 7) for k in range(3)}
    order = np.lexsort((m["model"], m["step"]))
    np.testing.assert_array_equal(
        m["loss"][order].reshape(6, 3), uninterrupted.history["loss"].astype(np.float32)
    )
    np.testing.assert_array_equal(m["beta"][order].reshape(6, 3)[0], BETAS)
    # max_to_keep=2: only the two newest checkpoints remain.
    assert sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) == [4, 6]
    grid = json.loads((tmp_path / "grid.json").read_text())
    assert [g["beta"] for g in grid["models"]] == BETAS

    # Train or load: the finished run is loaded, not trained again.
    again = _train(tiny_model, elbo, tiny_images, _cfg(6), tmp_path)
    assert again.resumed_from == 6 and again.history["step"].size == 0
    assert _equal(again.params, uninterrupted.params)
    assert len(read_metrics(tmp_path / "metrics.csv")["step"]) == 18


def _tree_bytes(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_run_of_another_length_is_refused_untouched_unless_extended(
    tiny_model, tiny_images, elbo, uninterrupted, tmp_path
):
    """Issue 9.1: another step count used to extend the stored run in place (max_to_keep then
    pruned its final checkpoint); now it is refused before anything is written, and a longer
    run is the explicit extend=True, which continues the stored trajectory exactly."""
    _train(tiny_model, elbo, tiny_images, _cfg(2), tmp_path)
    before = _tree_bytes(tmp_path)
    with pytest.raises(CheckpointMismatchError, match=r"holds a run of 2 steps.*extend=True"):
        _train(tiny_model, elbo, tiny_images, _cfg(6), tmp_path)
    with pytest.raises(CheckpointMismatchError, match="shorter run is a different run"):
        _train(tiny_model, elbo, tiny_images, _cfg(1), tmp_path)
    assert _tree_bytes(tmp_path) == before  # checkpoints, metrics and grid.json untouched

    extended = train_grid(
        tiny_model, elbo, tiny_images, GRID, _cfg(6), KEY, workdir=tmp_path, progress=False,
        extend=True,
    )  # fmt: skip
    assert extended.resumed_from == 2
    assert _equal(extended.params, uninterrupted.params)
    # The folder now holds the 6-step run: it loads without extend, and a shorter ask is
    # still refused even with extend (extending never shortens).
    assert _train(tiny_model, elbo, tiny_images, _cfg(6), tmp_path).resumed_from == 6
    with pytest.raises(CheckpointMismatchError, match="shorter run"):
        train_grid(
            tiny_model, elbo, tiny_images, GRID, _cfg(4), KEY, workdir=tmp_path,
            progress=False, extend=True,
        )  # fmt: skip


@pytest.fixture(scope="module")
def finished_dir(tiny_model, tiny_images, elbo, tmp_path_factory):
    path = tmp_path_factory.mktemp("finished")
    _train(tiny_model, elbo, tiny_images, _cfg(2), path)
    return path


def test_a_grid_stating_the_default_tau_resumes_one_that_omits_it(
    tiny_model, tiny_images, elbo, finished_dir
):
    """The fingerprint records the hyperparameters the loss sees (defaults filled in), so the
    margin study's β × {τ = 0} grid loads the subgroup study's β grid."""
    res = _train(
        tiny_model, elbo, tiny_images, _cfg(2), finished_dir, {"beta": BETAS, "tau": [0.0] * 3}
    )
    assert res.resumed_from == 2 and res.index(beta=2.0, tau=0.0) == 1
    m = read_metrics(finished_dir / "metrics.csv")
    assert list(m)[:5] == ["step", "model", "beta", "tau", "seed"]
    np.testing.assert_array_equal(m["tau"], 0.0)  # rows of the first run get the τ column


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"grid": {"beta": [1.0, 2.0, 4.0]}}, "grid.beta"),
        ({"grid": {"beta": [1.0, 2.0]}}, "grid.num_models"),
        ({"grid": {"beta": BETAS, "tau": [0.1] * 3}}, "grid.tau"),
        ({"grid": {"beta": BETAS, "seed": [1] * 3}}, "grid.seed"),
        ({"key": jax.random.key(6)}, "key"),
        ({"model": make_vae("mlp", (8, 8, 1), latent_dim=3, hidden=(32, 16))}, "latent_dim"),
        ({"config": TrainConfig(steps=2, batch_size=4, learning_rate=1e-2)}, "learning_rate"),
        (
            {"config": TrainConfig(steps=2, batch_size=4, learning_rate=1e-3, optimizer="sgd")},
            "train.optimizer",
        ),
        ({"kl_reduction": "reference_mean"}, "loss.options.kl_reduction"),
        ({"images_scale": 0.5}, "data.x.sum"),
    ],
)
def test_mismatched_checkpoint_is_refused(tiny_model, tiny_images, finished_dir, change, field):
    model = change.get("model", tiny_model)
    loss = objectives.beta_elbo(model, change.get("kl_reduction", "sum"))
    images = tiny_images * change.get("images_scale", 1.0)
    with pytest.raises(CheckpointError) as err:
        _train(
            model,
            loss,
            images,
            change.get("config", _cfg(2)),
            finished_dir,
            change.get("grid"),
            change.get("key", KEY),
        )
    msg = str(err.value)
    assert str(finished_dir / "checkpoints" / "2") in msg
    assert "different run" in msg and field in msg


def _garble(files: list[Path]) -> None:
    assert files
    for f in files:
        f.write_bytes(b"\x00garbage!" * max(1, f.stat().st_size // 9))


# A failed orbax restore can leave a pending tensorstore read whose callback later hits the
# closed asyncio loop ("Event loop is closed", reported as unraisable); it is harmless.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_corrupted_checkpoint_raises_checkpoint_error(tiny_model, tiny_images, elbo, tmp_path):
    _train(tiny_model, elbo, tiny_images, _cfg(2), tmp_path)
    step_dir = tmp_path / "checkpoints" / "2"
    _garble([f for f in (step_dir / "state").rglob("*") if f.is_file() and f.parent.name == "d"])
    with pytest.raises(CheckpointError, match="corrupted") as err:
        _train(tiny_model, elbo, tiny_images, _cfg(2), tmp_path)
    assert str(step_dir) in str(err.value)
    (step_dir / "meta" / "metadata").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable") as err:
        _train(tiny_model, elbo, tiny_images, _cfg(4), tmp_path)
    assert str(step_dir) in str(err.value)


def test_save_and_load_params_roundtrip(uninterrupted, tmp_path):
    meta = {"betas": BETAS, "steps": 6}
    path = save_params(tmp_path / "run", uninterrupted.params, meta)
    params, loaded_meta = load_params(path)
    assert loaded_meta == meta
    assert _equal(params, uninterrupted.params)
    like = jax.tree.map(np.zeros_like, uninterrupted.params)
    params2, _ = load_params(path, like=like)
    assert _equal(params2, uninterrupted.params)
    with pytest.raises(CheckpointError, match="exists"):
        save_params(path, uninterrupted.params, meta)
    wrong = jax.tree.map(lambda a: np.zeros((a.shape[0] + 1, *a.shape[1:]), a.dtype), like)
    with pytest.raises(CheckpointError, match="could not be restored"):
        load_params(path, like=wrong)
    with pytest.raises(CheckpointError, match="no saved params"):
        load_params(tmp_path / "missing")


# -- checksums (issue 9, items 2 and 10) ------------------------------------------------------


def _state(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "params": {
            "w": jnp.asarray(rng.normal(size=(3, 40, 25)).astype(np.float32)),
            "b": jnp.asarray(rng.normal(size=(3, 7)).astype(np.float32)),
        },
        "step": jnp.int32(4),
    }


def _abstract(state):
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)


def _flip_byte_in_array_data(step_dir: Path) -> Path:
    """Flip one bit in the middle of the largest array data file (tensorstore chunks)."""
    data = [f for f in (step_dir / "state").rglob("*") if f.is_file() and f.parent.name == "d"]
    target = max(data, key=lambda f: f.stat().st_size)
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    target.write_bytes(bytes(raw))
    return target


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_bit_rot_in_checkpoint_arrays_is_detected(tmp_path):
    # Before issue 9 a flipped bit in the middle of the compressed chunk data loaded silently
    # (a changed weight, or a NaN model whose cells were then stored as done).
    state = _state()
    ck = GridCheckpointer(tmp_path, {"run": 1}, max_to_keep=3)
    ck.save(2, state)
    ck.save(4, state)
    ck.close()
    ck = GridCheckpointer(tmp_path, {"run": 1}, max_to_keep=3)
    step, restored = ck.restore(_abstract(state), 4)  # intact: loads bit-exactly
    assert step == 4 and _equal(restored, state)
    _flip_byte_in_array_data(tmp_path / "4")
    with pytest.raises(CheckpointError) as err:
        ck.restore(_abstract(state), 4)
    msg = str(err.value)
    assert isinstance(err.value, CheckpointCorruptError)
    assert str(tmp_path / "4") in msg and "checksum" in msg
    assert "delete" in msg.lower() and "step 2" in msg  # the narrow fix: an older step exists
    for wrong in ("different run", "other settings", "fresh"):
        assert wrong not in msg, msg
    # The older checkpoint is intact and still loads.
    assert _equal(ck.restore(_abstract(state), 2)[1], state)
    ck.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_damaged_only_checkpoint_says_training_restarts(tmp_path):
    state = _state(1)
    ck = GridCheckpointer(tmp_path, {"run": 1})
    ck.save(4, state)
    ck.close()
    _flip_byte_in_array_data(tmp_path / "4")
    ck = GridCheckpointer(tmp_path, {"run": 1})
    with pytest.raises(CheckpointError, match="checksum") as err:
        ck.restore(_abstract(state))
    assert "only checkpoint" in str(err.value) and "step 0" in str(err.value)
    ck.close()


def test_checkpoint_without_checksums_loads_with_a_warning(tmp_path):
    # Checkpoints written before checksums existed (no 'checksums' item) stay loadable.
    import orbax.checkpoint as ocp

    state = _state(2)
    mgr = ocp.CheckpointManager(tmp_path, options=ocp.CheckpointManagerOptions(create=True))
    mgr.save(
        4,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave({"run": 1})
        ),
    )
    mgr.wait_until_finished()
    mgr.close()
    ck = GridCheckpointer(tmp_path, {"run": 1})
    with pytest.warns(UserWarning, match="no checksums"):
        step, restored = ck.restore(_abstract(state))
    assert step == 4 and _equal(restored, state)
    ck.close()


def test_corruption_messages_offer_only_the_narrow_fix(tmp_path):
    # Item 10: an unreadable checkpoint is damage, not a settings change.
    state = _state(3)
    ck = GridCheckpointer(tmp_path, {"run": 1})
    ck.save(4, state)
    ck.close()
    (tmp_path / "4" / "meta" / "metadata").write_text("{not json")
    ck = GridCheckpointer(tmp_path, {"run": 1})
    with pytest.raises(CheckpointError, match="unreadable") as err:
        ck.restore(_abstract(state))
    msg = str(err.value)
    assert isinstance(err.value, CheckpointCorruptError)
    assert str(tmp_path / "4") in msg and "delete" in msg.lower()
    assert "fresh" not in msg and "different run" not in msg
    ck.close()


def test_settings_mismatch_and_damage_are_different_errors(tmp_path):
    # The CLI tells them apart: other settings -> another --out; damage -> delete a folder.
    state = _state(6)
    ck = GridCheckpointer(tmp_path, {"run": 1, "lr": 0.1})
    ck.save(4, state)
    ck.close()
    ck = GridCheckpointer(tmp_path, {"run": 1, "lr": 0.2})
    with pytest.raises(
        CheckpointMismatchError, match=r"different run(.|\n)*lr: checkpoint has 0.1"
    ):
        ck.restore(_abstract(state))
    ck.close()
    assert not issubclass(CheckpointMismatchError, CheckpointCorruptError)
    assert issubclass(CheckpointCorruptError, CheckpointError)


def test_params_digest_is_stable_and_sensitive(tiny_params):
    d = params_digest(tiny_params)
    assert d == params_digest(jax.tree.map(np.asarray, tiny_params))  # device or host arrays
    assert len(d) == 64 and int(d, 16) >= 0
    leaves, treedef = jax.tree.flatten(tiny_params)
    bumped = [np.array(x) for x in leaves]
    flat = bumped[0].reshape(-1)
    flat[0] = np.nextafter(flat[0], np.float32(np.inf))  # one ulp in one weight
    assert params_digest(jax.tree.unflatten(treedef, bumped)) != d
    # Same bytes, other dtype or shape: different digest.
    x = np.zeros((2, 3), np.float32)
    assert params_digest({"a": x}) != params_digest({"a": x.view(np.int32)})
    assert params_digest({"a": x}) != params_digest({"a": x.reshape(3, 2)})
    assert params_digest({"a": x}) != params_digest({"b": x})
    # One digest per model of a stack equals the digest of that model alone.
    stack = jax.tree.map(lambda a: np.stack([a, a + 1]), tiny_params)
    ds = stack_digests(stack)
    assert ds[0] == d and ds[1] != d and len(ds) == 2
    with pytest.raises(ValueError, match="leading model axis"):
        stack_digests({"a": np.ones(3), "b": np.float32(1.0)})
    # Stable across processes: a subprocess computes the same digest.
    import os
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[1])
    code = (
        "import numpy as np; from vaerob_jax.sweeps import params_digest; "
        "print(params_digest({'w': np.arange(6, dtype=np.float32).reshape(2, 3), "
        "'s': np.int32(3)}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": root},
    ).stdout.strip()
    here = params_digest({"w": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.int32(3)})
    assert out == here


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_bit_rot_in_saved_params_is_detected(tmp_path):
    params = _state(4)["params"]
    path = save_params(tmp_path / "run", params, {"steps": 6})
    assert _equal(load_params(path)[0], params)
    data = [f for f in (path / "params").rglob("*") if f.is_file() and f.parent.name == "d"]
    target = max(data, key=lambda f: f.stat().st_size)
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    target.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum") as err:
        load_params(path)
    assert str(path) in str(err.value) and "fresh" not in str(err.value)


def test_checksums_survive_containers_changed_by_a_targetless_restore(tmp_path):
    import optax

    opt_state = optax.adam(1e-3).init(_state(5)["params"])  # named tuples inside
    path = save_params(tmp_path / "opt", opt_state)
    restored, _ = load_params(path)  # no `like`: orbax gives dicts/lists back
    assert _equal(restored, opt_state)
