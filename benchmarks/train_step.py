"""One whole training step of the adding-problem LSTM: lstmkit against PyTorch CPU.

    python benchmarks/train_step.py            # writes benchmarks/results/train_step.json
    python benchmarks/train_step.py --quick    # fewer rounds

The step is what :func:`lstmkit.train.fit` does for every batch, and what a
torch training loop does: forward through a one-layer LSTM (input 2, hidden
32) and a linear head on the last hidden state, mean squared error, backward,
clipping by global norm (1.0), an Adam update. The batch is the adding problem
(T = 50, batch 64, float32), the same arrays every step, so data generation is
not timed.

lstmkit: ``SequenceRegressor`` + ``MSELoss`` + ``clip_grad_norm`` + ``Adam``.
torch: ``nn.LSTM`` + ``nn.Linear`` + ``nn.MSELoss`` + ``clip_grad_norm_`` +
``torch.optim.Adam`` with its defaults, ``zero_grad()`` included.

Each implementation runs in its own worker process on 2 threads (BLAS, OpenMP,
torch, Numba; ``--threads``, ``--numba-threads`` change that), so one library's idle threads never spin against the other's. The
parent asks the workers in turn, round by round, so load from elsewhere on the
machine falls on both alike. A round's sample is the median over ``calls``
steps; the table shows the median over rounds. A ratio above 1 means lstmkit
is faster.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
THREADS = 2
STEPS, BATCH, INPUT, HIDDEN = 50, 64, 2, 32
PHASES = ("step", "forward+loss", "backward", "clip+adam")


def _limit_threads(threads=THREADS, numba_threads=THREADS):
    for variable in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ[variable] = str(threads)
    os.environ["NUMBA_NUM_THREADS"] = str(numba_threads)


def _lstmkit_worker():
    import numpy as np

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
        model.backward(loss.backward())

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
    for _ in range(20):                   # warm-up: compilation, allocator, caches
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 20 steps")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--calls", type=int, default=None)
    parser.add_argument("--threads", type=int, default=THREADS,
                        help="BLAS/OpenMP threads and torch.set_num_threads (default 2)")
    parser.add_argument("--numba-threads", type=int, default=None,
                        help="threads Numba may use for lstmkit's kernels (default: --threads)")
    parser.add_argument("--output", type=Path, default=RESULTS / "train_step.json")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 9)
    args.numba_threads = args.numba_threads or args.threads
    calls = args.calls or (20 if args.quick else 50)

    _limit_threads(args.threads, args.numba_threads)
    import numpy as np

    context = multiprocessing.get_context("spawn")
    workers = {}
    for name in ("lstmkit", "torch"):
        parent, child = context.Pipe()
        process = context.Process(target=_serve, args=(name, child, args.threads, args.numba_threads), daemon=True)
        process.start()
        workers[name] = (process, parent)
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
    ratio = medians["torch"]["step"] / medians["lstmkit"]["step"]
    print(f"adding-problem training step: LSTM input {INPUT}, hidden {HIDDEN}, T={STEPS}, batch {BATCH}, "
          f"float32, {args.threads} threads ({args.numba_threads} for Numba); median of {rounds} rounds × {calls} steps")
    print(f"{'phase':<14}{'lstmkit ms':>12}{'torch ms':>12}{'torch/lstmkit':>15}")
    for phase in PHASES:
        ours, theirs = medians["lstmkit"][phase] * 1e3, medians["torch"][phase] * 1e3
        print(f"{phase:<14}{ours:>12.3f}{theirs:>12.3f}{theirs / ours:>15.2f}")
    print(f"whole step: lstmkit is {ratio:.2f}× torch's speed" + (" (faster)" if ratio >= 1 else " (slower)"))

    import numba
    import torch

    result = {
        "benchmark": "adding-problem training step (forward, MSE, backward, clip 1.0, Adam)",
        "config": {"steps": STEPS, "batch": BATCH, "input_size": INPUT, "hidden_size": HIDDEN,
                   "dtype": "float32", "threads": args.threads, "numba_threads": args.numba_threads,
                   "rounds": rounds, "calls_per_round": calls},
        "median_seconds": medians,
        "torch_over_lstmkit": ratio,
        "rounds": rounds_data,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "numba": numba.__version__, "torch": torch.__version__},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
