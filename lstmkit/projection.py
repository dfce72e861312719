"""The LSTM with a projection (Sak et al. 2014; torch's ``LSTM(..., proj_size=p)``), forward and back.

The sequence stage for a layer whose output is projected to ``p < d`` features::

    m_t = o_t ⊙ tanh(C_t)          the cell's own output, d wide (the generated step kernel)
    h_t = W_hr m_t                 W_hr: [p, d]; h_t is both the output and the recurrent state
    gates_t = W_ih x_t + b_ih + W_hh h_{t−1} + b_hh,   W_hh: [G·d, p]

so the recurrent product reads a p-wide h_{t−1}, while the cell state stays d wide.
Backward, per step, latest first::

    δh_t = dy_t + (δ from step t+1 through W_hh)        [B, p]
    δm_t = δh_t W_hr                                     [B, d]
    backward_step(saved, δm_t, δC_t) → δgates_t, δC_{t−1}
    δh_{t−1} = δgates_t W_hh
    ∂L/∂W_hr = Σ_t δh_tᵀ m_t,  ∂L/∂W_hh = Σ_t δgates_tᵀ h_{t−1}   (one product each, after the loop)

Each step runs the cell's generated ``forward_step`` and ``backward_step`` kernels, the ones
the layers' compiled loops run, with NumPy's products around them, as
:mod:`lstmkit.step_cells` does for one step. The loop over time is Python's, because the
compiled loops of :mod:`lstmkit.driver` assume every state as wide as the cell: at B = 1 it
costs about 30 µs a step, ten times their loop, and at the course's larger sizes less than
the unprojected layer (``benchmarks/projection.py``).

Any one-product cell whose step reads h_{t−1} only through the recurrent product can be
projected (:func:`can_project`): the step kernel's own h is then m_t. Past a row's length
the row keeps its state, as in :mod:`lstmkit.driver`.
"""
from __future__ import annotations

import numpy as np

from . import driver

__all__ = ["ProjectedTape", "can_project", "sequence_forward", "sequence_backward"]


def can_project(kernels):
    """Whether a cell's output can be projected: one product per step, output state h, and a
    step that reads h_{t−1} only through W_hh h_{t−1} (its backward has no direct δh_{t−1})."""
    return (not getattr(kernels, "STAGED", False) and kernels.OUTPUT == "h"
            and kernels.HIDDEN_GRADIENTS == "same" and "D_H_PREV" not in kernels.BACKWARD_STEP_ARGS
            and "H_PREV" not in kernels.BACKWARD_STEP_ARGS)


class ProjectedTape(driver.Tape):
    """A :class:`driver.Tape` whose output history h is p wide, with what the projection adds."""

    weight_hr: np.ndarray = None     # [p, d]
    unprojected: np.ndarray = None   # [T, B, d]: m_t, before W_hr


def sequence_forward(kernels, x, weight_ih, weight_hh, bias_ih, bias_hh, params, initial_states, lengths,
                     inference=False, workspace=None, *, weight_hr):
    """One direction of one layer, as :func:`lstmkit.driver.sequence_forward`; the output and
    the state h are ``weight_hr.shape[0]`` wide. Returns ``(output, final_states, tape)``."""
    if workspace is None:
        workspace = driver.Workspace()
    steps, batch, n_in = x.shape
    proj, hidden = weight_hr.shape
    dtype = x.dtype
    gates = len(kernels.GATES) * hidden
    bias_ih = np.zeros(gates, dtype) if bias_ih is None else bias_ih
    bias_hh = np.zeros(gates, dtype) if bias_hh is None else bias_hh
    if lengths is None:
        lengths = workspace.full_lengths(steps, batch)
    widths = {name: proj if name == kernels.OUTPUT else hidden for name in kernels.STATES}
    histories = []
    for k, (name, state) in enumerate(zip(kernels.STATES, initial_states)):
        history = workspace.take(f"history {k}", (steps + 1, batch, widths[name]), dtype)
        history[0] = state
        histories.append(history)
    states = dict(zip(kernels.STATES, histories))
    kept = 1 if inference else steps          # inference keeps one slot of what backward would read
    saved = workspace.take("saved", (min(steps, kept), batch, len(kernels.SAVED) * hidden), dtype)
    unprojected = np.empty((min(steps, kept), batch, hidden), dtype)
    # every input product at once: x_t W_ihᵀ does not depend on the recurrence
    gx = (x.reshape(steps * batch, n_in) @ weight_ih.T).reshape(steps, batch, gates)
    gh = np.empty((batch, gates), dtype)
    h_prev_unused = np.zeros((batch, hidden), dtype)     # the step reads h_{t−1} only through gh
    arrays = {"BIAS_IH": bias_ih, "BIAS_HH": bias_hh, "GH": gh, "H_PREV": h_prev_unused,
              **driver._named(kernels.PARAMS, params)}
    for t in range(steps):
        slot = t % saved.shape[0]
        np.matmul(states["h"][t], weight_hh.T, out=gh)
        arrays.update(GX=gx[t], SAVED=saved[slot], H=unprojected[slot])
        for name in kernels.STATES:
            if name != "h":
                arrays[f"{name.upper()}_PREV"], arrays[name.upper()] = states[name][t], states[name][t + 1]
        kernels.forward_step(*(arrays[name] for name in kernels.FORWARD_STEP_ARGS))
        np.matmul(unprojected[slot], weight_hr.T, out=states["h"][t + 1])
        ended = t >= lengths
        if ended.any():                          # past its length a row keeps its state
            for history in histories:
                history[t + 1, ended] = history[t, ended]
    finals = [history[steps] for history in histories]
    output_state = kernels.STATES.index(kernels.OUTPUT)
    tape = ProjectedTape(x, tuple(histories), saved, lengths, weight_ih, weight_hh, tuple(params), inference,
                         output_state, workspace)
    tape.weight_hr, tape.unprojected = weight_hr, unprojected
    return histories[output_state][1:], finals, tape


def sequence_backward(kernels, tape: ProjectedTape, d_output, d_final_states, has_bias, input_gradient=True):
    """Backpropagation through time for one direction of one projected layer, as
    :func:`lstmkit.driver.sequence_backward`; the grads add ``weight_hr``."""
    tape.claim_for_backward()
    steps, batch, n_in = tape.x.shape
    proj, hidden = tape.weight_hr.shape
    dtype = tape.x.dtype
    gates = len(kernels.GATES) * hidden
    states = dict(zip(kernels.STATES, tape.histories))
    d_states = {name: np.array(d, dtype=dtype, order="C", copy=True)
                for name, d in zip(kernels.STATES, d_final_states)}
    d_params = [np.zeros_like(p) for p in tape.params]
    d_pre = np.zeros((steps, batch, gates), dtype)
    d_h_all = np.empty((steps, batch, proj), dtype)       # δh_t, for ∂L/∂W_hr after the loop
    d_unprojected = np.empty((batch, hidden), dtype)
    no_later_h = np.zeros((batch, hidden), dtype)         # δh from later steps arrives through δh_t
    d_prev = {name: np.empty((batch, hidden), dtype) for name in kernels.STATES if name != "h"}
    d_later = {name: np.empty((batch, hidden), dtype) for name in d_prev}
    through_product = np.empty((batch, proj), dtype)
    arrays = {"D_OUT": d_unprojected, "D_H": no_later_h, **driver._named(kernels.PARAMS, tape.params),
              **driver._named(kernels.PARAMS, d_params, "D_")}
    for name in d_prev:
        arrays[f"D_{name.upper()}"], arrays[f"D_{name.upper()}_PREV"] = d_later[name], d_prev[name]
    for t in reversed(range(steps)):
        running = (t < tape.lengths)[:, None]      # rows whose step t ran; the others pass δ through
        d_h = d_h_all[t]
        np.add(d_output[t], d_states["h"], out=d_h)
        d_h *= running
        np.matmul(d_h, tape.weight_hr, out=d_unprojected)
        arrays.update(SAVED=tape.saved[t], D_GX=d_pre[t])
        for name in d_prev:
            arrays[f"{name.upper()}_PREV"] = states[name][t]
            np.multiply(d_states[name], running, out=d_later[name])
        kernels.backward_step(*(arrays[name] for name in kernels.BACKWARD_STEP_ARGS))
        np.matmul(d_pre[t], tape.weight_hh, out=through_product)
        np.copyto(d_states["h"], through_product, where=running)
        for name in d_prev:
            np.copyto(d_states[name], d_prev[name], where=running)
    rows = steps * batch
    d_pre_flat = d_pre.reshape(rows, gates)
    grads = {"weight_ih": d_pre_flat.T @ tape.x.reshape(rows, n_in),
             "weight_hh": d_pre_flat.T @ states["h"][:-1].reshape(rows, proj)}
    if has_bias:
        grads["bias_ih"] = driver.column_sums(d_pre_flat)
        grads["bias_hh"] = grads["bias_ih"].copy()
    grads.update(zip(kernels.PARAMS, d_params))
    grads["weight_hr"] = d_h_all.reshape(rows, proj).T @ tape.unprojected.reshape(rows, hidden)
    dx = (d_pre_flat @ tape.weight_ih).reshape(steps, batch, n_in) if input_gradient else None
    driver.release(tape)
    return dx, [d_states[name] for name in kernels.STATES], grads
