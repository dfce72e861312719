"""Issue 12's benchmark rows: the staged cells must not slow the one-product cells.

* ``before_after``: the LSTM and the GRU, forward+backward, float32, this checkout (B) against
  another source tree (A, e.g. ``git archive <commit> | tar -x -C /tmp/base``), interleaved
  process by process (``bench.compare_trees``);
* ``reset_before_vs_after``: ``GRU(reset_after=False)`` (Cho 2014, a staged cell: the product
  W_hn (r ⊙ h) waits for r inside the step) against ``GRU(reset_after=True)`` (torch's form),
  forward+backward, float32, alternating call by call in one process.

    python benchmarks/staged_cells.py --against /tmp/base --name staged_cells

Writes ``results/<name>.json``; ratios, never absolute times, carry across machines.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import RESULTS, ROOT, _environment_notes, compare_trees  # noqa: E402

sys.path.insert(0, str(ROOT))     # this checkout's lstmkit, for the in-process rows

SIZES = [(100, 1, 16, 32), (100, 32, 32, 128), (50, 64, 128, 256)]


def reset_before_vs_after(sizes, rounds, repeats):
    import numba
    from threadpoolctl import threadpool_limits

    import lstmkit

    table = {}
    numba.set_num_threads(2)
    with threadpool_limits(2):
        for steps, batch, n_in, hidden in sizes:
            rng = np.random.default_rng(0)
            x = rng.standard_normal((steps, batch, n_in)).astype(np.float32)
            dy = rng.standard_normal((steps, batch, hidden)).astype(np.float32)
            layers = {after: lstmkit.GRU(n_in, hidden, reset_after=after, seed=0) for after in (True, False)}
            samples = {True: [], False: []}
            for round_index in range(rounds):
                for after in ((True, False) if round_index % 2 == 0 else (False, True)):
                    layer = layers[after]
                    layer(x)
                    layer.backward(dy)
                    times = []
                    for _ in range(repeats):
                        begin = time.perf_counter()
                        layer(x)
                        layer.backward(dy)
                        times.append(time.perf_counter() - begin)
                    samples[after].append(float(np.median(times)))
            after, before = (float(np.median(samples[k])) for k in (True, False))
            table[f"{steps},{batch},{n_in},{hidden}"] = {
                "reset_after_true_median_s": after, "reset_after_false_median_s": before,
                "ratio_false_over_true": before / after,
                "ratios_per_round": [b / a for a, b in zip(samples[True], samples[False])]}
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", metavar="TREE", required=True, help="the source tree to compare with (A)")
    parser.add_argument("--name", default="staged_cells")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args(argv)
    sizes = SIZES
    results = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "environment": _environment_notes(),
               "sizes": [list(s) for s in sizes], "against": str(args.against)}
    results["reset_before_vs_after"] = reset_before_vs_after(sizes, args.rounds, repeats=5)
    print(json.dumps(results["reset_before_vs_after"], indent=1), flush=True)
    results["before_after"] = {cell: compare_trees(Path(args.against).resolve(), ROOT, sizes, cell=cell,
                                                   rounds=args.rounds, repeats=10, min_seconds=0.2)
                               for cell in ("lstm", "gru")}
    print(json.dumps(results["before_after"], indent=1))
    path = RESULTS / f"{args.name}.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
