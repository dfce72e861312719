"""The direct path: a small one-layer, one-direction training call, straight to its kernels.

A :class:`~lstmkit.layers.RecurrentLayer` of one layer and one direction, running a
one-product cell over full rows for training, whose sequence is too small for threads and fits
backward's one chunk of time, runs its forward and backward
here, once the layer has checked its arguments. At (100, 1, 16, 32) float32 the LSTM's
forward+backward does about 130 µs of arithmetic; the general path (the layer's loops over
layers and directions, :mod:`lstmkit.driver`'s workspace, plans, chunks of time and slabs of
products) added 63.6 µs of Python to it, and this path 41.7–44.7 in three runs (issue 17,
``benchmarks/python_overhead.py``, ``results/python_overhead_issue17i.json``). What it skips:

* the buffers a call lends its tape come as one set, kept by the :class:`DirectRun`, not role
  by role from a workspace;
* the shape's plan and the weights' panels are those of the layer's workspace, shared with the
  general path (the same panels, the same memory);
* backward runs its one chunk in a straight line, and the results come out in the shapes
  the layer returns.

The kernel and BLAS calls are those :func:`lstmkit.driver.sequence_forward` and
:func:`~lstmkit.driver.sequence_backward` make for such a layer, on the same arrays in the same
order, so every result has the same bits: ``tests/test_direct.py`` compares the two paths.
"""
from __future__ import annotations

import numpy as np

from . import driver

__all__ = ["DirectRun", "DirectTape", "direct_run"]


class DirectTape:
    """What a direct forward keeps for backward; read as :class:`lstmkit.driver.Tape` is."""

    __slots__ = ("run", "x", "histories", "saved", "weight_ih", "weight_hh", "params", "buffers", "used",
                 "released")

    def __init__(self, run, x, histories, saved, weight_ih, weight_hh, params, buffers):
        self.run = run              # the DirectRun whose backward follows
        self.x, self.histories, self.saved = x, histories, saved
        self.weight_ih, self.weight_hh, self.params = weight_ih, weight_hh, params
        self.buffers = buffers      # back to the run once backward is done
        self.used = self.released = False

    output_lent = True      # the output history is the caller's y (or dropped): never reused

    @property
    def output_state(self):
        return self.run.plan.output_state


def direct_run(layer, x):
    """The layer's :class:`DirectRun` for ``x`` (time-major), made anew when the shape or the
    driver's settings (module constants that tests and users may change) differ from the
    last call's; None if the call is too large for the direct path."""
    key = (x.shape, x.dtype, driver.PARALLEL_MIN_WORK, driver.LOOP_PARALLEL_MIN_WORK, driver.BACKWARD_CHUNK_BYTES)
    run = layer._direct_run
    if run is None or run.key != key:
        run = layer._direct_run = DirectRun(layer, x, key)
    return run if run.usable else None


class DirectRun:
    """One layer's direct calls of one input shape: the shape's :class:`lstmkit.driver._Plan`
    and the weights' panels, both from the layer's workspace, one idle set of the buffers a call
    lends its tape and one of those backward works in. A second forward before backward gets a
    set of its own, as the workspace would give it."""

    def __init__(self, layer, x, key):
        steps, batch, n_in = x.shape
        kernels, hidden, dtype = layer.kernels, layer.hidden_size, layer.dtype
        workspace = layer._workspaces[0]
        plan = workspace.plan(kernels, x, hidden, False)      # kept there for the general path too
        _, chunk_steps = driver._chunk_plan(steps, plan.step_bytes, driver.BACKWARD_CHUNK_BYTES)
        self.key, self.layer, self.kernels, self.plan, self.dtype = key, layer, kernels, plan, dtype
        self.workspace = workspace
        # threads and chunks of time are the general path's: a sequence that wants them takes it
        self.usable = steps > 0 and not plan.loop_on_threads and not plan.threaded and chunk_steps == steps
        if not self.usable:
            return
        names = layer._slot_names[0]
        self.weight_names = (names.weight_ih, names.weight_hh)
        self.bias_names = (names.bias_ih, names.bias_hh)
        self.param_names = names.params
        # the gradients' names in the layer's, as the layer lists its parameters
        self.grad_names = [(name, name.removesuffix(names.suffix)) for name in layer.params]
        self.forward_order, self.backward_order = plan.forward_order, plan.backward_order
        self.same_gradients = kernels.HIDDEN_GRADIENTS == "same"
        self.in_place = kernels.HIDDEN_GRADIENTS == "in place"
        self.idle = None                # forward's buffers: (histories but the output's, saved)
        self.idle_gradients = None      # backward's: (d_pre, d_pre_h), made by the first backward
        from .layers import ForwardRecord     # what backward reads (layers imports this module)

        self.record = ForwardRecord

    def _new_buffers(self):
        """(the state histories but the output's, None in its place; saved)."""
        plan, dtype = self.plan, self.dtype
        others = [None if k == plan.output_state else np.empty(shape, dtype)
                  for k, (_, shape) in enumerate(plan.histories)]
        return others, np.empty(plan.saved_shape, dtype)

    def _new_gradient_buffers(self):
        """(d_pre; d_pre_h, None unless the cell's d/dgh needs an array of its own). Made in backward,
        not forward, so that a forward keeps what the general path's keeps (chapter 08 counts it)."""
        plan = self.plan
        d_pre = np.empty((plan.steps, plan.batch, plan.gates), self.dtype)
        return d_pre, np.empty_like(d_pre) if plan.own_array else None

    def forward(self, x, state, unbatched):
        """The layer's forward: ``(y, final state)`` as the layer returns them; leaves the
        :class:`~lstmkit.layers.ForwardRecord` in ``layer._tape``."""
        layer, plan = self.layer, self.plan
        initial = None
        if state is not None:
            initial = [s[0] for s in layer._check_state(state, plan.batch, unbatched, "state")]
        params = layer.params
        weight_ih, weight_hh = params[self.weight_names[0]], params[self.weight_names[1]]
        bias_ih = params.get(self.bias_names[0], plan.zero_bias)
        bias_hh = params.get(self.bias_names[1], plan.zero_bias)
        cell_params = [params[name] for name in self.param_names]
        buffers, self.idle = self.idle or self._new_buffers(), None
        output_history = np.empty(plan.histories[plan.output_state][1], self.dtype)    # the caller's y
        histories = [output_history if history is None else history for history in buffers[0]]
        for k, history in enumerate(histories):
            history[0] = 0.0 if initial is None else initial[k]
        packed = self.workspace.packed      # the roles sequence_forward packs into
        values = [x, packed("W_ih", weight_ih, True), packed("W_hh", weight_hh, True), bias_ih, bias_hh,
                  *histories, *cell_params, buffers[1], plan.full_lengths]
        order = self.forward_order
        self.kernels.forward_rows(*(values if order is None else [values[k] for k in order]), 0, plan.batch)
        steps = plan.steps
        finals = [history[steps:steps + 1].copy() for history in histories]    # the buffers are reused
        tape = DirectTape(self, x, histories, buffers[1], weight_ih, weight_hh, cell_params, buffers)
        layer._tape = self.record([tape], None, unbatched, x.shape, [])
        if layer.batch_first and not unbatched:
            y = np.ascontiguousarray(output_history[1:].transpose(1, 0, 2))
        else:   # the output history itself, read-only: backward reads it
            y = output_history[1:]
            y.setflags(write=False)
        if unbatched:
            return y[:, 0, :], layer._format_state(finals, unbatched)
        return y, finals[0] if len(finals) == 1 else tuple(finals)

    def backward(self, tape, d_output, d_state, input_gradient, unbatched):
        """The layer's backward after :meth:`forward`, ``d_output`` checked: ``(dx, d_initial
        state)`` as the layer returns them; fills ``layer.grads``."""
        layer, plan, kernels, dtype = self.layer, self.plan, self.kernels, self.dtype
        steps, batch, gates = plan.steps, plan.batch, plan.gates
        # the gradients of the states, [1, B, d] each as the layer returns them; the kernels' [B, d] views
        d_initial = np.zeros((len(tape.histories), 1, batch, plan.hidden), dtype)
        if d_state is not None:
            for d_initial_state, d in zip(d_initial, layer._check_state(d_state, batch, unbatched, "d_state")):
                d_initial_state[0] = d[0]
        if d_output is None:
            d_output = np.zeros((steps, batch, plan.hidden), dtype)
        elif unbatched:
            d_output = np.ascontiguousarray(d_output[:, None, :])
        else:
            d_output = np.ascontiguousarray(d_output.transpose(1, 0, 2) if layer.batch_first else d_output)
        tape.used = True
        gradient_buffers, self.idle_gradients = self.idle_gradients or self._new_gradient_buffers(), None
        d_pre, d_pre_h = gradient_buffers
        d_params = [np.zeros_like(p) for p in tape.params]
        values = [d_output, self.workspace.packed("W_hh backward", tape.weight_hh, False), *tape.histories,
                  *tape.params, tape.saved, plan.full_lengths, *[d[0] for d in d_initial], d_pre, d_pre_h,
                  *d_params]
        rows = steps * batch
        d_pre_x = d_pre.reshape(rows, gates)
        x_rows = tape.x.reshape(rows, plan.n_in)
        output_rows = tape.histories[plan.output_state][:steps].reshape(rows, plan.hidden)
        dx = np.empty(tape.x.shape, dtype) if input_gradient else None
        dx_product = (d_pre_x, tape.weight_ih, dx.reshape(rows, plan.n_in)) if input_gradient else None
        grads, has_bias, order = {}, layer.bias, self.backward_order
        with driver._blas_on_one_thread(batch):
            kernels.backward_rows(*(values if order is None else [values[k] for k in order]), 0, batch)
            if has_bias:
                grads["bias_ih"] = driver.column_sums(d_pre_x)
            if self.in_place:   # d/dgx until the input side has read it, then d/dgh in place
                driver._weight_gradients(grads, [("weight_ih", d_pre_x, x_rows)], False, dx_product)
                kernels.hidden_gradient_rows(d_pre, tape.saved, 0, batch)
                driver._weight_gradients(grads, [("weight_hh", d_pre_x, output_rows)], False)
                d_pre_hidden = d_pre_x
            else:
                d_pre_hidden = d_pre_x if d_pre_h is None else d_pre_h.reshape(rows, gates)
                products = [("weight_ih", d_pre_x, x_rows), ("weight_hh", d_pre_hidden, output_rows)]
                driver._weight_gradients(grads, products, False, dx_product)
            if has_bias:
                grads["bias_hh"] = (grads["bias_ih"].copy() if self.same_gradients
                                    else driver.column_sums(d_pre_hidden))
        if d_params:
            grads.update(zip(kernels.PARAMS, d_params))
        self.idle, tape.buffers = tape.buffers, None     # the next forward reuses them
        self.idle_gradients = gradient_buffers
        tape.released, tape.saved, tape.histories = True, None, None
        layer.grads = {name: grads[short] for name, short in self.grad_names}
        for name, mask in layer.weight_masks.items():      # none when forward took this path, unless set since
            layer.grads[name] = layer.grads[name] * mask
        if dx is not None:
            dx = layer._format_output(dx, unbatched)
        if unbatched:
            return dx, layer._format_state(list(d_initial), unbatched)
        return dx, d_initial[0] if len(d_initial) == 1 else tuple(d_initial)

