"""An LSTM and a GRU from scratch in NumPy: forward over a sequence, and backpropagation
through time written by hand, in the style of karpathy's min-char-rnn.

This is the code a learner types in chapter 06, and the independent yardstick that the
tests and the benchmark hold lstmkit's generated kernels against. It needs nothing but
NumPy, and it is written from the equations, not from lstmkit's cell specs.

The LSTM, in the notation of colah's *Understanding LSTM Networks* (⊙ is the element-wise
product, [h_{t−1}, x_t] the two vectors side by side)::

    f_t  = σ(W_f · [h_{t−1}, x_t] + b_f)          forget gate
    i_t  = σ(W_i · [h_{t−1}, x_t] + b_i)          input gate
    C̃_t  = tanh(W_C · [h_{t−1}, x_t] + b_C)       candidate
    C_t  = f_t ⊙ C_{t−1} + i_t ⊙ C̃_t              cell state
    o_t  = σ(W_o · [h_{t−1}, x_t] + b_o)          output gate
    h_t  = o_t ⊙ tanh(C_t)                        hidden state

The four weight matrices are stacked into one ``W`` of shape [4d, d+n] (rows: W_f, W_i,
W_C, W_o; columns: the d columns that multiply h_{t−1}, then the n that multiply x_t) and
the biases into one ``b`` of shape [4d]. With a batch, each sequence's [h_{t−1}, x_t] is a
row, so W · [h_{t−1}, x_t] + b is computed as ``z @ W.T + b``.

Shapes: a sequence ``x`` is [T, B, n] (time, batch, input), as in ``torch.nn`` and lstmkit;
per step h and C are [B, d].

**Mapping to torch.nn.LSTM (and lstmkit.LSTM, which uses the same layout).** torch keeps
``weight_ih`` [4d, n], ``weight_hh`` [4d, d] and two biases [4d], with the gate blocks in
the order i, f, g, o (g is C̃). So block k of ``W`` is ``[weight_hh[k], weight_ih[k]]`` side
by side, with the blocks reordered to f, i, C̃, o, and ``b = bias_ih + bias_hh`` reordered
the same way. ``lstm_from_torch`` and ``lstm_to_torch`` do exactly that.

**The GRU** is ``torch.nn.GRU``'s (and lstmkit.GRU's), which differs from colah's drawing
in two places: the reset gate multiplies W_hn · h_{t−1} + b_hn *after* the matrix product,
and z_t keeps the old state::

    r_t  = σ(W_r · [h_{t−1}, x_t] + b_r)
    z_t  = σ(W_z · [h_{t−1}, x_t] + b_z)
    n_t  = tanh(W_nx · x_t + b_n + r_t ⊙ (W_nh · h_{t−1} + b_hn))
    h_t  = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t−1}

``W`` is [3d, d+n] with rows W_r, W_z, W_n (torch's order) and ``W_n = [W_nh, W_nx]``;
``b`` is [3d] and the candidate's hidden-side bias ``b_hn`` [d] is kept apart, because r_t
multiplies it.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "sigmoid", "init_lstm", "lstm_step", "lstm_step_backward", "lstm_forward", "lstm_backward",
    "lstm_from_torch", "lstm_to_torch", "lstm_weights", "set_lstm_weights", "rnn_weights", "set_rnn_weights", "init_gru", "gru_step", "gru_step_backward",
    "gru_forward", "gru_backward", "gru_from_torch", "gru_to_torch", "init_params",
    "FORWARD", "BACKWARD",
]


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _uniform(shape, hidden_size, rng, dtype):
    """torch's default initialisation, U(−1/√d, 1/√d)."""
    bound = 1.0 / np.sqrt(hidden_size)
    return rng.uniform(-bound, bound, shape).astype(dtype)


# -- LSTM ----------------------------------------------------------------------------------
def init_lstm(input_size, hidden_size, rng, dtype=np.float64):
    """``W`` [4d, d+n] and ``b`` [4d], drawn as torch draws them."""
    d, n = hidden_size, input_size
    return _uniform((4 * d, d + n), d, rng, dtype), _uniform((4 * d,), d, rng, dtype)


def lstm_step(x_t, h_prev, c_prev, W, b):
    """One step: returns h_t, C_t and what the backward step needs."""
    d = h_prev.shape[-1]
    z = np.concatenate([h_prev, x_t], axis=-1)      # [h_{t−1}, x_t]
    a = z @ W.T + b                                 # W · [h_{t−1}, x_t] + b, all four gates
    f = sigmoid(a[:, :d])
    i = sigmoid(a[:, d:2 * d])
    c_bar = np.tanh(a[:, 2 * d:3 * d])
    o = sigmoid(a[:, 3 * d:])
    c = f * c_prev + i * c_bar
    tanh_c = np.tanh(c)
    h = o * tanh_c
    return h, c, (z, f, i, c_bar, o, c_prev, tanh_c)


def lstm_step_backward(dh, dc, cache, W):
    """One step backwards. ``dh`` and ``dc`` are ∂L/∂h_t and ∂L/∂C_t (everything that
    reaches them: from this step's output and from step t+1). Returns ∂L/∂x_t,
    ∂L/∂h_{t−1}, ∂L/∂C_{t−1}, and this step's share of ∂L/∂W and ∂L/∂b."""
    z, f, i, c_bar, o, c_prev, tanh_c = cache
    d = c_prev.shape[-1]
    do = dh * tanh_c                                # h_t = o_t ⊙ tanh(C_t)
    dc = dc + dh * o * (1.0 - tanh_c ** 2)          # C_t reaches L directly and through h_t
    df = dc * c_prev                                # C_t = f_t ⊙ C_{t−1} + i_t ⊙ C̃_t
    di = dc * c_bar
    dc_bar = dc * i
    dc_prev = dc * f
    da = np.concatenate([df * f * (1.0 - f),        # through σ: σ' = σ(1 − σ)
                         di * i * (1.0 - i),
                         dc_bar * (1.0 - c_bar ** 2),   # through tanh: tanh' = 1 − tanh²
                         do * o * (1.0 - o)], axis=-1)
    dW = da.T @ z                                   # a = z Wᵀ + b, summed over the batch
    db = da.sum(axis=0)
    dz = da @ W
    return dz[:, d:], dz[:, :d], dc_prev, dW, db


def lstm_forward(x, W, b, h0=None, c0=None):
    """Run over a sequence x [T, B, n]. Returns all hidden states [T, B, d] and the cache
    that ``lstm_backward`` reads: (W, the steps' caches, the final cell state C_T)."""
    steps, batch, _ = x.shape
    d = W.shape[0] // 4
    h = np.zeros((batch, d), x.dtype) if h0 is None else h0
    c = np.zeros((batch, d), x.dtype) if c0 is None else c0
    hs = np.empty((steps, batch, d), x.dtype)
    step_caches = []
    for t in range(steps):
        h, c, step_cache = lstm_step(x[t], h, c, W, b)
        hs[t] = h
        step_caches.append(step_cache)
    return hs, (W, step_caches, c)


def lstm_backward(dhs, cache, dh_last=None, dc_last=None):
    """Backpropagation through time. ``dhs`` [T, B, d] is ∂L/∂h_t for every step;
    ``dh_last``/``dc_last`` optionally add a gradient on the final h_T and C_T.
    Returns ``dx`` [T, B, n] and ``grads`` = {"W", "b", "h0", "c0"}."""
    W, step_caches, _ = cache
    steps, batch, d = dhs.shape
    dx = np.empty((steps, batch, W.shape[1] - d), dhs.dtype)
    dW, db = np.zeros_like(W), np.zeros(W.shape[0], dhs.dtype)
    dh_next = np.zeros((batch, d), dhs.dtype) if dh_last is None else dh_last
    dc_next = np.zeros((batch, d), dhs.dtype) if dc_last is None else dc_last
    for t in reversed(range(steps)):
        dx[t], dh_next, dc_next, dW_t, db_t = lstm_step_backward(
            dhs[t] + dh_next, dc_next, step_caches[t], W)
        dW += dW_t
        db += db_t
    return dx, {"W": dW, "b": db, "h0": dh_next, "c0": dc_next}


# torch's gate blocks are i, f, g, o; ours are f, i, C̃, o: block k of ours is torch's _TORCH_LSTM[k]
_TORCH_LSTM = (1, 0, 2, 3)


def _blocks(array, count):
    return np.split(array, count, axis=0)


def lstm_from_torch(weight_ih, weight_hh, bias_ih, bias_hh):
    """torch.nn.LSTM's (and lstmkit.LSTM's) four arrays → ``W`` [4d, d+n], ``b`` [4d]."""
    w_ih, w_hh = _blocks(weight_ih, 4), _blocks(weight_hh, 4)
    bias = _blocks(bias_ih + bias_hh, 4)
    W = np.concatenate([np.concatenate([w_hh[k], w_ih[k]], axis=1) for k in _TORCH_LSTM])
    b = np.concatenate([bias[k] for k in _TORCH_LSTM])
    return W, b


_TORCH_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def lstm_weights(layer, *, gradients=False):
    """``(W, b)`` of a one-layer, one-direction ``lstmkit.LSTM``; with ``gradients=True``,
    ``(∂L/∂W, ∂L/∂b)`` from the layer's last backward pass."""
    source = layer.grads if gradients else layer.params
    arrays = [source[f"{name}_l0"] for name in _TORCH_NAMES]
    if gradients:          # ∂L/∂bias_ih = ∂L/∂bias_hh = ∂L/∂b: count it once
        arrays[3] = np.zeros_like(arrays[3])
    return lstm_from_torch(*arrays)


def rnn_weights(layer):
    """``(W, b)`` of a one-layer ``lstmkit.RNN``, h_t = act(W · [h_{t−1}, x_t] + b): W is
    [d, d+n], torch's ``weight_hh`` and ``weight_ih`` side by side, b the sum of its biases."""
    p = {name: layer.params[f"{name}_l0"] for name in _TORCH_NAMES}
    return np.concatenate([p["weight_hh"], p["weight_ih"]], axis=1), p["bias_ih"] + p["bias_hh"]


def set_rnn_weights(layer, W, b):
    """Load ``W`` [d, d+n] and ``b`` [d] into a one-layer ``lstmkit.RNN``."""
    d = W.shape[0]
    layer.load_state_dict({"weight_ih_l0": W[:, d:], "weight_hh_l0": W[:, :d],
                           "bias_ih_l0": b, "bias_hh_l0": np.zeros_like(b)})
    return layer


def set_lstm_weights(layer, W, b):
    """Load ``W`` [4d, d+n] and ``b`` [4d] into a one-layer ``lstmkit.LSTM``."""
    layer.load_state_dict({f"{name}_l0": value for name, value in lstm_to_torch(W, b).items()})
    return layer


def lstm_to_torch(W, b, *, gradient=False):
    """``W``, ``b`` → {"weight_ih", "weight_hh", "bias_ih", "bias_hh"} in torch's layout.

    torch has two biases where the article has one: the whole ``b`` goes to ``bias_ih`` and
    ``bias_hh`` is zero. With ``gradient=True`` the arrays are gradients (∂L/∂W, ∂L/∂b),
    and ∂L/∂bias_hh equals ∂L/∂bias_ih, since only their sum enters the cell."""
    d = W.shape[0] // 4
    order = np.argsort(_TORCH_LSTM)          # torch's block j is our block order[j]
    W_blocks, b_blocks = _blocks(W, 4), _blocks(b, 4)
    weight_hh = np.concatenate([W_blocks[k][:, :d] for k in order])
    weight_ih = np.concatenate([W_blocks[k][:, d:] for k in order])
    bias_ih = np.concatenate([b_blocks[k] for k in order])
    bias_hh = bias_ih.copy() if gradient else np.zeros_like(bias_ih)
    return {"weight_ih": weight_ih, "weight_hh": weight_hh, "bias_ih": bias_ih, "bias_hh": bias_hh}


# -- GRU -----------------------------------------------------------------------------------
def init_gru(input_size, hidden_size, rng, dtype=np.float64):
    """``W`` [3d, d+n], ``b`` [3d] and ``b_hn`` [d], drawn as torch draws them."""
    d, n = hidden_size, input_size
    return (_uniform((3 * d, d + n), d, rng, dtype), _uniform((3 * d,), d, rng, dtype),
            _uniform((d,), d, rng, dtype))


def gru_step(x_t, h_prev, W, b, b_hn):
    """One GRU step (torch's form): returns h_t and what the backward step needs."""
    d = h_prev.shape[-1]
    z_in = np.concatenate([h_prev, x_t], axis=-1)          # [h_{t−1}, x_t]
    a = z_in @ W[:2 * d].T + b[:2 * d]                      # reset and update gates
    r = sigmoid(a[:, :d])
    u = sigmoid(a[:, d:])                                   # z_t, the update gate
    hn = h_prev @ W[2 * d:, :d].T + b_hn                   # W_nh · h_{t−1} + b_hn
    n = np.tanh(x_t @ W[2 * d:, d:].T + b[2 * d:] + r * hn)
    h = (1.0 - u) * n + u * h_prev
    return h, (z_in, r, u, hn, n)


def gru_step_backward(dh, cache, W):
    """One GRU step backwards. Returns ∂L/∂x_t, ∂L/∂h_{t−1}, and this step's share of
    ∂L/∂W, ∂L/∂b and ∂L/∂b_hn."""
    z_in, r, u, hn, n = cache
    d = r.shape[-1]
    h_prev, x_t = z_in[:, :d], z_in[:, d:]
    dn = dh * (1.0 - u)                                     # h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}
    du = dh * (h_prev - n)
    dh_prev = dh * u
    da_n = dn * (1.0 - n ** 2)                              # through tanh
    dr = da_n * hn
    dhn = da_n * r                                          # r_t ⊙ (W_nh · h_{t−1} + b_hn)
    da_rz = np.concatenate([dr * r * (1.0 - r), du * u * (1.0 - u)], axis=-1)
    dW = np.zeros_like(W)
    dW[:2 * d] = da_rz.T @ z_in
    dW[2 * d:, :d] = dhn.T @ h_prev
    dW[2 * d:, d:] = da_n.T @ x_t
    db = np.concatenate([da_rz.sum(axis=0), da_n.sum(axis=0)])
    db_hn = dhn.sum(axis=0)
    dz_in = da_rz @ W[:2 * d]
    dx = dz_in[:, d:] + da_n @ W[2 * d:, d:]
    dh_prev = dh_prev + dz_in[:, :d] + dhn @ W[2 * d:, :d]
    return dx, dh_prev, dW, db, db_hn


def gru_forward(x, W, b, b_hn, h0=None):
    """Run over a sequence x [T, B, n]; returns all hidden states [T, B, d] and the cache."""
    steps, batch, _ = x.shape
    d = W.shape[0] // 3
    h = np.zeros((batch, d), x.dtype) if h0 is None else h0
    hs = np.empty((steps, batch, d), x.dtype)
    step_caches = []
    for t in range(steps):
        h, step_cache = gru_step(x[t], h, W, b, b_hn)
        hs[t] = h
        step_caches.append(step_cache)
    return hs, (W, step_caches)


def gru_backward(dhs, cache, dh_last=None):
    """Backpropagation through time; returns ``dx`` and grads = {"W", "b", "b_hn", "h0"}."""
    W, step_caches = cache
    steps, batch, d = dhs.shape
    dx = np.empty((steps, batch, W.shape[1] - d), dhs.dtype)
    dW, db, db_hn = np.zeros_like(W), np.zeros(3 * d, dhs.dtype), np.zeros(d, dhs.dtype)
    dh_next = np.zeros((batch, d), dhs.dtype) if dh_last is None else dh_last
    for t in reversed(range(steps)):
        dx[t], dh_next, dW_t, db_t, db_hn_t = gru_step_backward(dhs[t] + dh_next, step_caches[t], W)
        dW += dW_t
        db += db_t
        db_hn += db_hn_t
    return dx, {"W": dW, "b": db, "b_hn": db_hn, "h0": dh_next}


def gru_from_torch(weight_ih, weight_hh, bias_ih, bias_hh):
    """torch.nn.GRU's four arrays → ``W`` [3d, d+n], ``b`` [3d], ``b_hn`` [d] (same gate order)."""
    d = weight_hh.shape[1]
    W = np.concatenate([weight_hh, weight_ih], axis=1)
    b = bias_ih + np.concatenate([bias_hh[:2 * d], np.zeros_like(bias_hh[2 * d:])])
    return W, b, bias_hh[2 * d:].copy()


def gru_to_torch(W, b, b_hn, *, gradient=False):
    """``W``, ``b``, ``b_hn`` → torch's layout. The gates' two biases are summed in the cell:
    ``b`` goes to ``bias_ih``, and ``bias_hh`` holds zeros for r and z and ``b_hn`` for n.
    With ``gradient=True`` the arrays are gradients, and ∂L/∂bias_hh for r and z equals
    ∂L/∂bias_ih for them."""
    d = W.shape[0] // 3
    rz = b[:2 * d].copy() if gradient else np.zeros_like(b[:2 * d])
    return {"weight_ih": W[:, d:].copy(), "weight_hh": W[:, :d].copy(), "bias_ih": b.copy(),
            "bias_hh": np.concatenate([rz, b_hn])}


# -- the same calls for both cells (the benchmark's and the tests' entry points) -------------
def init_params(cell, input_size, hidden_size, rng, dtype=np.float64):
    """{"W", "b"} for "lstm", {"W", "b", "b_hn"} for "gru": pass them as ``FORWARD[cell](x, **params)``."""
    if cell == "lstm":
        return dict(zip(("W", "b"), init_lstm(input_size, hidden_size, rng, dtype)))
    if cell == "gru":
        return dict(zip(("W", "b", "b_hn"), init_gru(input_size, hidden_size, rng, dtype)))
    raise ValueError(f"cell must be 'lstm' or 'gru', got {cell!r}")


FORWARD = {"lstm": lstm_forward, "gru": gru_forward}
BACKWARD = {"lstm": lstm_backward, "gru": gru_backward}
