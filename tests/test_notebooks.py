"""Notebooks import the library and run on tiny configs; executing them catches API drift."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("VAEROB_NOTEBOOK_PRESET", "tiny")
    monkeypatch.setenv("VAEROB_NOTEBOOK_OUT", str(tmp_path / "out"))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    # The summary table printed by the notebook has one row per (beta, eps, subgroup).
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert text.count("young-women") >= 2 and "median" in text
    assert (tmp_path / "out" / "report.md").exists()
    assert os.environ["VAEROB_NOTEBOOK_PRESET"] == "tiny"


def test_notebooks_exist_and_have_no_stored_outputs():
    nbformat = pytest.importorskip("nbformat")
    assert NOTEBOOKS, "notebooks/ must hold at least one notebook"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path
