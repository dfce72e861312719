"""One step with a cell (``lstmkit.LSTMCell``, ``GRUCell``) against a layer call of length 1.

    python benchmarks/cell_step.py            # writes benchmarks/results/cell_step.json

A cell is what a user reaches for to run a model one step at a time (a decoder, a sampler).
The alternative is a layer called on a sequence of one step. Timed here: forward then
backward of one step, batch 1 and 16, d = n = 32 and 128, float32 and float64, the two ways
interleaved round by round (so that load elsewhere on the machine falls on both alike). Each
sample is the median of 200 calls; the table shows the median of 15 rounds and the ratio
layer / cell (above 1: the cell is faster).
"""
from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import lstmkit  # noqa: E402

CALLS, ROUNDS = 200, 15


def _sample(call):
    times = []
    for _ in range(CALLS):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def case(kind, batch, size, dtype):
    rng = np.random.default_rng(0)
    layer_class, cell_class = {"lstm": (lstmkit.LSTM, lstmkit.LSTMCell), "gru": (lstmkit.GRU, lstmkit.GRUCell)}[kind]
    layer = layer_class(size, size, dtype=dtype, seed=0)
    cell = cell_class(size, size, dtype=dtype, seed=0)
    x = rng.standard_normal((1, batch, size)).astype(dtype)
    dy = np.ones((1, batch, size), dtype)

    def layer_step():
        y, _ = layer(x)
        layer.backward(dy)

    if kind == "lstm":
        d_state = (dy[0], None)

        def cell_step():
            cell(x[0])
            cell.backward(d_state)
    else:
        def cell_step():
            cell(x[0])
            cell.backward(dy[0])

    layer_step(), cell_step()           # compile, warm up
    layers, cells = [], []
    for _ in range(ROUNDS):
        layers.append(_sample(layer_step))
        cells.append(_sample(cell_step))
    return {"cell": kind, "batch": batch, "size": size, "dtype": np.dtype(dtype).name,
            "layer_us": statistics.median(layers) * 1e6, "cell_us": statistics.median(cells) * 1e6,
            "ratio": statistics.median(layers) / statistics.median(cells)}


def main():
    from threadpoolctl import threadpool_limits

    rows = []
    with threadpool_limits(1):
        for kind in ("lstm", "gru"):
            for dtype in (np.float32, np.float64):
                for batch in (1, 16):
                    for size in (32, 128):
                        row = case(kind, batch, size, dtype)
                        rows.append(row)
                        print(f"{row['cell']:4} {row['dtype']:7} B={batch:<3} d=n={size:<4} layer(T=1) "
                              f"{row['layer_us']:7.1f} µs   cell {row['cell_us']:7.1f} µs   "
                              f"layer/cell {row['ratio']:.2f}", flush=True)
    out = ROOT / "benchmarks" / "results" / "cell_step.json"
    out.write_text(json.dumps({"machine": platform.platform(), "processor": platform.processor(),
                               "calls": CALLS, "rounds": ROUNDS, "rows": rows}, indent=1) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
