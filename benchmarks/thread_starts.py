"""What a start of the driver's threads costs: spinning workers against a sleeping pool.

    python benchmarks/thread_starts.py                 # writes results/thread_starts.json
    python benchmarks/thread_starts.py --rounds 4 --sizes 50,64,2,32

Two measurements, each with ``lstmkit.threads.on_threads`` (workers that spin between tasks)
and with its fallback, a ``concurrent.futures`` pool whose threads sleep between tasks:

* one start alone: two calls of a kernel that does nothing, one per thread, with 0, 200 or
  2000 µs of Python busy between starts (a worker spins about a millisecond, then sleeps);
* forward+backward of an LSTM layer, float32 (as ``bench.py`` builds it), at sizes whose
  loop runs on 2 blocks of rows, the two ways alternately, round by round, in one process.
"""
import argparse
import json
import os
import time
from pathlib import Path

for _name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):   # as the chapters run
    os.environ.setdefault(_name, "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "2")

import numba  # noqa: E402
import numpy as np  # noqa: E402
from bench import build, time_function  # noqa: E402

from lstmkit import driver, threads  # noqa: E402

WAYS = {"spinning workers": threads.on_threads, "concurrent.futures pool": threads._on_pool}
SIZES = [(50, 64, 2, 32), (100, 32, 32, 128), (100, 64, 128, 256)]
RESULTS = Path(__file__).resolve().parent / "results"


@numba.njit(nogil=True)
def _nothing(out, lo, hi):
    out[lo] += 1.0


def _busy(seconds):
    begin = time.perf_counter()
    while time.perf_counter() - begin < seconds:
        pass


def start_seconds(run, gap_seconds, starts):
    """Median seconds of one start, with ``gap_seconds`` of Python before each."""
    out = np.zeros(4)
    calls = [(out, 0, 1), (out, 2, 3)]
    run(_nothing, calls)
    times = []
    for _ in range(starts):
        _busy(gap_seconds)
        begin = time.perf_counter()
        run(_nothing, calls)
        times.append(time.perf_counter() - begin)
    return float(np.median(times))


def layer_seconds(size, rounds):
    forward_backward = build("lstmkit", "lstm", "float32", size)["forward+backward"]
    seconds = {name: [] for name in WAYS}
    try:
        for round_index in range(rounds):
            for name in (list(WAYS) if round_index % 2 == 0 else list(WAYS)[::-1]):
                driver._on_threads = WAYS[name]
                seconds[name].append(float(np.median(time_function(forward_backward, repeats=5, min_seconds=0.3))))
    finally:
        driver._on_threads = threads.on_threads
    spin, pool = seconds["spinning workers"], seconds["concurrent.futures pool"]
    ratios = [a / b for a, b in zip(spin, pool)]
    return {"size": list(size), "seconds": seconds, "ratios_spinning_over_pool": ratios,
            "median_ratio": float(np.median(ratios))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=None, help="T,B,n,d ...")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", default=str(RESULTS / "thread_starts.json"))
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split(",")) for s in args.sizes] if args.sizes else SIZES
    numba.set_num_threads(2)
    starts = []
    for gap_us in (0, 200, 2000):
        for name, run in WAYS.items():
            seconds = start_seconds(run, gap_us * 1e-6, 2000 if gap_us < 2000 else 300)
            starts.append({"way": name, "gap_us": gap_us, "seconds": seconds})
            print(f"one start, {name:>24}, {gap_us:>4} µs of Python between: {seconds * 1e6:6.1f} µs")
    layers = []
    for size in sizes:
        row = layer_seconds(size, args.rounds)
        layers.append(row)
        print(f"LSTM float32 forward+backward {size}: spinning / pool {row['median_ratio']:.3f} "
              f"(rounds: {', '.join(f'{r:.2f}' for r in row['ratios_spinning_over_pool'])})")
    with open(args.json, "w") as out:
        json.dump({"benchmark": "starts of the driver's threads: lstmkit.threads against a concurrent.futures pool",
                   "cpu_count": os.cpu_count(), "rounds": args.rounds, "starts": starts, "layers": layers},
                  out, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
