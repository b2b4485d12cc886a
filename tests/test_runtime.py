"""vaerob_jax.runtime: the CPU settings are probed safely and change speed, not results."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vaerob_jax import runtime

# An attack and two training steps of a small conv VAE, printed as JSON (run in subprocesses:
# the XLA flag only acts on a process whose backend is not yet created).
_PROGRAM = r"""
import json, os, sys
from vaerob_jax.runtime import tune_cpu
applied = tune_cpu()
import jax, jax.numpy as jnp, numpy as np
from vaerob_jax import objectives
from vaerob_jax.attacks import latent_damage, pgd, run_attack
from vaerob_jax.models import make_vae
from vaerob_jax.train import TrainConfig, train_grid
model = make_vae("burgess64", (16, 16, 3), latent_dim=4)
params = model.init(jax.random.key(0))
x = jax.random.uniform(jax.random.key(1), (6, 16, 16, 3))
res = run_attack(pgd(latent_damage(model), "linf", steps=6), params, {"x": x},
                 jnp.array([0.05, 0.1]), jax.random.key(2))
cfg = TrainConfig(steps=2, batch_size=4, log_every=2)
tr = train_grid(model, objectives.beta_elbo(model), np.asarray(x), {"beta": [1.0]}, cfg,
                jax.random.key(3), progress=False)
leaf = np.asarray(tr.params["encoder"]["Conv_0"]["kernel"])
print(json.dumps({"applied": applied, "xla_flags": os.environ.get("XLA_FLAGS", ""),
                  "delta": np.asarray(res.delta).ravel().tolist(),
                  "kernel": leaf.ravel().tolist()}))
"""


def _run(tuning: str, tmp_path) -> dict:
    env = {**os.environ, runtime.TUNING_ENV_VAR: tuning, "VAEROB_CACHE_DIR": str(tmp_path)}
    env.pop("XLA_FLAGS", None)
    out = subprocess.run(
        [sys.executable, "-c", _PROGRAM],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_tuned_and_default_runs_agree_and_the_flag_is_applied_only_when_asked(tmp_path):
    import numpy as np

    default = _run("0", tmp_path)
    tuned = _run("1", tmp_path)
    assert default["applied"] == {"allocator": False, "ynn_off": False}
    assert default["xla_flags"] == ""
    assert tuned["applied"]["allocator"] is True  # glibc on this project's Linux machines
    assert tuned["applied"]["ynn_off"] == runtime.xla_flag_supported(runtime.YNN_OFF_FLAG)
    if tuned["applied"]["ynn_off"]:
        assert tuned["xla_flags"].split() == [runtime.YNN_OFF_FLAG]
    # another convolution kernel: equal to float32 rounding, not bit for bit
    np.testing.assert_allclose(tuned["delta"], default["delta"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(tuned["kernel"], default["kernel"], rtol=1e-5, atol=1e-6)


def test_an_unknown_flag_is_reported_unsupported_without_killing_the_caller(tmp_path, monkeypatch):
    monkeypatch.setenv("VAEROB_CACHE_DIR", str(tmp_path))
    assert not runtime.xla_flag_supported("--xla_no_such_flag_vaerob=1")
    assert runtime.xla_flag_supported("--xla_cpu_multi_thread_eigen=true")
    cache = json.loads((tmp_path / "xla_flags.json").read_text())
    assert sorted(v for v in cache.values()) == [False, True]
    # the cached answer is used (a poisoned entry is returned as is)
    key = next(k for k, v in cache.items() if not v)
    cache[key] = True
    (tmp_path / "xla_flags.json").write_text(json.dumps(cache))
    assert runtime.xla_flag_supported("--xla_no_such_flag_vaerob=1")
    assert not runtime.xla_flag_supported("--xla_no_such_flag_vaerob=1", use_cache=False)


def test_bad_arguments_and_an_initialised_backend(monkeypatch):
    with pytest.raises(ValueError, match="not one XLA flag"):
        runtime.xla_flag_supported("xla_foo=1")
    with pytest.raises(ValueError, match="keep_bytes"):
        runtime.tune_allocator(0)
    import jax.numpy as jnp

    float(jnp.ones(()))  # the backend of this process exists now
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setenv(runtime.TUNING_ENV_VAR, "1")
    done = runtime.tune_cpu(allocator=False)
    assert done == {"allocator": False, "ynn_off": False}
    assert "XLA_FLAGS" not in os.environ
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=conv")
    assert runtime.tune_cpu(allocator=False)["ynn_off"] is False  # the user's value is kept
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=conv"
