"""Staged cells (lstmkit.staged): Cho's GRU, MUT1–3, Greff's FGR, Yao's Depth-Gated LSTM and a user
cell with every new feature.

Each built-in staged cell against an independent NumPy reference written from its paper
(tests/references.py), step by step against the whole sequence, and with ragged lengths
against each sequence run alone; the gradient checks of every built-in cell are in
tests/test_gradcheck.py.
"""
import numpy as np
import pytest

import lstmkit
from lstmkit import CellSpec, CellSpecError, RecurrentLayer, sigmoid, tanh
from lstmkit.gradcheck import layer_gradcheck
from references import STAGED_REFERENCES, depth_gated_lstm

STAGED = sorted(STAGED_REFERENCES)


def _layer(cell, dtype=np.float64, hidden=5, seed=0, **kwargs):
    n_in = hidden if lstmkit.load_kernels(cell).RAW_INPUT else 3
    return RecurrentLayer(cell, n_in, hidden, dtype=dtype, seed=seed, **kwargs)


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("cell", STAGED)
def test_forward_agrees_with_the_reference_from_the_paper(cell, dtype, tolerance):
    rng = np.random.default_rng(0)
    layer = _layer(cell, dtype)
    x = rng.standard_normal((9, 3, layer.input_size)).astype(dtype)
    initial = [rng.standard_normal((1, 3, layer.hidden_size)).astype(dtype) for _ in layer.kernels.STATES]
    y, final = layer(x, tuple(initial) if len(initial) > 1 else initial[0])
    final = final if isinstance(final, tuple) else (final,)
    params64 = {name: value.astype(np.float64) for name, value in layer.params.items()}
    y_ref, final_ref = STAGED_REFERENCES[cell](x.astype(np.float64), params64,
                                               [s[0].astype(np.float64) for s in initial])
    assert np.abs(y - y_ref).max() < tolerance
    for ours, reference in zip(final, final_ref, strict=True):
        assert np.abs(ours[0] - reference).max() < tolerance


def test_the_reference_comparison_can_fail():
    """Cho's GRU is not torch's: the torch form of the reference would differ by far more."""
    rng = np.random.default_rng(1)
    layer = _layer("gru_reset_before")
    x = rng.standard_normal((6, 2, 3))
    y, _ = layer(x)
    torch_form = lstmkit.GRU(3, 5, dtype=np.float64)
    torch_form.load_state_dict(layer.params)
    y_torch, _ = torch_form(x)
    assert np.abs(y - y_torch).max() > 1e-3


def test_gru_reset_after_false_has_torchs_parameters():
    cho = lstmkit.GRU(3, 4, num_layers=2, bidirectional=True, reset_after=False)
    torch_form = lstmkit.GRU(3, 4, num_layers=2, bidirectional=True)
    assert cho.parameter_shapes() == torch_form.parameter_shapes()
    assert cho.kernels.CELL == "gru_reset_before" and torch_form.kernels.CELL == "gru"
    assert cho.kernels.GATES == ("r", "z", "n")
    with pytest.raises(TypeError, match="reset_after"):
        lstmkit.GRU(3, 4, reset_after="no")


@pytest.mark.parametrize("cell", STAGED)
def test_step_by_step_equals_the_whole_sequence(cell):
    rng = np.random.default_rng(2)
    layer = _layer(cell, num_layers=2)
    x = rng.standard_normal((7, 2, layer.input_size))
    y, final = layer(x)
    state, steps = None, []
    for t in range(x.shape[0]):
        y_t, state = layer(x[t:t + 1], state)
        steps.append(y_t)
    np.testing.assert_allclose(np.concatenate(steps), y, atol=1e-13)
    np.testing.assert_allclose(np.stack(_states(state)), np.stack(_states(final)), atol=1e-13)


def _states(state):
    return list(state) if isinstance(state, tuple) else [state]


def _pack(parts):
    return tuple(parts) if len(parts) > 1 else parts[0]


@pytest.mark.parametrize("cell", STAGED)
def test_gradients_with_lengths_match_each_sequence_alone(cell):
    rng = np.random.default_rng(3)
    lengths = np.array([6, 2, 4, 1])
    layer = _layer(cell, hidden=3, num_layers=2, seed=3)
    x = rng.standard_normal((6, 4, layer.input_size))
    count = len(layer.kernels.STATES)
    h0 = [rng.standard_normal((2, 4, 3)) for _ in range(count)]
    dy = rng.standard_normal((6, 4, 3))
    dh = [rng.standard_normal((2, 4, 3)) for _ in range(count)]
    y, final = layer(x, _pack(h0), lengths)
    dx, dh0 = layer.backward(dy, _pack(dh))
    batch_grads = {k: v.copy() for k, v in layer.grads.items()}
    summed = {k: np.zeros_like(v) for k, v in batch_grads.items()}
    for b, length in enumerate(lengths):
        y_b, final_b = layer(x[:length, b:b + 1], _pack([s[:, b:b + 1] for s in h0]))
        np.testing.assert_allclose(y[:length, b:b + 1], y_b, atol=1e-12)
        assert np.all(y[length:, b] == 0)
        for ours, alone in zip(_states(final), _states(final_b)):
            np.testing.assert_allclose(ours[:, b:b + 1], alone, atol=1e-12)
        dx_b, dh0_b = layer.backward(np.ascontiguousarray(dy[:length, b:b + 1]),
                                     _pack([np.ascontiguousarray(s[:, b:b + 1]) for s in dh]))
        np.testing.assert_allclose(dx[:length, b:b + 1], dx_b, atol=1e-12)
        assert np.all(dx[length:, b] == 0)
        for ours, alone in zip(_states(dh0), _states(dh0_b)):
            np.testing.assert_allclose(ours[:, b:b + 1], alone, atol=1e-12)
        for name, grad in layer.grads.items():
            summed[name] += grad
    for name, grad in batch_grads.items():
        np.testing.assert_allclose(grad, summed[name], atol=1e-12, err_msg=name)


def test_gru_reset_before_bidirectional_lengths_gradients():
    layer = lstmkit.GRU(2, 3, num_layers=2, bidirectional=True, batch_first=True, reset_after=False,
                        dtype=np.float64, seed=4)
    x = np.random.default_rng(4).standard_normal((3, 6, 2))
    errors = layer_gradcheck(layer, x, lengths=np.array([6, 2, 4]))
    assert max(errors.values()) < 1e-6, errors


# -- a user cell with every new feature, through the public API alone -----------------------
def gated_state_cell():
    """A minimal gated unit with a product of a gated state, the raw input and an input-only gate:

        f = σ(W_f x_t + b_f)                     (input only: no recurrent weights)
        n = tanh(W_n (f ⊙ h_{t−1}) + b_n + x_t)  (a product of a gated state; the raw input)
        h_t = (1 − f) ⊙ h_{t−1} + f ⊙ n
    """
    spec = CellSpec("gated_state", gates="fn", states=("h",), input_gates="f", recurrent_gates="n")
    f = spec.let("forget_gate", sigmoid(spec.gx["f"]))
    spec.recurrent_operand("n", f * spec.prev["h"])
    n = spec.let("candidate", tanh(spec.gh["n"] + spec.x))
    spec.update("h", (1 - f) * spec.prev["h"] + f * n)
    return spec


def _gated_state_reference(x, params, h0):
    d = h0.shape[1]
    h, outputs = h0, []
    for x_t in x:
        f = 1 / (1 + np.exp(-(x_t @ params["weight_ih_l0"].T + params["bias_ih_l0"])))
        n = np.tanh((f * h) @ params["weight_hh_l0"].T + params["bias_hh_l0"] + x_t)
        h = (1 - f) * h + f * n
        outputs.append(h)
    assert params["weight_hh_l0"].shape == (d, d)
    return np.stack(outputs), h


def test_a_user_cell_with_every_new_feature():
    layer = RecurrentLayer(gated_state_cell(), 4, 4, num_layers=2, dtype=np.float64, seed=5)
    assert layer.parameter_shapes()["weight_ih_l0"] == (4, 4)     # f only
    assert layer.parameter_shapes()["weight_hh_l0"] == (4, 4)     # n only
    rng = np.random.default_rng(5)
    x, h0 = rng.standard_normal((6, 3, 4)), rng.standard_normal((2, 3, 4))
    errors = layer_gradcheck(layer, x, h0, lengths=np.array([6, 3, 5]))
    assert max(errors.values()) < 1e-6, errors
    one = RecurrentLayer(gated_state_cell(), 4, 4, dtype=np.float64, seed=6)
    y, h_final = one(x, h0[:1])
    y_ref, h_ref = _gated_state_reference(x, one.params, h0[0])
    assert np.abs(y - y_ref).max() < 1e-12 and np.abs(h_final[0] - h_ref).max() < 1e-12


def test_raw_input_needs_input_size_equal_to_hidden_size():
    with pytest.raises(ValueError, match="hidden_size=4 features: got input_size=3"):
        RecurrentLayer(gated_state_cell(), 3, 4)
    with pytest.raises(ValueError, match="bidirectional"):
        RecurrentLayer("mut1", 4, 4, num_layers=2, bidirectional=True)
    RecurrentLayer("mut1", 4, 4, num_layers=2)
    RecurrentLayer("mut3", 3, 4, num_layers=2, bidirectional=True)     # MUT3 reads no raw input


def test_staged_specs_are_checked_when_written():
    spec = CellSpec("loop", gates="fn", states=("h",))
    f = spec.let("gate", sigmoid(spec.gx["f"] + spec.gh["n"]))
    spec.recurrent_operand("n", f * spec.prev["h"])      # n's product would need itself
    spec.update("h", tanh(spec.gx["n"] + spec.gh["f"]) * f)
    with pytest.raises(CellSpecError, match="depends on its own product"):
        lstmkit.derive(spec)
    with pytest.raises(CellSpecError, match="not one of the recurrent gate blocks"):
        CellSpec("one_side", gates="fn", recurrent_gates="n").recurrent_operand("f", 1)
    with pytest.raises(CellSpecError, match="in neither input_gates nor recurrent_gates"):
        CellSpec("nothing", gates="fn", input_gates="f", recurrent_gates="f")
    with pytest.raises(CellSpecError, match="must be distinct gate blocks"):
        CellSpec("unknown", gates="fn", input_gates="fq")
    unused = CellSpec("unused", gates="fn", states=("h",), recurrent_gates="n")
    unused.update("h", tanh(unused.gx["f"] + unused.gx["n"]))
    with pytest.raises(CellSpecError, match=r"\['gh_n'\] are declared but never used"):
        unused.validate()
    with pytest.raises(CellSpecError, match="symbol of the raw input"):
        CellSpec("named", gates="f", states=("x_in",), output="x_in")


# -- the Depth-Gated LSTM: a value from the layer below -------------------------------------
@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_depth_gated_stack_agrees_with_the_reference_from_the_paper(dtype, tolerance):
    rng = np.random.default_rng(7)
    layer = lstmkit.DepthGatedLSTM(3, 4, num_layers=3, dtype=dtype, seed=7)
    # element-wise weights large enough that the depth gate matters
    layer.load_state_dict({k: v * (3.0 if k.startswith(("weight_c", "weight_l")) else 1.0)
                           for k, v in layer.params.items()})
    x = rng.standard_normal((8, 2, 3)).astype(dtype)
    h0, c0 = (rng.standard_normal((3, 2, 4)).astype(dtype) for _ in range(2))
    y, (h_final, c_final) = layer(x, (h0, c0))
    params64 = {k: v.astype(np.float64) for k, v in layer.params.items()}
    y_ref, h_ref, c_ref = depth_gated_lstm(x.astype(np.float64), params64, h0.astype(np.float64),
                                           c0.astype(np.float64), 3)
    for ours, reference in ((y, y_ref), (h_final, h_ref), (c_final, c_ref)):
        assert np.abs(ours - reference).max() < tolerance
    # without the depth gate's term the upper layers would differ: the comparison can fail
    no_depth = {k: (v if not k.startswith("weight_ih") else v.copy()) for k, v in params64.items()}
    for k in range(1, 3):
        no_depth[f"bias_ih_l{k}"] = params64[f"bias_ih_l{k}"].copy()
        no_depth[f"bias_ih_l{k}"][16:] = -50.0        # d = σ(−50 + …) ≈ 0
    y_without, _, _ = depth_gated_lstm(x.astype(np.float64), no_depth, h0.astype(np.float64),
                                       c0.astype(np.float64), 3)
    assert np.abs(y - y_without).max() > 1e-3


def test_depth_gated_gradients_inference_and_pieces():
    rng = np.random.default_rng(8)
    layer = lstmkit.DepthGatedLSTM(3, 4, num_layers=3, dtype=np.float64, seed=8)
    x = rng.standard_normal((7, 2, 3))
    state = tuple(rng.standard_normal((2, 3, 2, 4)))
    errors = layer_gradcheck(layer, x, state, lengths=np.array([7, 4]))
    assert max(errors.values()) < 1e-6, errors
    y, final = layer(x, state)
    y_inference, final_inference = layer(x, state, inference=True)     # two-slot histories elsewhere
    np.testing.assert_array_equal(y, y_inference)
    with pytest.raises(ValueError, match="bidirectional"):
        RecurrentLayer("depth_gated_lstm", 3, 4, num_layers=2, bidirectional=True)


def test_set_forget_bias_finds_the_f_block_on_each_side():
    spec = CellSpec("f_second", gates="nf", states=("h",), input_gates="f", recurrent_gates="nf")
    f = spec.let("forget_gate", sigmoid(spec.gx["f"] + spec.gh["f"]))
    spec.update("h", f * spec.prev["h"] + (1 - f) * tanh(spec.gh["n"]))
    layer = RecurrentLayer(spec, 2, 3, seed=0).set_forget_bias(1.5)
    assert np.all(layer.params["bias_ih_l0"] == 1.5)                  # f is weight_ih's only block
    assert np.all(layer.params["bias_hh_l0"][3:] == 0) and np.all(layer.params["bias_hh_l0"][:3] != 0)
    only_hh = CellSpec("f_recurrent", gates="nf", states=("h",), input_gates="n", recurrent_gates="f")
    g = only_hh.let("forget_gate", sigmoid(only_hh.gh["f"]))
    only_hh.update("h", g * only_hh.prev["h"] + (1 - g) * tanh(only_hh.gx["n"]))
    layer = RecurrentLayer(only_hh, 2, 3, seed=0).set_forget_bias(1.5)
    assert np.all(layer.params["bias_hh_l0"] == 1.5) and np.all(layer.params["bias_ih_l0"] != 1.5)
