"""The notebooks in examples/ run, top to bottom, as a reader would run them; none is committed
with outputs.

Each notebook is executed by nbclient (the Jupyter project's execution library, which nbmake and
papermill both wrap; pinned in the test extra) in a fresh ipykernel whose working folder is
examples/, on a copy: the committed file is never rewritten. A cell that raises fails the test
with the cell's traceback; the notebooks assert what they show (0 mismatches, an energy figure),
and the tests below check what each notebook must end with.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
EXPECTED = ["01_quickstart.ipynb", "02_your_model.ipynb", "03_detection.ipynb"]



def test_the_three_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_carries_no_outputs(path):
    """Outputs stay out of git: they bloat diffs, go stale, and can hide a notebook that no
    longer runs. Clear them before committing (Jupyter: Edit > Clear Outputs of All Cells)."""
    nb = json.loads(path.read_text())
    dirty = [i for i, cell in enumerate(nb["cells"]) if cell["cell_type"] == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs or execution counts"


def execute(path: Path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    # a cell may train for minutes on a loaded machine; the limit is there to stop a hang
    client = NotebookClient(nb, timeout=1200, kernel_name="python3",
                            resources={"metadata": {"path": str(EXAMPLES)}})
    started = time.perf_counter()
    client.execute()
    return nb, time.perf_counter() - started


def _outputs(nb, cell_index: int) -> list[dict]:
    code = [c for c in nb.cells if c.cell_type == "code"]
    return code[cell_index].outputs


def _has_image(outputs) -> bool:
    return any(o.get("output_type") in ("display_data", "execute_result")
               and "image/png" in o.get("data", {}) for o in outputs)


@pytest.mark.slow
@pytest.mark.timeout(2400)  # the whole notebook: several stages, each under the cell limit
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path):
    nb, seconds = execute(path)
    # reported, not asserted: speed is measured by benchmarks, never by timed tests
    print(f"{path.name}: {seconds:.1f} s")
    # every notebook ends in a figure (the quickstart: the energy plot)
    assert _has_image(_outputs(nb, -1)), f"{path.name}: the last cell draws no figure"


def test_a_returned_figure_shows_in_a_kernel_without_the_matplotlib_magic(real_file):
    """The notebooks have no `%matplotlib inline`: a Figure that spikeline returns (outside
    pyplot) must still show as a PNG in a fresh kernel."""
    import nbformat
    from nbclient import NotebookClient

    graph, events = real_file("nir/nmnist_cnn_sinabs.nir"), real_file("events/nmnist_sample.bin")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        f"import spikeline as sl\nsl.simulate({str(graph)!r}, [{str(events)!r}], T=8).plot()")])
    NotebookClient(nb, timeout=600, kernel_name="python3").execute()
    assert _has_image(nb.cells[0].outputs), nb.cells[0].outputs
