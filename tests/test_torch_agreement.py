"""lstmkit's RNN, LSTM and GRU against torch.nn: outputs, final states and every gradient."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import lstmkit
from lstmkit.agreement import torch_agreement

# lstmkit's class for each cell torch has; lstmkit.agreement builds torch's module
PAIRS = {
    "lstm": (lstmkit.LSTM, {}),
    "gru": (lstmkit.GRU, {}),
    "rnn_tanh": (lstmkit.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (lstmkit.RNN, {"nonlinearity": "relu"}),
}
TOLERANCE = {np.float64: 1e-10, np.float32: 1e-4}


def compare_with_torch(cell, dtype, steps, batch, input_size, hidden_size, num_layers,
                       batch_first, bias, bidirectional, seed, use_state):
    ours_class, kwargs = PAIRS[cell]
    ours = ours_class(input_size, hidden_size, num_layers=num_layers, bias=bias, batch_first=batch_first,
                      bidirectional=bidirectional, dtype=dtype, seed=seed, **kwargs)
    rng = np.random.default_rng(seed)
    shape = (batch, steps, input_size) if batch_first else (steps, batch, input_size)
    x = rng.standard_normal(shape).astype(dtype)
    state_shape = (num_layers * (2 if bidirectional else 1), batch, hidden_size)
    states = [rng.standard_normal(state_shape).astype(dtype) for _ in ours.kernels.STATES]
    state = (tuple(states) if len(states) > 1 else states[0]) if use_state else None
    differences = torch_agreement(ours, x, state, seed=seed)
    expected = {"output", "input gradient"} | {f"final state {s}" for s in ours.kernels.STATES} \
        | {f"gradient {name}" for name in ours.params}
    expected |= {f"initial state gradient {s}" for s in ours.kernels.STATES} if use_state else set()
    assert set(differences) == expected
    for what, error in differences.items():
        assert error < TOLERANCE[dtype], f"{cell} {np.dtype(dtype).name}: {what} differs by {error:.2e} (relative)"


@settings(max_examples=12, deadline=None, derandomize=True)
@given(cell=st.sampled_from(sorted(PAIRS)), dtype=st.sampled_from([np.float64, np.float32]),
       steps=st.integers(1, 7), batch=st.integers(1, 4), input_size=st.integers(1, 6),
       hidden_size=st.integers(1, 6), num_layers=st.integers(1, 3), batch_first=st.booleans(),
       bias=st.booleans(), bidirectional=st.booleans(), seed=st.integers(0, 2**16),
       use_state=st.booleans())
def test_random_configurations_agree_with_torch(**config):
    compare_with_torch(**config)


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@settings(max_examples=8, deadline=None, derandomize=True)
@given(dtype=st.sampled_from([np.float64, np.float32]), steps=st.integers(1, 7), batch=st.integers(1, 4),
       input_size=st.integers(1, 6), sizes=st.integers(2, 7).flatmap(
           lambda d: st.tuples(st.just(d), st.integers(1, d - 1))),
       num_layers=st.integers(1, 3), batch_first=st.booleans(), bias=st.booleans(),
       bidirectional=st.booleans(), seed=st.integers(0, 2**16), use_state=st.booleans())
def test_random_projected_lstms_agree_with_torch(dtype, steps, batch, input_size, sizes, num_layers, batch_first,
                                                 bias, bidirectional, seed, use_state):
    hidden_size, proj_size = sizes
    ours = lstmkit.LSTM(input_size, hidden_size, num_layers=num_layers, bias=bias, batch_first=batch_first,
                        bidirectional=bidirectional, proj_size=proj_size, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, steps, input_size) if batch_first else (steps, batch, input_size)).astype(dtype)
    slots = num_layers * (2 if bidirectional else 1)
    state = (rng.standard_normal((slots, batch, proj_size)).astype(dtype),
             rng.standard_normal((slots, batch, hidden_size)).astype(dtype)) if use_state else None
    differences = torch_agreement(ours, x, state, seed=seed)
    assert {f"gradient weight_hr_l{k}" for k in range(num_layers)} <= set(differences)
    for what, error in differences.items():
        assert error < TOLERANCE[dtype], f"proj_size={proj_size} {np.dtype(dtype).name}: {what} differs by {error:.2e}"


@pytest.mark.parametrize("cell", sorted(PAIRS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_cell_and_dtype_agrees_with_torch(cell, dtype):
    compare_with_torch(cell, dtype, steps=9, batch=3, input_size=5, hidden_size=7, num_layers=2,
                       batch_first=False, bias=True, bidirectional=False, seed=7, use_state=True)


@pytest.mark.parametrize("use_state", [False, True])
def test_unbatched_input_agrees_with_torch(use_state):
    rng = np.random.default_rng(0)
    ours = lstmkit.LSTM(3, 4, num_layers=2, dtype=np.float64, seed=0)
    x = rng.standard_normal((6, 3))                                   # [T, n]: no batch axis
    state = tuple(rng.standard_normal((2, 4)) for _ in range(2)) if use_state else None
    differences = torch_agreement(ours, x, state)
    assert max(differences.values()) < 1e-12, differences


def test_state_dict_round_trip_uses_torch_names():
    ours = lstmkit.LSTM(3, 4, num_layers=2, bidirectional=True)
    reference = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    assert list(ours.state_dict()) == list(reference.state_dict())
    for name, value in reference.state_dict().items():
        assert ours.state_dict()[name].shape == tuple(value.shape)
