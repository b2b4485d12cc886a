"""Issue 14, several processes: settings, the split of cells and models, and a real
two-process run (``jax.distributed`` with a local coordinator, 2 emulated CPU devices each)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from vaerob_jax.sweeps import GridSpec, ResultStore, run_grid
from vaerob_jax.sweeps.distributed import settings_from

ROOT = Path(__file__).resolve().parents[1]


def test_settings_come_from_flags_or_environment():
    s = settings_from("10.0.0.2:1234", 4, 3, env={})
    assert (s.coordinator, s.num_processes, s.process_id) == ("10.0.0.2:1234", 4, 3)
    env = {"VAEROB_COORDINATOR": "h:99", "VAEROB_NUM_PROCESSES": "2", "VAEROB_PROCESS_ID": "1"}
    s = settings_from(env=env)
    assert (s.coordinator, s.num_processes, s.process_id) == ("h:99", 2, 1)
    assert settings_from(process_id=0, env=env).process_id == 0  # a flag beats the variable
    assert settings_from(env={}).single
    assert settings_from("h:1", 1, 0, env={}).single  # one process needs no coordination
    assert settings_from("auto", env={}).coordinator == "auto"


@pytest.mark.parametrize(
    "args, message",
    [
        (("h:1", 2, 2), "process_id must be in 0..1"),
        (("h:1", 0, 0), "num_processes must be >= 1"),
        (("h:1", 2, None), "needs process_id"),
        ((None, 2, 1), "need a coordinator address"),
        (("no-port", 2, 0), "HOST:PORT"),
        (("auto", 2, 0), "do not also give them"),
        (("h:1", "two", 0), "must be an integer"),
    ],
)
def test_bad_settings_are_named_before_anything_starts(args, message):
    with pytest.raises(ValueError, match=message):
        settings_from(*args, env={})


def test_shards_of_a_grid_are_disjoint_cover_it_and_reproduce_the_whole_run(tmp_path):
    spec = GridSpec({"a": [0, 1, 2, 3, 4], "b": [10, 20]})
    seen: list[list[tuple[int, int]]] = []

    def compute(cells):
        seen.append([(c["a"], c["b"]) for c in cells])
        return [[{"v": c["a"] * 100 + c["b"]}] for c in cells]

    whole = run_grid(
        spec, compute, ResultStore(tmp_path / "one", {}, spec=spec), batch_axes=("b",),
        progress=False,
    )  # fmt: skip
    seen.clear()
    store = ResultStore(tmp_path / "three", {}, spec=spec)
    shares = [
        run_grid(spec, compute, store, batch_axes=("b",), progress=False, shard=(i, 3))
        for i in range(3)
    ]
    # Groups (all b of one a) are dealt round-robin: share i gets a = i, i + 3, ...
    assert [sorted({a for a, _ in g}) for g in seen] == [[0], [3], [1], [4], [2]]
    assert sorted(r["v"] for s in shares for r in s) == sorted(r["v"] for r in whole)
    assert [r["a"] for r in shares[1]] == [1, 1, 4, 4]
    assert store.all_rows(spec, strict=True) == whole
    # A rerun of a finished share computes nothing.
    seen.clear()
    run_grid(spec, compute, store, batch_axes=("b",), progress=False, shard=(2, 3))
    assert seen == []
    with pytest.raises(ValueError, match="outside 0..2"):
        run_grid(spec, compute, store, progress=False, shard=(3, 3))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(script: str, *args: str, port: int, count: int = 2) -> list[subprocess.Popen]:
    """Starts ``count`` processes of one run; each one's output goes to a file of its own (a
    pipe read after another process's would fill and block the process writing to it, and
    with it the run: every process waits for all the others at jax's shutdown)."""
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "VAEROB_COORDINATOR": f"127.0.0.1:{port}",
        "VAEROB_NUM_PROCESSES": str(count),
        "PYTHONPATH": str(ROOT),
    }
    procs = []
    for i in range(count):
        log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (lives as long as the process)
        proc = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            env={**env, "VAEROB_PROCESS_ID": str(i)},
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        proc.log = log  # type: ignore[attr-defined]
        procs.append(proc)
    return procs


def _finish(procs: list[subprocess.Popen], timeout: float = 600) -> list[tuple[int, str]]:
    """Waits for all of ``procs`` (``timeout`` seconds in all, then kills them and raises) and
    returns each one's exit code and output."""
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        for q in procs:
            q.kill()
        tails = "\n".join(f"--- process {i} ---\n{_output(q)[-2000:]}" for i, q in enumerate(procs))
        raise AssertionError(f"the run did not finish in {timeout:.0f} s:\n{tails}") from None
    return [(p.returncode, _output(p)) for p in procs]


def _output(p: subprocess.Popen) -> str:
    p.log.seek(0)  # type: ignore[attr-defined]
    return p.log.read()  # type: ignore[attr-defined]


_TRAIN = r"""
import sys
import numpy as np, jax
from vaerob_jax import objectives
from vaerob_jax.models import make_vae
from vaerob_jax.sweeps import distributed
from vaerob_jax.train import TrainConfig, train_grid
distributed.initialize(distributed.settings_from())
assert len(jax.local_devices()) == 2 and len(jax.devices()) == 4
model = make_vae("mlp", (6, 6, 1), latent_dim=3, hidden=(16,))
data = np.asarray(jax.random.uniform(jax.random.key(1), (64, 6, 6, 1)))
res = train_grid(
    model, objectives.beta_elbo(model), data, {"beta": [0.5, 1.0, 4.0], "seed": [0, 1, 2]},
    TrainConfig(steps=12, batch_size=16, log_every=4), jax.random.key(3),
    workdir=sys.argv[1], progress=False,
)
leaves = [np.asarray(a) for a in jax.tree.leaves(res.params)]
np.savez(f"{sys.argv[1]}/params-{distributed.process_index()}.npz", *leaves,
         loss=res.history["loss"])
"""


@pytest.mark.slow
def test_two_processes_train_a_grid_as_one_process_does(tmp_path):
    """Process p trains models k ≡ p (mod 2) on its 2 devices, the processes swap them: both
    return the 3-model grid one process trains (to 1e-5: the shares are other vmapped
    programs), and the coordinator stores it as the run's final checkpoint."""
    import jax

    from vaerob_jax import objectives
    from vaerob_jax.models import make_vae
    from vaerob_jax.train import TrainConfig, train_grid

    work = tmp_path / "grid"
    results = _finish(_launch(_TRAIN, str(work), port=_free_port()))
    for rc, text in results:
        assert rc == 0, text[-3000:]
    model = make_vae("mlp", (6, 6, 1), latent_dim=3, hidden=(16,))
    data = np.asarray(jax.random.uniform(jax.random.key(1), (64, 6, 6, 1)))
    ref = train_grid(
        model, objectives.beta_elbo(model), data, {"beta": [0.5, 1.0, 4.0], "seed": [0, 1, 2]},
        TrainConfig(steps=12, batch_size=16, log_every=4), jax.random.key(3), progress=False,
    )  # fmt: skip
    ref_leaves = [np.asarray(a) for a in jax.tree.leaves(ref.params)]
    for p in (0, 1):
        with np.load(work / f"params-{p}.npz") as z:
            got = [z[f"arr_{i}"] for i in range(len(ref_leaves))]
            np.testing.assert_allclose(z["loss"], ref.history["loss"], rtol=1e-5)
        for a, b in zip(got, ref_leaves):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert sorted(p.name for p in work.glob("process-*")) == ["process-0-of-2", "process-1-of-2"]
    from vaerob_jax.train.progress import read_metrics

    merged = read_metrics(work / "metrics.csv")
    assert list(merged["step"]) == [4, 4, 4, 8, 8, 8, 12, 12, 12]
    assert list(merged["model"]) == [0, 1, 2] * 3
    np.testing.assert_allclose(merged["loss"].reshape(3, 3), ref.history["loss"], rtol=1e-5)
    np.testing.assert_array_equal(merged["beta"][:3], [0.5, 1.0, 4.0])
    # The merged grid loads as a finished run in one process, without training again.
    again = train_grid(
        model, objectives.beta_elbo(model), data, {"beta": [0.5, 1.0, 4.0], "seed": [0, 1, 2]},
        TrainConfig(steps=12, batch_size=16, log_every=4), jax.random.key(3), workdir=work,
        progress=False,
    )  # fmt: skip
    assert again.resumed_from == 12
    for a, b in zip(jax.tree.leaves(again.params), got):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_each_process_signals_its_saves_under_its_own_keys(monkeypatch):
    """Orbax's key for a save's signals is shared by all processes unless its prefix names the
    process: the prefix is distinct per process, set once, and the one orbax's keys use."""
    from orbax.checkpoint._src.futures import future as ocp_future
    from orbax.checkpoint._src.futures import synchronization

    from vaerob_jax.train.checkpoint import _own_signal_keys

    contract = ocp_future.AwaitableSignalsContract
    base = contract.awaitable_signals_contract_prefix
    monkeypatch.setattr(contract, "awaitable_signals_contract_prefix", base)
    first = _own_signal_keys(0)
    assert _own_signal_keys(0) == first  # idempotent: every checkpointer calls it
    signal = synchronization.HandlerAwaitableSignal.STEP_DIRECTORY_CREATION
    key = contract.get_unique_awaitable_singal_key(signal, "3")
    assert key.startswith(first + "_3/")
    monkeypatch.setattr(contract, "awaitable_signals_contract_prefix", base)
    other = _own_signal_keys(1)
    assert other != first and not other.startswith(first) and not first.startswith(other)


_SAVES = r"""
import sys, time
import numpy as np
from vaerob_jax.sweeps import distributed
from vaerob_jax.train.checkpoint import GridCheckpointer
distributed.initialize(distributed.settings_from())
me = distributed.process_index()
ck = GridCheckpointer(f"{sys.argv[1]}/p{me}", {"process": me}, max_to_keep=2)
rng = np.random.default_rng(me)
state = {"w": np.arange(20000, dtype=np.float32) + me}
for step in range(1, int(sys.argv[2]) + 1):
    ck.save(step, state)
    time.sleep(rng.uniform(0, 0.02))
    ck.wait()
print("saved", ck.latest_step(), flush=True)
"""


@pytest.mark.slow
def test_two_processes_saving_their_own_checkpoints_at_once_do_not_block_each_other(tmp_path):
    """Two processes each save 300 checkpoints of their own, jittered. With the signal keys
    shared (orbax's default) one process's cleanup deleted a key the other still waited for,
    and that process hung in 4 of 8 such runs on this 2-core machine, and in 3 of 3 runs of
    this test (12 of 12 runs finished with the keys per process, in about 15 s)."""
    results = _finish(_launch(_SAVES, str(tmp_path), "300", port=_free_port()), timeout=150)
    for rc, text in results:
        assert rc == 0 and "saved 300" in text, text[-3000:]


@pytest.mark.parametrize("argv", [["subgroups", "--out"], ["train", "--out"]])
def test_the_commands_refuse_bad_process_flags_with_exit_2(argv, tmp_path, capsys):
    from vaerob_jax.cli import main

    flags = os.environ.get("XLA_FLAGS")
    with pytest.raises(SystemExit) as err:
        main([*argv, str(tmp_path / "o"), "--num-processes", "2", "--process-id", "1"])
    assert err.value.code == 2
    assert os.environ.get("XLA_FLAGS") == flags  # refused before the CPU settings are applied
    assert "need a coordinator address" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_accelerator_script_refuses_bad_process_flags(tmp_path, capsys):
    from experiments.subgroups_celeba_devices import main

    flags = os.environ.get("XLA_FLAGS")
    with pytest.raises(SystemExit) as err:
        main(["--out", str(tmp_path), "--coordinator", "h:1", "--num-processes", "2"])
    assert err.value.code == 2
    assert os.environ.get("XLA_FLAGS") == flags
    assert "needs process_id" in capsys.readouterr().err
