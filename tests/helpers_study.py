"""A whole tiny study built once per test session and shared by the xdist workers."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest


def study_once(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    run: Callable[[Path], dict[str, Path]],
) -> tuple[Path, dict[str, Path]]:
    """Runs ``run(out)`` (a whole tiny study) once per test session, not once per xdist worker.

    A module fixture is built by every worker that runs one of the module's tests, and a tiny
    study costs about a minute on this CPU. The first worker to get here builds the study
    under a file lock in the session's shared temporary folder; the others wait for it. Each
    caller then gets its own copy (tests rerun a study in place to check resuming), with the
    returned paths moved along.
    """
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    built = shared / f"study-once-{name}"
    marker = built / ".paths.json"
    with open(shared / f"study-once-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not marker.exists():
            shutil.rmtree(built, ignore_errors=True)
            built.mkdir()
            paths = run(built)
            rel = {k: str(Path(v).relative_to(built)) for k, v in paths.items()}
            marker.write_text(json.dumps(rel))
    rel = json.loads(marker.read_text())
    out = tmp_path_factory.mktemp(name)
    shutil.copytree(built, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".paths.json"))
    return out, {k: out / v for k, v in rel.items()}
