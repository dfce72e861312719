"""lstmkit.reference, the from-scratch NumPy LSTM and GRU: its hand-written backward pass
agrees with finite differences, its forward and backward with lstmkit's generated kernels
(to 1e-12 in float64), and its layout mapping with torch's."""
import numpy as np
import pytest

import lstmkit
from conftest import max_relative_difference
from lstmkit import reference
from lstmkit.gradcheck import numerical_gradient, relative_error

STEPS, BATCH, N_IN, HIDDEN = 6, 3, 4, 5


def _sequence_loss(cell, x, params, initial, projection, projection_last):
    """L = Σ_t h_t ⊙ R_t + Σ final-state ⊙ R_last, a loss whose ∂L/∂h_t is R_t."""
    hs, cache = reference.FORWARD[cell](x, **params, **initial)
    loss = np.sum(hs * projection) + np.sum(hs[-1] * projection_last[0])
    if cell == "lstm":
        loss += np.sum(cache[2] * projection_last[1])       # the final cell state C_T
    return float(loss), cache


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_backward_matches_finite_differences(cell):
    rng = np.random.default_rng(3)
    params = reference.init_params(cell, N_IN, HIDDEN, rng)
    params = {name: value * 3 for name, value in params.items()}   # saturate some gates too
    x = rng.standard_normal((STEPS, BATCH, N_IN))
    initial = {"h0": rng.standard_normal((BATCH, HIDDEN))}
    if cell == "lstm":
        initial["c0"] = rng.standard_normal((BATCH, HIDDEN))
    projection = rng.standard_normal((STEPS, BATCH, HIDDEN))
    projection_last = [rng.standard_normal((BATCH, HIDDEN)) for _ in range(2)]

    _, cache = _sequence_loss(cell, x, params, initial, projection, projection_last)
    extra = {"dh_last": projection_last[0]}
    if cell == "lstm":
        extra["dc_last"] = projection_last[1]
    dx, grads = reference.BACKWARD[cell](projection, cache, **extra)

    def loss():
        return _sequence_loss(cell, x, params, initial, projection, projection_last)[0]

    assert relative_error(dx, numerical_gradient(loss, x)) < 1e-7
    for name, value in {**params, **initial}.items():
        error = relative_error(grads[name], numerical_gradient(loss, value))
        assert error < 1e-7, f"∂L/∂{name}: relative error {error:.2e}"


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_matches_lstmkit_layers(cell):
    """The same weights in lstmkit's layer (torch's layout) give the same h, dx and
    gradients, with an initial state and a gradient on the final state."""
    rng = np.random.default_rng(6)
    params = reference.init_params(cell, N_IN, HIDDEN, rng)
    params["b"] = rng.standard_normal(params["b"].shape)
    to_torch = {"lstm": reference.lstm_to_torch, "gru": reference.gru_to_torch}[cell]
    layer = {"lstm": lstmkit.LSTM, "gru": lstmkit.GRU}[cell](N_IN, HIDDEN, dtype=np.float64)
    layer.load_state_dict({f"{name}_l0": value for name, value in to_torch(**params).items()})
    x = rng.standard_normal((STEPS, BATCH, N_IN))
    dy = rng.standard_normal((STEPS, BATCH, HIDDEN))
    h0, c0, dh_last, dc_last = (rng.standard_normal((BATCH, HIDDEN)) for _ in range(4))

    if cell == "lstm":
        hs, cache = reference.lstm_forward(x, **params, h0=h0, c0=c0)
        dx_ref, grads_ref = reference.lstm_backward(dy, cache, dh_last=dh_last, dc_last=dc_last)
        y, (h_n, c_n) = layer(x, (h0[None], c0[None]))
        dx, (dh0, dc0) = layer.backward(dy, (dh_last[None], dc_last[None]))
        assert max_relative_difference(c_n[0], cache[2]) < 1e-12
        assert max_relative_difference(dc0[0], grads_ref["c0"]) < 1e-12
    else:
        hs, cache = reference.gru_forward(x, **params, h0=h0)
        dx_ref, grads_ref = reference.gru_backward(dy, cache, dh_last=dh_last)
        y, h_n = layer(x, h0[None])
        dx, dh0 = layer.backward(dy, dh_last[None])
    assert max_relative_difference(y, hs) < 1e-12
    assert max_relative_difference(dx, dx_ref) < 1e-12
    assert max_relative_difference(dh0[0], grads_ref["h0"]) < 1e-12
    weight_grads = {k: v for k, v in grads_ref.items() if k not in ("h0", "c0")}
    expected = to_torch(**weight_grads, gradient=True)
    assert set(expected) == {name[:-3] for name in layer.grads}
    for name, value in expected.items():
        assert max_relative_difference(layer.grads[f"{name}_l0"], value) < 1e-12, name


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_torch_layout_round_trip(cell):
    rng = np.random.default_rng(0)
    params = reference.init_params(cell, N_IN, HIDDEN, rng)
    to_torch = {"lstm": reference.lstm_to_torch, "gru": reference.gru_to_torch}[cell]
    from_torch = {"lstm": reference.lstm_from_torch, "gru": reference.gru_from_torch}[cell]
    back = from_torch(**to_torch(**params))
    for name, value in zip(params, back):
        np.testing.assert_array_equal(value, params[name], err_msg=name)


def test_lstm_weights_of_a_layer():
    """set_lstm_weights/lstm_weights move (W, b) and (∂L/∂W, ∂L/∂b) in and out of a layer."""
    rng = np.random.default_rng(4)
    W, b = reference.init_lstm(N_IN, HIDDEN, rng)
    layer = reference.set_lstm_weights(lstmkit.LSTM(N_IN, HIDDEN, dtype=np.float64), W, b)
    W_back, b_back = reference.lstm_weights(layer)
    np.testing.assert_array_equal(W_back, W)
    np.testing.assert_array_equal(b_back, b)
    x = rng.standard_normal((STEPS, BATCH, N_IN))
    dy = rng.standard_normal((STEPS, BATCH, HIDDEN))
    layer(x)
    layer.backward(dy)
    _, cache = reference.lstm_forward(x, W, b)
    _, grads = reference.lstm_backward(dy, cache)
    dW, db = reference.lstm_weights(layer, gradients=True)
    assert max_relative_difference(dW, grads["W"]) < 1e-12
    assert max_relative_difference(db, grads["b"]) < 1e-12


def test_rnn_weights_of_a_layer():
    """rnn_weights gives the W, b with which h_t = tanh(W · [h_{t−1}, x_t] + b) is the layer's output."""
    rng = np.random.default_rng(5)
    layer = lstmkit.RNN(N_IN, HIDDEN, dtype=np.float64, seed=2)
    x = rng.standard_normal((STEPS, BATCH, N_IN))
    y, _ = layer(x)
    W, b = reference.rnn_weights(layer)
    h = np.zeros((BATCH, HIDDEN))
    for t in range(STEPS):
        h = np.tanh(np.concatenate([h, x[t]], axis=-1) @ W.T + b)
        assert max_relative_difference(h, y[t]) < 1e-13
    W2, b2 = W + 0.1, b - 0.2
    W_back, b_back = reference.rnn_weights(reference.set_rnn_weights(layer, W2, b2))
    np.testing.assert_array_equal(W_back, W2)
    np.testing.assert_array_equal(b_back, b2)


def test_lstm_blocks_are_in_the_articles_order():
    """Row block 0 of W is the forget gate: a large b_f keeps C_{t−1}, whatever W_i, W_C say."""
    d = HIDDEN
    rng = np.random.default_rng(1)
    W, b = reference.init_lstm(N_IN, d, rng)
    b[:d], b[d:2 * d] = 50.0, -50.0          # f_t = 1, i_t = 0: C_t = C_{t−1} exactly
    c0 = rng.standard_normal((BATCH, d))
    _, c, _ = reference.lstm_step(rng.standard_normal((BATCH, N_IN)), np.zeros((BATCH, d)), c0, W, b)
    np.testing.assert_allclose(c, c0, rtol=1e-15, atol=0)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_matches_torch(cell):
    """The layout mapping against torch itself (not only against lstmkit, which shares it)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](N_IN, HIDDEN, dtype=torch.float64)
    x = np.random.default_rng(2).standard_normal((STEPS, BATCH, N_IN))
    y = module(torch.from_numpy(x))[0].detach().numpy()
    arrays = {name: getattr(module, f"{name}_l0").detach().numpy().copy()
              for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    from_torch = {"lstm": reference.lstm_from_torch, "gru": reference.gru_from_torch}[cell]
    hs, _ = reference.FORWARD[cell](x, *from_torch(**arrays))
    assert max_relative_difference(hs, y) < 1e-12


def test_init_params_refuses_an_unknown_cell():
    with pytest.raises(ValueError, match="'lstm' or 'gru'"):
        reference.init_params("rnn", N_IN, HIDDEN, np.random.default_rng(0))
