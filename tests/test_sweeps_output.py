"""Output folder safety (issue 9, items 5 and 6): one run per folder, clear errors for bad paths."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from vaerob_jax.sweeps import OutputDirError, OutputLockedError, check_output_dir, lock_output

# The holder runs in a subprocess that loads only the (stdlib-only) lock module: starting a
# whole vaerob_jax import (jax included) per subprocess would cost seconds on 2 shared cores.
_MODULE = Path(__file__).resolve().parents[1] / "vaerob_jax" / "sweeps" / "output.py"
_HOLDER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("output", sys.argv[1])
mod = sys.modules["output"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
with mod.lock_output(sys.argv[2], command="vaerob subgroups --out x"):
    print("locked", flush=True)
    sys.stdin.readline()  # hold until the parent says so (or kills us)
print("released", flush=True)
"""


def _start_holder(out: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(_MODULE), str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip()
    assert line == "locked", (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc


def test_second_run_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "study"
    holder = _start_holder(out)
    try:
        with pytest.raises(OutputLockedError) as err, lock_output(out):
            pass
        msg = str(err.value)
        assert f"pid {holder.pid}" in msg and socket.gethostname() in msg
        assert str(out) in msg and "vaerob subgroups --out x" in msg
        assert "another --out" in msg or "another output folder" in msg
        info = json.loads((out / ".vaerob.lock").read_text())
        assert info["pid"] == holder.pid and info["host"] == socket.gethostname()
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        holder.wait(timeout=30)
    # Released on a normal exit: the folder can be locked again, and names us now.
    with lock_output(out) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_lock_of_a_killed_run_is_released(tmp_path):
    out = tmp_path / "study"
    holder = _start_holder(out)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert holder.returncode == -signal.SIGKILL
    # The kernel dropped the flock with the process; its stale info is simply overwritten.
    assert json.loads((out / ".vaerob.lock").read_text())["pid"] == holder.pid
    with lock_output(out) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_lock_is_exclusive_within_a_process_and_released_on_errors(tmp_path):
    with (
        lock_output(tmp_path),
        pytest.raises(OutputLockedError, match=f"pid {os.getpid()}"),
        lock_output(tmp_path),
    ):
        pass
    with pytest.raises(RuntimeError, match="boom"), lock_output(tmp_path):
        raise RuntimeError("boom")
    with lock_output(tmp_path):  # released by the exception above
        pass


def test_check_output_dir_file_and_path_under_a_file(tmp_path):
    f = tmp_path / "results.txt"
    f.write_text("x")
    with pytest.raises(OutputDirError, match="is a file") as err:
        check_output_dir(f)
    assert str(f) in str(err.value)
    with pytest.raises(OutputDirError, match=r"lies under .*results\.txt.* a file"):
        check_output_dir(f / "study" / "run1")
    # Nothing was created by the checks; a fine path is returned absolute, still not created.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.txt"]
    good = check_output_dir(tmp_path / "new" / "study")
    assert good == (tmp_path / "new" / "study").absolute() and not good.exists()
    assert check_output_dir(tmp_path) == tmp_path.absolute()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.txt"]  # probe removed


def _refuses_writes(folder: Path) -> bool:
    try:
        fd, name = tempfile.mkstemp(dir=folder)
    except OSError:
        return True
    os.close(fd)
    os.unlink(name)
    return False


def test_check_output_dir_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if not _refuses_writes(ro):
            # Running as root: permissions do not stop writes. A folder whose filesystem
            # refuses new files to everyone (sysfs) provokes the same OSError.
            ro = Path("/sys")
            if not ro.is_dir() or not _refuses_writes(ro):
                pytest.skip(
                    "cannot provoke a read-only folder: running as root (chmod does not stop "
                    "writes) and no folder refusing new files (e.g. /sys) exists here"
                )
        with pytest.raises(OutputDirError, match="not writable") as err:
            check_output_dir(ro)
        assert str(ro) in str(err.value)
        with pytest.raises(OutputDirError, match="not writable") as err:
            check_output_dir(ro / "study")  # would have to be created inside it
        assert str(ro) in str(err.value)
    finally:
        (tmp_path / "ro").chmod(0o755)
