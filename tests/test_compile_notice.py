"""The line that says kernels compile, once: on a cold cache only, and never in a notebook's outputs."""
import os
import subprocess
import sys
from pathlib import Path

import numba.core.event as numba_event
import pytest

from lstmkit import compile_notice

ROOT = Path(__file__).resolve().parent.parent   # the checkout whose lstmkit the processes import

FIRST_LAYER = """
import numpy as np
import lstmkit
layer = lstmkit.RNN(3, 4, seed=0)
y, _ = layer(np.ones((2, 1, 3), np.float32))
layer.backward(np.ones_like(y))
print("done")
"""


def run_python(script, numba_cache):
    environment = dict(os.environ, NUMBA_CACHE_DIR=str(numba_cache))
    return subprocess.run([sys.executable, "-c", script], env=environment, cwd=ROOT, capture_output=True,
                          text=True, check=True)


def test_one_line_while_kernels_compile_and_none_from_the_cache(tmp_path):
    cold = run_python(FIRST_LAYER, tmp_path)
    assert cold.stdout == "done\n"
    assert cold.stderr == compile_notice.MESSAGE + "\n"      # one line, for all the kernels it compiled
    assert "once" in compile_notice.MESSAGE
    warm = run_python(FIRST_LAYER, tmp_path)
    assert (warm.stdout, warm.stderr) == ("done\n", "")


class _Dispatcher:
    def __init__(self, module):
        self.py_func = type("f", (), {"__module__": module})


def compile_event(module):
    return numba_event.Event("numba:compile", numba_event.EventStatus.START,
                             data={"dispatcher": _Dispatcher(module), "args": (), "return_type": None})


def test_the_line_is_written_once_and_only_for_lstmkit(monkeypatch, capsys):
    listener = compile_notice._FirstCompile()
    listener.on_start(compile_event("numpy_user_code"))
    assert capsys.readouterr().err == ""
    listener.on_start(compile_event("lstmkit.kernels.lstm"))
    listener.on_start(compile_event("lstmkit_user_mgu_0123"))
    assert capsys.readouterr().err == compile_notice.MESSAGE + "\n"


def test_in_a_jupyter_kernel_the_line_goes_to_its_terminal_not_to_the_cell(monkeypatch):
    """ipykernel turns stderr into a cell output: the line must bypass it."""
    read_end, write_end = os.pipe()
    written = []
    ipykernel_stream = type("OutStream", (), {"__module__": "ipykernel.iostream",
                                              "_original_stdstream_copy": write_end,
                                              "write": lambda self, text: written.append(text),
                                              "flush": lambda self: None})
    monkeypatch.setattr(sys, "stderr", ipykernel_stream())
    compile_notice._write_line(compile_notice.MESSAGE)
    os.close(write_end)
    with os.fdopen(read_end) as terminal:
        assert terminal.read() == compile_notice.MESSAGE + "\n"
    assert written == []


def test_a_notebook_run_on_a_cold_cache_has_no_stderr_output(tmp_path, monkeypatch):
    """What nbval and `lstmkit.course execute` see: the cell's outputs are stdout alone."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    announced = "from lstmkit import compile_notice\nprint(compile_notice.announced())"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(FIRST_LAYER),
                                               nbformat.v4.new_code_cell(announced)])
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [[(o.output_type, o.get("name"), o.get("text")) for o in cell.outputs] for cell in notebook.cells]
    # the kernel compiled (and said so, to its terminal), and the cells show stdout alone
    assert outputs == [[("stream", "stdout", "done\n")], [("stream", "stdout", "True\n")]]
    assert any(tmp_path.rglob("*.nbi"))      # the cache was cold: the kernel compiled into it
