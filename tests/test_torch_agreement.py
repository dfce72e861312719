"""lstmkit's RNN, LSTM and GRU against torch.nn: outputs, final states and every gradient."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import lstmkit
from conftest import max_relative_difference, numpy_state

PAIRS = {
    "lstm": (lstmkit.LSTM, torch.nn.LSTM, {}),
    "gru": (lstmkit.GRU, torch.nn.GRU, {}),
    "rnn_tanh": (lstmkit.RNN, torch.nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (lstmkit.RNN, torch.nn.RNN, {"nonlinearity": "relu"}),
}
TOLERANCE = {np.float64: 1e-10, np.float32: 1e-4}


def compare_with_torch(cell, dtype, steps, batch, input_size, hidden_size, num_layers,
                       batch_first, bias, bidirectional, seed, use_state):
    ours_class, torch_class, kwargs = PAIRS[cell]
    torch.manual_seed(seed)
    reference = torch_class(input_size, hidden_size, num_layers=num_layers, bias=bias,
                            batch_first=batch_first, bidirectional=bidirectional,
                            dtype=torch.float64 if dtype == np.float64 else torch.float32, **kwargs)
    ours = ours_class(input_size, hidden_size, num_layers=num_layers, bias=bias,
                      batch_first=batch_first, bidirectional=bidirectional, dtype=dtype, **kwargs)
    ours.load_state_dict(numpy_state(reference))

    rng = np.random.default_rng(seed)
    shape = (batch, steps, input_size) if batch_first else (steps, batch, input_size)
    x = rng.standard_normal(shape).astype(dtype)
    n_states = 2 if cell == "lstm" else 1
    state_shape = (num_layers * (2 if bidirectional else 1), batch, hidden_size)
    initial = [rng.standard_normal(state_shape).astype(dtype) for _ in range(n_states)] if use_state else None

    def pack(states):
        return tuple(states) if n_states == 2 else states[0]

    y, final = ours(x, pack(initial) if use_state else None)
    finals = list(final) if n_states == 2 else [final]
    dy = rng.standard_normal(y.shape).astype(dtype)
    d_finals = [rng.standard_normal(f.shape).astype(dtype) for f in finals]
    dx, d_initial = ours.backward(dy, pack(d_finals))
    d_initials = list(d_initial) if n_states == 2 else [d_initial]

    x_t = torch.tensor(x, requires_grad=True)
    initial_t = [torch.tensor(s, requires_grad=True) for s in initial] if use_state else None
    y_t, final_t = reference(x_t, pack(initial_t) if use_state else None)
    finals_t = list(final_t) if n_states == 2 else [final_t]
    loss = (y_t * torch.tensor(dy)).sum() + sum((f * torch.tensor(d)).sum() for f, d in zip(finals_t, d_finals))
    loss.backward()

    tol = TOLERANCE[dtype]
    checks = {"output": (y, y_t), "input gradient": (dx, x_t.grad)}
    checks.update({f"final state {k}": (f, f_t) for k, (f, f_t) in enumerate(zip(finals, finals_t))})
    if use_state:
        checks.update({f"initial state gradient {k}": (d, s.grad)
                       for k, (d, s) in enumerate(zip(d_initials, initial_t))})
    checks.update({name: (ours.grads[name], p.grad) for name, p in reference.named_parameters()})
    assert set(ours.grads) == {name for name, _ in reference.named_parameters()}
    for what, (mine, theirs) in checks.items():
        assert y.dtype == dtype
        error = max_relative_difference(mine, theirs.detach().numpy())
        assert error < tol, f"{cell} {np.dtype(dtype).name}: {what} differs by {error:.2e} (relative)"


@settings(max_examples=12, deadline=None, derandomize=True)
@given(cell=st.sampled_from(sorted(PAIRS)), dtype=st.sampled_from([np.float64, np.float32]),
       steps=st.integers(1, 7), batch=st.integers(1, 4), input_size=st.integers(1, 6),
       hidden_size=st.integers(1, 6), num_layers=st.integers(1, 3), batch_first=st.booleans(),
       bias=st.booleans(), bidirectional=st.booleans(), seed=st.integers(0, 2**16),
       use_state=st.booleans())
def test_random_configurations_agree_with_torch(**config):
    compare_with_torch(**config)


@pytest.mark.parametrize("cell", sorted(PAIRS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_cell_and_dtype_agrees_with_torch(cell, dtype):
    compare_with_torch(cell, dtype, steps=9, batch=3, input_size=5, hidden_size=7, num_layers=2,
                       batch_first=False, bias=True, bidirectional=False, seed=7, use_state=True)


def test_unbatched_input_agrees_with_torch():
    reference = torch.nn.LSTM(3, 4, num_layers=2, dtype=torch.float64)
    ours = lstmkit.LSTM(3, 4, num_layers=2, dtype=np.float64)
    ours.load_state_dict(numpy_state(reference))
    x = np.random.default_rng(0).standard_normal((6, 3))
    y, (h, c) = ours(x)
    y_t, (h_t, c_t) = reference(torch.tensor(x))
    assert y.shape == (6, 4) and h.shape == (2, 4)
    assert max_relative_difference(y, y_t.detach().numpy()) < 1e-12
    assert max_relative_difference(c, c_t.detach().numpy()) < 1e-12


def test_state_dict_round_trip_uses_torch_names():
    ours = lstmkit.LSTM(3, 4, num_layers=2, bidirectional=True)
    reference = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    assert list(ours.state_dict()) == list(reference.state_dict())
    for name, value in reference.state_dict().items():
        assert ours.state_dict()[name].shape == tuple(value.shape)
