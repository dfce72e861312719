"""Run a staged cell's generated kernels over a sequence (:mod:`lstmkit.staged`).

The same calls as :func:`lstmkit.driver.sequence_forward` and
:func:`~lstmkit.driver.sequence_backward`, for kernel modules with ``STAGED = True``: the
recurrent products are several (``GROUPS``, each on the rows of ``weight_hh`` of its
blocks), and some multiply an operand computed inside the step, which forward keeps
([T, B, d] per such group) so that backward's weight gradient of each group is one
product over a chunk of time, ``dW_group += dGᵀ V``, as the driver's are. Blocks may have
rows on one side only (``INPUT_GATES``, ``RECURRENT_GATES``), and the raw input's gradient
(``RAW_INPUT``) is added into dx. The one-product cells never come here: their path in
:mod:`lstmkit.driver` is unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import driver, kernel_runtime
from .driver import Tape, Workspace, backward_chunks, release, row_block_count

__all__ = ["StagedTape", "sequence_forward", "sequence_backward"]


@dataclass
class StagedTape(Tape):
    """A driver.Tape with the operands each computed product multiplied, per step."""

    operands: dict = None       # group index -> [T, B, d] ([1, B, d] in inference)
    constants: tuple = ()       # the cell's per-unit constants, [d] each
    first_step: int = 0         # the step number of the first step (READS_STEP cells)
    below: np.ndarray = None    # [T, B, d] the layer below's state (cells with a BELOW state)


def group_rows(kernels, hidden):
    """Per recurrent product, the rows of weight_hh of its blocks."""
    position = {g: k for k, g in enumerate(kernels.RECURRENT_GATES)}
    return [np.concatenate([np.arange(position[g] * hidden, (position[g] + 1) * hidden) for g in gates])
            for gates in kernels.GROUPS]


def _arrange(names, arrays):
    return [arrays[name] for name in names]


def sequence_forward(kernels, x, weight_ih, weight_hh, bias_ih, bias_hh, params, initial_states,
                     lengths, inference=False, workspace=None, constants=(), first_step=0, below=None):
    """One direction of one layer of a staged cell; as :func:`lstmkit.driver.sequence_forward`,
    and ``constants``, the cell's per-unit constants (``kernels.CONSTANTS``), [d] each;
    ``first_step``, the step number of x's first step (for a cell that reads it); ``below``,
    [T, B, d], the layer below's state ``kernels.BELOW`` at each step (zeros when None)."""
    if workspace is None:
        workspace = Workspace()
    steps, batch, n_in = x.shape
    hidden = weight_hh.shape[1]
    dtype = x.dtype
    if lengths is None:
        lengths = np.full(batch, steps, np.int64)
    if bias_ih is None:
        bias_ih = np.zeros(weight_ih.shape[0], dtype)
    if bias_hh is None:
        bias_hh = np.zeros(weight_hh.shape[0], dtype)
    x = np.ascontiguousarray(x)
    histories = []
    for k, (name, state) in enumerate(zip(kernels.STATES, initial_states)):
        # the whole history of the output, and of the state the layer above reads (kernels.BELOW)
        slots = steps + 1 if not inference or name in (kernels.OUTPUT, kernels.BELOW) else 2
        history = workspace.take(f"history {k}", (slots, batch, hidden), dtype)
        history[0] = state
        histories.append(history)
    saved = workspace.take("saved", (min(steps, 1) if inference else steps, batch, len(kernels.SAVED) * hidden),
                           dtype)
    operands = {k: np.empty((min(steps, 1) if inference else steps, batch, hidden), dtype)
                for k, state in enumerate(kernels.GROUP_OPERANDS) if state is None}
    if steps:
        arrays = {"X": x, "BIAS_IH": bias_ih, "BIAS_HH": bias_hh, "SAVED": saved, "LENGTHS": lengths}
        if kernels.INPUT_GATES:
            arrays["W_IH_T_PACKED"] = kernel_runtime.pack_transposed(weight_ih)
        for k, rows in enumerate(group_rows(kernels, hidden)):
            arrays[f"W_HH_T_PACKED_{k}"] = kernel_runtime.pack_transposed(np.ascontiguousarray(weight_hh[rows]))
        arrays.update(driver._named(kernels.STATES, histories))
        arrays.update(driver._named(kernels.PARAMS, params))
        arrays.update(driver._named(kernels.CONSTANTS, constants))
        arrays["T0"] = first_step
        if kernels.BELOW is not None:
            below = np.zeros((steps, batch, hidden), dtype) if below is None else np.ascontiguousarray(below)
            arrays["BELOW"] = below
        arrays.update({f"OPERAND_{k}": v for k, v in operands.items()})
        gates = (len(kernels.INPUT_GATES) + len(kernels.RECURRENT_GATES)) * hidden // 2
        driver._run(kernels.forward_rows, _arrange(kernels.FORWARD_ARGS, arrays), batch, row_block_count(steps, batch, max(gates, 1), hidden))
    finals = [history[steps % history.shape[0]] for history in histories]
    output_state = kernels.STATES.index(kernels.OUTPUT)
    output = histories[output_state][1:]
    tape = StagedTape(x, tuple(histories), saved, lengths, weight_ih, weight_hh, tuple(params), inference,
                      output_state, workspace, operands=operands, constants=tuple(constants), first_step=first_step,
                      below=below)
    return output, finals, tape


def sequence_backward(kernels, tape: StagedTape, d_output, d_final_states, has_bias, d_above=None,
                      input_gradient=True):
    """Backpropagation through time for a staged cell; as :func:`lstmkit.driver.sequence_backward`.

    For a cell with a ``BELOW`` state: ``d_above`` [T, B, d] is the gradient the layer above
    sends to this layer's state at each step (zeros when None), and ``grads["below"]`` the one
    this layer sends down, [T, B, d]."""
    tape.claim_for_backward()
    steps, batch, n_in = tape.x.shape
    hidden = tape.weight_hh.shape[1]
    dtype = tape.x.dtype
    rows_of = group_rows(kernels, hidden)
    widths = [len(kernels.INPUT_GATES) * hidden] + [len(rows) for rows in rows_of]
    widths += [hidden] if kernels.RAW_INPUT else []
    chunks = backward_chunks(steps, batch * sum(widths) * dtype.itemsize)
    chunk_steps = max((stop - start for start, stop in chunks), default=0)
    d_gx = np.empty((chunk_steps, batch, len(kernels.INPUT_GATES) * hidden), dtype)
    d_gh = [np.empty((chunk_steps, batch, len(rows)), dtype) for rows in rows_of]
    d_x_in = np.empty((chunk_steps, batch, hidden), dtype) if kernels.RAW_INPUT else None
    reads_below = kernels.BELOW is not None
    d_below = np.empty((steps, batch, hidden), dtype) if reads_below else None
    if reads_below and d_above is None:
        d_above = np.zeros((steps, batch, hidden), dtype)
    d_states = [np.array(d, dtype=dtype, order="C", copy=True) for d in d_final_states]
    d_params = [np.zeros_like(p) for p in tape.params]
    gates = (len(kernels.INPUT_GATES) + len(kernels.RECURRENT_GATES)) * hidden // 2
    blocks = row_block_count(steps, batch, max(gates, 1), hidden, params=bool(kernels.PARAMS))
    grad_ih = np.zeros_like(tape.weight_ih)
    grad_hh = np.zeros_like(tape.weight_hh)
    grad_bias_ih = np.zeros(tape.weight_ih.shape[0], dtype)
    grad_bias_hh = np.zeros(tape.weight_hh.shape[0], dtype)
    dx = np.empty(tape.x.shape, dtype) if input_gradient else None
    packed = [kernel_runtime.pack(np.ascontiguousarray(tape.weight_hh[rows])) for rows in rows_of] if steps else []
    with driver._blas_on_one_thread(batch):
        for start, stop in chunks:
            count = stop - start
            arrays = {"D_OUT": d_output[start:stop], "X": tape.x[start:stop], "SAVED": tape.saved[start:stop],
                      "LENGTHS": tape.lengths - start if start else tape.lengths, "D_GX": d_gx[:count]}
            arrays.update({f"W_HH_PACKED_{k}": p for k, p in enumerate(packed)})
            arrays.update(driver._named(kernels.STATES, [h[start:stop + 1] for h in tape.histories]))
            arrays.update(driver._named(kernels.PARAMS, tape.params))
            arrays.update(driver._named(kernels.CONSTANTS, tape.constants))
            arrays["T0"] = tape.first_step + start
            arrays.update(driver._named(kernels.STATES, d_states, prefix="D_"))
            arrays.update(driver._named(kernels.PARAMS, d_params, prefix="D_"))
            arrays.update({f"D_GH_{k}": d[:count] for k, d in enumerate(d_gh)})
            if d_x_in is not None:
                arrays["D_X_IN"] = d_x_in[:count]
            if reads_below:
                arrays.update(BELOW=tape.below[start:stop], D_BELOW=d_below[start:stop],
                              D_ABOVE=np.ascontiguousarray(d_above[start:stop]))
            driver._backward_rows(kernels, _arrange(kernels.BACKWARD_ARGS, arrays), d_params, batch, blocks)
            # the weight gradients: one product per chunk and product, as the driver's
            rows = count * batch
            x_rows = tape.x[start:stop].reshape(rows, n_in)
            d_pre_x = d_gx[:count].reshape(rows, -1)
            grad_ih += d_pre_x.T @ x_rows
            grad_bias_ih += driver.column_sums(d_pre_x)
            if input_gradient:
                out = dx[start:stop].reshape(rows, n_in)
                np.matmul(d_pre_x, tape.weight_ih, out=out)
                if d_x_in is not None:
                    out += d_x_in[:count].reshape(rows, hidden)
            for k, state in enumerate(kernels.GROUP_OPERANDS):
                operand = (tape.histories[kernels.STATES.index(state)][start:stop] if state is not None
                           else tape.operands[k][start:stop])
                d_pre_h = d_gh[k][:count].reshape(rows, -1)
                grad_hh[rows_of[k]] += d_pre_h.T @ operand.reshape(rows, hidden)
                grad_bias_hh[rows_of[k]] += driver.column_sums(d_pre_h)
    grads = {"weight_ih": grad_ih, "weight_hh": grad_hh}
    if has_bias:
        grads["bias_ih"], grads["bias_hh"] = grad_bias_ih, grad_bias_hh
    grads.update(zip(kernels.PARAMS, d_params))
    if reads_below:
        grads["below"] = d_below
    release(tape)
    tape.operands = tape.below = None
    return dx, d_states, grads
