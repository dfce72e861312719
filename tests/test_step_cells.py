"""LSTMCell, GRUCell and RNNCell against torch.nn's cells: forward and every gradient, float64
to 1e-10 and float32 to 1e-4, batched and unbatched, with and without biases; a finite-difference
check of every gradient; bad input refused with nothing changed."""
import numpy as np
import pytest
import torch

import lstmkit
from lstmkit.gradcheck import numerical_gradient

CASES = {
    "LSTMCell": (lambda n, d, **k: lstmkit.LSTMCell(n, d, **k), torch.nn.LSTMCell, 2),
    "GRUCell": (lambda n, d, **k: lstmkit.GRUCell(n, d, **k), torch.nn.GRUCell, 1),
    "RNNCell-tanh": (lambda n, d, **k: lstmkit.RNNCell(n, d, nonlinearity="tanh", **k),
                     lambda n, d, **k: torch.nn.RNNCell(n, d, nonlinearity="tanh", **k), 1),
    "RNNCell-relu": (lambda n, d, **k: lstmkit.RNNCell(n, d, nonlinearity="relu", **k),
                     lambda n, d, **k: torch.nn.RNNCell(n, d, nonlinearity="relu", **k), 1),
}


def _run_ours(cell, x, states, d_states):
    if len(states) == 2:
        new = cell(x, tuple(states))
        dx, d_prev = cell.backward(tuple(d_states))
        return list(new), dx, list(d_prev)
    new = cell(x, states[0])
    dx, d_prev = cell.backward(d_states[0])
    return [new], dx, [d_prev]


def _run_torch(cell, x, states, d_states):
    x = torch.tensor(x, requires_grad=True)
    states = [torch.tensor(s, requires_grad=True) for s in states]
    new = cell(x, tuple(states) if len(states) == 2 else states[0])
    new = list(new) if isinstance(new, tuple) else [new]
    sum(((n * torch.tensor(d)).sum() for n, d in zip(new, d_states)), torch.tensor(0.0, dtype=x.dtype)).backward()
    grads = {name: p.grad.numpy() for name, p in cell.named_parameters()}
    return [n.detach().numpy() for n in new], x.grad.numpy(), [s.grad.numpy() for s in states], grads


@pytest.mark.parametrize("dtype,tolerance", [(np.float64, 1e-10), (np.float32, 1e-4)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("name", sorted(CASES))
def test_the_cell_agrees_with_torch(name, batched, bias, dtype, tolerance):
    make_ours, make_theirs, n_states = CASES[name]
    n, d, batch = 5, 7, 3
    rng = np.random.default_rng(0)
    theirs = make_theirs(n, d, bias=bias).to(torch.float64 if dtype == np.float64 else torch.float32)
    ours = make_ours(n, d, bias=bias, dtype=dtype, seed=1)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    shape = (batch,) if batched else ()
    x = rng.standard_normal(shape + (n,)).astype(dtype)
    states = [rng.standard_normal(shape + (d,)).astype(dtype) for _ in range(n_states)]
    d_states = [rng.standard_normal(shape + (d,)).astype(dtype) for _ in range(n_states)]
    new, dx, d_prev = _run_ours(ours, x, states, d_states)
    t_new, t_dx, t_prev, t_grads = _run_torch(theirs, x, states, d_states)
    assert [name for name, _ in ours.named_parameters()] == [name for name, _ in theirs.named_parameters()]
    for mine, reference in zip(new + [dx] + d_prev, t_new + [t_dx] + t_prev):
        assert mine.shape == reference.shape and mine.dtype == dtype
        np.testing.assert_allclose(mine, reference, rtol=tolerance, atol=tolerance)
    assert ours.grads.keys() == t_grads.keys()
    for key in t_grads:
        np.testing.assert_allclose(ours.grads[key], t_grads[key], rtol=tolerance, atol=tolerance, err_msg=key)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_gradient_passes_a_finite_difference_check(name):
    make_ours, _, n_states = CASES[name]
    n, d, batch, eps = 3, 4, 2, 1e-6
    rng = np.random.default_rng(2)
    cell = make_ours(n, d, dtype=np.float64, seed=3)
    x = rng.standard_normal((batch, n))
    states = [rng.standard_normal((batch, d)) for _ in range(n_states)]
    projections = [rng.standard_normal((batch, d)) for _ in range(n_states)]

    def loss():
        new, _, _ = _run_ours(cell, x, [s.copy() for s in states], projections)
        return sum(float((v * p).sum()) for v, p in zip(new, projections))

    _, dx, d_prev = _run_ours(cell, x, states, projections)
    analytic = {**{k: v.copy() for k, v in cell.grads.items()}, "x": dx, **{f"state{k}": g for k, g in enumerate(d_prev)}}
    arrays = {**cell.params, "x": x, **{f"state{k}": s for k, s in enumerate(states)}}
    for key, array in arrays.items():
        numeric = numerical_gradient(loss, array, eps)
        np.testing.assert_allclose(analytic[key], numeric, rtol=1e-6, atol=1e-8, err_msg=key)


def test_bad_input_is_named_and_changes_nothing():
    cell = lstmkit.LSTMCell(3, 4, dtype=np.float64)
    x = np.ones((2, 3))
    h, c = cell(x)
    record, grads = cell._record, dict(cell.grads)
    for bad, error, message in ((np.ones((2, 4)), ValueError, r"\(B, 3\)"),
                                (np.ones((2, 3), np.float32), TypeError, "float64"),
                                (np.full((2, 3), np.nan), ValueError, "NaN")):
        with pytest.raises(error, match=message):
            cell(bad)
        assert cell._record is record
    with pytest.raises(ValueError, match=r"state c: expected shape \(2, 4\)"):
        cell(x, (h, np.ones((1, 4))))
    with pytest.raises(TypeError, match=r"pair \(dh1, dc1\)"):
        cell.backward(np.ones((2, 4)))
    with pytest.raises(ValueError, match="new h: expected shape"):
        cell.backward((np.ones((3, 4)), None))
    assert cell.grads == grads
    with pytest.raises(RuntimeError, match="before backward"):
        lstmkit.GRUCell(3, 4).backward(np.ones(4, np.float32))
    with pytest.raises(ValueError, match="nonlinearity"):
        lstmkit.RNNCell(3, 4, nonlinearity="sigmoid")


def test_repeated_steps_equal_a_layer_over_the_sequence():
    layer = lstmkit.LSTM(3, 4, dtype=np.float64, seed=0)
    cell = lstmkit.LSTMCell(3, 4, dtype=np.float64)
    cell.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items()})     # weight_ih_l0 → weight_ih
    x = np.random.default_rng(0).standard_normal((6, 2, 3))
    y, (h_n, c_n) = layer(x)
    state = None
    for t in range(6):
        state = cell(x[t], state)
        np.testing.assert_allclose(state[0], y[t], rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(state[1], c_n[0], rtol=1e-13, atol=1e-14)
