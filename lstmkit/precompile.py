"""Compile every built-in cell's kernels into Numba's cache, on several processes at once.

``python -m lstmkit compile`` (``make course`` and ``make test`` run it first). Numba
compiles a kernel the first time a process calls it and keeps the machine code in its
cache on disk; every later process loads it. Compiling is single-threaded: the 17
built-in cells in float32 and float64 took about 95 s one after another on one core of
the two here (benchmarks/results/compile_time_*.json), while the second core waited. Here
each worker process compiles whole cells, the longest first, so a machine with N cores
pays about 1/N of that once. A cell whose kernels are already cached costs a load.

Each cell runs what a learner's layers run: a small forward+backward on one thread in
both dtypes, then the same with the loop over time and the products on threads
(``driver.PARALLEL_MIN_WORK = 0``), which adds the threaded paths' own functions.
"""
from __future__ import annotations

import os
import sys
import time

__all__ = ["compile_builtin_cells", "compile_cell", "default_jobs", "run_layers"]


def default_jobs():
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:        # macOS, Windows
        return max(1, os.cpu_count() or 1)


def run_layers(name, threaded):
    """A small forward+backward of the built-in cell ``name`` in float32 and float64: what
    compiles its kernels. ``threaded``: every loop and product on threads, however small."""
    import numpy as np

    from . import driver
    from .layers import RecurrentLayer

    rng = np.random.default_rng(0)
    threshold = driver.PARALLEL_MIN_WORK
    try:
        if threaded:
            driver.PARALLEL_MIN_WORK = 0
        for dtype in (np.float32, np.float64):
            # input_size = hidden_size: the cells that read their raw input (MUT1, MUT2) need it
            layer = RecurrentLayer(name, 4, 4, dtype=dtype, seed=0)
            x = rng.standard_normal((8, 16, 4) if threaded else (5, 2, 4)).astype(dtype)
            y, _ = layer(x)
            layer.backward(np.ones_like(y))
    finally:
        driver.PARALLEL_MIN_WORK = threshold


def compile_cell(name):
    """Compile (or load) one built-in cell's kernels in this process; returns (name, seconds)."""
    from . import compile_notice

    compile_notice.say_nothing()     # the caller's progress bar says it
    start = time.perf_counter()
    for threaded in (False, True):
        run_layers(name, threaded)
    return name, time.perf_counter() - start


def _order(names):
    """The longest to compile first, so that no worker starts a long cell when the others are
    about to finish. A kernel module's size is the measure: lstm_fgr's 18 kB took 8.9 s,
    rnn_tanh's 6 kB 3.7 s (benchmarks/results/compile_time_issue17e.json)."""
    from importlib.util import find_spec

    return sorted(names, key=lambda name: -os.path.getsize(find_spec(f"lstmkit.kernels.{name}").origin))


def compile_builtin_cells(jobs=None, cells=None, progress=True):
    """Compile ``cells`` (default: every built-in cell) on ``jobs`` processes (default: one per
    core); returns {cell: seconds in its worker}. ``jobs=1`` compiles in this process."""
    from .kernels import BUILTIN

    cells = list(BUILTIN if cells is None else cells)
    unknown = [name for name in cells if name not in BUILTIN]
    if unknown:
        raise ValueError(f"no built-in cell(s) {unknown}; choose from {sorted(BUILTIN)}")
    jobs = default_jobs() if jobs is None else jobs
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    from tqdm import tqdm

    bar = tqdm(total=len(cells), desc="compiling kernels", unit="cell", file=sys.stderr, disable=not progress)
    seconds = {}
    try:
        if jobs == 1 or len(cells) == 1:
            for name in _order(cells):
                try:
                    seconds.update([compile_cell(name)])
                except Exception as error:
                    raise _failed(name, error) from error
                bar.update()
            return seconds
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn: a fresh interpreter, not a fork of one whose Numba and threads are running
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(jobs, len(cells)), mp_context=context) as pool:
            futures = {pool.submit(compile_cell, name): name for name in _order(cells)}
            for future in as_completed(futures):
                try:
                    seconds.update([future.result()])
                except Exception as error:
                    for other in futures:
                        other.cancel()
                    raise _failed(futures[future], error) from error
                bar.update()
        return seconds
    finally:
        bar.close()


def _failed(name, error):
    return RuntimeError(f"compiling the kernels of the cell {name!r} failed: {type(error).__name__}: {error}")


def main(jobs=None, cells=None):
    """``python -m lstmkit compile``: one line of what happened; 1 if a cell failed."""
    start = time.perf_counter()
    try:
        seconds = compile_builtin_cells(jobs, cells)
    except (RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    jobs = default_jobs() if jobs is None else jobs
    print(f"kernels of {len(seconds)} cell(s) compiled or loaded from Numba's cache in "
          f"{time.perf_counter() - start:.1f} s on {min(jobs, len(seconds))} process(es) "
          f"({sum(seconds.values()):.1f} s of work)")
    return 0
