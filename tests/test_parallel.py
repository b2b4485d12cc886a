"""vaerob_jax.sweeps.parallel: grid axes split over a device mesh give the one-device numbers.

The multi-device checks run in a subprocess with ``--xla_force_host_platform_device_count=4``
(the flag acts only before a backend exists, and the rest of the suite keeps one device).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaerob_jax.sweeps import parallel

# Trains a 3-model β grid and attacks 2 models x 3 ε x 6 examples (3 and 6 do not divide 4),
# on one device and on 4, and prints the largest differences and the shardings it saw.
_PROGRAM = r"""
import json
import jax, jax.numpy as jnp, numpy as np
from vaerob_jax import objectives
from vaerob_jax.attacks import latent_damage, pgd, run_attack
from vaerob_jax.models import make_vae
from vaerob_jax.sweeps import parallel
from vaerob_jax.train import TrainConfig, train_grid
import vaerob_jax.train.trainer as trainer

seen = []
real_program = trainer.step_program

def recording_program(loss, config, batch_mesh=None):  # where the step's outputs live
    program = real_program(loss, config, batch_mesh)
    def run(*args):
        out = program.run(*args)
        if not getattr(run, "done", False):  # the first step of each run
            run.done = True
            leaf = jax.tree.leaves(out[0])[0]
            lowered = getattr(program.run, "lower", None)  # the sequential path is a function
            hlo = lowered(*args).compile().as_text() if lowered else ""
            seen.append([len(leaf.sharding.device_set), leaf.sharding.is_fully_replicated,
                         int(leaf.shape[0]), "all-reduce" in hlo])
        return out
    return type(program)(run, program.metric_shapes)

trainer.step_program = recording_program
model = make_vae("mlp", (8, 8, 1), latent_dim=3, hidden=(32,))
x = np.asarray(jax.random.uniform(jax.random.key(0), (64, 8, 8, 1)))
loss = objectives.beta_elbo(model)
cfg = TrainConfig(steps=12, batch_size=16, log_every=6)
grid = {"beta": [1.0, 2.0, 4.0]}
one = train_grid(model, loss, x, grid, cfg, jax.random.key(1), progress=False, mesh=1)
four = train_grid(model, loss, x, grid, cfg, jax.random.key(1), progress=False, mesh=4)
diff = lambda a, b: max(float(np.max(np.abs(np.asarray(u) - np.asarray(v))))
                        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
out = {"devices": len(jax.devices()), "train_seen_one": seen[0], "train_seen_four": seen[1],
       "train_params_diff": diff(one.params, four.params),
       "train_params_scale": max(float(np.max(np.abs(np.asarray(a))))
                                 for a in jax.tree.leaves(one.params)),
       "train_loss_diff": float(np.max(np.abs(one.history["loss"] - four.history["loss"]))),
       "train_shape": list(jax.tree.leaves(four.params)[0].shape)}
stack = jax.tree.map(lambda a: a[:2], one.params)
attack = pgd(latent_damage(model), "linf", steps=6, step_size=lambda e: e / 4)
eps = jnp.array([0.05, 0.1, 0.2])
xs = x[:6]
r1 = run_attack(attack, stack, {"x": xs}, eps, jax.random.key(2), models=True, mesh=1)
r4 = run_attack(attack, stack, {"x": xs}, eps, jax.random.key(2), models=True, mesh=4)
out["attack_shape"] = list(r4.delta.shape)
out["attack_delta_diff"] = diff(r1.delta, r4.delta)
out["attack_value_rel_diff"] = float(np.max(np.abs(r1.value - r4.value) / np.abs(r1.value)))
out["attack_delta_max"] = float(np.max(np.abs(r1.delta)))
one_model = jax.tree.map(lambda a: a[0], one.params)
split = run_attack(attack, one_model, {"x": x[:8]}, eps, jax.random.key(2), mesh=4, gather=False)
out["attack_split"] = [len(split.delta.sharding.device_set),
                       split.delta.sharding.is_fully_replicated]
single = train_grid(model, loss, x, {"beta": [2.0]}, cfg, jax.random.key(1), progress=False,
                    mesh=1)
split_batch = train_grid(model, loss, x, {"beta": [2.0]}, cfg, jax.random.key(1),
                         progress=False, mesh=4)
out["data_parallel_seen"] = seen[3]
import dataclasses
try:
    train_grid(model, loss, x, grid, dataclasses.replace(cfg, model_axis="sequential"),
               jax.random.key(1), progress=False, mesh=4)
    out["sequential_refused"] = ""
except ValueError as err:
    out["sequential_refused"] = str(err)
out["data_parallel_params_diff"] = diff(single.params, split_batch.params)
with parallel.use_devices(4):  # the active mesh is picked up; one budget per example
    paired = run_attack(attack, one_model, {"x": xs}, jnp.full(6, 0.1), jax.random.key(2),
                        paired=True)
out["paired_delta_diff"] = diff(r1.delta[0, 1], paired.delta)  # = the grid's ε = 0.1 row
from vaerob_jax.robustness.certificates import make_margin_program, run_in_chunks
program = make_margin_program(model, n_samples=8, n_iter=2, attack_steps=1, n_probes=2)
scalars = tuple(np.float32(v) for v in (1.0, 0.5, 2.0, 0.0))
args = (program, one_model, x[:5], np.arange(5) * 7, jax.random.key(3), scalars, 3)
m1, m4 = run_in_chunks(*args, mesh=1), run_in_chunks(*args, mesh=4)
out["margin_fields"] = sorted(m1)
out["margin_max_rel_diff"] = max(
    float(np.nanmax(np.abs(m1[k] - m4[k]) / np.maximum(np.abs(m1[k]), 1e-12)))
    for k in ("p_r", "bound", "estimate", "jac_fro", "jac_fro_probe"))
from vaerob_jax.fairness.evaluate import EvalSettings, evaluate_classifiers
from vaerob_jax.models.classifier import make_mlp_classifier
clf = make_mlp_classifier((4,), 3, hidden=(8,))
clfs = jax.tree.map(lambda *a: jnp.stack(a), *(clf.init(jax.random.key(s)) for s in range(3)))
cx = np.random.default_rng(0).uniform(0.0, 1.0, (12, 4)).astype(np.float32)
cy = np.random.default_rng(2).integers(0, 3, 12)
settings = EvalSettings(eps=(0.05, 0.2), pgd_steps=4, distance_max=0.5, distance_halvings=5,
                        distance_steps=3)
e1 = evaluate_classifiers(clf, clfs, cx, cy, jax.random.key(11), settings)
with parallel.use_devices(4):
    e4 = evaluate_classifiers(clf, clfs, cx, cy, jax.random.key(11), settings)
out["classifier_same"] = [
    bool(np.array_equal(e1.prediction, e4.prediction)),
    all(bool(np.array_equal(e1.flipped[k], e4.flipped[k])) for k in e1.flipped),
    float(np.max(np.abs(e1.distance - e4.distance))), list(e4.prediction.shape)]
calls = []
def program(a, b, c):
    calls.append((len(a.sharding.device_set), a.sharding.is_fully_replicated,
                  b.sharding.is_fully_replicated))
    return {"y": a * 2 + c, "z": jnp.stack([b.sum()] * a.shape[0])}
split = parallel.call_split(program, jnp.arange(6.0), jnp.ones(3), jnp.float32(1), split=(0,),
                            mesh=4)
out["call_split"] = [calls[0], np.asarray(split["y"]).tolist(), list(split["z"].shape)]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def four_devices() -> dict:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    proc = subprocess.run(
        [sys.executable, "-c", _PROGRAM],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_four_devices_train_the_grid_to_the_one_device_numbers(four_devices):
    r = four_devices
    assert r["devices"] == 4
    # one device: the CPU's sequential model axis, one model per step (leading axis 3)
    assert r["train_seen_one"][:3] == [1, True, 3]
    # four: the 3 models padded to 4, one per device, not replicated, and no collective
    assert r["train_seen_four"] == [4, False, 4, False]
    assert r["train_shape"][0] == 3  # the padding is dropped
    # 12 Adam steps, another program per device: equal to float32 rounding
    assert r["train_params_diff"] <= 1e-5 * r["train_params_scale"] + 1e-6
    assert r["train_loss_diff"] <= 1e-3
    # the one-model-per-call CPU path cannot split the models: refused, naming the fix
    assert "model_axis='sequential'" in r["sequential_refused"]
    assert "'auto' or 'vmap'" in r["sequential_refused"]


def test_one_model_on_four_devices_splits_its_batch(four_devices):
    r = four_devices
    # params replicated on all 4, the gradient summed across them (an all-reduce)
    assert r["data_parallel_seen"] == [4, True, 1, True]
    assert r["data_parallel_params_diff"] <= 1e-5


def test_four_devices_attack_to_the_one_device_numbers(four_devices):
    r = four_devices
    assert r["attack_shape"][:3] == [2, 3, 6]  # 6 examples padded to 8, then dropped
    assert r["attack_delta_max"] > 0.01
    assert r["attack_delta_diff"] <= 1e-6
    assert r["attack_value_rel_diff"] <= 1e-5
    assert r["paired_delta_diff"] <= 1e-6
    assert r["attack_split"] == [4, False]  # gather=False: the result stays split


def test_four_devices_estimate_margins_to_the_one_device_numbers(four_devices):
    r = four_devices
    assert {"p_r", "bound", "estimate", "jac_fro"} <= set(r["margin_fields"])
    assert r["margin_max_rel_diff"] <= 1e-5  # chunks of 3 rounded up to 4, split over 4


def test_four_devices_evaluate_classifiers_to_the_one_device_numbers(four_devices):
    same_pred, same_flips, distance_diff, shape = four_devices["classifier_same"]
    assert shape == [3, 12]  # 3 models padded to 4 on the devices, dropped again
    assert same_pred and same_flips and distance_diff <= 1e-6


def test_call_split_splits_only_the_named_arguments(four_devices):
    placed, y, z_shape = four_devices["call_split"]
    assert placed == [4, False, True]  # arg 0 split over 4 devices, arg 1 replicated
    assert y == [1.0, 3.0, 5.0, 7.0, 9.0, 11.0]  # padded 6 -> 8, padding dropped
    assert z_shape == [6]


def test_device_mesh_and_bad_counts():
    mesh = parallel.device_mesh()
    assert parallel.mesh_size(mesh) == len(jax.local_devices())
    assert parallel.device_mesh(mesh) is mesh
    assert parallel.resolve_mesh(1) is None  # one device: the single-device path
    with pytest.raises(ValueError, match="local cpu device"):
        parallel.device_mesh(len(jax.local_devices()) + 1)
    with pytest.raises(ValueError, match="ask for 1"):
        parallel.device_mesh(0)
    with pytest.raises(ValueError, match="empty"):
        parallel.device_mesh([])
    with pytest.raises(ValueError, match="twice"):
        parallel.device_mesh([jax.devices()[0]] * 2)
    assert parallel.active_mesh() is None
    with parallel.use_devices(1) as outer:
        assert parallel.active_mesh() is outer
        with parallel.use_devices(None) as inner:
            assert parallel.active_mesh() is inner
        assert parallel.active_mesh() is outer
    assert parallel.active_mesh() is None


@pytest.mark.parametrize("xp", [np, jnp])
def test_pad_repeats_the_last_entry_and_take_drops_it(xp):
    tree = {"a": xp.arange(10.0).reshape(5, 2), "b": xp.arange(5)}
    padded, n = parallel.pad_axis(tree, 0, 4)
    assert n == 5 and padded["a"].shape == (8, 2) and padded["b"].shape == (8,)
    np.testing.assert_array_equal(np.asarray(padded["b"]), [0, 1, 2, 3, 4, 4, 4, 4])
    np.testing.assert_array_equal(np.asarray(padded["a"])[5:], [[8.0, 9.0]] * 3)
    back = parallel.take_axis(padded, 0, n)
    np.testing.assert_array_equal(np.asarray(back["a"]), np.asarray(tree["a"]))
    same, _ = parallel.pad_axis(tree, 0, 5)  # a multiple already: untouched
    assert same["a"].shape == (5, 2)
    cols, _ = parallel.pad_axis(xp.ones((2, 3)), 1, 2)
    assert cols.shape == (2, 4)
    with pytest.raises(ValueError, match="disagree"):
        parallel.pad_axis({"a": xp.ones(3), "b": xp.ones(4)}, 0, 2)


def test_a_study_command_refuses_more_devices_than_there_are(capsys):
    from vaerob_jax.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["subgroups", "--out", "unused", "--devices", str(len(jax.local_devices()) + 1)])
    assert exit_info.value.code == 2
    assert "--devices" in capsys.readouterr().err
