"""Where the first run's time goes: every Numba compilation, by function and signature.

Runs in a new process on an empty Numba cache (a temporary NUMBA_CACHE_DIR) and
records Numba's ``numba:compile`` events: for each dispatcher and argument types,
the time of its compilation including the functions it compiles inside
(``inclusive``) and without them (``own``). Loading from a populated cache raises
no such event. Three stages, in one process, each after the one before:

* ``first_call``: ``import lstmkit`` and one forward+backward of ``LSTM(16, 32)``
  in float32 at (T, B) = (100, 1): what a learner's first cell waits for;
* ``one_thread``: every other built-in cell and float64, the paths small layers take;
* ``threaded``: the loops on blocks of rows and the products on Numba's threads
  (``driver.PARALLEL_MIN_WORK = 0``).

Then, on another empty cache, ``python -m lstmkit compile`` (every cell and path, one
process per core): the wall time of the whole command, imports included.

    python benchmarks/compile_time.py                 # prints a table
    python benchmarks/compile_time.py --json out.json
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import json, sys, time
from collections import defaultdict
start = time.perf_counter()
import numba.core.event as event

class Compiles(event.Listener):
    # inclusive and own seconds per (function, signature); own excludes nested compiles
    def __init__(self):
        self.stack, self.records = [], []
    def on_start(self, ev):
        self.stack.append([ev, time.perf_counter(), 0.0])
    def on_end(self, ev):
        started_event, began, nested = self.stack.pop()
        inclusive = time.perf_counter() - began
        if self.stack:
            self.stack[-1][2] += inclusive
        dispatcher = ev.data["dispatcher"]
        name = f"{dispatcher.py_func.__module__}.{dispatcher.py_func.__qualname__}"
        args = ", ".join(str(a) for a in ev.data["args"])
        self.records.append({"stage": STAGE, "function": name, "args": args,
                             "inclusive_s": inclusive, "own_s": inclusive - nested, "depth": len(self.stack)})

listener = Compiles()
event.register("numba:compile", listener)
STAGE = "import"
import numpy as np
import lstmkit
from lstmkit.cells import BUILTIN_CELLS
from lstmkit.precompile import run_layers
stages = {"import_s": time.perf_counter() - start}

STAGE = "first_call"
begin = time.perf_counter()
layer = lstmkit.LSTM(16, 32, seed=0)
x = np.random.default_rng(0).standard_normal((100, 1, 16)).astype(np.float32)
y, _ = layer(x)
layer.backward(np.ones_like(y))
stages["first_call_s"] = time.perf_counter() - begin

for STAGE, threaded in (("one_thread", False), ("threaded", True)):
    begin = time.perf_counter()
    for name in BUILTIN_CELLS:
        run_layers(name, threaded)     # what python -m lstmkit compile runs, cell by cell
    stages[STAGE + "_s"] = time.perf_counter() - begin
print(json.dumps({"stages": stages, "compiles": listener.records}))
"""


def measure():
    """Run the stages in a new process on an empty Numba cache; returns its JSON."""
    with tempfile.TemporaryDirectory() as cache:
        environment = dict(os.environ, NUMBA_CACHE_DIR=cache,
                           PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        done = subprocess.run([sys.executable, "-c", SCRIPT], env=environment, cwd=ROOT,
                              capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_command(jobs=None):
    """Wall seconds of ``python -m lstmkit compile`` on an empty Numba cache."""
    sys.path.insert(0, str(ROOT))
    from lstmkit.precompile import default_jobs

    jobs = default_jobs() if jobs is None else jobs
    with tempfile.TemporaryDirectory() as cache:
        environment = dict(os.environ, NUMBA_CACHE_DIR=cache,
                           PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        begin = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "lstmkit", "compile", "--jobs", str(jobs)], env=environment,
                              cwd=ROOT, capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - begin
    return {"jobs": jobs, "wall_s": seconds, "report": done.stdout.strip()}


def summary(result):
    """Lines: the stages, then own compile seconds by stage and by function (all signatures)."""
    lines = ["stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result["stages"].items())]
    if "compile_command" in result:
        command = result["compile_command"]
        lines.append(f"python -m lstmkit compile --jobs {command['jobs']}: {command['wall_s']:.1f} s "
                     f"({command['report']})")
    by_function = {}
    for record in result["compiles"]:
        key = (record["stage"], record["function"].replace("lstmkit.", ""))
        count, own = by_function.get(key, (0, 0.0))
        by_function[key] = (count + 1, own + record["own_s"])
    for stage in ("import", "first_call", "one_thread", "threaded"):
        rows = sorted(((own, count, function) for (s, function), (count, own) in by_function.items()
                       if s == stage), reverse=True)
        if not rows:
            continue
        total = sum(own for own, _, _ in rows)
        lines.append(f"\n{stage}: {sum(c for _, c, _ in rows)} compilations, {total:.1f} s own time")
        for own, count, function in rows:
            lines.append(f"  {own:7.2f} s  {count:3d} × {function}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write every compilation to PATH")
    parser.add_argument("--jobs", type=int, default=None, help="processes of the compile command (default: cores)")
    parser.add_argument("--no-command", action="store_true", help="skip the compile command's run")
    args = parser.parse_args(argv)
    result = measure()
    if not args.no_command:
        result["compile_command"] = measure_command(args.jobs)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
