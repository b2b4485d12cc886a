"""Process-level CPU settings that speed up XLA's CPU programs, chosen in ONE place.

Profiling the batched attack step of the 64x64 Burgess encoder on this project's 2-core CPU
(``jax.profiler`` per-op trace, issue 10) found two costs that are not arithmetic:

* **Fresh pages.** glibc serves every allocation above its mmap threshold (128 KiB, growing
  to at most 32 MiB) with a new ``mmap`` and gives it back on free, so every large XLA
  buffer of every step is page-faulted and zeroed by the kernel again: a jitted ``x * 2`` on
  33 MB took 13 ms instead of 2.5 ms. Raising the mmap and trim thresholds (``mallopt``)
  keeps freed buffers in the heap for reuse. The cost is that the process keeps its peak
  heap instead of returning it to the system.
* **YNNPACK fusions.** XLA's CPU backend hands convolutions to YNNPACK fusions, which ran the
  encoder's first convolution (3 input channels) at ~13 GFLOP/s; with
  ``--xla_cpu_experimental_ynn_fusion_type=`` (empty) XLA's own emitters are used.

Neither changes what is computed: convolutions are then done by another kernel, so results
agree to float32 rounding (allclose), not bit for bit; ``tests/test_runtime.py`` checks an
attack and a training run both ways. :func:`tune_cpu` applies them; the ``vaerob`` command
calls it first, scripts and notebooks call it before their first JAX computation. Set
``VAEROB_CPU_TUNING=0`` to keep the defaults. On accelerators the settings only touch the
host side (the flag is a CPU-backend flag) and are harmless.

Unknown XLA flag names abort the process, so a flag is only set after a subprocess with it
set ran a JAX computation; the answer is cached per jaxlib version under
``~/.cache/vaerob_jax`` (or ``$VAEROB_CACHE_DIR``).
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

__all__ = [
    "TUNING_ENV_VAR",
    "YNN_OFF_FLAG",
    "tune_cpu",
    "tune_allocator",
    "xla_flag_supported",
]

TUNING_ENV_VAR = "VAEROB_CPU_TUNING"
YNN_OFF_FLAG = "--xla_cpu_experimental_ynn_fusion_type="

# glibc mallopt parameter numbers (malloc.h): M_TRIM_THRESHOLD, M_MMAP_THRESHOLD.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_HEAP_KEEP_BYTES = 1 << 30


def _cache_file() -> Path:
    root = os.environ.get("VAEROB_CACHE_DIR") or Path.home() / ".cache" / "vaerob_jax"
    return Path(root) / "xla_flags.json"


def _jaxlib_version() -> str:
    try:
        import jaxlib

        return str(jaxlib.__version__)
    except Exception:  # pragma: no cover - jaxlib is a dependency
        return "unknown"


def xla_flag_supported(flag: str, *, use_cache: bool = True, timeout_s: float = 120.0) -> bool:
    """Whether this jaxlib accepts ``flag`` in XLA_FLAGS (probed in a subprocess, cached).

    Args:
      flag: one XLA flag as it would appear in XLA_FLAGS, e.g. ``--xla_foo=1``.
      use_cache: read and write the per-jaxlib-version answer cache.
      timeout_s: limit for the probe subprocess (a hung probe counts as unsupported).
    """
    if not flag.startswith("--xla_") or " " in flag:
        raise ValueError(f"not one XLA flag: {flag!r} (expected '--xla_name[=value]')")
    key = f"{_jaxlib_version()} {flag}"
    path = _cache_file()
    cache: dict[str, bool] = {}
    if use_cache and path.exists():
        try:
            cache = json.loads(path.read_text())
        except (OSError, ValueError):
            cache = {}
        if key in cache:
            return bool(cache[key])
    env = {**os.environ, "XLA_FLAGS": flag, "JAX_PLATFORMS": "cpu", TUNING_ENV_VAR: "0"}
    code = "import jax.numpy as jnp; print(float((jnp.arange(3.0) * 2).sum()))"
    try:
        probe = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        ok = probe.returncode == 0 and probe.stdout.strip() == "6.0"
    except subprocess.TimeoutExpired:
        ok = False
    if use_cache:
        cache[key] = ok
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(cache, indent=1, sort_keys=True))
        except OSError:
            pass  # a read-only home only costs a probe next time
    return ok


def tune_allocator(keep_bytes: int = _HEAP_KEEP_BYTES) -> bool:
    """Raises glibc's mmap and trim thresholds so freed XLA buffers are reused, not re-faulted.

    Returns whether it took effect (False off glibc, e.g. macOS or musl). Takes effect at once,
    for allocations made from now on.
    """
    if not 0 < keep_bytes < 2**31:
        raise ValueError(f"keep_bytes must be in (0, 2**31), got {keep_bytes}")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok_trim = mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(keep_bytes)) == 1
    ok_mmap = mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(keep_bytes)) == 1
    return ok_trim and ok_mmap


def _backends_initialized() -> bool:
    from jax._src import xla_bridge

    return bool(xla_bridge.backends_are_initialized())


def tune_cpu(*, allocator: bool = True, ynn_off: bool = True) -> dict[str, bool]:
    """Applies the CPU settings of this module's docstring; call before JAX computes anything.

    The XLA flag is read when JAX creates its backends, so it is only added while none exists
    (otherwise it is skipped and reported as not applied). Idempotent. ``VAEROB_CPU_TUNING=0``
    turns everything off.

    Returns:
      ``{'allocator': applied, 'ynn_off': applied}``.
    """
    done = {"allocator": False, "ynn_off": False}
    if os.environ.get(TUNING_ENV_VAR, "1").strip().lower() in ("0", "false", "no", "off"):
        return done
    if allocator:
        done["allocator"] = tune_allocator()
    if ynn_off:
        flags = os.environ.get("XLA_FLAGS", "")
        if "--xla_cpu_experimental_ynn_fusion_type" in flags:
            done["ynn_off"] = YNN_OFF_FLAG in flags.split()
        elif not _backends_initialized() and xla_flag_supported(YNN_OFF_FLAG):
            os.environ["XLA_FLAGS"] = f"{flags} {YNN_OFF_FLAG}".strip()
            done["ynn_off"] = True
    return done
