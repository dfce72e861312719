"""One time step as a module: ``LSTMCell``, ``GRUCell`` and ``RNNCell``, as ``torch.nn`` has them.

A cell is the view the course teaches: one step, ``h_t, C_t`` from ``x_t, h_{t−1}, C_{t−1}``.
It runs the same generated kernels as the layers (``forward_step`` and ``backward_step`` of the
cell's kernel module), with the two matrix products done by NumPy around them::

    forward:   GX = x W_ihᵀ,  GH = h_{t−1} W_hhᵀ,  forward_step(GX, GH, biases, states) → new states
    backward:  backward_step(saved, dh_t, dC_t) → δ (the gates' pre-activation gradients)
               ∂L/∂W_ih = δᵀ x,  ∂L/∂W_hh = δ_hᵀ h_{t−1},  ∂L/∂x = δ W_ih,  ∂L/∂h_{t−1} = δ_h W_hh (+ direct part)

Parameters have the names and shapes of torch's cells (``weight_ih`` [G·d, n], ``weight_hh``
[G·d, d], ``bias_ih``, ``bias_hh``), so ``load_state_dict`` takes a torch cell's state dict.
``backward`` returns fresh gradients in ``cell.grads`` (it does not accumulate over calls).
"""
from __future__ import annotations

import numpy as np

from .kernels import load as load_builtin_kernels
from .module import Module, check_float_array, check_float_dtype, check_sizes

__all__ = ["LSTMCell", "GRUCell", "RNNCell"]


class _StepCell(Module):
    """What the three cells share; subclasses name their kernels and their states."""

    STATES: tuple = ("h",)

    def __init__(self, kernel_name, input_size, hidden_size, bias=True, *, dtype=np.float32, seed=0):
        self.input_size, self.hidden_size = check_sizes(input_size=input_size, hidden_size=hidden_size)
        self.dtype = check_float_dtype(dtype)
        self.bias = bool(bias)
        self.kernels = load_builtin_kernels(kernel_name)
        gates = len(self.kernels.GATES) * self.hidden_size
        shapes = {"weight_ih": (gates, self.input_size), "weight_hh": (gates, self.hidden_size)}
        if self.bias:
            shapes.update(bias_ih=(gates,), bias_hh=(gates,))
        bound = 1.0 / np.sqrt(self.hidden_size)            # torch's default: U(-1/√d, 1/√d)
        rng = np.random.default_rng(seed)
        self.params = {name: rng.uniform(-bound, bound, size=shape).astype(self.dtype)
                       for name, shape in shapes.items()}
        self._zero_bias = np.zeros(gates, self.dtype)
        self.grads = {}
        self._record = None

    def architecture(self):
        return {"class": type(self).__name__, "cell": self.kernels.CELL, "input_size": self.input_size,
                "hidden_size": self.hidden_size, "bias": self.bias, "dtype": np.dtype(self.dtype).name}

    def __repr__(self):
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, bias={self.bias}, "
                f"dtype={np.dtype(self.dtype).name})")

    def _per_row(self, value, what, batch, batched):
        """A state or its gradient as a [B, d] array of our own (zeros for None), checked first."""
        if value is None:
            return np.zeros((batch, self.hidden_size), self.dtype)
        check_float_array(value, what, self.dtype)
        expected = (batch, self.hidden_size) if batched else (self.hidden_size,)
        if value.shape != expected:
            raise ValueError(f"{what}: expected shape {expected} (the input's batch), got {value.shape}")
        return np.array(value.reshape(batch, self.hidden_size), dtype=self.dtype)

    # -- forward and backward, side by side ---------------------------------------------------
    def _forward(self, x, states):
        """``states``: {name: [B, d] or [d] or None}; returns {name: new state}."""
        check_float_array(x, "cell input x", self.dtype)
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(f"cell input x: expected shape (B, {self.input_size}) or ({self.input_size},), "
                             f"got {x.shape}")
        batched = x.ndim == 2
        batch = x.shape[0] if batched else 1
        prev = {name: self._per_row(value, f"cell state {name}", batch, batched) for name, value in states.items()}
        x = np.array(x.reshape(batch, self.input_size), dtype=self.dtype)
        w_ih, w_hh = self.params["weight_ih"], self.params["weight_hh"]
        arrays = {"GX": x @ w_ih.T, "GH": prev["h"] @ w_hh.T,
                  "BIAS_IH": self.params.get("bias_ih", self._zero_bias),
                  "BIAS_HH": self.params.get("bias_hh", self._zero_bias),
                  "SAVED": np.empty((batch, len(self.kernels.SAVED) * self.hidden_size), self.dtype)}
        new = {}
        for name in self.STATES:
            arrays[f"{name.upper()}_PREV"] = prev[name]
            arrays[name.upper()] = new[name] = np.empty((batch, self.hidden_size), self.dtype)
        self.kernels.forward_step(*(arrays[name] for name in self.kernels.FORWARD_STEP_ARGS))
        self._record = (x, prev, arrays["SAVED"], batched)
        return {name: value if batched else value[0] for name, value in new.items()}

    def _backward(self, d_states):
        """``d_states``: {name: gradient of the new state or None}; returns (dx, {name: d prev})."""
        if self._record is None:
            raise RuntimeError("call the cell (forward) before backward")
        x, prev, saved, batched = self._record
        batch = x.shape[0]
        staged = {name: self._per_row(d_states.get(name), f"gradient of the cell's new {name}", batch, batched)
                  for name in self.STATES}
        gates = len(self.kernels.GATES) * self.hidden_size
        d_gx = np.empty((batch, gates), self.dtype)
        d_gh = np.empty_like(d_gx) if "D_GH" in self.kernels.BACKWARD_STEP_ARGS else d_gx
        arrays = {"SAVED": saved, "D_OUT": staged["h"], "D_H": np.zeros_like(staged["h"]),
                  "D_GX": d_gx, "D_GH": d_gh}
        for name in self.STATES:
            arrays[f"{name.upper()}_PREV"] = prev[name]
            arrays[f"D_{name.upper()}_PREV"] = np.zeros((batch, self.hidden_size), self.dtype)
            if name != "h":
                arrays[f"D_{name.upper()}"] = staged[name]
        self.kernels.backward_step(*(arrays[name] for name in self.kernels.BACKWARD_STEP_ARGS))
        # the products the step kernel leaves to BLAS
        self.grads = {"weight_ih": d_gx.T @ x, "weight_hh": d_gh.T @ prev["h"]}
        if self.bias:
            self.grads.update(bias_ih=d_gx.sum(axis=0), bias_hh=d_gh.sum(axis=0))
        dx = d_gx @ self.params["weight_ih"]
        d_prev = {name: arrays[f"D_{name.upper()}_PREV"] for name in self.STATES}
        d_prev["h"] = d_prev["h"] + d_gh @ self.params["weight_hh"]   # direct part (GRU) + through W_hh
        if not batched:
            dx, d_prev = dx[0], {name: value[0] for name, value in d_prev.items()}
        return dx, d_prev


class LSTMCell(_StepCell):
    """``h1, c1 = cell(x, (h0, c0))``; ``dx, (dh0, dc0) = cell.backward((dh1, dc1))``, as
    ``torch.nn.LSTMCell`` (gate blocks i, f, g, o)."""

    STATES = ("h", "c")

    def __init__(self, input_size, hidden_size, bias=True, *, dtype=np.float32, seed=0):
        super().__init__("lstm", input_size, hidden_size, bias, dtype=dtype, seed=seed)

    def forward(self, x, state=None):
        h0, c0 = (None, None) if state is None else _pair(state, "state", "(h0, c0)")
        new = self._forward(x, {"h": h0, "c": c0})
        return new["h"], new["c"]

    def backward(self, d_state):
        dh1, dc1 = _pair(d_state, "d_state", "(dh1, dc1)")
        dx, d_prev = self._backward({"h": dh1, "c": dc1})
        return dx, (d_prev["h"], d_prev["c"])


class GRUCell(_StepCell):
    """``h1 = cell(x, h0)``; ``dx, dh0 = cell.backward(dh1)``, as ``torch.nn.GRUCell``
    (gate blocks r, z, n; the reset gate scales W_hn h + b_hn)."""

    def __init__(self, input_size, hidden_size, bias=True, *, dtype=np.float32, seed=0):
        super().__init__("gru", input_size, hidden_size, bias, dtype=dtype, seed=seed)

    def forward(self, x, h=None):
        return self._forward(x, {"h": h})["h"]

    def backward(self, dh):
        dx, d_prev = self._backward({"h": dh})
        return dx, d_prev["h"]


class RNNCell(GRUCell):
    """``h1 = cell(x, h0)``; ``dx, dh0 = cell.backward(dh1)``, as ``torch.nn.RNNCell``:
    h1 = tanh (or relu) of W_ih x + b_ih + W_hh h0 + b_hh."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", *, dtype=np.float32, seed=0):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        _StepCell.__init__(self, f"rnn_{nonlinearity}", input_size, hidden_size, bias, dtype=dtype, seed=seed)


def _pair(value, what, form):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{what}: expected a pair {form}, got {type(value).__name__}")
    return value
