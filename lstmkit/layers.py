"""Recurrent layers with the conventions of ``torch.nn.RNN``/``LSTM``/``GRU``.

Parameters are NumPy arrays named and shaped as in torch
(``weight_ih_l{k}`` [G·d, n], ``weight_hh_l{k}`` [G·d, d], ``bias_ih_l{k}``,
``bias_hh_l{k}``, ``_reverse`` for the second direction), so
``layer.load_state_dict({k: v.numpy() for k, v in torch_lstm.state_dict().items()})``
reproduces torch's numbers. Unlike torch there is no autograd: ``backward``
takes the gradient of the outputs and fills ``layer.grads``.
"""
from __future__ import annotations

from typing import NamedTuple

import numbers
import warnings

import numpy as np

from . import direct, driver, projection, staged_driver
from .kernels import load as load_builtin_kernels
from .module import Module, check_float_array, check_float_dtype, check_sizes

__all__ = ["RecurrentLayer", "RNN", "LSTM", "GRU", "PeepholeLSTM", "CoupledLSTM", "ClockworkRNN", "DepthGatedLSTM"]


class ForwardRecord(NamedTuple):
    """What a training forward pass leaves for ``backward`` (``layer._tape``)."""

    tapes: list                 # one driver.Tape per layer and direction, slot = layer · D + direction
    lengths: np.ndarray | None  # [B] int64, or None for full rows
    unbatched: bool             # the input was [T, n]
    x_shape: tuple              # the time-major input's shape (T, B, n)
    masks: list                 # dropout: per layer below the last, the [T, B, D·d] mask × 1/(1 − p); or []


class RecurrentLayer(Module):
    """A stack of recurrent layers built from any cell spec.

    ``RecurrentLayer(cell, input_size, hidden_size, ...)`` takes a
    :class:`~lstmkit.symbolic.CellSpec` (or a built-in cell's name) and the
    constructor arguments of ``torch.nn.LSTM``. Calling it runs forward:

    ``y, state = layer(x, state=None, lengths=None)``

    * ``x``: [T, B, n] (``batch_first``: [B, T, n]; unbatched: [T, n]);
    * ``state``: one array [L·D, B, d] per state (a tuple when the cell has
      several, e.g. ``(h0, c0)``), zeros when omitted;
    * ``lengths``: optional [B] sequence lengths; outputs past a row's end are
      zero and its final state is the state at its own last step.

    After a training forward pass ``y`` may be read-only: where it can, it is the
    output history that backward reads (as torch returns the very tensor it
    saves), and changing it in place would change the gradients. Copy it to
    change it. The input is the other way round: a training forward pass keeps
    its own copy of ``x``, so the caller may refill its array before backward.

    ``dx, d_state = layer.backward(dy, d_state=None)`` runs backpropagation
    through time for the last forward call and fills ``layer.grads``.

    ``dropout=p`` zeroes each output of every layer but the last with probability
    p and scales the rest by 1/(1 − p), as torch does, in training mode only
    (``layer.train()``, the default; ``layer.eval()`` turns it off). The masks come
    from the layer's own generator (seeded by ``seed``) and are kept for backward.

    ``proj_size=p`` (0 < p < hidden_size) projects each step's output, as torch's
    ``LSTM(..., proj_size=p)`` (Sak et al. 2014): h_t = W_hr (o_t ⊙ tanh(C_t)) with
    ``weight_hr_l{k}`` [p, d]. h_t is p wide, in the output, the state h and the recurrent
    product (``weight_hh_l{k}`` is [G·d, p]); the cell state C stays d wide
    (:mod:`lstmkit.projection`).
    """

    def __init__(self, cell, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, dtype=np.float32, seed=None, constants=None, proj_size=0):
        # A built-in cell by name needs only its generated kernels, not SymPy: importing
        # SymPy is a large part of `import lstmkit`, so the spec is built when asked for.
        if isinstance(cell, str):
            kernels, spec = load_builtin_kernels(cell), None
        else:
            from .symbolic import CellSpec

            if not isinstance(cell, CellSpec):
                raise TypeError(f"cell must be a CellSpec or a built-in cell name, got {type(cell).__name__}")
            from . import codegen

            spec = cell.validate()
            kernels = codegen.load_kernels(spec)
        self.input_size, self.hidden_size, self.num_layers = check_sizes(
            input_size=input_size, hidden_size=hidden_size, num_layers=num_layers)
        if (isinstance(dropout, bool) or not isinstance(dropout, numbers.Real)
                or not 0 <= dropout <= 1):
            raise ValueError(f"dropout must be a probability in [0, 1], got {dropout!r}")
        if dropout and num_layers == 1:
            # torch's own warning: dropout acts between layers, so one layer has nowhere to put it
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero "
                          f"dropout expects num_layers greater than 1, but got dropout={dropout} and "
                          f"num_layers={num_layers}", UserWarning, stacklevel=3)
        self.dropout = float(dropout)
        self.proj_size = self._check_proj_size(proj_size, kernels)
        # the width of the output and of the state h: what the layer above and W_hh see
        self.output_width = self.proj_size or self.hidden_size
        if getattr(kernels, "BELOW", None) is not None and bidirectional:
            raise ValueError(f"cell {kernels.CELL!r} reads the state of the layer below at the same step; "
                             "a bidirectional stack has no single layer below, so bidirectional=True is refused")
        if getattr(kernels, "RAW_INPUT", False):
            # the cell adds x_t element-wise to hidden-sized values: every layer's input is hidden-sized
            if self.input_size != self.hidden_size or (bidirectional and self.num_layers > 1):
                raise ValueError(
                    f"cell {kernels.CELL!r} uses its raw input element-wise, so each layer's input must "
                    f"have hidden_size={self.hidden_size} features: got input_size={self.input_size}"
                    + (" and a bidirectional stack (its upper layers' input is 2·hidden_size wide)"
                       if bidirectional and self.num_layers > 1 else ""))
        dtype = check_float_dtype(dtype)
        self._cell = spec
        self.kernels = kernels
        # a staged cell's kernels run on their own driver (lstmkit.staged_driver); what more they
        # take is looked up once here (a missing module attribute costs a microsecond a call)
        self._staged = getattr(kernels, "STAGED", False)
        self._driver = staged_driver if self._staged else projection if self.proj_size else driver
        self._below = getattr(kernels, "BELOW", None)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if bidirectional else 1
        self.dtype = dtype
        self.params = self._init_params(np.random.default_rng(seed))
        self._dropout_rng = _dropout_generator(seed) if self.dropout else None
        self.grads = {}
        # a staged cell's per-unit constants, {name: [hidden_size]}, the same in every layer and
        # direction (the Clockwork RNN's periods); and structural masks of weights, {parameter
        # name: 0/1 array}: forward uses weight ⊙ mask and backward masks the gradient
        self.constants = self._check_constants(constants)
        self.weight_masks = {}
        self._tape = None
        # per layer and direction: the buffers each call lends its tape (driver.Workspace)
        self._workspaces = [driver.Workspace() for _ in range(self.num_layers * self.num_directions)]
        # per layer and direction, its parameters' names (worked out once: f-strings on every
        # call were a few µs of a call at B = 1, issue 17); and the last batch size's zero states
        self._slot_names = [_SlotNames(f"_l{layer}" + ("_reverse" if direction else ""), kernels.PARAMS)
                            for layer in range(self.num_layers) for direction in range(self.num_directions)]
        self._zero_states = (None, None)
        # one layer, one direction, one product a step: training calls take the direct path
        # (lstmkit.direct) where they are small enough; its DirectRun of the last shape
        self._direct = self.num_layers == 1 and self.num_directions == 1 and self._driver is driver
        self._direct_run = None

    @property
    def cell(self):
        """The layer's :class:`~lstmkit.symbolic.CellSpec`."""
        if self._cell is None:
            from .cells import get_cell

            self._cell = get_cell(self.kernels.CELL)
        return self._cell

    # -- parameters -------------------------------------------------------------
    def _suffixes(self):
        for layer in range(self.num_layers):
            for direction in range(self.num_directions):
                yield layer, direction, f"_l{layer}" + ("_reverse" if direction else "")

    def parameter_shapes(self):
        """Name → shape of every parameter, in torch's ``state_dict`` order."""
        # a staged cell's blocks may have rows on one side only
        input_gates = len(getattr(self.kernels, "INPUT_GATES", self.kernels.GATES)) * self.hidden_size
        recurrent_gates = len(getattr(self.kernels, "RECURRENT_GATES", self.kernels.GATES)) * self.hidden_size
        shapes = {}
        for layer, _, suffix in self._suffixes():
            n_in = self.input_size if layer == 0 else self.output_width * self.num_directions
            shapes[f"weight_ih{suffix}"] = (input_gates, n_in)
            shapes[f"weight_hh{suffix}"] = (recurrent_gates, self.output_width)
            if self.bias:
                shapes[f"bias_ih{suffix}"] = (input_gates,)
                shapes[f"bias_hh{suffix}"] = (recurrent_gates,)
            for param in self.kernels.PARAMS:
                shapes[f"{param}{suffix}"] = (self.hidden_size,)
            if self.proj_size:
                shapes[f"weight_hr{suffix}"] = (self.proj_size, self.hidden_size)
        return shapes

    def _init_params(self, rng):
        # torch's default: every parameter ~ U(-1/√d, 1/√d)
        bound = 1.0 / np.sqrt(self.hidden_size)
        return {name: rng.uniform(-bound, bound, size=shape).astype(self.dtype)
                for name, shape in self.parameter_shapes().items()}

    def set_forget_bias(self, value=1.0):
        """Initialise the forget gate's bias (Jozefowicz et al. 2015 recommend 1).

        torch's LSTM has two biases that are summed; this sets the forget
        block of ``bias_ih`` to ``value`` and that of ``bias_hh`` to 0 in
        every layer and direction, so the gate starts at σ(value + W·[h, x]).
        Raises ValueError for a cell without a forget gate (RNN, GRU, NFG).
        """
        if "f" not in self.kernels.GATES:
            raise ValueError(f"cell {self.cell.name!r} has no forget gate (its gate blocks are "
                             f"{', '.join(self.kernels.GATES)}); set_forget_bias needs an 'f' block")
        if not self.bias:
            raise ValueError("set_forget_bias needs a layer with biases (bias=True)")
        value = float(value)
        if not np.isfinite(value):
            raise ValueError(f"forget bias must be finite, got {value}")
        # the f block's rows in each bias (a staged cell's blocks may sit on one side only)
        input_gates = getattr(self.kernels, "INPUT_GATES", self.kernels.GATES)
        recurrent_gates = getattr(self.kernels, "RECURRENT_GATES", self.kernels.GATES)

        def rows(gates):
            if "f" not in gates:
                return None
            block = gates.index("f")
            return slice(block * self.hidden_size, (block + 1) * self.hidden_size)

        forget_ih, forget_hh = rows(input_gates), rows(recurrent_gates)
        for _, _, suffix in self._suffixes():
            if forget_ih is not None:
                self.params[f"bias_ih{suffix}"][forget_ih] = value
            if forget_hh is not None:
                self.params[f"bias_hh{suffix}"][forget_hh] = 0.0 if forget_ih is not None else value
        return self

    def gate_activations(self, layer=0, direction=0):
        """The values the last forward pass saved for one layer and direction, by name.

        Returns ``{name: [T, B, hidden_size]}`` for every name in the cell's
        ``SAVED`` tuple (for the LSTM: forget_gate, input_gate, candidate,
        output_gate, tanh_cell), time-major and, for the reverse direction,
        in the reversed order that direction read the sequence. Steps past a
        sequence's length hold values the output ignores. Call it before
        backward, which hands their memory to the next call.
        """
        if self._tape is None:
            raise RuntimeError("call forward before gate_activations")
        if self._tape.tapes[0].released:
            raise RuntimeError("backward consumed the values the last forward pass saved; call "
                               "gate_activations before backward, or forward again")
        if not (0 <= layer < self.num_layers and 0 <= direction < self.num_directions):
            raise ValueError(f"layer must lie in [0, {self.num_layers}) and direction in "
                             f"[0, {self.num_directions}), got layer={layer}, direction={direction}")
        saved = self._tape.tapes[layer * self.num_directions + direction].saved
        steps, batch = saved.shape[:2]
        blocks = saved.reshape(steps, batch, len(self.kernels.SAVED), self.hidden_size)
        return {name: blocks[:, :, k].copy() for k, name in enumerate(self.kernels.SAVED)}

    def architecture(self):
        """What a checkpoint must match besides parameter shapes."""
        record = {"class": type(self).__name__, "cell": self.kernels.CELL, "cell_key": self.kernels.SPEC_KEY,
                  "bidirectional": self.bidirectional, "num_layers": self.num_layers}
        if self.constants:      # a Clockwork RNN's periods: weights trained for others would load silently
            record["constants"] = {name: value.tolist() for name, value in self.constants.items()}
        if self.proj_size:      # recorded only when set, so that older checkpoints keep their record
            record["proj_size"] = self.proj_size
        return record

    def load_state_dict(self, state_dict, strict=True):
        """Load parameters (NumPy arrays, e.g. from a torch ``state_dict``).

        Everything is checked before anything is copied, so a bad dict leaves
        the layer unchanged. Values are cast to the layer's dtype.
        """
        super().load_state_dict(state_dict, strict)
        self._tape = None

    # -- forward ----------------------------------------------------------------
    def forward(self, x, state=None, lengths=None, *, inference=False, first_step=0):
        """Run the layer over ``x``; see the class docstring.

        ``inference=True`` keeps nothing for backward (no saved gate values, no
        state histories beyond two steps), so it is faster and lighter, and
        ``backward`` cannot follow it. ``first_step``: the number of steps already run, for
        a cell that reads the step number (the Clockwork RNN), so that a sequence fed in
        pieces runs as one; every direction counts its own steps from it.
        """
        if type(first_step) is not int and (isinstance(first_step, bool)
                                            or not isinstance(first_step, numbers.Integral)) or first_step < 0:
            raise ValueError(f"first_step must be an integer >= 0, got {first_step!r}")
        caller_x = x
        x, unbatched = self._check_input(x)
        if not inference and (x is caller_x or np.may_share_memory(x, caller_x)):
            # backward reads x (∂L/∂W_ih = Σ_t δ_tᵀ x_t): keep a copy of the caller's array, so
            # that changing it between forward and backward cannot change the gradients
            x = x.copy()
        if self._direct and lengths is None and not inference and not self.weight_masks:
            run = direct.direct_run(self, x)
            if run is not None:
                return run.forward(x, state, unbatched)
        steps, batch = x.shape[0], x.shape[1]
        lengths = self._check_lengths(lengths, steps, batch)
        initial = self._check_state(state, batch, unbatched, "state")

        tapes, masks = [], []
        finals = None if len(self._slot_names) == 1 else [
            np.empty((len(self._slot_names), batch, self._state_width(name)), self.dtype)
            for name in self.kernels.STATES]
        layer_input = x
        for layer in range(self.num_layers):
            if layer and self.dropout and self.training:
                masks.append(self._dropout_mask(layer_input.shape))
                layer_input = layer_input * masks[-1]
            outputs = []
            for direction in range(self.num_directions):
                slot = layer * self.num_directions + direction
                names = self._slot_names[slot]
                source = layer_input if direction == 0 else _reverse_rows(layer_input, lengths)
                extra = self._staged_arguments(layer, slot, tapes, first_step) if self._staged else {}
                if self.proj_size:
                    extra["weight_hr"] = self.params[names.weight_hr]
                output, final_states, tape = self._driver.sequence_forward(
                    self.kernels, source, self._weight(names.weight_ih), self._weight(names.weight_hh),
                    self.params.get(names.bias_ih), self.params.get(names.bias_hh),
                    [self.params[name] for name in names.params],
                    [s[slot] for s in initial], lengths, inference=inference,
                    workspace=self._workspaces[slot], **extra)
                tapes.append(tape)
                if finals is None:          # one layer, one direction: each final state is a copy
                    finals = [final_state[None].copy() for final_state in final_states]
                else:
                    for final, final_state in zip(finals, final_states):
                        final[slot] = final_state
                output = output if direction == 0 else _reverse_rows(output, lengths)
                outputs.append(output)
            layer_input = outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=2)

        # y is the last layer's output history itself where the layout allows: no copy, and
        # no second array of its size next to the tape. No later call may lend it again.
        y, y_is_history = layer_input, len(outputs) == 1
        if self.batch_first and not unbatched:
            y, y_is_history = np.ascontiguousarray(layer_input.transpose(1, 0, 2)), False
        if y_is_history:
            tapes[-1].output_lent = True
        if lengths is not None and steps:
            # past its length a row's gradients are zero, so backward never reads these values
            time_major = y.transpose(1, 0, 2) if self.batch_first and not unbatched else y
            time_major[np.arange(steps)[:, None] >= lengths[None, :]] = 0.0
        if inference:
            for tape in tapes:
                driver.release(tape)
            self._tape = None
        else:
            if y_is_history:    # backward reads it: a change would change the gradients
                y = y.view()
                y.flags.writeable = False
            self._tape = ForwardRecord(tapes, lengths, unbatched, x.shape, masks)
        return (y[:, 0, :] if unbatched else y), self._format_state(finals, unbatched)

    # -- backward ---------------------------------------------------------------
    def backward(self, d_output, d_state=None, *, input_gradient=True):
        """Backpropagation through time for the last forward call.

        ``d_output`` is the gradient of the loss with respect to ``y`` (same
        shape), or None for zeros (a loss on the final state alone);
        ``d_state`` that with respect to the final state(s), zeros if omitted.
        Returns ``(dx, d_initial_state)`` and fills ``self.grads``.
        ``input_gradient=False`` skips dx (returned as None), as torch skips the gradient
        of an input that does not require one: data fed to the first layer. The
        parameters' gradients are the same to the last bit.
        """
        if not isinstance(input_gradient, bool):
            raise TypeError(f"input_gradient must be True or False, got {input_gradient!r}")
        if self._tape is None:
            raise RuntimeError("call forward before backward (forward with inference=True keeps nothing for it)")
        record = self._tape
        tapes, lengths, unbatched, x_shape = record.tapes, record.lengths, record.unbatched, record.x_shape
        if tapes and tapes[0].used:
            raise RuntimeError("backward was already run for this forward pass; call forward again")
        steps, batch = x_shape[0], x_shape[1]
        expected = (steps, batch, self.output_width * self.num_directions)
        if d_output is not None:
            self._check_array(d_output, "d_output", self._external_shape(expected, unbatched))
        if type(tapes[0]) is direct.DirectTape:
            return tapes[0].run.backward(tapes[0], d_output, d_state, input_gradient, unbatched)
        d_final = self._check_state(d_state, batch, unbatched, "d_state")

        # dy: time-major, zero past each row's length; the caller's array when it already is
        workspace, borrowed = self._workspaces[0], None
        if d_output is None:
            dy = borrowed = workspace.take("d_output", expected, self.dtype)
            dy.fill(0.0)
        else:
            dy = d_output[:, None, :] if unbatched else d_output
            dy = dy.transpose(1, 0, 2) if self.batch_first and not unbatched else dy
            if lengths is not None or not dy.flags.c_contiguous:
                borrowed = workspace.take("d_output", expected, self.dtype)
                borrowed[...] = dy
                dy = borrowed
        if lengths is not None and steps:
            dy[np.arange(steps)[:, None] >= lengths[None, :]] = 0.0
        grads = {}
        d_initial = None if len(self._slot_names) == 1 else [np.empty_like(d) for d in d_final]
        d_layer_output = dy
        reads_below = self._below is not None
        d_above = None        # a depth gate's gradient from the layer above to this one's state
        for layer in reversed(range(self.num_layers)):
            d_input = None
            for direction in range(self.num_directions):
                slot = layer * self.num_directions + direction
                suffix = self._slot_names[slot].suffix
                if self.num_directions == 1:
                    d_out = d_layer_output
                else:
                    width = self.output_width
                    d_out = d_layer_output[:, :, direction * width:(direction + 1) * width]
                d_out = np.ascontiguousarray(d_out if direction == 0 else _reverse_rows(d_out, lengths))
                extra = {"d_above": d_above} if reads_below else {}
                dx, d_states, layer_grads = self._driver.sequence_backward(
                    self.kernels, tapes[slot], d_out, [d[slot] for d in d_final], self.bias,
                    input_gradient=input_gradient or layer > 0, **extra)
                if reads_below:
                    d_above = layer_grads.pop("below")
                if d_initial is None:        # one layer, one direction: the driver's arrays
                    d_initial = [d[None] for d in d_states]
                else:
                    for d_init, d in zip(d_initial, d_states):
                        d_init[slot] = d
                for name, gradient in layer_grads.items():
                    grads[name + suffix] = gradient
                if dx is not None:         # None: layer 0 with input_gradient=False
                    dx = dx if direction == 0 else _reverse_rows(dx, lengths)
                    d_input = dx if d_input is None else d_input + dx
            if layer and record.masks:
                d_input = d_input * record.masks[layer - 1]       # dropout's backward: the same mask
            d_layer_output = d_input
        if borrowed is not None:
            workspace.give("d_output", borrowed)
        for name, mask in self.weight_masks.items():      # the structure is kept through training
            grads[name] = grads[name] * mask
        self.grads = {name: grads[name] for name in self.params}
        dx = None if d_layer_output is None else self._format_output(d_layer_output, unbatched)
        return dx, self._format_state(d_initial, unbatched)

    def _check_constants(self, constants):
        names = getattr(self.kernels, "CONSTANTS", ())
        constants = dict(constants or {})
        if set(constants) != set(names):
            raise ValueError(f"cell {self.kernels.CELL!r} takes the per-unit constants {list(names)}; "
                             f"got {sorted(constants)}")
        checked = {}
        for name in names:
            value = np.asarray(constants[name], dtype=self.dtype)
            if value.shape != (self.hidden_size,) or not np.all(np.isfinite(value)):
                raise ValueError(f"constant {name!r}: expected {self.hidden_size} finite numbers, got "
                                 f"shape {value.shape}")
            checked[name] = value
        return checked

    def _check_proj_size(self, proj_size, kernels):
        if isinstance(proj_size, bool) or not isinstance(proj_size, numbers.Integral):
            raise TypeError(f"proj_size must be an integer, got {proj_size!r}")
        if proj_size < 0:     # torch's messages
            raise ValueError("proj_size should be a positive integer or zero to disable projections")
        if proj_size >= self.hidden_size:
            raise ValueError(f"proj_size has to be smaller than hidden_size: got proj_size={proj_size}, "
                             f"hidden_size={self.hidden_size}")
        if proj_size and not projection.can_project(kernels):
            raise ValueError(f"cell {kernels.CELL!r} cannot be projected (proj_size): its step reads "
                             "h_{t−1} other than through W_hh h_{t−1}, or runs in stages")
        return int(proj_size)

    def _state_width(self, name):
        """A state's width: the projected h is ``proj_size`` wide, every other state ``hidden_size``."""
        return self.output_width if name == self.kernels.OUTPUT else self.hidden_size

    def _staged_arguments(self, layer, slot, tapes, first_step):
        """What a staged cell's driver takes besides a one-product cell's arguments."""
        extra = {"constants": [self.constants[c] for c in self.kernels.CONSTANTS],
                 "first_step": int(first_step)}
        if self._below is not None and layer:
            # a depth gate: the layer below's state at each step (zeros under the first layer)
            below_tape = tapes[slot - self.num_directions]
            extra["below"] = below_tape.histories[self.kernels.STATES.index(self._below)][1:]
        return extra

    def _weight(self, name):
        """A weight as forward uses it: times its structural mask, if it has one."""
        weight = self.params[name]
        mask = self.weight_masks.get(name)
        return weight if mask is None else weight * mask

    def _dropout_mask(self, shape):
        """0 with probability p, else 1/(1 − p) (all zeros when p = 1, as torch gives)."""
        keep = self._dropout_rng.random(shape) >= self.dropout
        scale = 0.0 if self.dropout == 1 else 1.0 / (1.0 - self.dropout)
        return (keep * scale).astype(self.dtype)

    # -- checks and layouts -------------------------------------------------------
    def _external_shape(self, time_major, unbatched):
        steps, batch, width = time_major
        if unbatched:
            return (steps, width)
        return (batch, steps, width) if self.batch_first else (steps, batch, width)

    def _to_time_major(self, array, unbatched):
        if unbatched:
            return np.ascontiguousarray(array[:, None, :])
        return np.ascontiguousarray(array.transpose(1, 0, 2) if self.batch_first else array)

    def _format_output(self, y, unbatched):
        if unbatched:
            return y[:, 0, :]
        return np.ascontiguousarray(y.transpose(1, 0, 2)) if self.batch_first else y

    def _format_state(self, states, unbatched):
        states = [s[:, 0, :] if unbatched else s for s in states]
        return states[0] if len(states) == 1 else tuple(states)

    def _check_array(self, array, what, shape):
        return check_float_array(array, what, self.dtype, shape, dtype_source="the layer's dtype")

    def _check_input(self, x):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"input: expected a NumPy array of shape {self._input_layout()} or (T, input_size), "
                            f"got {type(x).__name__}")
        if x.ndim not in (2, 3):
            raise ValueError(f"input: expected shape {self._input_layout()} or (T, input_size) for an unbatched "
                             f"sequence, got {x.ndim} dimensions {x.shape}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"input: expected last dimension input_size={self.input_size}, got shape {x.shape}")
        unbatched = x.ndim == 2
        check_float_array(x, "input", self.dtype, dtype_source="the layer's dtype")
        return self._to_time_major(x, unbatched), unbatched

    def _input_layout(self):
        return "(B, T, input_size)" if self.batch_first else "(T, B, input_size)"

    def _check_lengths(self, lengths, steps, batch):
        if lengths is None:
            return None
        lengths = np.asarray(lengths)
        if lengths.shape != (batch,) or lengths.dtype.kind not in "iu":
            raise ValueError(f"lengths: expected {batch} integers (one per sequence), got "
                             f"shape {lengths.shape} dtype {lengths.dtype}")
        if np.any(lengths < 0) or np.any(lengths > steps):
            raise ValueError(f"lengths: each must lie in [0, {steps}], got {lengths.tolist()}")
        return lengths.astype(np.int64)

    def _check_state(self, state, batch, unbatched, what):
        names = self.kernels.STATES
        layers = self.num_layers * self.num_directions

        def shape(name):
            width = self._state_width(name)
            return (layers, width) if unbatched else (layers, batch, width)

        if state is None:
            # zeros, the same read-only arrays while the batch size stays: the drivers copy them
            kept_batch, zeros = self._zero_states
            if kept_batch != batch:
                zeros = [np.zeros((layers, batch, self._state_width(name)), self.dtype) for name in names]
                for array in zeros:
                    array.flags.writeable = False
                self._zero_states = (batch, zeros)
            return zeros
        parts = (state,) if len(names) == 1 and isinstance(state, np.ndarray) else state
        if not isinstance(parts, (tuple, list)) or len(parts) != len(names):
            widths = {shape(name) for name in names}
            shapes = (f"each of shape {shape(names[0])}" if len(widths) == 1
                      else "of shapes " + ", ".join(f"{name} {shape(name)}" for name in names))
            raise TypeError(f"{what}: expected {'a tuple of ' if len(names) > 1 else ''}"
                            f"{len(names)} array(s) {names}, {shapes}")
        checked = []
        for name, part in zip(names, parts):
            part = self._check_array(part, f"{what} {name}", shape(name))
            checked.append(np.ascontiguousarray(part[:, None, :] if unbatched else part))
        return checked

    def __repr__(self):
        extra = f", num_layers={self.num_layers}" if self.num_layers != 1 else ""
        extra += ", bidirectional=True" if self.bidirectional else ""
        extra += ", batch_first=True" if self.batch_first else ""
        extra += ", bias=False" if not self.bias else ""
        extra += f", dropout={self.dropout}" if self.dropout else ""
        extra += f", proj_size={self.proj_size}" if self.proj_size else ""
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}{extra}, "
                f"cell={self.kernels.CELL!r}, dtype={self.dtype})")


class _SlotNames:
    """The names of one layer and direction's parameters, ``weight_ih_l0_reverse`` and so on."""

    def __init__(self, suffix, params):
        self.suffix = suffix
        self.weight_ih, self.weight_hh = f"weight_ih{suffix}", f"weight_hh{suffix}"
        self.bias_ih, self.bias_hh = f"bias_ih{suffix}", f"bias_hh{suffix}"
        self.weight_hr = f"weight_hr{suffix}"
        self.params = [f"{name}{suffix}" for name in params]


def _dropout_generator(seed):
    """The masks' own stream, so that a layer's weights are the same with or without dropout."""
    if isinstance(seed, np.random.Generator):    # a model's child generator: draw the masks' seed from it
        return np.random.default_rng(seed.integers(2**63))
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])


def _reverse_rows(array, lengths):
    """Reverse each row's first ``length`` steps along time (axis 0), as torch's packed reverse."""
    if lengths is None:
        return np.ascontiguousarray(array[::-1])
    steps, batch = array.shape[0], array.shape[1]
    t = np.arange(steps)[:, None]
    source = np.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)
    return np.ascontiguousarray(array[source, np.arange(batch)[None, :]])


class RNN(RecurrentLayer):
    """Elman RNN as ``torch.nn.RNN`` (``nonlinearity='tanh'`` or ``'relu'``)."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, **kwargs):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(f"rnn_{nonlinearity}", input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, **kwargs)
        self.nonlinearity = nonlinearity


class LSTM(RecurrentLayer):
    """LSTM as ``torch.nn.LSTM``: gates i, f, g, o; state ``(h, c)``.

    ``proj_size=p`` > 0: the LSTM with a projection, h_t = W_hr (o_t ⊙ tanh(C_t)) (see
    :class:`RecurrentLayer`); h_n is then (L·D, B, p) and the output (T, B, D·p).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, **kwargs):
        super().__init__("lstm", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, proj_size=proj_size, **kwargs)


class GRU(RecurrentLayer):
    """GRU as ``torch.nn.GRU``: gates r, z, n with ``n = tanh(gx_n + r ⊙ (W_hn h + b_hn))``.

    ``reset_after=False`` is Cho et al. 2014's GRU (Keras's option of that name): the reset
    gate acts before the recurrent product, ``n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)``,
    with the same parameters (the built-in staged cell ``gru_reset_before``).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, reset_after=True, **kwargs):
        if not isinstance(reset_after, bool):
            raise TypeError(f"reset_after must be True or False, got {reset_after!r}")
        super().__init__("gru" if reset_after else "gru_reset_before", input_size, hidden_size, num_layers,
                         bias, batch_first, dropout, bidirectional, **kwargs)
        self.reset_after = reset_after


class PeepholeLSTM(RecurrentLayer):
    """LSTM with peepholes (Gers & Schmidhuber 2000): i, f see C_{t−1}, o sees C_t.

    Extra parameters ``weight_ci_l{k}``, ``weight_cf_l{k}``, ``weight_co_l{k}`` [d].
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, **kwargs):
        super().__init__("peephole_lstm", input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, **kwargs)


class CoupledLSTM(RecurrentLayer):
    """Coupled input and forget gates (CIFG): i = 1 − f; gates f, g, o."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, **kwargs):
        super().__init__("coupled_lstm", input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, **kwargs)


class ClockworkRNN(RecurrentLayer):
    """The Clockwork RNN of Koutník et al. 2014 (``lstmkit.cells.clockwork_spec``).

    The hidden units form ``len(periods)`` modules of equal size, module i with period
    ``periods[i]`` (strictly ascending: Koutník's exponential series is the default). At step t
    (counted from 1) module i runs when t mod T_i = 0 and keeps its value otherwise. The
    recurrent matrix is block upper-triangular, so that slower modules feed faster ones and
    not the reverse: ``weight_masks["weight_hh_l{k}"]`` keeps that structure in forward
    (weight ⊙ mask) and in the gradient, so it holds through training. Parameters are an
    Elman RNN's (``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``).
    The cell's kernels are generated into the kernel cache on first use.
    """

    def __init__(self, input_size, hidden_size, periods=(1, 2, 4, 8), num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, **kwargs):
        from .cells import clockwork_spec

        periods = tuple(periods)
        if (not periods or any(isinstance(p, bool) or not isinstance(p, numbers.Integral) or p < 1 for p in periods)
                or any(a >= b for a, b in zip(periods, periods[1:]))):
            raise ValueError(f"periods must be positive integers in strictly ascending order, got {periods!r}")
        if isinstance(hidden_size, numbers.Integral) and hidden_size % len(periods):
            raise ValueError(f"hidden_size={hidden_size} must split into {len(periods)} modules of equal size "
                             f"(one per period {periods})")
        module_size = int(hidden_size) // len(periods)
        module = np.arange(hidden_size) // max(module_size, 1)
        super().__init__(clockwork_spec(), input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, constants={"period": np.asarray(periods)[module]}, **kwargs)
        self.periods = periods
        # row unit j (a faster or equal module) receives from column unit k when module(k) >= module(j)
        mask = (module[None, :] >= module[:, None]).astype(self.dtype)
        for _, _, suffix in self._suffixes():
            self.weight_masks[f"weight_hh{suffix}"] = mask
            self.params[f"weight_hh{suffix}"] *= mask


class DepthGatedLSTM(RecurrentLayer):
    """The Depth-Gated LSTM of Yao et al. 2015 (``lstmkit.cells.depth_gated_lstm_spec``): in each
    layer above the first, a depth gate d_t = σ(…) adds d_t ⊙ c_t (of the layer below, at the
    same step) into the cell update. Gate blocks i, f, g, o, d (d has no ``weight_hh`` rows);
    element-wise ``weight_ci``, ``weight_cf``, ``weight_co``, ``weight_cd``, ``weight_ld``.
    State ``(h, c)``. Unidirectional: a bidirectional stack has no single layer below.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 **kwargs):
        super().__init__("depth_gated_lstm", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         False, **kwargs)
