"""The subgroup study's default attack against stronger ones, on a small trained VAE.

Issue 8's convergence promise, checked where it can be measured quickly. The attack maximises
the latent shift ‖μ(x+δ) − μ(x)‖₂ (Eq. 4 of 000); Δc (Eq. 5) is measured at the δ it finds.
On a 12×12 MLP VAE (measured once: medians of 4 subgroups × 32 examples, ε = 0.1, the
study's default: 80 steps of Auto-PGD from 2ε, 6 restarts; 2026-12-07):

* doubling the steps (160 × 6) moves the objective's medians by +0.00 … +0.03 %;
* 4× the compute (the study's 'strong' arm, 160 steps × 12 restarts) by +0.0 … +0.2 %;
* Δc's medians under the strong arm by +0.0 … +2.3 %: restarts that gain a fraction of a
  per cent in latent shift land on other near-optimal δ with another Δc.

So the promise holds for the attack's objective and, here, nearly for Δc; on the main job's
larger models the strong arm moves Δc medians by up to 3–6 % and, on some trained models,
an objective median by up to 4 % (the README gives the numbers of several training runs),
which the study reports in ``attack_convergence.csv`` and its report, naming no least-robust
subgroup that the strong attack does not confirm.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaerob_jax import attacks as atk
from vaerob_jax import data, objectives
from vaerob_jax.models import make_vae
from vaerob_jax.robustness import evaluate_attacks
from vaerob_jax.studies.common import study_key
from vaerob_jax.studies.subgroups import SUBGROUP_PRESETS
from vaerob_jax.studies.subgroups.attack_checks import run_convergence, study_attacks
from vaerob_jax.train import TrainConfig, train_grid


@pytest.mark.slow
def test_default_attack_objective_is_within_two_percent_of_four_times_its_compute():
    cfg = SUBGROUP_PRESETS["shapes"]
    assert (cfg.attack_steps, cfg.restarts, cfg.attack_step) == (80, 6, 2.0)
    assert (cfg.attack_rule, cfg.attack_schedule) == ("apgd", "constant")
    assert (cfg.convergence_factor, cfg.convergence_restarts) == (2, 2 * cfg.restarts)
    ds = data.load("shapes", "train", image_size=12, n=1024)
    model = make_vae("mlp", ds.image_shape, latent_dim=6, hidden=(128, 64))
    trained = train_grid(
        model,
        objectives.beta_elbo(model),
        ds.images,
        {"beta": [1.0]},
        TrainConfig(steps=600, batch_size=64, log_every=600, learning_rate=1e-3),
        jax.random.key(0),
        progress=False,
    )
    params = jax.tree.map(lambda a: a[0], trained.params)
    sample = data.sample_per_subgroup(ds, n=32, key=1)
    xs = jnp.asarray(sample.images)
    attacks = study_attacks(cfg, model)
    key = study_key(cfg.seed, "attack")
    budget = jnp.asarray([0.1], jnp.float32)
    medians: dict[str, dict[str, np.ndarray]] = {}
    ids = np.asarray(sample.subgroup_ids)
    # The study's check reuses the doubled attack's 6 restarts for the strong one's first 6
    # and runs only restarts 6-11 again: it must equal the strong attack run whole.
    assert attacks["strong_rest"].first_restart == cfg.restarts
    reused = run_convergence(
        attacks, model, params, xs, 0.1, dataclasses.replace(cfg, attack_seeds=1)
    )
    for arm in ("default", "doubled", "strong"):
        res = atk.run_attack(attacks[arm], params, {"x": xs}, budget, key)
        assert bool(np.all(np.asarray(res.improved)))  # every attack moved off its start
        dc = np.asarray(evaluate_attacks(model, params, xs, res.delta)["delta_c"][0])
        shift = np.asarray(res.value[0])  # the objective: latent shift at the best δ
        if arm != "default":
            np.testing.assert_allclose(reused[f"obj_{arm}"], shift, rtol=1e-5)
            np.testing.assert_allclose(reused[f"dc_{arm}"], dc, rtol=1e-4)
        medians[arm] = {
            "objective": np.array([np.median(shift[ids == g]) for g in np.unique(ids)]),
            "delta_c": np.array([np.median(dc[ids == g]) for g in np.unique(ids)]),
        }
    base = medians["default"]
    assert base["objective"].shape == (4,) and np.all(base["delta_c"] > 0)
    steps_only = medians["doubled"]["objective"] / base["objective"] - 1
    assert np.all(np.abs(steps_only) < 0.002), steps_only  # converged in its steps
    strong = medians["strong"]["objective"] / base["objective"] - 1
    assert np.all(strong > -0.002), strong  # more starts and steps do not lose ground
    assert np.all(strong < 0.02), strong  # the 2 % promise, on the attack's objective
    dc_change = medians["strong"]["delta_c"] / base["delta_c"] - 1
    assert np.all(np.abs(dc_change) < 0.05), dc_change  # Δc follows, less tightly
    # Mixed precision (issue 14): the same attack run in bfloat16 finds δ whose float32
    # latent shift and Δc are as good, within what more compute changes (measured: objective
    # medians −0.04 … −0.00 %, Δc −0.7 … +1.0 %); δ stays in its ball and the pixel box.
    mixed = study_attacks(dataclasses.replace(cfg, attack_dtype="bfloat16"), model)["default"]
    res = atk.run_attack(mixed, params, {"x": xs}, budget, key)
    delta = np.asarray(res.delta[0])
    assert np.max(np.abs(delta)) <= 0.1 + 1e-6
    assert np.min(np.asarray(xs) + delta) >= -1e-6 and np.max(np.asarray(xs) + delta) <= 1 + 1e-6
    ev = evaluate_attacks(model, params, xs, res.delta)  # measured in float32
    bf16 = {
        name: np.array([np.median(np.asarray(ev[col][0])[ids == g]) for g in np.unique(ids)])
        for name, col in (("objective", "latent_shift"), ("delta_c", "delta_c"))
    }
    shift16 = bf16["objective"] / base["objective"] - 1
    assert np.all(np.abs(shift16) < 0.02), shift16
    dc16 = bf16["delta_c"] / base["delta_c"] - 1
    assert np.all(np.abs(dc16) < 0.05), dc16
