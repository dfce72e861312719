"""lstmkit against a plain NumPy implementation and PyTorch CPU, in one run.

    python benchmarks/bench.py                 # the full table, written to benchmarks/results/latest.json
    python benchmarks/bench.py --quick         # small sizes, few repeats
    python benchmarks/bench.py --name after    # results/after.json

What is timed, for the LSTM and the GRU, float32 and float64, each size
(T, B, n, d) = (steps, batch, input_size, hidden_size), one layer:

* ``forward+backward``: the layer's forward pass over the sequence, then
  backpropagation through time with the gradients of the input, of the
  initial state and of every parameter. lstmkit: ``layer(x)`` then
  ``layer.backward(dy)``; NumPy: ``lstmkit/reference.py``; torch: ``y = lstm(x)``
  with ``x.requires_grad``, then ``y.backward(dy)``.
* ``forward``: inference. lstmkit: ``layer.forward(x, inference=True)`` when the
  layer has that keyword (it saves nothing for backward), else ``layer(x)``;
  NumPy: its forward (it keeps its cache); torch: ``lstm(x)`` under
  ``torch.no_grad()``.

Each implementation runs in its own worker process, on 2 threads (BLAS,
OpenMP, Numba and torch are all told so): a library's idle threads then never
spin against another's. The parent asks the workers in turn, case by case and
round by round, so that load from elsewhere on the machine falls on all of
them alike. Each sample is the median of several calls after one warm-up
call; the table shows the median over rounds. Ratios above 1 mean lstmkit is
faster.

FLOPs are counted as the matrix products alone: ``2·T·B·G·d·(n + d)`` per
forward (G = 4 gates for the LSTM, 3 for the GRU) and three times that for
forward+backward. "% GEMM" divides lstmkit's rate by the rate of a 2048³
matrix product of the same dtype (the better of NumPy's BLAS and the BLAS
Numba calls) measured right after each lstmkit sample, in the same worker,
so that both see the same load; the header also shows the rates measured at
the start of the run, torch's (MKL) included.
"""
from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
THREADS = 2

SIZES = [(100, 1, 16, 32), (100, 32, 32, 128), (100, 64, 128, 256), (50, 128, 512, 512)]
QUICK_SIZES = [(100, 1, 16, 32), (50, 16, 32, 64)]
CELLS = ("lstm", "gru")
DTYPES = ("float32", "float64")
MODES = ("forward", "forward+backward")
IMPLEMENTATIONS = ("lstmkit", "numpy", "torch")
GATES = {"lstm": 4, "gru": 3}

__all__ = ["SIZES", "QUICK_SIZES", "flops", "build", "time_function", "run", "format_table",
           "gemm_rate", "warm_start_seconds", "cold_compile_seconds", "peak_memory", "main"]


def thread_environment(threads=THREADS):
    """Environment variables that pin every thread pool to ``threads``."""
    return {name: str(threads) for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                            "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}


def flops(cell, size, mode):
    steps, batch, n_in, hidden = size
    forward = 2 * steps * batch * GATES[cell] * hidden * (n_in + hidden)
    return forward if mode == "forward" else 3 * forward


# -- one case, in the current process --------------------------------------------------
def _inputs(cell, dtype, size, seed=0):
    steps, batch, n_in, hidden = size
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((steps, batch, n_in)).astype(dtype)
    dy = rng.standard_normal((steps, batch, hidden)).astype(dtype)
    return rng, x, dy


def build(implementation, cell, dtype, size, seed=0):
    """``{"forward": f, "forward+backward": g}`` for one implementation and case.

    Returns None when the implementation is not installed (torch is optional).
    """
    steps, batch, n_in, hidden = size
    dtype = np.dtype(dtype)
    rng, x, dy = _inputs(cell, dtype, size, seed)
    if implementation == "lstmkit":
        import inspect

        import lstmkit

        layer = {"lstm": lstmkit.LSTM, "gru": lstmkit.GRU}[cell](n_in, hidden, dtype=dtype, seed=seed)
        inference = "inference" in inspect.signature(layer.forward).parameters

        def forward_backward():
            layer(x)
            layer.backward(dy)

        forward = (lambda: layer.forward(x, inference=True)) if inference else (lambda: layer(x))
        return {"forward": forward, "forward+backward": forward_backward}
    if implementation == "numpy":
        from lstmkit import reference

        params = reference.init_params(cell, n_in, hidden, rng, dtype)
        fwd, bwd = reference.FORWARD[cell], reference.BACKWARD[cell]

        def forward_backward():
            _, cache = fwd(x, **params)
            bwd(dy, cache)

        return {"forward": lambda: fwd(x, **params), "forward+backward": forward_backward}
    if implementation == "torch":
        try:
            import torch
        except ImportError:
            return None
        torch.set_num_threads(THREADS)
        torch_dtype = {np.float32: torch.float32, np.float64: torch.float64}[dtype.type]
        module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](n_in, hidden, dtype=torch_dtype)
        x_t = torch.from_numpy(x).requires_grad_(True)
        dy_t = torch.from_numpy(dy)

        def forward():
            with torch.no_grad():
                module(x_t)

        def forward_backward():
            module.zero_grad(set_to_none=True)
            x_t.grad = None
            y, _ = module(x_t)
            y.backward(dy_t)

        return {"forward": forward, "forward+backward": forward_backward}
    raise ValueError(f"unknown implementation {implementation!r}; choose from {IMPLEMENTATIONS}")


def time_function(function, repeats=5, min_seconds=0.2, max_calls=2000):
    """Seconds per call: one warm-up call (not counted), then at least ``repeats`` calls
    and at least ``min_seconds`` in all. Returns the list of times."""
    function()
    times = []
    start = time.perf_counter()
    while len(times) < max_calls and (len(times) < repeats or time.perf_counter() - start < min_seconds):
        begin = time.perf_counter()
        function()
        times.append(time.perf_counter() - begin)
    return times


def gemm_rate(dtype, implementation="numpy", size=2048, repeats=3):
    """FLOP/s of one square matrix product through a library's BLAS (median of repeats).

    ``numpy``: NumPy's ``matmul``; ``numba``: ``np.dot`` inside ``@njit``, which
    calls the BLAS that SciPy ships (what lstmkit's sequence loops use);
    ``torch``: ``torch.matmul``. None where the library is missing.
    """
    call = _gemm_call(np.dtype(dtype).name, implementation, size)
    if call is None:
        return None
    seconds = float(np.median(time_function(call, repeats=repeats, min_seconds=0.2)))
    return 2 * size ** 3 / seconds


@functools.lru_cache(maxsize=None)
def _gemm_operands(dtype, size):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    return a, b, np.empty((size, size), dtype)


@functools.lru_cache(maxsize=None)
def _gemm_call(dtype, implementation, size):
    """The product, ready to time: built (and for Numba compiled) once per worker, since the
    rate is measured again after every lstmkit sample."""
    a, b, out = _gemm_operands(dtype, size)
    if implementation == "numpy":
        return lambda: np.matmul(a, b, out=out)
    if implementation == "numba":
        import numba

        dot = numba.njit(lambda a, b, out: np.dot(a, b, out))
        return lambda: dot(a, b, out)
    if implementation == "torch":
        try:
            import torch
        except ImportError:
            return None
        torch.set_num_threads(THREADS)
        ta, tb, tout = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out)
        return lambda: torch.matmul(ta, tb, out=tout)
    raise ValueError(implementation)


# -- worker processes -----------------------------------------------------------------
def _worker(connection, implementation):
    """Serve timing requests for one implementation until told to stop."""
    cache = {}
    while True:
        request = connection.recv()
        if request is None:
            break
        try:
            if request[0] == "time":
                _, cell, dtype, size, mode, repeats, min_seconds = request
                key = (cell, dtype, size)
                if key not in cache:
                    cache.clear()
                    cache[key] = build(implementation, cell, dtype, size)
                functions = cache[key]
                reply = None if functions is None else time_function(functions[mode], repeats, min_seconds)
            elif request[0] == "gemm":
                _, dtype, which = request
                reply = gemm_rate(dtype, which)
            elif request[0] == "info":
                reply = _library_info(implementation)
            else:
                raise ValueError(request)
            connection.send(("ok", reply))
        except Exception as error:  # report, keep serving
            connection.send(("error", f"{type(error).__name__}: {error}"))


def _library_info(implementation):
    info = {"python": platform.python_version(), "numpy": np.__version__}
    try:
        from threadpoolctl import threadpool_info

        if implementation == "lstmkit":
            import lstmkit  # noqa: F401 (loads numba and NumPy's BLAS, which lstmkit calls)
        info["threadpools"] = [{k: pool.get(k) for k in ("internal_api", "prefix", "architecture",
                                                         "num_threads", "version")}
                               for pool in threadpool_info()]
    except ImportError:
        pass
    if implementation == "lstmkit":
        import numba
        import scipy

        info.update(numba=numba.__version__, scipy=scipy.__version__,
                    numba_threading_layer=numba.config.THREADING_LAYER)
    if implementation == "torch":
        try:
            import torch

            info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
        except ImportError:
            info["torch"] = None
    return info


class Workers:
    """One worker process per implementation, each with every thread pool at 2 threads."""

    def __init__(self, implementations=IMPLEMENTATIONS):
        context = multiprocessing.get_context("spawn")
        saved = dict(os.environ)
        os.environ.update(thread_environment())
        try:
            self.pipes = {}
            self.processes = []
            for implementation in implementations:
                parent, child = context.Pipe()
                process = context.Process(target=_worker, args=(child, implementation), daemon=True)
                process.start()
                self.pipes[implementation] = parent
                self.processes.append(process)
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def ask(self, implementation, *request):
        pipe = self.pipes[implementation]
        pipe.send(request)
        status, reply = pipe.recv()
        if status != "ok":
            raise RuntimeError(f"{implementation} worker: {reply}")
        return reply

    def close(self):
        for pipe in self.pipes.values():
            pipe.send(None)
        for process in self.processes:
            process.join(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run(sizes=SIZES, cells=CELLS, dtypes=DTYPES, modes=MODES, implementations=IMPLEMENTATIONS,
        rounds=3, repeats=3, min_seconds=0.2, progress=print, after_round=None):
    """Time every case in worker processes; returns the results as a JSON-ready dict.

    ``after_round(results)`` is called with the results so far after each round.
    """
    results = {"sizes": [list(s) for s in sizes], "rounds": 0, "repeats": repeats,
               "threads": THREADS, "rows": [], "gemm": {}}
    with Workers(implementations) as workers:
        results["info"] = {impl: workers.ask(impl, "info") for impl in implementations}
        for dtype in dtypes:
            rates = {"numpy": workers.ask("lstmkit", "gemm", dtype, "numpy"),
                     "numba": workers.ask("lstmkit", "gemm", dtype, "numba")}
            if "torch" in implementations:
                rates["torch"] = workers.ask("torch", "gemm", dtype, "torch")
            rates = {k: v for k, v in rates.items() if v is not None}
            results["gemm"][dtype] = {"rates": rates, "best": max(rates.values())}
        cases = [(c, d, tuple(s), m) for c in cells for d in dtypes for s in sizes for m in modes]
        samples = {case: {impl: [] for impl in implementations} for case in cases}
        near = {case: [] for case in cases}
        for round_index in range(rounds):
            for case in cases:
                order = implementations[round_index % len(implementations):] + \
                    implementations[:round_index % len(implementations)]
                for impl in order:
                    times = workers.ask(impl, "time", *case, repeats, min_seconds)
                    samples[case][impl].append(None if times is None else float(np.median(times)))
                    if impl == "lstmkit":  # the GEMM rate right after, under the same load
                        near[case].append(max(workers.ask("lstmkit", "gemm", case[1], which)
                                              for which in ("numpy", "numba")))
            results["rounds"] = round_index + 1
            results["rows"] = _rows(cases, samples, near, implementations)
            if progress:
                progress(f"round {round_index + 1}/{rounds} done")
            if after_round:
                after_round(results)
    return results


def _rows(cases, samples, near, implementations):
    rows = []
    for case in cases:
        cell, dtype, size, mode = case
        row = {"cell": cell, "dtype": dtype, "size": list(size), "mode": mode, "seconds": {},
               "samples": samples[case], "gemm_rate_next_to_it": near[case]}
        for impl in implementations:
            values = [v for v in samples[case][impl] if v is not None]
            row["seconds"][impl] = float(np.median(values)) if values else None
        ours = row["seconds"].get("lstmkit")
        for impl in implementations:
            if impl != "lstmkit" and ours and row["seconds"].get(impl):
                row[f"{impl}/lstmkit"] = row["seconds"][impl] / ours
        if ours and near[case]:
            rate = flops(cell, size, mode) / ours
            row["lstmkit_gflops"] = rate / 1e9
            row["percent_of_gemm"] = 100.0 * rate / float(np.median(near[case]))
        rows.append(row)
    return rows


def format_table(results):
    """The results as a plain-text table."""
    lines = []
    gemm = results.get("gemm", {})
    for dtype, entry in gemm.items():
        rates = ", ".join(f"{k} {v / 1e9:.0f}" for k, v in entry["rates"].items())
        lines.append(f"{dtype} GEMM rate at the start, GFLOP/s ({THREADS} threads): {rates}")
    header = (f"{'cell':<5} {'dtype':<8} {'T, B, n, d':<18} {'mode':<17} {'lstmkit ms':>11} "
              f"{'numpy ms':>10} {'torch ms':>10} {'torch/lk':>9} {'numpy/lk':>9} {'GFLOP/s':>8} {'%GEMM':>6}")
    lines += ["", header, "-" * len(header)]

    def ms(value):
        return f"{value * 1e3:.3f}" if value is not None else "n/a"

    def ratio(value):
        return f"{value:.2f}" if value is not None else "n/a"

    for row in results["rows"]:
        seconds = row["seconds"]
        size = ", ".join(str(v) for v in row["size"])
        lines.append(
            f"{row['cell']:<5} {row['dtype']:<8} {size:<18} {row['mode']:<17} "
            f"{ms(seconds.get('lstmkit')):>11} {ms(seconds.get('numpy')):>10} {ms(seconds.get('torch')):>10} "
            f"{ratio(row.get('torch/lstmkit')):>9} {ratio(row.get('numpy/lstmkit')):>9} "
            f"{row.get('lstmkit_gflops', float('nan')):>8.1f} {row.get('percent_of_gemm', float('nan')):>6.1f}")
    lines.append("")
    lines.append("forward: lstmkit inference (nothing saved) where available; torch under no_grad; "
                 "NumPy's forward keeps its cache.")
    lines.append("ratios: other time / lstmkit time (above 1: lstmkit is faster); medians over "
                 f"{results.get('rounds')} rounds.")
    for key, label in (("warm_start", "warm start"), ("cold_compile", "cold compile"),
                       ("memory", "memory, LSTM"), ("memory_gru", "memory, GRU")):
        if key in results:
            lines.append(f"{label}: {json.dumps(results[key])}")
    return "\n".join(lines)


# -- start-up, compile time and memory --------------------------------------------------
WARM_START_SCRIPT = """
import time
start = time.perf_counter()
import numpy as np
import lstmkit
layer = lstmkit.LSTM(16, 32, seed=0)
x = np.random.default_rng(0).standard_normal((100, 1, 16)).astype(np.float32)
y, _ = layer(x)
layer.backward(np.ones_like(y))
print(time.perf_counter() - start)
"""

COLD_COMPILE_SCRIPT = """
import sys, time
import numpy as np
import lstmkit
from lstmkit import driver
from lstmkit.cells import BUILTIN_CELLS
from lstmkit.kernels import load
threaded = sys.argv[1] == "threaded"
if threaded:   # the loops on blocks of rows and the products on the driver's threads
    driver.PARALLEL_MIN_WORK = 0
rng = np.random.default_rng(0)
start = time.perf_counter()
for name in BUILTIN_CELLS:
    for dtype in (np.float32, np.float64):
        n_in = 4 if getattr(load(name), "RAW_INPUT", False) else 3   # MUT1, MUT2: input_size == hidden_size
        layer = lstmkit.RecurrentLayer(name, n_in, 4, dtype=dtype, seed=0)
        x = rng.standard_normal((8, 16, n_in) if threaded else (5, 2, n_in)).astype(dtype)
        y, _ = layer(x)
        layer.backward(np.ones_like(y))
print(time.perf_counter() - start)
"""


def _python(script, env=None, cwd=ROOT, args=()):
    environment = dict(os.environ)
    environment.update(thread_environment())
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environment.get("PYTHONPATH")]))
    environment.update(env or {})
    begin = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script, *args], env=environment, cwd=cwd,
                          capture_output=True, text=True, check=True)
    return time.perf_counter() - begin, float(done.stdout.strip().splitlines()[-1])


def warm_start_seconds(repeats=3):
    """A new process: ``import lstmkit`` and one forward+backward of a small LSTM, with
    Numba's cache populated. Returns wall-clock seconds of the whole process (interpreter
    start-up included) and of the in-script part, medians over ``repeats``."""
    _python(WARM_START_SCRIPT)  # populate the cache
    runs = [_python(WARM_START_SCRIPT) for _ in range(repeats)]
    return {"process_s": float(np.median([r[0] for r in runs])),
            "import_and_first_call_s": float(np.median([r[1] for r in runs]))}


def cold_compile_seconds():
    """Compile every built-in cell (forward and backward, float32 and float64) with an
    empty Numba cache, in a new process. Returns seconds of the compile loop: the
    one-thread paths that small layers use, and then, with that cache, the threaded
    paths that large layers add (loops on blocks of rows, products on Numba's threads)."""
    with tempfile.TemporaryDirectory() as cache:
        environment = {"NUMBA_CACHE_DIR": cache}
        _, seconds = _python(COLD_COMPILE_SCRIPT, env=environment, args=("one-thread",))
        _, threaded = _python(COLD_COMPILE_SCRIPT, env=environment, args=("threaded",))
    return {"all_builtin_cells_s": seconds, "threaded_paths_s": threaded}


MEMORY_SCRIPT = """
import json, sys, tracemalloc
import numpy as np
import lstmkit
cell, dtype, size = sys.argv[1], np.dtype(sys.argv[2]), tuple(int(v) for v in sys.argv[3].split(","))
steps, batch, n_in, hidden = size
layer = {"lstm": lstmkit.LSTM, "gru": lstmkit.GRU}[cell](n_in, hidden, dtype=dtype, seed=0)
rng = np.random.default_rng(0)
x = rng.standard_normal((steps, batch, n_in)).astype(dtype)
dy = rng.standard_normal((steps, batch, hidden)).astype(dtype)
# compile (or load) outside the measurement, the threaded products included
from lstmkit import driver
threshold, driver.PARALLEL_MIN_WORK = driver.PARALLEL_MIN_WORK, 0
warm_up, warm_layer = x[:max(1, steps // 4)], type(layer)(n_in, hidden, dtype=dtype, seed=0)
warm_layer(warm_up); warm_layer.backward(np.zeros(warm_up.shape[:2] + (hidden,), dtype))
del warm_layer
driver.PARALLEL_MIN_WORK = threshold


def high_water_mark():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) * 1024 for l in status if l.startswith("VmHWM"))


def resident():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) * 1024 for l in status if l.startswith("VmRSS"))


try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")   # reset the peak resident set size
    rss_available = True
except OSError:
    rss_available = False
rss_before = resident()
tracemalloc.start()
y, _ = layer(x)
tape_bytes = tracemalloc.get_traced_memory()[0]
layer.backward(dy)
peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
params = sum(p.nbytes for p in layer.params.values())
layer(x)  # the tape again, to weigh it: what forward keeps for backward
tape = sum(t.saved.nbytes + sum(h.nbytes for h in t.histories) for t in layer._tape.tapes)
print(json.dumps({"peak_traced_bytes": peak, "after_forward_traced_bytes": tape_bytes,
                  "parameter_bytes": params, "tape_bytes": tape,
                  "peak_rss_increase_bytes": high_water_mark() - rss_before if rss_available else None}))
"""


def saved_activation_bytes(cell, dtype, size):
    """What backpropagation through time must keep from forward, by the cell's kernels:
    the saved values (``SAVED``), the histories of the states backward reads, the layer
    output history (for ``dW_hh``) and the layer input (for ``dW_ih``)."""
    from lstmkit.codegen import load_kernels

    kernels = load_kernels(cell)
    steps, batch, n_in, hidden = size
    itemsize = np.dtype(dtype).itemsize
    states = set(kernels.BACKWARD_READS_STATES) | {kernels.OUTPUT}
    per_step = len(kernels.SAVED) * hidden + len(states) * hidden
    return itemsize * (steps * batch * per_step + len(states) * batch * hidden + steps * batch * n_in)


def peak_memory(cell="lstm", dtype="float32", size=SIZES[-1]):
    """Peak memory of one forward+backward, against saved activations + parameters.

    Measured in a new process: NumPy's allocations with tracemalloc (from just
    before forward to the end of backward; the input and parameters already
    exist), and the rise of the peak resident set size (everything, Numba's
    own allocations included). The peak (plus the parameters) is compared with
    two references: the tape, i.e. every array forward keeps for backward,
    plus the parameters (``peak_over_tape_and_parameters``); and
    ``saved_activation_bytes`` (the least backward reads) plus the parameters
    (``peak_over_reference``).
    """
    environment = dict(os.environ)
    environment.update(thread_environment())
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environment.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, cell, dtype, ",".join(map(str, size))],
                          env=environment, cwd=ROOT, capture_output=True, text=True, check=True)
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    saved = saved_activation_bytes(cell, dtype, size)
    reference = saved + measured["parameter_bytes"]
    measured.update(saved_activation_bytes=saved, reference_bytes=reference, cell=cell, dtype=dtype,
                    size=list(size))
    # parameters exist before the measurement starts; count them in the peak
    peak = measured["peak_traced_bytes"] + measured["parameter_bytes"]
    measured["peak_over_reference"] = peak / reference
    measured["peak_over_tape_and_parameters"] = peak / (measured["tape_bytes"] + measured["parameter_bytes"])
    if measured["peak_rss_increase_bytes"] is not None:
        measured["rss_peak_over_reference"] = (measured["peak_rss_increase_bytes"]
                                               + measured["parameter_bytes"]) / reference
    return measured


AB_SCRIPT = """
import json, sys, time
import numpy as np
import lstmkit
cell, dtype, repeats, min_seconds = sys.argv[1], np.dtype(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
result = {"lstmkit": lstmkit.__file__}
for size in sys.argv[5:]:
    steps, batch, n_in, hidden = (int(v) for v in size.split(","))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((steps, batch, n_in)).astype(dtype)
    dy = rng.standard_normal((steps, batch, hidden)).astype(dtype)
    layer = {"lstm": lstmkit.LSTM, "gru": lstmkit.GRU}[cell](n_in, hidden, dtype=dtype, seed=0)
    def forward_backward():
        layer(x)
        layer.backward(dy)
    forward_backward()
    times, start = [], time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        begin = time.perf_counter()
        forward_backward()
        times.append(time.perf_counter() - begin)
    result[size] = float(np.median(times))
print(json.dumps(result))
"""


def compare_trees(tree_a, tree_b, sizes, cell="lstm", dtype="float32", rounds=10, repeats=20, min_seconds=0.3):
    """Interleaved A/B of forward+backward between two source trees (e.g. a ``git worktree`` of an
    older commit and this checkout): each round runs one fresh process per tree, in alternating
    order, and times every size. Returns per size the medians over rounds and their ratio B/A."""
    environment = dict(os.environ)
    environment.update(thread_environment())
    samples = {tree: {size: [] for size in sizes} for tree in (tree_a, tree_b)}
    names = [",".join(map(str, size)) for size in sizes]
    for round_index in range(rounds):
        for tree in ((tree_a, tree_b) if round_index % 2 == 0 else (tree_b, tree_a)):
            env = dict(environment, PYTHONPATH=str(tree))
            done = subprocess.run([sys.executable, "-c", AB_SCRIPT, cell, dtype, str(repeats), str(min_seconds),
                                   *names], env=env, cwd=tree, capture_output=True, text=True, check=True)
            measured = json.loads(done.stdout.strip().splitlines()[-1])
            for size, name in zip(sizes, names):
                samples[tree][size].append(measured[name])
    table = {}
    for size, name in zip(sizes, names):
        a, b = (float(np.median(samples[tree][size])) for tree in (tree_a, tree_b))
        table[name] = {"a_median_s": a, "b_median_s": b, "ratio_b_over_a": b / a,
                       "ratios_per_round": [y / x for x, y in zip(samples[tree_a][size], samples[tree_b][size])]}
    return table


# -- command line ---------------------------------------------------------------------
def _environment_notes():
    notes = {name: os.environ.get(name) for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    try:
        notes["cpu"] = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                             if line.startswith("model name")), platform.processor())
    except OSError:
        notes["cpu"] = platform.processor()
    notes["cores"] = os.cpu_count()
    try:
        notes["load_average_at_start"] = os.getloadavg()
    except OSError:
        pass
    return notes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one round, few repeats")
    parser.add_argument("--name", default="latest", help="write benchmarks/results/<name>.json")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--sizes", nargs="+", default=None, metavar="T,B,n,d",
                        help="sizes to time instead of the defaults, e.g. 100,1,16,32")
    parser.add_argument("--no-extras", action="store_true",
                        help="skip warm start, cold compile and peak memory")
    parser.add_argument("--against", metavar="TREE", default=None,
                        help="only an interleaved A/B of forward+backward: TREE (another checkout, "
                             "e.g. `git worktree add /tmp/base <commit>`) as A, this one as B")
    args = parser.parse_args(argv)
    if args.against:
        sizes = [tuple(int(v) for v in size.split(",")) for size in args.sizes] if args.sizes else SIZES[:2]
        table = compare_trees(Path(args.against).resolve(), ROOT, sizes, cell=args.cells[0],
                              dtype=args.dtypes[0], rounds=args.rounds or 10, repeats=args.repeats or 20)
        print(json.dumps(table, indent=1))
        return 0
    sizes = QUICK_SIZES if args.quick else SIZES
    if args.sizes:
        sizes = [tuple(int(v) for v in size.split(",")) for size in args.sizes]
    rounds = args.rounds or (1 if args.quick else 3)
    repeats = args.repeats or (2 if args.quick else 3)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    environment = _environment_notes()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{args.name}.json"

    def save(results):
        results.update(started=started, environment=environment)
        path.write_text(json.dumps(results, indent=1) + "\n")

    results = run(sizes, args.cells, args.dtypes, rounds=rounds, repeats=repeats,
                  min_seconds=0.05 if args.quick else 0.2, after_round=save)
    if not args.no_extras:
        results["warm_start"] = warm_start_seconds()
        results["cold_compile"] = cold_compile_seconds()
        results["memory"] = peak_memory("lstm", size=sizes[-1])
        results["memory_gru"] = peak_memory("gru", size=sizes[-1])
    save(results)
    print(format_table(results))
    print(f"\nwrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
