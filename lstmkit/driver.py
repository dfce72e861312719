"""Run a cell's generated kernels over a whole sequence, forward and back.

The layout follows the performance plan in DESIGN.md:

* forward: one GEMM ``X W_ihᵀ`` for all steps, then the generated
  ``forward_sequence`` (per step: ``h_{t−1} W_hhᵀ`` and the fused step kernel);
* backward: the generated ``backward_sequence`` runs the only truly sequential
  part, ``dh_{t−1} = dg_t W_hh`` plus the step kernel; then ``dW_ih = dGᵀX``,
  ``dX = dG W_ih``, ``dW_hh = dGᵀH_prev`` and the bias sums are each one
  whole-sequence GEMM or reduction.

The buffer that holds ``X W_ihᵀ + b_ih`` in forward is not needed afterwards,
so backward writes the gradient of the pre-activations into it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Tape", "sequence_forward", "sequence_backward"]


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


def sequence_forward(kernels, x, weight_ih, weight_hh, bias_ih, bias_hh, params, initial_states,
                     lengths):
    """One direction of one layer. Returns (histories, tape).

    ``x`` is [T, B, n] C-contiguous; ``initial_states`` one [B, d] array per
    state in ``kernels.STATES`` order; ``lengths`` [B] int64, or None for full rows.
    """
    steps, batch, _ = x.shape
    hidden = weight_hh.shape[1]
    dtype = x.dtype
    if lengths is None:
        lengths = np.full(batch, steps, np.int64)
    gates = len(kernels.GATES) * hidden
    pre_activations = np.empty((steps, batch, gates), dtype)
    flat = pre_activations.reshape(steps * batch, gates)
    np.matmul(x.reshape(steps * batch, x.shape[2]), weight_ih.T, out=flat)
    if bias_ih is not None:
        flat += bias_ih
    bias_hh = bias_hh if bias_hh is not None else np.zeros(gates, dtype)
    histories = []
    for state in initial_states:
        history = np.empty((steps + 1, batch, hidden), dtype)
        history[0] = state
        histories.append(history)
    saved = np.empty((steps, batch, len(kernels.SAVED) * hidden), dtype)
    weight_hh_t = np.ascontiguousarray(weight_hh.T)
    kernels.forward_sequence(pre_activations, weight_hh_t, bias_hh, *histories, *params, saved,
                             lengths)
    tape = Tape(x, pre_activations, tuple(histories), saved, lengths, weight_ih, weight_hh,
                tuple(params))
    return histories, tape


def sequence_backward(kernels, tape: Tape, d_output, d_final_states, has_bias):
    """Backpropagation through time for one direction of one layer.

    ``d_output`` [T, B, d] must be zero past each row's length. Returns
    ``(dx, d_initial_states, grads)`` with grads keyed ``weight_ih``,
    ``weight_hh``, ``bias_ih``, ``bias_hh`` and the element-wise parameter names.
    """
    if tape.used:
        raise RuntimeError("backward was already run for this forward pass; call forward again")
    tape.used = True
    steps, batch, _ = tape.x.shape
    d_pre_x = tape.pre_activations  # overwritten: forward no longer needs it
    d_pre_h = d_pre_x if kernels.SUMMED_BLOCKS else np.empty_like(d_pre_x)
    d_states = [np.array(d, dtype=tape.x.dtype, order="C", copy=True) for d in d_final_states]
    d_params = [np.zeros_like(p) for p in tape.params]
    gradient_arrays = [d_pre_x] + ([] if kernels.SUMMED_BLOCKS else [d_pre_h])
    kernels.backward_sequence(d_output, tape.weight_hh, *tape.histories, *tape.params, tape.saved,
                              tape.lengths, *d_states, *gradient_arrays, *d_params)

    gates = d_pre_x.shape[2]
    d_pre_x_flat = d_pre_x.reshape(steps * batch, gates)
    d_pre_h_flat = d_pre_h.reshape(steps * batch, gates)
    x_flat = tape.x.reshape(steps * batch, tape.x.shape[2])
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
