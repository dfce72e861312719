"""Layer behaviour: step-by-step equals whole sequence, bad input, saturation, loading weights."""
import numpy as np
import pytest

import lstmkit
from conftest import max_relative_difference

CELLS = ["lstm", "gru", "rnn_tanh", "peephole_lstm", "coupled_lstm"]


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def pack(states):
    return tuple(states) if len(states) > 1 else states[0]


@pytest.mark.parametrize("name", CELLS)
def test_step_by_step_equals_whole_sequence(name, rng):
    """T calls with T=1, chaining state forward and gradients back, equal one call over T steps."""
    steps, batch = 6, 3
    whole = lstmkit.RecurrentLayer(name, 4, 5, num_layers=2, dtype=np.float64, seed=2)
    x = rng.standard_normal((steps, batch, 4))
    y, final = whole(x)
    dy = rng.standard_normal(y.shape)
    d_final = tuple(rng.standard_normal(s.shape) for s in as_tuple(final))
    dx, d_initial = whole.backward(dy, pack(d_final))

    step_layers = []
    state, outputs = None, []
    for t in range(steps):
        layer = lstmkit.RecurrentLayer(name, 4, 5, num_layers=2, dtype=np.float64)
        layer.load_state_dict(whole.state_dict())
        out, state = layer(x[t:t + 1], state)
        outputs.append(out)
        step_layers.append(layer)
    assert max_relative_difference(np.concatenate(outputs), y) < 1e-14
    for mine, theirs in zip(as_tuple(state), as_tuple(final)):
        assert max_relative_difference(mine, theirs) < 1e-14

    d_state, dxs, grads = pack(d_final), [], {}
    for t in reversed(range(steps)):
        dx_t, d_state = step_layers[t].backward(dy[t:t + 1], d_state)
        dxs.insert(0, dx_t)
        for k, g in step_layers[t].grads.items():
            grads[k] = grads.get(k, 0) + g
    assert max_relative_difference(np.concatenate(dxs), dx) < 1e-12
    for mine, theirs in zip(as_tuple(d_state), as_tuple(d_initial)):
        assert max_relative_difference(mine, theirs) < 1e-12
    for k in whole.grads:
        assert max_relative_difference(grads[k], whole.grads[k]) < 1e-12, k


@pytest.fixture
def trained_pair(rng):
    """A float64 LSTM with a completed forward/backward, and the data used."""
    layer = lstmkit.LSTM(3, 4, num_layers=2, dtype=np.float64, seed=5)
    x = rng.standard_normal((5, 2, 3))
    y, _ = layer(x)
    layer.backward(np.ones_like(y))
    layer(x)  # a fresh forward, ready for backward
    return layer, x


def snapshot(layer):
    return ({k: v.copy() for k, v in layer.params.items()}, {k: v.copy() for k, v in layer.grads.items()})


def assert_unchanged(layer, before):
    params, grads = before
    assert all(np.array_equal(layer.params[k], v) for k, v in params.items())
    assert set(layer.grads) == set(grads)
    assert all(np.array_equal(layer.grads[k], v) for k, v in grads.items())


@pytest.mark.parametrize("bad, error, message", [
    (np.zeros((5, 3)).tolist(), TypeError, r"expected a NumPy array"),
    (np.zeros((5, 2, 3, 1)), ValueError, r"expected shape \(T, B, input_size\) or \(T, input_size\)"),
    (np.zeros(3), ValueError, r"got 1 dimensions"),
    (np.zeros((5, 2, 4)), ValueError, r"expected last dimension input_size=3"),
    (np.zeros((5, 2, 3), np.float32), TypeError, r"expected dtype float64 \(the layer's dtype\), got float32"),
    (np.zeros((5, 2, 3), np.int64), TypeError, r"expected dtype float64"),
    (np.full((5, 2, 3), np.nan), ValueError, r"contains NaN or inf"),
    (np.full((5, 2, 3), np.inf), ValueError, r"contains NaN or inf"),
])
def test_bad_input_is_named_and_changes_nothing(trained_pair, bad, error, message):
    layer, x = trained_pair
    before = snapshot(layer)
    with pytest.raises(error, match=message):
        layer(bad)
    assert_unchanged(layer, before)
    layer.backward(np.ones((5, 2, 4)))  # the last good forward is still usable


@pytest.mark.parametrize("state, error, message", [
    ((np.zeros((2, 2, 4)),), TypeError, r"expected a tuple of 2 array\(s\) \('h', 'c'\), each of shape \(2, 2, 4\)"),
    ((np.zeros((1, 2, 4)), np.zeros((2, 2, 4))), ValueError, r"state h: expected shape \(2, 2, 4\), got \(1, 2, 4\)"),
    ((np.zeros((2, 2, 4)), np.zeros((2, 3, 4))), ValueError, r"state c: expected shape \(2, 2, 4\), got \(2, 3, 4\)"),
    (np.zeros((2, 2, 4)), TypeError, r"expected a tuple of 2"),
])
def test_bad_state_is_named(trained_pair, state, error, message):
    layer, x = trained_pair
    before = snapshot(layer)
    with pytest.raises(error, match=message):
        layer(x, state)
    assert_unchanged(layer, before)


def test_bad_backward_arguments_change_nothing(trained_pair):
    layer, x = trained_pair
    layer(x)
    before = snapshot(layer)
    with pytest.raises(ValueError, match=r"d_output: expected shape \(5, 2, 4\), got \(5, 2, 3\)"):
        layer.backward(np.ones((5, 2, 3)))
    with pytest.raises(ValueError, match="d_output: contains NaN"):
        layer.backward(np.full((5, 2, 4), np.nan))
    with pytest.raises(ValueError, match=r"d_state c: expected shape"):
        layer.backward(np.ones((5, 2, 4)), (np.ones((2, 2, 4)), np.ones((2, 4))))
    assert_unchanged(layer, before)
    layer.backward(np.ones((5, 2, 4)))  # still possible after the refusals
    with pytest.raises(RuntimeError, match="already run"):
        layer.backward(np.ones((5, 2, 4)))


def test_backward_before_forward():
    with pytest.raises(RuntimeError, match="call forward before backward"):
        lstmkit.GRU(2, 3).backward(np.zeros((1, 1, 3), np.float32))


@pytest.mark.parametrize("order", ["fortran", "strided"])
def test_non_contiguous_input_gives_the_same_result(order, rng):
    layer = lstmkit.GRU(3, 4, dtype=np.float64, seed=1)
    x = rng.standard_normal((6, 2, 3))
    expected, _ = layer(x)
    odd = np.asfortranarray(x) if order == "fortran" else np.repeat(x, 2, axis=2)[:, :, ::2]
    assert not odd.flags.c_contiguous
    y, _ = layer(odd)
    assert np.array_equal(y, expected)
    dx, _ = layer.backward(np.ones_like(y))
    assert dx.shape == x.shape


@pytest.mark.parametrize("name", CELLS)
def test_empty_sequence(name):
    layer = lstmkit.RecurrentLayer(name, 3, 4, num_layers=2, dtype=np.float64)
    initial = tuple(np.full((2, 1, 4), 0.5) for _ in layer.kernels.STATES)
    y, final = layer(np.zeros((0, 1, 3)), pack(initial))
    assert y.shape == (0, 1, 4)
    for f, s in zip(as_tuple(final), initial):
        assert np.array_equal(f, s)
    d_final = tuple(np.full((2, 1, 4), 2.0) for _ in initial)
    dx, d_initial = layer.backward(np.zeros((0, 1, 4)), pack(d_final))
    assert dx.shape == (0, 1, 3)
    for d0, d1 in zip(as_tuple(d_initial), d_final):
        assert np.array_equal(d0, d1)
    assert all(not g.any() for g in layer.grads.values())


@pytest.mark.parametrize("name", CELLS + ["rnn_relu", "lstm_no_output_activation"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_saturated_pre_activations_stay_finite(name, dtype):
    layer = lstmkit.RecurrentLayer(name, 2, 3, dtype=dtype, seed=0)
    x = np.array([[[1e3, -1e3]], [[-1e3, 1e3]], [[1e3, 1e3]], [[-1e3, -1e3]]], dtype)
    y, final = layer(x)
    dx, d_initial = layer.backward(np.ones_like(y))
    for array in [y, dx, *as_tuple(final), *as_tuple(d_initial), *layer.grads.values()]:
        assert np.all(np.isfinite(array))


def test_load_state_dict_is_all_or_nothing():
    layer = lstmkit.LSTM(3, 4)
    before = layer.state_dict()
    good = lstmkit.LSTM(3, 4, seed=9).state_dict()
    bad_shape = dict(good, bias_hh_l0=np.zeros(15))
    with pytest.raises(ValueError, match=r"bias_hh_l0: expected shape \(16,\), got \(15,\)"):
        layer.load_state_dict(bad_shape)
    with pytest.raises(KeyError, match=r"missing \['bias_hh_l0'\]"):
        layer.load_state_dict({k: v for k, v in good.items() if k != "bias_hh_l0"})
    with pytest.raises(KeyError, match=r"unexpected \['weight_ih_l1'\]"):
        layer.load_state_dict(dict(good, weight_ih_l1=np.zeros((16, 4))))
    with pytest.raises(ValueError, match="weight_hh_l0: contains NaN"):
        layer.load_state_dict(dict(good, weight_hh_l0=np.full((16, 4), np.nan)))
    for k, v in before.items():
        assert np.array_equal(layer.params[k], v)
    layer.load_state_dict(good)
    assert all(np.array_equal(layer.params[k], v) for k, v in good.items())


def test_constructor_checks():
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        lstmkit.LSTM(3, 0)
    with pytest.raises(TypeError, match="float32 or float64"):
        lstmkit.LSTM(3, 4, dtype=np.int32)
    with pytest.raises(ValueError, match="no built-in cell 'lstmm'"):
        lstmkit.RecurrentLayer("lstmm", 3, 4)
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'"):
        lstmkit.RNN(3, 4, nonlinearity="sigmoid")


def test_parameter_counts_are_torchs():
    """The same number of parameters as torch's module, counted by torch; the peephole LSTM adds
    its three diagonal peephole vectors, CIFG drops the input gate's block."""
    import torch

    sizes = dict(input_size=10, hidden_size=20, num_layers=2, bidirectional=True)
    counts = {}
    for ours, theirs in ((lstmkit.RNN, torch.nn.RNN), (lstmkit.LSTM, torch.nn.LSTM), (lstmkit.GRU, torch.nn.GRU)):
        counts[ours] = sum(p.numel() for p in theirs(**sizes).parameters())
        assert ours(**sizes).num_parameters() == counts[ours]
    peepholes = lstmkit.PeepholeLSTM(**sizes).parameter_shapes()
    assert {k: v for k, v in peepholes.items() if not k.startswith("weight_c")} == lstmkit.LSTM(**sizes).parameter_shapes()
    assert sorted({k.split("_l")[0] for k in peepholes if k.startswith("weight_c")}) == ["weight_cf", "weight_ci",
                                                                                           "weight_co"]
    assert lstmkit.CoupledLSTM(**sizes).num_parameters() == counts[lstmkit.GRU]      # three blocks each


def test_named_parameters_are_torchs_names_in_torchs_order():
    import torch

    from lstmkit.models import SequenceRegressor
    from lstmkit.optim import SGD

    for bias in (True, False):
        sizes = dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, bias=bias)
        for ours, theirs in ((lstmkit.RNN, torch.nn.RNN), (lstmkit.LSTM, torch.nn.LSTM), (lstmkit.GRU, torch.nn.GRU)):
            layer = ours(**sizes)
            expected = [(name, tuple(p.shape)) for name, p in theirs(**sizes).named_parameters()]
            assert [(name, value.shape) for name, value in layer.named_parameters()] == expected
            assert [value.shape for value in layer.parameters()] == [shape for _, shape in expected]
    model = SequenceRegressor("lstm", 2, 4, seed=0)
    assert [name for name, _ in model.named_parameters()] == list(model.state_dict())
    weight = dict(model.named_parameters())["head.weight"]         # live arrays: an update shows through
    before = weight.copy()
    SGD(dict(model.named_parameters()), lr=1.0).step({k: np.ones_like(v) for k, v in model.params.items()})
    np.testing.assert_array_equal(weight, before - 1.0)


def test_float32_and_float64_each_compile_once():
    layer32 = lstmkit.LSTM(2, 3, dtype=np.float32)
    layer64 = lstmkit.LSTM(2, 3, dtype=np.float64)
    for layer in (layer32, layer64):
        y, _ = layer(np.ones((3, 2, 2), layer.dtype))
        assert y.dtype == layer.dtype
        layer.backward(np.ones_like(y))
        layer(np.ones((4, 5, 2), layer.dtype))  # other sizes reuse the same specialisation
    # small batches run the loop over time on the calling thread: forward_rows, backward_rows
    for function in (layer32.kernels.forward_rows, layer32.kernels.backward_rows):
        assert len(function.signatures) == 2, function.signatures


def test_load_state_dict_takes_any_mapping_and_refuses_anything_else(tmp_path):
    """Layers share the parameter handling of lstmkit.module.Module: an .npz archive opened with
    np.load is a mapping of arrays like a dict; a list is refused before anything changes."""
    source, target = lstmkit.LSTM(3, 4, seed=0), lstmkit.LSTM(3, 4, seed=1)
    np.savez(tmp_path / "weights.npz", **source.state_dict())
    with np.load(tmp_path / "weights.npz", allow_pickle=False) as archive:
        target.load_state_dict(archive)
    for name, value in source.params.items():
        np.testing.assert_array_equal(target.params[name], value)
    before = target.state_dict()
    with pytest.raises(TypeError, match="expected a dict of arrays"):
        target.load_state_dict(list(source.state_dict().items()))
    for name, value in before.items():
        np.testing.assert_array_equal(target.params[name], value)


# -- issue 11: changing x between forward and backward; values float32 cannot hold ---------------
@pytest.mark.parametrize("layout", ["time_major", "batch_first", "unbatched"])
@pytest.mark.parametrize("cell", ["lstm", "peephole_lstm"])
def test_backward_after_the_caller_changed_x_in_place_gives_the_gradients_of_the_x_forward_saw(cell, layout):
    """torch raises here; lstmkit keeps its own copy of x, so the gradients stay right."""
    rng = np.random.default_rng(11)
    shape = {"time_major": (6, 3, 4), "batch_first": (3, 6, 4), "unbatched": (6, 4)}[layout]
    x = rng.standard_normal(shape)
    layer = lstmkit.RecurrentLayer(cell, 4, 5, num_layers=2, batch_first=layout == "batch_first",
                                   dtype=np.float64, seed=0)
    y, _ = layer(x.copy())
    dy = rng.standard_normal(y.shape)
    expected_dx, _ = layer.backward(dy)
    expected = {name: grad.copy() for name, grad in layer.grads.items()}

    layer(x)
    x[...] = rng.standard_normal(shape)        # the caller refills its buffer before backward
    dx, _ = layer.backward(dy)
    np.testing.assert_array_equal(dx, expected_dx)
    for name, grad in expected.items():
        np.testing.assert_array_equal(layer.grads[name], grad, err_msg=name)


def test_float64_values_beyond_float32_are_refused_and_change_nothing():
    layer = lstmkit.LSTM(3, 4, seed=0)
    before = layer.state_dict()
    values = lstmkit.LSTM(3, 4, dtype=np.float64, seed=1).state_dict()
    values["bias_ih_l0"][5] = -1e300             # finite in float64, -inf in float32
    with pytest.raises(ValueError, match=r"bias_ih_l0: values up to 1e\+300 overflow float32"):
        layer.load_state_dict(values)
    for name, value in before.items():
        np.testing.assert_array_equal(layer.params[name], value)
    values["bias_ih_l0"][5] = 3e38              # the largest float32 is 3.4e38: this one fits
    layer.load_state_dict(values)
    assert np.all(np.isfinite(layer.params["bias_ih_l0"]))
