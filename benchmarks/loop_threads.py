"""The loop over time on blocks of rows, or on the calling thread: where threads pay.

    python benchmarks/loop_threads.py                         # writes results/loop_threads.json
    python benchmarks/loop_threads.py --sizes 50,64,2,32 --rounds 4

One forward+backward of an LSTM layer (float32, as ``bench.py`` builds it), with the
loop over time forced onto 2 blocks of rows (``driver.LOOP_PARALLEL_MIN_WORK = 0``)
or onto the calling thread (``10**12``), alternately, round by round, so that load from
elsewhere on the machine falls on both alike. The products after backward's loop are
left as the driver decides (all the default sizes are below ``PARALLEL_MIN_WORK``). A
ratio below 1 means the threads pay. ``work`` is the driver's measure,
T · B · G·d · d multiply-adds in the recurrent products.
"""
import argparse
import json
import os
from pathlib import Path

for _name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):   # as the chapters run
    os.environ.setdefault(_name, "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "2")

import numba  # noqa: E402
import numpy as np  # noqa: E402
from bench import build, time_function  # noqa: E402

from lstmkit import driver  # noqa: E402

SIZES = [(100, 8, 16, 32), (50, 16, 2, 32), (50, 32, 8, 32), (50, 64, 2, 32), (100, 16, 16, 64),
         (50, 32, 2, 64)]
RESULTS = Path(__file__).resolve().parent / "results"


def compare(size, rounds, min_seconds=0.3):
    forward_backward = build("lstmkit", "lstm", "float32", size)["forward+backward"]
    seconds = {"one block": [], "two blocks": []}
    for _ in range(rounds):
        for name, min_work in (("one block", 10**12), ("two blocks", 0)):
            driver.LOOP_PARALLEL_MIN_WORK = min_work
            forward_backward()             # a new plan for the new threshold
            seconds[name].append(float(np.median(time_function(forward_backward, repeats=5, min_seconds=min_seconds))))
    ratios = [two / one for one, two in zip(seconds["one block"], seconds["two blocks"])]
    steps, batch, _, hidden = size
    return {"size": list(size), "work": steps * batch * 4 * hidden * hidden, "seconds": seconds,
            "median_seconds": {name: float(np.median(values)) for name, values in seconds.items()},
            "ratios_two_over_one": ratios, "median_ratio": float(np.median(ratios))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=None, help="T,B,n,d ...")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--json", default=str(RESULTS / "loop_threads.json"))
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split(",")) for s in args.sizes] if args.sizes else SIZES
    numba.set_num_threads(2)
    rows = []
    print(f"{'T, B, n, d':<18} {'work':>7} {'1 block ms':>11} {'2 blocks ms':>12} {'2/1':>6}")
    for size in sizes:
        row = compare(size, args.rounds)
        rows.append(row)
        print(f"{', '.join(map(str, size)):<18} {row['work'] / 1e6:>6.1f}M "
              f"{row['median_seconds']['one block'] * 1e3:>11.3f} {row['median_seconds']['two blocks'] * 1e3:>12.3f} "
              f"{row['median_ratio']:>6.2f}")
    with open(args.json, "w") as out:
        json.dump({"benchmark": "LSTM float32 forward+backward, loop over time on 2 blocks / 1",
                   "rounds": args.rounds, "cpu_count": os.cpu_count(), "rows": rows}, out, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
