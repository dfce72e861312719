"""Run a cell's generated kernels over a whole sequence, forward and back.

The layout follows the performance plan in DESIGN.md:

* forward: one GEMM ``X W_ihᵀ`` for all steps, then the generated loop over
  time (per step: ``h_{t−1} W_hhᵀ`` and the fused step kernel, which also adds
  both biases);
* backward: the generated loop runs the only truly sequential part,
  ``dh_{t−1} = dg_t W_hh`` plus the step kernel; then ``dW_ih = dGᵀX``,
  ``dX = dG W_ih``, ``dW_hh = dGᵀH_prev`` and the bias sums are each one
  whole-sequence GEMM or reduction.

Threads. Each batch row's recurrence is independent of the others, so the
loop over time runs on blocks of rows at once, one Numba thread per block,
each with single-threaded BLAS for its own small products: the blocks never
wait for one another inside the loop, and BLAS threads never compete with
Numba threads for the cores. The whole-sequence GEMMs between the loops are
large and go to NumPy's BLAS with its own threads.

Memory. The buffer that holds ``X W_ihᵀ`` in forward is not needed afterwards,
so backward writes the gradient of the pre-activations into it. Inference
(``keep=False``) keeps no saved values and only two slots of each state
history other than the output.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

__all__ = ["Tape", "sequence_forward", "sequence_backward", "row_blocks", "PARALLEL_MIN_WORK"]

# Below this many multiply-adds in the recurrent products of one sequence, starting
# threads costs more than it saves, and the loop runs on the calling thread.
PARALLEL_MIN_WORK = 2_000_000


@dataclass
class Tape:
    """What one direction of one layer keeps from forward for backward."""

    x: np.ndarray               # [T, B, n] layer input
    pre_activations: np.ndarray  # [T, B, G·d]; reused for their gradient
    histories: tuple            # per state: [T + 1, B, d]
    saved: np.ndarray           # [T, B, S·d]
    lengths: np.ndarray         # [B] int64
    weight_ih: np.ndarray
    weight_hh: np.ndarray
    params: tuple               # element-wise parameters, [d] each
    used: bool = False


def row_blocks(steps, batch, gates, hidden):
    """How many blocks of batch rows the loop over time runs at once (1: no threads)."""
    if batch < 2 or steps * batch * gates * hidden < PARALLEL_MIN_WORK:
        return 1
    return min(batch, numba.get_num_threads())


_blas = None


def _one_blas_thread():
    """A context in which every loaded BLAS runs on the calling thread alone."""
    global _blas
    if _blas is None:
        import scipy.linalg.cython_blas  # noqa: F401 (the BLAS np.dot calls inside @njit)
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController().select(user_api="blas")
    return _blas.limit(limits=1)


def _run(serial, parallel, args, batch, blocks):
    if blocks == 1:
        serial(*args, 0, batch)
    else:
        with _one_blas_thread():
            parallel(*args, blocks)


def sequence_forward(kernels, x, weight_ih, weight_hh, bias_ih, bias_hh, params, initial_states,
                     lengths, keep=True):
    """One direction of one layer. Returns ``(output, final_states, tape)``.

    ``x`` is [T, B, n] C-contiguous; ``initial_states`` one [B, d] array per
    state in ``kernels.STATES`` order; ``lengths`` [B] int64, or None for full
    rows. ``output`` is [T, B, d] (a view of the output history); with
    ``keep=False`` nothing is saved for backward and ``tape`` is None.
    """
    steps, batch, n_in = x.shape
    hidden = weight_hh.shape[1]
    dtype = x.dtype
    if lengths is None:
        lengths = np.full(batch, steps, np.int64)
    gates = len(kernels.GATES) * hidden
    pre_activations = np.empty((steps, batch, gates), dtype)
    np.matmul(x.reshape(steps * batch, n_in), weight_ih.T,
              out=pre_activations.reshape(steps * batch, gates))
    no_bias = np.zeros(gates, dtype) if bias_ih is None or bias_hh is None else None
    histories = []
    for name, state in zip(kernels.STATES, initial_states):
        slots = steps + 1 if keep or name == kernels.OUTPUT else 2
        history = np.empty((slots, batch, hidden), dtype)
        history[0] = state
        histories.append(history)
    saved = np.empty((steps if keep else min(steps, 1), batch, len(kernels.SAVED) * hidden), dtype)
    args = (pre_activations, weight_hh.T, no_bias if bias_ih is None else bias_ih,
            no_bias if bias_hh is None else bias_hh, *histories, *params, saved, lengths)
    if steps:
        _run(kernels.forward_rows, kernels.forward_sequence, args, batch,
             row_blocks(steps, batch, gates, hidden))
    finals = [history[steps % history.shape[0]] for history in histories]
    output = histories[kernels.STATES.index(kernels.OUTPUT)][1:]
    if not keep:
        return output, finals, None
    tape = Tape(x, pre_activations, tuple(histories), saved, lengths, weight_ih, weight_hh,
                tuple(params))
    return output, finals, tape


def sequence_backward(kernels, tape: Tape, d_output, d_final_states, has_bias):
    """Backpropagation through time for one direction of one layer.

    ``d_output`` [T, B, d] must be zero past each row's length. Returns
    ``(dx, d_initial_states, grads)`` with grads keyed ``weight_ih``,
    ``weight_hh``, ``bias_ih``, ``bias_hh`` and the element-wise parameter names.
    """
    if tape.used:
        raise RuntimeError("backward was already run for this forward pass; call forward again")
    tape.used = True
    steps, batch, n_in = tape.x.shape
    d_pre_x = tape.pre_activations  # overwritten: forward no longer needs it
    d_pre_h = d_pre_x if kernels.SUMMED_BLOCKS else np.empty_like(d_pre_x)
    d_states = [np.array(d, dtype=tape.x.dtype, order="C", copy=True) for d in d_final_states]
    d_params = [np.zeros_like(p) for p in tape.params]
    gradient_arrays = [d_pre_x] + ([] if kernels.SUMMED_BLOCKS else [d_pre_h])
    gates = d_pre_x.shape[2]
    if steps:
        args = (d_output, tape.weight_hh, *tape.histories, *tape.params, tape.saved, tape.lengths,
                *d_states, *gradient_arrays, *d_params)
        _run(kernels.backward_rows, kernels.backward_sequence, args, batch,
             row_blocks(steps, batch, gates, tape.weight_hh.shape[1]))

    d_pre_x_flat = d_pre_x.reshape(steps * batch, gates)
    d_pre_h_flat = d_pre_h.reshape(steps * batch, gates)
    x_flat = tape.x.reshape(steps * batch, n_in)
    output = tape.histories[kernels.STATES.index(kernels.OUTPUT)]
    h_prev_flat = output[:steps].reshape(steps * batch, output.shape[2])
    grads = {
        "weight_ih": d_pre_x_flat.T @ x_flat,
        "weight_hh": d_pre_h_flat.T @ h_prev_flat,
    }
    if has_bias:
        grads["bias_ih"] = d_pre_x_flat.sum(axis=0)
        grads["bias_hh"] = grads["bias_ih"].copy() if kernels.SUMMED_BLOCKS else d_pre_h_flat.sum(axis=0)
    grads.update(zip(kernels.PARAMS, d_params))
    dx = (d_pre_x_flat @ tape.weight_ih).reshape(tape.x.shape)
    return dx, d_states, grads
