"""The analysis notebooks execute end to end (nbclient, the current interpreter's python3 kernel, CPU)."""
import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch, tiny_default):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("RDPO_TINY_ROOT", str(tiny_default[0]))  # the session's tiny checkpoints: none trained
    monkeypatch.setenv("RDPO_NB_SFT_STEPS", "40")
    monkeypatch.setenv("RDPO_NB_PREF_STEPS", "8")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # the kernel must import this checkout: put the repository root first on its path
    root = str(path.parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    nb = nbformat.read(str(path), as_version=4)
    # kernel "python3" resolves to ipykernel's native spec, i.e. the interpreter running the tests
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
