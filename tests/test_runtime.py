"""vaerob_jax.runtime: the XLA flag is probed safely and nothing is set where it cannot act."""

from __future__ import annotations

import json
import os

import pytest

from vaerob_jax import runtime

# That tuning changes speed and not results (the attack's delta and a trained kernel, tuned vs
# default, each in its own process) is checked on bench_cpu_runtime's quick run in
# tests/test_benchmarks.py, which starts both processes anyway.


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
