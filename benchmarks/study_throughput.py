"""Trials per hour of ``lstmkit study``: one process against an embedded LocalCluster.

The same small study (task, size, variants, trials, seed) runs with
``scheduler="inline"`` (the driver trains every trial itself, no Dask) and with
``scheduler="local"`` (a LocalCluster of one worker process per core), A/B
interleaved ``--repeats`` times, each run in a fresh storage. Wall time counts
everything a user waits for, the cluster's start included. Writes a JSON to
``benchmarks/results/study_throughput.json`` and prints a table.

    python benchmarks/study_throughput.py --task jsb --size tiny --trials-per-variant 4 --repeats 2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from lstmkit import study


def one_run(scheduler, args, workers):
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        result = study.run_study(args.task, Path(scratch) / "study.log", trials_per_variant=args.trials_per_variant,
                                 variants=args.variants.split(","), size=args.size, seed=args.seed,
                                 scheduler=scheduler, workers=workers, progress=False)
        wall = time.perf_counter() - started
        trials = len(study.study_records(result))
    return {"scheduler": scheduler, "trials": trials, "wall_seconds": round(wall, 2),
            "trials_per_hour": round(trials * 3600 / wall, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="jsb")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--variants", default="V,NP,GRU")
    parser.add_argument("--trials-per-variant", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "study_throughput.json"))
    args = parser.parse_args()
    study.precompile(args.variants.split(","))
    runs = []
    for repeat in range(args.repeats):
        for scheduler in ("inline", "local"):
            run = one_run(scheduler, args, args.workers)
            run["repeat"] = repeat
            runs.append(run)
            print(run, flush=True)
    summary = {s: statistics.median(r["trials_per_hour"] for r in runs if r["scheduler"] == s)
               for s in ("inline", "local")}
    document = {"command": "python benchmarks/study_throughput.py " + " ".join(
                    f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
                "cores": os.cpu_count(), "workers": args.workers, "runs": runs,
                "median_trials_per_hour": summary,
                "local_over_inline": round(summary["local"] / summary["inline"], 2)}
    Path(args.out).write_text(json.dumps(document, indent=1) + "\n")
    print(f"median trials/hour: inline {summary['inline']}, LocalCluster({args.workers}) {summary['local']}, "
          f"ratio {document['local_over_inline']}")


if __name__ == "__main__":
    main()
