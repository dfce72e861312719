"""How much of a small layer's forward+backward is Python, not arithmetic.

Times one ``layer(x)`` + ``layer.backward(dy)`` call as a whole, and inside it
every call into compiled code (the generated loops over time, weight packing and
the products and sums after backward's loop), by wrapping each of them with
``time.perf_counter``. Python's share is the whole minus the compiled calls
(medians over many calls; the wrappers' own cost, well under a µs per call,
counts as Python). Then cProfile lists the Python functions by their own time.

    python benchmarks/python_overhead.py                       # LSTM (100, 1, 16, 32) float32
    python benchmarks/python_overhead.py --cell gru --size 100 1 16 32 --calls 3000
"""
import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import lstmkit  # noqa: E402
from lstmkit import driver, kernel_runtime  # noqa: E402


def measure(cell="lstm", size=(100, 1, 16, 32), dtype="float32", calls=2000):
    steps, batch, n_in, hidden = size
    dtype = np.dtype(dtype)
    layer = lstmkit.RecurrentLayer(cell, n_in, hidden, dtype=dtype, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((steps, batch, n_in)).astype(dtype)
    dy = rng.standard_normal((steps, batch, hidden)).astype(dtype)
    compiled = [0.0]

    def timed(function):
        def call(*args, **kwargs):
            begin = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                compiled[0] += time.perf_counter() - begin
        return call

    kernels = layer.kernels
    originals = {}
    targets = [(kernels, name) for name in ("forward_rows", "backward_rows", "hidden_gradient_rows")
               if hasattr(kernels, name)]
    # the packing kernel: _pack_into where the workspace packs into its own panels, else pack itself
    packing = ["_pack_into"] if hasattr(driver.Workspace, "packed") else ["pack", "pack_transposed"]
    targets += [(kernel_runtime, name) for name in packing]
    targets += [(driver, "_weight_gradients"), (driver, "_add_sum"), (driver, "column_sums")]
    for owner, name in targets:
        originals[owner, name] = getattr(owner, name)
        setattr(owner, name, timed(originals[owner, name]))

    def forward_backward():
        y, _ = layer(x)
        layer.backward(dy)

    for _ in range(50):
        forward_backward()
    totals, inside = [], []
    for _ in range(calls):
        compiled[0] = 0.0
        begin = time.perf_counter()
        forward_backward()
        totals.append(time.perf_counter() - begin)
        inside.append(compiled[0])
    for (owner, name), function in originals.items():
        setattr(owner, name, function)
    python = [t - c for t, c in zip(totals, inside)]
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls // 4):
        forward_backward()
    profiler.disable()
    return {"total_us": 1e6 * float(np.median(totals)), "compiled_us": 1e6 * float(np.median(inside)),
            "python_us": 1e6 * float(np.median(python)),
            "python_quartiles_us": [1e6 * float(q) for q in np.percentile(python, [25, 75])]}, profiler


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--size", nargs=4, type=int, default=[100, 1, 16, 32], metavar=("T", "B", "n", "d"))
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--top", type=int, default=15, help="cProfile's lines to print")
    parser.add_argument("--json", metavar="PATH", help="also write the result and cProfile's top lines to PATH")
    args = parser.parse_args(argv)
    result, profiler = measure(args.cell, tuple(args.size), args.dtype, args.calls)
    if args.json:
        stats = pstats.Stats(profiler)
        calls = max(1, args.calls // 4)
        top = sorted(stats.stats.items(), key=lambda item: -item[1][2])[:max(args.top, 15)]
        result.update(cell=args.cell, dtype=args.dtype, size=list(args.size), calls=args.calls,
                      profile_own_us_per_call={f"{Path(file).name}:{line}({name})": 1e6 * own / calls
                                               for (file, line, name), (_, _, own, _, _) in top})
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"{args.cell} {args.dtype} {tuple(args.size)}, median of {args.calls} forward+backward calls: "
          f"{result['total_us']:.1f} µs, of which compiled code {result['compiled_us']:.1f} µs and "
          f"Python {result['python_us']:.1f} µs (quartiles {result['python_quartiles_us'][0]:.1f}"
          f"–{result['python_quartiles_us'][1]:.1f})")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
