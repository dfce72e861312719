"""A plain NumPy LSTM and GRU, forward and backpropagation through time.

This is the yardstick the benchmark measures lstmkit against: what one would
write by hand in NumPy, after karpathy's batched ``lstm.py`` gist. Parameters
are laid out as in ``torch.nn`` (``weight_ih`` [G·d, n], ``weight_hh``
[G·d, d], biases [G·d]; gates i, f, g, o for the LSTM, r, z, n for the GRU),
so the same arrays drive lstmkit, this file and torch. Each step does its two
matrix products and the gate arithmetic with NumPy array expressions; backward
walks the steps in reverse and accumulates the weight gradients step by step,
as the gist does. One layer, one direction, full-length sequences.

``forward(x, params, h0, c0)`` returns ``(y, cache)``; ``backward(dy, cache)``
returns ``(dx, grads)`` with grads keyed like ``params``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["init_params", "lstm_forward", "lstm_backward", "gru_forward", "gru_backward",
           "FORWARD", "BACKWARD"]


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def init_params(cell, input_size, hidden_size, dtype, rng):
    """torch's default initialisation, U(-1/√d, 1/√d), in torch's layout."""
    gates = {"lstm": 4, "gru": 3}[cell] * hidden_size
    bound = 1.0 / np.sqrt(hidden_size)
    shapes = {"weight_ih": (gates, input_size), "weight_hh": (gates, hidden_size),
              "bias_ih": (gates,), "bias_hh": (gates,)}
    return {name: rng.uniform(-bound, bound, shape).astype(dtype) for name, shape in shapes.items()}


# -- LSTM ---------------------------------------------------------------------------
def lstm_forward(x, params, h0=None, c0=None):
    steps, batch, _ = x.shape
    d = params["weight_hh"].shape[1]
    w_ih_t, w_hh_t = params["weight_ih"].T, params["weight_hh"].T
    bias = params["bias_ih"] + params["bias_hh"]
    h = np.zeros((steps + 1, batch, d), x.dtype)   # h[t + 1] is the state after step t
    c = np.zeros((steps + 1, batch, d), x.dtype)
    if h0 is not None:
        h[0], c[0] = h0, c0
    gates = np.empty((steps, batch, 4 * d), x.dtype)  # i, f, g, o after their activations
    tanh_c = np.empty((steps, batch, d), x.dtype)
    for t in range(steps):
        pre = x[t] @ w_ih_t + h[t] @ w_hh_t + bias
        gates[t, :, :2 * d] = sigmoid(pre[:, :2 * d])
        gates[t, :, 2 * d:3 * d] = np.tanh(pre[:, 2 * d:3 * d])
        gates[t, :, 3 * d:] = sigmoid(pre[:, 3 * d:])
        i, f, g, o = np.split(gates[t], 4, axis=1)
        c[t + 1] = f * c[t] + i * g
        tanh_c[t] = np.tanh(c[t + 1])
        h[t + 1] = o * tanh_c[t]
    return h[1:], (x, params, h, c, gates, tanh_c)


def lstm_backward(dy, cache, dh_n=None, dc_n=None):
    x, params, h, c, gates, tanh_c = cache
    steps, batch, _ = x.shape
    d = params["weight_hh"].shape[1]
    w_ih, w_hh = params["weight_ih"], params["weight_hh"]
    grads = {name: np.zeros_like(value) for name, value in params.items()}
    dx = np.empty_like(x)
    dh_next = np.zeros((batch, d), x.dtype) if dh_n is None else dh_n.copy()
    dc_next = np.zeros((batch, d), x.dtype) if dc_n is None else dc_n.copy()
    for t in reversed(range(steps)):
        i, f, g, o = np.split(gates[t], 4, axis=1)
        dh = dy[t] + dh_next
        dc = dc_next + dh * o * (1.0 - tanh_c[t] ** 2)
        d_pre = np.concatenate([dc * g * i * (1.0 - i),         # input gate
                                dc * c[t] * f * (1.0 - f),      # forget gate
                                dc * i * (1.0 - g ** 2),        # candidate
                                dh * tanh_c[t] * o * (1.0 - o)], axis=1)
        grads["weight_ih"] += d_pre.T @ x[t]
        grads["weight_hh"] += d_pre.T @ h[t]
        grads["bias_ih"] += d_pre.sum(axis=0)
        dx[t] = d_pre @ w_ih
        dh_next = d_pre @ w_hh
        dc_next = dc * f
    grads["bias_hh"] = grads["bias_ih"].copy()
    return dx, grads


# -- GRU ----------------------------------------------------------------------------
def gru_forward(x, params, h0=None):
    steps, batch, _ = x.shape
    d = params["weight_hh"].shape[1]
    w_ih_t, w_hh_t = params["weight_ih"].T, params["weight_hh"].T
    h = np.zeros((steps + 1, batch, d), x.dtype)
    if h0 is not None:
        h[0] = h0
    gates = np.empty((steps, batch, 3 * d), x.dtype)   # r, z, n after their activations
    gh_n = np.empty((steps, batch, d), x.dtype)         # W_hn h + b_hn, which r multiplies
    for t in range(steps):
        gx = x[t] @ w_ih_t + params["bias_ih"]
        gh = h[t] @ w_hh_t + params["bias_hh"]
        gates[t, :, :2 * d] = sigmoid(gx[:, :2 * d] + gh[:, :2 * d])
        r, z = gates[t, :, :d], gates[t, :, d:2 * d]
        gh_n[t] = gh[:, 2 * d:]
        gates[t, :, 2 * d:] = np.tanh(gx[:, 2 * d:] + r * gh_n[t])
        n = gates[t, :, 2 * d:]
        h[t + 1] = (1.0 - z) * n + z * h[t]
    return h[1:], (x, params, h, gates, gh_n)


def gru_backward(dy, cache, dh_n=None):
    x, params, h, gates, gh_n = cache
    steps, batch, _ = x.shape
    d = params["weight_hh"].shape[1]
    w_ih, w_hh = params["weight_ih"], params["weight_hh"]
    grads = {name: np.zeros_like(value) for name, value in params.items()}
    dx = np.empty_like(x)
    dh_next = np.zeros((batch, d), x.dtype) if dh_n is None else dh_n.copy()
    for t in reversed(range(steps)):
        r, z, n = np.split(gates[t], 3, axis=1)
        dh = dy[t] + dh_next
        dn = dh * (1.0 - z) * (1.0 - n ** 2)
        dz = dh * (h[t] - n) * z * (1.0 - z)
        dr = dn * gh_n[t] * r * (1.0 - r)
        d_gx = np.concatenate([dr, dz, dn], axis=1)
        d_gh = np.concatenate([dr, dz, dn * r], axis=1)
        grads["weight_ih"] += d_gx.T @ x[t]
        grads["weight_hh"] += d_gh.T @ h[t]
        grads["bias_ih"] += d_gx.sum(axis=0)
        grads["bias_hh"] += d_gh.sum(axis=0)
        dx[t] = d_gx @ w_ih
        dh_next = d_gh @ w_hh + dh * z
    return dx, grads


FORWARD = {"lstm": lstm_forward, "gru": gru_forward}
BACKWARD = {"lstm": lstm_backward, "gru": gru_backward}
