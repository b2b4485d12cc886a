"""Output folder safety: check a folder is usable before any work, and hold it exclusively.

:func:`check_output_dir` finds the problems that used to surface as tracebacks halfway
through a run (the path is a file, lies under a file, or its folder refuses new files) by
actually trying to create a file there (``os.access`` says yes to root whatever the mode and
knows nothing of read-only mounts), and creates nothing itself.

:func:`lock_output` takes an exclusive ``flock`` on ``<out>/.vaerob.lock`` for a whole run, so
a second run into the same folder stops at once with :class:`OutputLockedError` naming the
holder (pid, host, start time, command), instead of colliding with the first in orbax's temp
folders. The kernel releases a ``flock`` when its holder exits or dies (SIGKILL included), so
there are no stale locks to clean up; the file itself stays, overwritten by the next holder.
The lock is held per open file: a second :func:`lock_output` in the same process is refused
too. Caveats: a child forked without ``exec`` shares the lock while it lives; network
filesystems may implement ``flock`` loosely.

This module uses only the standard library (the lock tests load it on its own).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "LOCK_NAME",
    "OutputDirError",
    "OutputLock",
    "OutputLockedError",
    "check_output_dir",
    "lock_output",
]

#: Name of the lock file inside an output folder.
LOCK_NAME = ".vaerob.lock"


class OutputDirError(OSError):
    """The output folder cannot be used: a file, under a file, or not writable."""


class OutputLockedError(RuntimeError):
    """Another run holds the output folder."""


def _reason(err: OSError) -> str:
    if err.errno == errno.EROFS:
        return "its filesystem is mounted read-only"
    if err.errno == errno.ENOSPC:
        return "the disk is full"
    if err.errno == errno.EDQUOT:
        return "the disk quota is exhausted"
    return err.strerror or type(err).__name__


def check_output_dir(path: str | os.PathLike) -> Path:
    """Check that ``path`` can be the output folder of a run, creating nothing.

    Args:
      path: the folder; it may not exist yet (then its nearest existing parent folder must
        accept new entries).

    Returns:
      The absolute path (``~`` expanded).

    Raises:
      OutputDirError: the path is a file, lies under a file, or the folder (or the existing
        parent it would be created in) refuses new files; the message names the path and
        the reason.
    """
    p = Path(path).expanduser().absolute()
    if p.exists() and not p.is_dir():
        raise OutputDirError(
            f"output folder {p} is a file, not a folder; choose another path for the results"
        )
    probe_in = p
    while not probe_in.exists():
        if probe_in.parent == probe_in:
            break
        probe_in = probe_in.parent
    if probe_in.exists() and not probe_in.is_dir():
        raise OutputDirError(
            f"output folder {p} lies under {probe_in}, which is a file, so the folder cannot be "
            "created; choose another path for the results"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".vaerob-write-test.", dir=probe_in)
    except OSError as err:
        where = "" if probe_in == p else f" (it would be created in {probe_in})"
        raise OutputDirError(
            f"output folder {p} is not writable{where}: {_reason(err)}; choose a folder you can "
            "write to"
        ) from err
    os.close(fd)
    os.unlink(probe)
    return p


@dataclass(frozen=True)
class OutputLock:
    """A held lock: the lock file and what it says about this holder."""

    path: Path
    info: dict[str, Any]


def _holder_text(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process (it has not written its details yet)"
    text = f"pid {info.get('pid', '?')} on host {info.get('host', '?')}"
    if info.get("started"):
        text += f", started {info['started']}"
    if info.get("command"):
        text += f", running `{info['command']}`"
    return text


def _read_info(fd: int) -> dict[str, Any] | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 65536)
        info = json.loads(raw.decode()) if raw.strip() else None
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


@contextlib.contextmanager
def lock_output(out_dir: str | os.PathLike, *, command: str | None = None) -> Iterator[OutputLock]:
    """Hold ``out_dir`` exclusively for the duration of the ``with`` block.

    Creates ``out_dir`` if needed (check it first with :func:`check_output_dir`), takes a
    non-blocking exclusive ``flock`` on ``out_dir/.vaerob.lock`` and writes this process's pid,
    host, start time and command into it. Released when the block exits, however it exits,
    and by the kernel when the process dies.

    Args:
      out_dir: the output folder.
      command: what this run is (shown to a second run); default the process's argv.

    Yields:
      The :class:`OutputLock`.

    Raises:
      OutputLockedError: another run (or another lock in this process) holds the folder;
        the message names the holder and what to do.
      OutputDirError: the folder or its lock file cannot be created.
    """
    import fcntl  # POSIX only; imported here so the rest of the package imports elsewhere

    out = Path(out_dir).expanduser().absolute()
    path = out / LOCK_NAME
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise OutputDirError(f"cannot create the lock file {path}: {_reason(err)}") from err
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_text(_read_info(fd))
            raise OutputLockedError(
                f"output folder {out} is in use by another vaerob run ({holder}). Wait for it "
                f"to finish, or choose another output folder (another --out). The lock is "
                f"{path}; it is released when that process ends, so there is nothing to delete."
            ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": command if command is not None else " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        os.fsync(fd)
        try:
            yield OutputLock(path, info)
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # a finished run leaves no holder details behind
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
