"""examples/homework4.ipynb: it runs top to bottom in a Jupyter kernel, and its paired script says the same."""

import re
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOK = EXAMPLES / "homework4.ipynb"
SCRIPT = EXAMPLES / "homework4.py"
MAX_BYTES = 2_000_000  # the committed notebook, outputs included: small enough for GitHub to show

# the notebook's first cell reads these; tiny: one epoch of a 16-wide model on 64 synthetic images
FAST_NOTEBOOK_ENV = {"HW4_EPOCHS": "1", "HW4_LAYERS": "16", "HW4_OUT": "hw", "HW4_IW_SAMPLES": "3", "HW4_DEVICE": "cpu"}


def _outputs(nb: nbformat.NotebookNode, kind: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if kind in o.get("data", {})]


def _text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            parts.append(o.get("text", "") + o.get("data", {}).get("text/markdown", ""))
    return "".join(parts)


def test_notebook_runs_every_task_and_problem(tiny_mnist, tmp_path, monkeypatch, chromium):
    for name, value in {**FAST_NOTEBOOK_ENV, "VAECLI_DATA_DIR": str(tiny_mnist)}.items():
        monkeypatch.setenv(name, value)  # the kernel inherits this process's environment
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # one cell more, run after the notebook's own: which python ran them
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    client = NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if any cell fails

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    assert code[-1].outputs[0]["text"].strip() == sys.executable  # the venv's ipykernel, not another Python's
    # every figure shown inline: one PNG per show_png call
    shown = sum(len(re.findall(r"^show\(", c.source, re.M)) for c in code)
    assert shown >= 8 and len(_outputs(nb, "image/png")) == shown
    text = _text(nb)
    assert "Linear(in_features=784, out_features=16" in text  # Task 1: the model
    assert "lam=40: recon" in text  # Task 2: the terms apart
    assert "$$" in text and r"\operatorname*{argmin}" in text  # Problem 1: the derivation rendered as LaTeX
    assert "| check | left | right |" in text and "4 of 4 reused" in text  # the checks ran on Problem 3's runs
    assert "| 50 | 1 |" in text and "| 2 | 40 |" in text  # the tables of Problems 2 and 3
    out = tmp_path / "hw"
    for name in ("samples.png", "kl_per_dim.png", "metrics.csv", "report.md"):
        assert (out / "problem2" / name).is_file(), name
    for name in ("manifolds.png", "grid_lam1.png", "metrics.json", "report.md"):
        assert (out / "problem3" / name).is_file(), name
    notebook_pdf_by_the_readme(nb, tmp_path, chromium)


def notebook_pdf_by_the_readme(nb: nbformat.NotebookNode, folder: Path, chromium: str) -> None:
    """The README's route from the executed notebook to the PDF the homework asks for, without TeX
    (examples/notebook_pdf.py: nbconvert's HTML printed by headless Chromium). The PDF has its pages, its
    figures and every task and problem."""
    from pypdf import PdfReader

    nbformat.write(nb, folder / "homework4.ipynb")
    pdf = folder / "homework4.pdf"
    script = [sys.executable, str(EXAMPLES / "notebook_pdf.py"), str(folder / "homework4.ipynb"), str(pdf)]
    subprocess.run([*script, "--browser", chromium], check=True, capture_output=True, timeout=300)
    reader = PdfReader(pdf)
    text = " ".join(page.extract_text() for page in reader.pages)
    assert len(reader.pages) >= 10, len(reader.pages)
    assert "Problem 3" in text and "Task 1" in text
    assert sum(len(page.images) for page in reader.pages) >= 8  # the figures, as images in the PDF


def test_script_and_notebook_are_paired_and_in_sync():
    notebook, script = jupytext.read(NOTEBOOK), jupytext.read(SCRIPT)
    assert notebook.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    assert [(c.cell_type, c.source) for c in script.cells] == [(c.cell_type, c.source) for c in notebook.cells], (
        "examples/homework4.py and .ipynb differ: run `jupytext --sync examples/homework4.ipynb`"
    )


def test_committed_notebook_shows_one_full_run():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    # executed once, top to bottom, in a fresh kernel: counts 1, 2, 3, ...
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert len(_outputs(nb, "image/png")) >= 8
    assert NOTEBOOK.stat().st_size < MAX_BYTES
