"""The notebooks execute top to bottom (with FL_NOTEBOOK_SMOKE=1) and are committed clean."""

import json
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

from tests._processes import PROCESSES

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
pytestmark = [pytest.mark.own_ray,  # the kernels start their own Ray: free the cores of ours
              pytest.mark.xdist_group(PROCESSES)]


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A ``python3`` kernelspec that starts *this* interpreter, the smoke switch, an output dir.

    ``JUPYTER_PATH`` comes first in Jupyter's search path, so a user-level or
    system ``python3`` kernel of another environment cannot shadow this one.
    """
    root = tmp_path_factory.mktemp("jupyter")
    # shared with tests/fl_app/experiments/test_sweep.py, whose real sweep is the
    # robustness smoke sweep
    out = tmp_path_factory.getbasetemp() / "notebooks"
    spec_dir = root / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (test)", "language": "python"}))
    env = {"JUPYTER_PATH": os.pathsep.join(filter(None, [str(root),
                                                          os.environ.get("JUPYTER_PATH")])),
           "FL_NOTEBOOK_SMOKE": "1", "FL_NOTEBOOK_OUT": str(out)}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        assert KernelSpecManager().get_kernel_spec("python3").argv[0] == sys.executable
        yield root


def test_there_are_notebooks():
    assert {p.stem for p in NOTEBOOKS} >= {"quickstart", "robustness", "privacy"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs_and_without_copied_code(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
            assert not re.search(r"^\s*(def|class) ", cell.source, re.M), \
                "notebooks import fl_app instead of defining code"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_top_to_bottom(path, kernel_env, tmp_path):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_name="python3", timeout=600,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure was shown"
