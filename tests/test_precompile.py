"""`python -m lstmkit compile`: every path a cell's layers take, compiled on several processes
into Numba's cache, so that a later process compiles nothing."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lstmkit import precompile
from lstmkit.kernels import BUILTIN

ROOT = Path(__file__).resolve().parent.parent

# every lstmkit compilation a new process makes while it runs the cells' layers, small ones on
# one thread and (driver.PARALLEL_MIN_WORK = 0) on threads, in both dtypes, on shapes of its own
COMPILES_AFTERWARDS = """
import sys
import numba.core.event as event
import numpy as np
compiled = []
class Listener(event.Listener):
    def on_start(self, ev):
        compiled.append(ev.data["dispatcher"].py_func.__module__ + "." + ev.data["dispatcher"].py_func.__qualname__)
    def on_end(self, ev):
        pass
event.register("numba:compile", Listener())
import lstmkit
from lstmkit import driver
for threaded in (False, True):
    driver.PARALLEL_MIN_WORK = 0 if threaded else 50_000_000
    for name in sys.argv[1:]:
        for dtype in (np.float32, np.float64):
            layer = lstmkit.RecurrentLayer(name, 3, 3, dtype=dtype)
            y, _ = layer(np.ones((6, 12, 3) if threaded else (7, 3, 3), dtype))
            layer.backward(np.ones_like(y))
print(sorted({name for name in compiled if name.startswith("lstmkit")}))
"""


def run(args, cache):
    environment = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    return subprocess.run([sys.executable, *args], env=environment, cwd=ROOT, capture_output=True, text=True)


def test_after_compile_on_two_processes_a_new_process_compiles_nothing(tmp_path):
    cells = ["rnn_tanh", "rnn_relu"]
    done = run(["-m", "lstmkit", "compile", "--jobs", "2", *cells], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "kernels of 2 cell(s)" in done.stdout and "on 2 process(es)" in done.stdout
    assert "lstmkit: compiling" not in done.stderr      # the progress bar says it, not each worker
    after = run(["-c", COMPILES_AFTERWARDS, *cells], tmp_path)
    assert after.returncode == 0, after.stderr
    assert after.stdout.strip() == "[]"


def test_a_cold_cache_does_compile(tmp_path):
    """The check above can fail: without compile first, the same process compiles the kernels."""
    after = run(["-c", COMPILES_AFTERWARDS, "rnn_tanh"], tmp_path)
    assert after.returncode == 0, after.stderr
    assert "lstmkit.kernels.rnn_tanh.forward_rows" in after.stdout
    assert "lstmkit.threads" in after.stdout         # the threaded paths' own functions


@pytest.mark.parametrize("jobs", [0, -1, True, 1.5, "2"])
def test_bad_jobs_are_refused_before_anything_compiles(jobs, monkeypatch):
    calls = []
    monkeypatch.setattr(precompile, "compile_cell", calls.append)
    with pytest.raises(ValueError, match="jobs must be a positive integer"):
        precompile.compile_builtin_cells(jobs, ["rnn_tanh"], progress=False)
    assert calls == []


def test_an_unknown_cell_is_refused_before_anything_compiles(monkeypatch):
    calls = []
    monkeypatch.setattr(precompile, "compile_cell", calls.append)
    with pytest.raises(ValueError, match=r"no built-in cell\(s\) \['lstn'\]; choose from"):
        precompile.compile_builtin_cells(1, ["lstm", "lstn"], progress=False)
    assert calls == []


def test_a_failing_cell_is_named(monkeypatch):
    def compile_cell(name):
        if name == "gru":
            raise TypeError("no such signature")
        return name, 0.0

    monkeypatch.setattr(precompile, "compile_cell", compile_cell)
    with pytest.raises(RuntimeError, match="the cell 'gru' failed: TypeError: no such signature"):
        precompile.compile_builtin_cells(1, ["lstm", "gru"], progress=False)


def test_the_command_reports_an_error_and_exits_1(capsys):
    assert precompile.main(jobs=0) == 1
    assert capsys.readouterr().err == "error: jobs must be a positive integer, got 0\n"


def test_every_cell_once_the_largest_kernel_module_first():
    order = precompile._order(BUILTIN)
    assert sorted(order) == sorted(BUILTIN)
    assert order[0] == "lstm_fgr" and order[-1] in ("rnn_tanh", "rnn_relu")
