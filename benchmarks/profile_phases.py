"""Where lstmkit's time goes: one forward+backward split into its phases.

    python benchmarks/profile_phases.py                      # LSTM, float32, (50, 128, 512, 512)
    python benchmarks/profile_phases.py --cell gru --dtype float64 --size 100 32 32 128

Each phase is timed on its own, on the same arrays the driver uses, with the
same threads (2) and the same calls: backward's GEMMs, one per chunk of time
(on threads in slabs of rows where the driver runs them so, else
NumPy's ``matmul``), the bias sums, the loop over time (threaded blocks of rows
when the driver would use them; backward chunk by chunk, latest first), and
inside that loop, measured on one thread over
the whole batch, the products of each step (``x_t W_ihᵀ`` and ``h W_hhᵀ``
forward, ``dg W_hh`` backward) against the generated step kernels. "layer overhead" is the layer's total minus the
phases: input checks, allocations, copies, Python, and threads getting in
each other's way. "total forward" is inference (``inference=True``), as in
``bench.py``.
"""
from __future__ import annotations

import argparse
import os
import sys

# before NumPy loads its BLAS, which reads them (bench.py imports NumPy)
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_name, "2")

import numba  # noqa: E402
import numpy as np  # noqa: E402
from bench import time_function  # noqa: E402

import lstmkit  # noqa: E402
from lstmkit import driver, kernel_runtime  # noqa: E402


def _median_seconds(function, repeats):
    return float(np.median(time_function(function, repeats=repeats, min_seconds=0)))


def _in_driver_context(batch, rows_function, args, blocks):
    with driver._blas_on_one_thread(batch):
        driver._run(rows_function, args, batch, blocks)


@numba.njit
def _step_products(histories, packed, out):
    """The product of every step, one after another, as the loop makes them."""
    for t in range(histories.shape[0]):
        kernel_runtime.matmul_packed(histories[t], packed, out)


def profile_phases(cell="lstm", dtype="float32", size=(50, 128, 512, 512), repeats=5):
    """Seconds of each phase of one forward+backward (medians over ``repeats``)."""
    steps, batch, n_in, hidden = size
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(0)
    layer = lstmkit.RecurrentLayer(cell, n_in, hidden, dtype=dtype, seed=0)
    kernels = layer.kernels
    x = rng.standard_normal((steps, batch, n_in)).astype(dtype)
    dy = rng.standard_normal((steps, batch, hidden)).astype(dtype)
    w_ih, w_hh = layer.params["weight_ih_l0"], layer.params["weight_hh_l0"]
    b_ih, b_hh = layer.params["bias_ih_l0"], layer.params["bias_hh_l0"]
    params = [layer.params[f"{name}_l0"] for name in kernels.PARAMS]   # element-wise, e.g. peepholes
    gates = w_ih.shape[0]
    times = {}

    def forward_backward():
        layer(x)
        layer.backward(dy)

    times["total forward"] = _median_seconds(lambda: layer.forward(x, inference=True), repeats)
    times["total forward+backward"] = _median_seconds(forward_backward, repeats)

    x_flat = x.reshape(steps * batch, n_in)
    pre = np.empty((steps * batch, gates), dtype)
    on_threads = driver.products_on_threads(steps, batch, gates, hidden, n_in)

    np.matmul(x_flat, w_ih.T, out=pre)      # what the step kernels read below: x_t W_ihᵀ of every step
    pre = pre.reshape(steps, batch, gates)

    # the loop over time, as the driver runs it
    lengths = np.full(batch, steps, np.int64)
    initial = [np.zeros((batch, hidden), dtype) for _ in kernels.STATES]
    _, _, tape = driver.sequence_forward(kernels, x, w_ih, w_hh, b_ih, b_hh, params, initial, None)
    blocks = tape.plan.blocks()         # as the driver counts them for this cell and shape
    histories = tape.histories
    saved = tape.saved
    w_ih_t_packed = kernel_runtime.pack_transposed(w_ih)
    w_hh_t_packed, w_hh_packed = kernel_runtime.pack_transposed(w_hh), kernel_runtime.pack(w_hh)
    times["packing W_ih, W_hh (forward), W_hh (backward)"] = _median_seconds(
        lambda: (kernel_runtime.pack_transposed(w_ih), kernel_runtime.pack_transposed(w_hh),
                 kernel_runtime.pack(w_hh)), repeats)
    # every call is arranged by the kernel module's own argument lists, as the driver arranges it
    convention = driver._convention(kernels)
    forward_args = driver.arrange([x, w_ih_t_packed, w_hh_t_packed, b_ih, b_hh, *histories, *params, saved, lengths],
                                  convention.forward_order)
    label = f"loop over time, forward ({blocks} block{'s' if blocks > 1 else ''} of rows)"
    times[label] = _median_seconds(
        lambda: _in_driver_context(batch, kernels.forward_rows, forward_args, blocks),
        repeats)
    d_states = [np.zeros((batch, hidden), dtype) for _ in kernels.STATES]
    arrays = 2 if kernels.HIDDEN_GRADIENTS == "own array" else 1
    chunks = driver.backward_chunks(steps, arrays * batch * gates * dtype.itemsize)
    chunk_steps = max(stop - start for start, stop in chunks)
    d_chunk = [np.empty((chunk_steps, batch, gates), dtype) for _ in range(arrays)]   # as backward has
    d_params = [np.zeros_like(p) for p in params]

    def backward_loop():
        for start, stop in chunks:
            values = [dy[start:stop], w_hh_packed, *(h[start:stop + 1] for h in histories), *params,
                      saved[start:stop], lengths - start, *d_states, *(d[:stop - start] for d in d_chunk),
                      *([] if len(d_chunk) > 1 else [None]), *d_params]
            with driver._blas_on_one_thread(batch):
                driver._backward_rows(kernels, driver.arrange(values, convention.backward_order), d_params,
                                      batch, blocks)

    label = (f"loop over time, backward ({blocks} block{'s' if blocks > 1 else ''} of rows, "
             f"{len(chunks)} chunk{'s' if len(chunks) > 1 else ''} of time)")
    times[label] = _median_seconds(backward_loop, repeats)

    # the whole sequence's gradients of the pre-activations, for the phases timed one by one below
    d_pre = np.empty((steps, batch, gates), dtype)
    d_pre_h = [np.empty_like(d_pre)] if kernels.HIDDEN_GRADIENTS == "own array" else []
    # a cell whose d/dgh is a factor times d/dgx ("in place") writes each step's into this
    step_d_gh = np.empty((batch, gates), dtype)

    # inside the loop, one thread, whole batch
    with driver._one_blas_thread():
        output = histories[kernels.STATES.index(kernels.OUTPUT)]
        gh = np.empty((batch, gates), dtype)
        times["  of which input products x_t W_ihᵀ (1 thread)"] = _median_seconds(
            lambda: _step_products(x, w_ih_t_packed, gh), repeats)
        times["  of which recurrent products, forward (1 thread)"] = _median_seconds(
            lambda: _step_products(output[:steps], w_hh_t_packed, gh), repeats)
        recurrent = np.empty((batch, hidden), dtype)
        times["  of which recurrent products, backward (1 thread)"] = _median_seconds(
            lambda: _step_products(d_pre, w_hh_packed, recurrent), repeats)
    def step_arrays(t):
        """Step t's arrays by the names of FORWARD_STEP_ARGS and BACKWARD_STEP_ARGS."""
        return {"GX": pre[t], "GH": gh, "BIAS_IH": b_ih, "BIAS_HH": b_hh, "SAVED": saved[t], "D_OUT": dy[t],
                "D_GX": d_pre[t], "D_GH": d_pre_h[0][t] if d_pre_h else step_d_gh,
                **{f"{name}_PREV": h[t] for name, h in driver._named(kernels.STATES, histories).items()},
                **driver._named(kernels.STATES, [h[t + 1] for h in histories]),
                **driver._named(kernels.PARAMS, params), **driver._named(kernels.STATES, d_states, "D_"),
                **{f"{name}_PREV": d for name, d in driver._named(kernels.STATES, d_prev, "D_").items()},
                **driver._named(kernels.PARAMS, d_params, "D_")}

    d_prev = [np.empty((batch, hidden), dtype) for _ in kernels.STATES]
    forward_calls = [[step_arrays(t)[name] for name in kernels.FORWARD_STEP_ARGS] for t in range(steps)]
    backward_calls = [[step_arrays(t)[name] for name in kernels.BACKWARD_STEP_ARGS] for t in range(steps)]

    def forward_steps():
        for args in forward_calls:
            kernels.forward_step(*args)

    times["  of which step kernels, forward (1 thread)"] = _median_seconds(forward_steps, repeats)
    def backward_steps():
        for args in backward_calls:
            kernels.backward_step(*args)

    times["  of which step kernels, backward (1 thread)"] = _median_seconds(backward_steps, repeats)

    d_flat = d_pre.reshape(steps * batch, gates)    # filled by the backward steps above
    h_flat = output[:steps].reshape(steps * batch, hidden)
    dx = np.empty_like(x_flat)

    def per_chunk(work):
        """work(rows) for each chunk of time's rows, as backward runs them."""
        with driver._blas_on_one_thread(batch):
            for start, stop in chunks:
                work(slice(start * batch, stop * batch))

    def weight_gradients(products, input_gradient):
        """Σ over the chunks of dGᵀb for each b of ``products`` (and dX = dG W_ih), the way the
        driver adds them up; the driver runs all three in one call per chunk."""
        grads = {}
        per_chunk(lambda rows: driver._weight_gradients(
            grads, [(name, d_flat[rows], b_flat[rows]) for name, b_flat in products], on_threads,
            (d_flat[rows], w_ih, dx[rows]) if input_gradient else None))

    times["GEMMs dW_ih += dGᵀ X"] = _median_seconds(lambda: weight_gradients([("ih", x_flat)], False), repeats)
    times["GEMMs dW_hh += dGᵀ H"] = _median_seconds(lambda: weight_gradients([("hh", h_flat)], False), repeats)
    times["GEMMs dX = dG W_ih"] = (_median_seconds(lambda: weight_gradients([("ih", x_flat)], True), repeats)
                                   - times["GEMMs dW_ih += dGᵀ X"])
    times["bias sums"] = (_median_seconds(lambda: per_chunk(lambda rows: driver.column_sums(d_flat[rows])), repeats)
                          * (1 if kernels.HIDDEN_GRADIENTS == "same" else 2))
    if kernels.HIDDEN_GRADIENTS == "in place":
        times["d/dgx → d/dgh in place"] = _median_seconds(
            lambda: _in_driver_context(batch, kernels.hidden_gradient_rows, (d_pre, saved), blocks), repeats)
    phases = [k for k in times if not k.startswith("total") and not k.startswith("  ")]
    times["layer overhead (total − phases)"] = times["total forward+backward"] - sum(times[k] for k in phases)
    return times


def format_profile(times, cell, dtype, size):
    total = times["total forward+backward"]
    lines = [f"{cell} {dtype} (T, B, n, d) = {tuple(size)}: where one forward+backward spends its time",
             f"{'phase':<64} {'ms':>9} {'% of total':>11}"]
    for name, seconds in times.items():
        lines.append(f"{name:<64} {seconds * 1e3:>9.2f} {100 * seconds / total:>10.1f}%")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--size", nargs=4, type=int, default=[50, 128, 512, 512])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    times = profile_phases(args.cell, args.dtype, tuple(args.size), args.repeats)
    print(format_profile(times, args.cell, args.dtype, args.size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
