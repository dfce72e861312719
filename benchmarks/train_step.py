"""One whole training step of the adding-problem LSTM: lstmkit against PyTorch CPU.

    python benchmarks/train_step.py            # writes benchmarks/results/train_step.json
    python benchmarks/train_step.py --quick    # fewer rounds

The step is what :func:`lstmkit.train.fit` does for every batch, and what a
torch training loop does: forward through a one-layer LSTM (input 2, hidden
32) and a linear head on the last hidden state, mean squared error, backward,
clipping by global norm (1.0), an Adam update. The batch is the adding problem
(T = 50, batch 64, float32), the same arrays every step, so data generation is
not timed.

lstmkit: ``SequenceRegressor`` + ``MSELoss`` + ``clip_grad_norm`` + ``Adam``, backward
with ``input_gradient=False`` as ``fit`` calls it.
torch: ``nn.LSTM`` + ``nn.Linear`` + ``nn.MSELoss`` + ``clip_grad_norm_`` +
``torch.optim.Adam`` with its defaults, ``zero_grad()`` included. Neither computes
the gradient of the data (torch's input does not require one).

Each implementation runs in its own worker process, so one library's idle
threads never spin against the other's; the parent asks the workers in turn,
round by round, so load from elsewhere on the machine falls on both alike. A
round's sample is the median over ``calls`` steps; the table shows the
median over rounds. A ratio above 1 means lstmkit is faster.

Four configurations are measured (``--configs`` picks some):

* ``all-2``: BLAS, OpenMP, Numba and torch all told 2 threads;
* ``torch-2/lstmkit-1``: torch on 2 threads (``torch.set_num_threads(2)``),
  lstmkit on one BLAS and one Numba thread;
* ``all-1``: everyone on one thread;
* ``all-1/malloc``: the same, with glibc told to keep freed memory
  (``MALLOC_TRIM_THRESHOLD_`` etc., for both workers).

They differ for lstmkit no more than the noise: a layer reuses its buffers from
step to step (no page faults for fresh memory, which the malloc setting once
hid) and never runs its products on BLAS's own threads (which once made
``all-2`` twice as slow). They stay to show it.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
THREADS = 2
STEPS, BATCH, INPUT, HIDDEN = 50, 64, 2, 32
PHASES = ("step", "forward+loss", "backward", "clip+adam")


def _limit_threads(threads=THREADS, numba_threads=THREADS):
    # set here, not imported from bench.py, which imports NumPy (its BLAS reads them on load)
    for variable in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ[variable] = str(threads)
    os.environ["NUMBA_NUM_THREADS"] = str(numba_threads)


def _lstmkit_worker():
    sys.path.insert(0, str(ROOT))
    from lstmkit import tasks
    from lstmkit.models import SequenceRegressor
    from lstmkit.nn import MSELoss
    from lstmkit.optim import Adam, clip_grad_norm

    batch = tasks.adding_problem(BATCH, STEPS, seed=0)
    model = SequenceRegressor("lstm", INPUT, HIDDEN, seed=0)
    optimizer, loss = Adam(model.params, lr=1e-3), MSELoss()

    def forward():
        return loss.forward(model.forward(batch["inputs"]), batch["targets"])

    def backward():
        model.backward(loss.backward(), input_gradient=False)

    def update():
        clip_grad_norm(model.grads, 1.0)
        optimizer.step(model.grads)

    def step():
        forward()
        backward()
        update()

    return {"step": step, "phases": (forward, backward, update)}


def _torch_worker():
    import numpy as np
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    sys.path.insert(0, str(ROOT))
    from lstmkit import tasks

    data = tasks.adding_problem(BATCH, STEPS, seed=0)
    x = torch.from_numpy(np.ascontiguousarray(data["inputs"].transpose(1, 0, 2)))   # [T, B, n]
    target = torch.from_numpy(data["targets"])
    torch.manual_seed(0)
    lstm, head = torch.nn.LSTM(INPUT, HIDDEN), torch.nn.Linear(HIDDEN, 1)
    params = list(lstm.parameters()) + list(head.parameters())
    optimizer, loss_fn = torch.optim.Adam(params, lr=1e-3), torch.nn.MSELoss()
    state = {}

    def forward():
        optimizer.zero_grad()
        _, (h_n, _) = lstm(x)
        state["loss"] = loss_fn(head(h_n[-1]), target)

    def backward():
        state["loss"].backward()

    def update():
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    def step():
        forward()
        backward()
        update()

    return {"step": step, "phases": (forward, backward, update)}


def _serve(name, connection, threads, numba_threads):
    _limit_threads(threads, numba_threads)
    import numpy as np

    bench = {"lstmkit": _lstmkit_worker, "torch": _torch_worker}[name]()
    for _ in range(200):                  # warm-up: compilation, allocator, caches
        bench["step"]()
    connection.send("ready")
    while True:
        calls = connection.recv()
        if calls is None:
            break
        samples = {phase: [] for phase in PHASES}
        for _ in range(calls):
            start = time.perf_counter()
            bench["step"]()
            samples["step"].append(time.perf_counter() - start)
        for _ in range(calls):            # the same step, each phase timed on its own
            for phase, function in zip(PHASES[1:], bench["phases"]):
                start = time.perf_counter()
                function()
                samples[phase].append(time.perf_counter() - start)
        connection.send({phase: float(np.median(values)) for phase, values in samples.items()})


# name: (torch threads, lstmkit's BLAS threads, lstmkit's Numba threads, glibc malloc tuned)
CONFIGS = {
    "all-2": (2, 2, 2, False),              # every library told 2 threads
    "torch-2/lstmkit-1": (2, 1, 1, False),  # torch as the issue asks (2); lstmkit on one thread
    "all-1": (1, 1, 1, False),              # everyone on one thread
    "all-1/malloc": (1, 1, 1, True),        # the same, glibc told to keep freed memory
}
# glibc returns large freed blocks to the OS and page-faults them back on the next
# allocation; these keep them in the heap (set for both workers alike)
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(64 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20),
              "MALLOC_TOP_PAD_": str(64 << 20)}


def measure(config, rounds, calls):
    """Both workers under one thread configuration; returns {name: {phase: median seconds}}, rounds."""
    import numpy as np

    torch_threads, blas_threads, numba_threads, malloc_tuned = CONFIGS[config]
    context = multiprocessing.get_context("spawn")
    workers = {}
    saved_environment = dict(os.environ)
    if malloc_tuned:
        os.environ.update(MALLOC_ENV)      # read by glibc when the worker starts
    try:
        for name in ("lstmkit", "torch"):
            parent, child = context.Pipe()
            threads = blas_threads if name == "lstmkit" else torch_threads
            process = context.Process(target=_serve, args=(name, child, threads, numba_threads), daemon=True)
            process.start()
            workers[name] = (process, parent)
    finally:
        os.environ.clear()
        os.environ.update(saved_environment)
    for name, (_, connection) in workers.items():
        if connection.recv() != "ready":
            raise RuntimeError(f"the {name} worker failed to start")
    rounds_data = {name: [] for name in workers}
    try:
        for _ in range(rounds):
            for name, (_, connection) in workers.items():
                connection.send(calls)
                rounds_data[name].append(connection.recv())
    finally:
        for process, connection in workers.values():
            connection.send(None)
            process.join(timeout=10)
    medians = {name: {phase: float(np.median([r[phase] for r in data])) for phase in PHASES}
               for name, data in rounds_data.items()}
    return medians, rounds_data


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 20 steps")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--calls", type=int, default=None)
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS),
                        help="thread configurations to measure (default: all)")
    parser.add_argument("--output", type=Path, default=RESULTS / "train_step.json")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 9)
    calls = args.calls or (20 if args.quick else 50)

    print(f"adding-problem training step: LSTM input {INPUT}, hidden {HIDDEN}, T={STEPS}, batch {BATCH}, "
          f"float32; median of {rounds} rounds × {calls} steps; ratio > 1: lstmkit faster")
    results = {}
    for config in args.configs:
        medians, rounds_data = measure(config, rounds, calls)
        torch_threads, blas_threads, numba_threads, malloc_tuned = CONFIGS[config]
        ratio = medians["torch"]["step"] / medians["lstmkit"]["step"]
        print(f"\n[{config}] torch {torch_threads} thread(s); lstmkit {blas_threads} BLAS, "
              f"{numba_threads} Numba thread(s)" + ("; glibc malloc keeps freed memory" if malloc_tuned else ""))
        print(f"{'phase':<14}{'lstmkit ms':>12}{'torch ms':>12}{'torch/lstmkit':>15}")
        for phase in PHASES:
            ours, theirs = medians["lstmkit"][phase] * 1e3, medians["torch"][phase] * 1e3
            print(f"{phase:<14}{ours:>12.3f}{theirs:>12.3f}{theirs / ours:>15.2f}")
        results[config] = {"torch_threads": torch_threads, "lstmkit_blas_threads": blas_threads,
                           "lstmkit_numba_threads": numba_threads, "malloc_tuned": malloc_tuned,
                           "median_seconds": medians,
                           "torch_over_lstmkit": ratio, "rounds": rounds_data}

    result = {
        "benchmark": "adding-problem training step (forward, MSE, backward, clip 1.0, Adam)",
        "config": {"steps": STEPS, "batch": BATCH, "input_size": INPUT, "hidden_size": HIDDEN,
                   "dtype": "float32", "rounds": rounds, "calls_per_round": calls},
        "results": results,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()),
                    "python": platform.python_version(),
                    **{name: metadata.version(name) for name in ("numpy", "numba", "torch")}},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
