"""Variable-length batches and bidirectional layers, against torch and against running each
sequence alone: outputs, final states, dx, the initial-state gradients and every parameter's."""
import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from conftest import numpy_state
import lstmkit

CELLS = {"lstm": (lstmkit.LSTM, torch.nn.LSTM, {}), "gru": (lstmkit.GRU, torch.nn.GRU, {}),
         "rnn_tanh": (lstmkit.RNN, torch.nn.RNN, {}),
         "rnn_relu": (lstmkit.RNN, torch.nn.RNN, {"nonlinearity": "relu"})}


def pair(cell, input_size, hidden_size, **options):
    ours, theirs, extra = CELLS[cell]
    torch.manual_seed(0)
    reference = theirs(input_size, hidden_size, dtype=torch.float64, **extra, **options)
    layer = ours(input_size, hidden_size, dtype=np.float64, **extra, **options)
    layer.load_state_dict(numpy_state(reference))
    return layer, reference


def states(state):
    return state if isinstance(state, tuple) else (state,)


def torch_run(reference, x, initial, lengths, dy, d_final, batch_first):
    """torch on the packed batch; returns outputs, finals, dx, d_initial, grads."""
    x_t = torch.tensor(x, requires_grad=True)
    initial_t = tuple(torch.tensor(s, requires_grad=True) for s in initial)
    packed = pack_padded_sequence(x_t, torch.from_numpy(lengths), batch_first=batch_first,
                                  enforce_sorted=False)
    out, final = reference(packed, initial_t if len(initial_t) > 1 else initial_t[0])
    y, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=x.shape[1 if batch_first else 0])
    final = states(final)
    loss = (y * torch.from_numpy(dy)).sum() + sum((f * torch.from_numpy(d)).sum()
                                                   for f, d in zip(final, d_final))
    reference.zero_grad()
    loss.backward()
    grads = {name: p.grad.numpy() for name, p in reference.named_parameters()}
    return (y.detach().numpy(), [f.detach().numpy() for f in final], x_t.grad.numpy(),
            [s.grad.numpy() for s in initial_t], grads)


CASES = [  # cell, num_layers, bidirectional, batch_first
    ("lstm", 1, False, False), ("lstm", 2, True, False), ("lstm", 2, False, True),
    ("gru", 1, True, True), ("gru", 2, False, False),
    ("rnn_tanh", 2, True, False), ("rnn_relu", 1, True, False),
]


@pytest.mark.parametrize("cell,num_layers,bidirectional,batch_first", CASES)
def test_variable_lengths_match_torch_packed_sequences(cell, num_layers, bidirectional, batch_first):
    rng = np.random.default_rng(0)
    steps, batch, n, d = 7, 5, 3, 4
    layer, reference = pair(cell, n, d, num_layers=num_layers, bidirectional=bidirectional,
                            batch_first=batch_first)
    lengths = np.array([7, 3, 1, 5, 3])                         # unsorted, repeated, one full
    shape = (batch, steps, n) if batch_first else (steps, batch, n)
    x = rng.standard_normal(shape)
    slots = num_layers * (2 if bidirectional else 1)
    initial = tuple(rng.standard_normal((slots, batch, d)) for _ in layer.kernels.STATES)
    y_shape = shape[:2] + (d * (2 if bidirectional else 1),)
    time_axis = 1 if batch_first else 0
    valid = np.arange(steps)[:, None] < lengths[None, :]
    valid = valid.T if batch_first else valid
    dy = rng.standard_normal(y_shape) * valid[..., None]        # torch's padded outputs get no gradient
    d_final = [rng.standard_normal((slots, batch, d)) for _ in layer.kernels.STATES]

    y, final = layer(x, initial if len(initial) > 1 else initial[0], lengths)
    dx, d_initial = layer.backward(dy, tuple(d_final) if len(d_final) > 1 else d_final[0])
    y_t, final_t, dx_t, d_initial_t, grads_t = torch_run(reference, x, initial, lengths, dy, d_final,
                                                         batch_first)

    np.testing.assert_allclose(y, y_t, atol=1e-10)
    assert np.all(np.take(y, np.arange(steps), axis=time_axis)[~valid] == 0)   # zero past each end
    for ours, theirs in zip(states(final), final_t):
        np.testing.assert_allclose(ours, theirs, atol=1e-10)
    np.testing.assert_allclose(dx, dx_t, atol=1e-10)
    for ours, theirs in zip(states(d_initial), d_initial_t):
        np.testing.assert_allclose(ours, theirs, atol=1e-10)
    assert set(layer.grads) == set(grads_t)
    for name, grad in grads_t.items():
        np.testing.assert_allclose(layer.grads[name], grad, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_gradients_match_running_each_sequence_alone(cell, bidirectional):
    rng = np.random.default_rng(1)
    steps, n, d = 6, 2, 3
    lengths = np.array([6, 2, 4, 1])
    batch = len(lengths)
    layer = lstmkit.RecurrentLayer(cell, n, d, num_layers=2, bidirectional=bidirectional,
                                   dtype=np.float64, seed=3)
    slots = 2 * layer.num_directions
    width = d * layer.num_directions
    x = rng.standard_normal((steps, batch, n))
    initial = [rng.standard_normal((slots, batch, d)) for _ in layer.kernels.STATES]
    dy = rng.standard_normal((steps, batch, width))
    d_final = [rng.standard_normal((slots, batch, d)) for _ in layer.kernels.STATES]
    pack = lambda parts: tuple(parts) if len(parts) > 1 else parts[0]  # noqa: E731

    y, final = layer(x, pack(initial), lengths)
    dx, d_initial = layer.backward(dy, pack(d_final))   # dy past the ends is ignored
    batch_grads = {k: v.copy() for k, v in layer.grads.items()}

    summed = {k: np.zeros_like(v) for k, v in batch_grads.items()}
    for b, length in enumerate(lengths):
        y_b, final_b = layer(x[:length, b:b + 1], pack([s[:, b:b + 1] for s in initial]))
        np.testing.assert_allclose(y[:length, b:b + 1], y_b, atol=1e-12)
        assert np.all(y[length:, b] == 0)
        for ours, alone in zip(states(final), states(final_b)):
            np.testing.assert_allclose(ours[:, b:b + 1], alone, atol=1e-12)
        dx_b, d_initial_b = layer.backward(np.ascontiguousarray(dy[:length, b:b + 1]),
                                           pack([np.ascontiguousarray(s[:, b:b + 1]) for s in d_final]))
        np.testing.assert_allclose(dx[:length, b:b + 1], dx_b, atol=1e-12)
        assert np.all(dx[length:, b] == 0)
        for ours, alone in zip(states(d_initial), states(d_initial_b)):
            np.testing.assert_allclose(ours[:, b:b + 1], alone, atol=1e-12)
        for name, grad in layer.grads.items():
            summed[name] += grad
    for name, grad in batch_grads.items():
        np.testing.assert_allclose(grad, summed[name], atol=1e-12, err_msg=name)


def test_zero_length_sequence_keeps_its_initial_state():
    rng = np.random.default_rng(2)
    layer = lstmkit.LSTM(2, 3, bidirectional=True, dtype=np.float64, seed=0)
    x = rng.standard_normal((4, 2, 2))
    h0, c0 = rng.standard_normal((2, 2, 3)), rng.standard_normal((2, 2, 3))
    y, (h, c) = layer(x, (h0, c0), np.array([4, 0]))
    np.testing.assert_array_equal(h[:, 1], h0[:, 1])
    np.testing.assert_array_equal(c[:, 1], c0[:, 1])
    assert np.all(y[:, 1] == 0)
    dh, dc = rng.standard_normal((2, 2, 3)), rng.standard_normal((2, 2, 3))
    dx, (dh0, dc0) = layer.backward(rng.standard_normal(y.shape), (dh, dc))
    np.testing.assert_array_equal(dh0[:, 1], dh[:, 1])     # the gradient passes straight through
    np.testing.assert_array_equal(dc0[:, 1], dc[:, 1])
    assert np.all(dx[:, 1] == 0)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_bidirectional_full_length_matches_torch(cell):
    rng = np.random.default_rng(3)
    layer, reference = pair(cell, 3, 5, num_layers=2, bidirectional=True)
    assert list(layer.params) == list(reference.state_dict())   # names and order, _reverse included
    assert any(name.endswith("_reverse") for name in layer.params)
    x = rng.standard_normal((6, 2, 3))
    dy = rng.standard_normal((6, 2, 10))
    y, final = layer(x)
    dx, _ = layer.backward(dy)
    x_t = torch.tensor(x, requires_grad=True)
    y_t, final_t = reference(x_t)
    y_t.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, y_t.detach().numpy(), atol=1e-10)
    for ours, theirs in zip(states(final), states(final_t)):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(dx, x_t.grad.numpy(), atol=1e-10)
    for name, p in reference.named_parameters():
        np.testing.assert_allclose(layer.grads[name], p.grad.numpy(), atol=1e-10, err_msg=name)


def test_bad_lengths_are_rejected_and_change_nothing():
    layer = lstmkit.LSTM(2, 3, dtype=np.float64, seed=0)
    x = np.zeros((4, 2, 2))
    layer(x)
    tape = layer._tape
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        layer(x, lengths=np.array([5, 1]))
    with pytest.raises(ValueError, match="2 integers"):
        layer(x, lengths=np.array([1, 2, 3]))
    assert layer._tape is tape          # the failed calls left the last forward pass in place
