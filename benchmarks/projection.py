"""The LSTM with a projection (``LSTM(..., proj_size=p)``) against torch's, and against
lstmkit's LSTM without one.

    python benchmarks/projection.py           # writes benchmarks/results/projection.json

The projected layer runs its loop over time in Python around the generated step kernels
(``lstmkit/projection.py``); the plain LSTM runs the compiled loop. Timed: forward+backward,
float32, p = d/4 at three course sizes, the three calls interleaved round by round (so that
load elsewhere on the machine falls on all alike). Each sample is the median of a few calls;
the table shows the median of the rounds and the ratios torch/lstmkit (above 1: lstmkit is
faster).
"""
from __future__ import annotations

import json
import platform
import statistics
import sys
import timeit
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import lstmkit  # noqa: E402

SIZES = [(100, 1, 16, 32), (100, 32, 32, 128), (50, 64, 128, 256)]   # (T, B, n, d)
CALLS, ROUNDS = 5, 9


def _sample(call):
    return statistics.median(timeit.repeat(call, number=1, repeat=CALLS))


def case(steps, batch, n, d):
    import torch

    p = d // 4
    rng = np.random.default_rng(0)
    x = rng.standard_normal((steps, batch, n)).astype(np.float32)
    projected = lstmkit.LSTM(n, d, proj_size=p, seed=0)
    plain = lstmkit.LSTM(n, d, seed=0)
    reference = torch.nn.LSTM(n, d, proj_size=p)
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in projected.params.items()})
    x_t = torch.from_numpy(x).requires_grad_()
    dy_p, dy = np.ones((steps, batch, p), np.float32), np.ones((steps, batch, d), np.float32)
    dy_t = torch.from_numpy(dy_p)

    def ours():
        projected(x)
        projected.backward(dy_p)

    def unprojected():
        plain(x)
        plain.backward(dy)

    def theirs():
        reference.zero_grad()
        y, _ = reference(x_t)
        y.backward(dy_t)

    samples = {"lstmkit_proj": [], "lstmkit_plain": [], "torch_proj": []}
    for call in (ours, unprojected, theirs):
        call()                                            # compile, warm up
    for _ in range(ROUNDS):
        for name, call in zip(samples, (ours, unprojected, theirs)):
            samples[name].append(_sample(call))
    medians = {name: statistics.median(values) * 1e3 for name, values in samples.items()}
    return {"size": [steps, batch, n, d], "proj_size": p, **{f"{k}_ms": v for k, v in medians.items()},
            "torch_over_lstmkit_proj": medians["torch_proj"] / medians["lstmkit_proj"],
            "proj_over_plain": medians["lstmkit_proj"] / medians["lstmkit_plain"]}


def main():
    import torch
    from threadpoolctl import threadpool_limits

    warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
    torch.set_num_threads(2)
    rows = []
    with threadpool_limits(2):
        for size in SIZES:
            row = case(*size)
            rows.append(row)
            print(f"(T, B, n, d) = {tuple(size)}  p = {row['proj_size']:<3} lstmkit proj {row['lstmkit_proj_ms']:7.2f} ms"
                  f"   torch proj {row['torch_proj_ms']:7.2f} ms   lstmkit plain {row['lstmkit_plain_ms']:7.2f} ms"
                  f"   torch/lstmkit {row['torch_over_lstmkit_proj']:.2f}   proj/plain {row['proj_over_plain']:.2f}",
                  flush=True)
    out = ROOT / "benchmarks" / "results" / "projection.json"
    out.write_text(json.dumps({"machine": platform.platform(), "processor": platform.processor(),
                               "torch": torch.__version__, "calls": CALLS, "rounds": ROUNDS, "rows": rows},
                              indent=1) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
