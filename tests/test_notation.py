"""The article's notation (lstmkit.notation): exact equations, and gradients that are whole and true."""
import re

import numpy as np
import pytest
import sympy as sp

import lstmkit
from lstmkit import notation
from lstmkit import notebook as nb
from lstmkit.cells import BUILTIN_CELLS
from lstmkit.symbolic import CellSpec, sigmoid, tanh

LINEAR = r"\cdot [h_{t-1}, x_t]"


def test_lstm_equations_read_as_colah_writes_them():
    assert notation.equations_latex(BUILTIN_CELLS["lstm"]) == [
        rf"f_t &= \sigma\left(W_{{f}} {LINEAR} + b_{{f}}\right)",
        rf"i_t &= \sigma\left(W_{{i}} {LINEAR} + b_{{i}}\right)",
        rf"\tilde{{C}}_t &= \tanh\left(W_{{C}} {LINEAR} + b_{{C}}\right)",
        r"C_t &= f_t \odot C_{t-1} + i_t \odot \tilde{C}_t",
        rf"o_t &= \sigma\left(W_{{o}} {LINEAR} + b_{{o}}\right)",
        r"h_t &= o_t \odot \tanh\left(C_t\right)",
    ]


def test_peephole_weights_read_p_k_odot_c():
    assert notation.equations_latex(BUILTIN_CELLS["peephole_lstm"]) == [
        rf"f_t &= \sigma\left(W_{{f}} {LINEAR} + p_{{f}} \odot C_{{t-1}} + b_{{f}}\right)",
        rf"i_t &= \sigma\left(W_{{i}} {LINEAR} + p_{{i}} \odot C_{{t-1}} + b_{{i}}\right)",
        rf"\tilde{{C}}_t &= \tanh\left(W_{{C}} {LINEAR} + b_{{C}}\right)",
        r"C_t &= f_t \odot C_{t-1} + i_t \odot \tilde{C}_t",
        rf"o_t &= \sigma\left(W_{{o}} {LINEAR} + p_{{o}} \odot C_t + b_{{o}}\right)",
        r"h_t &= o_t \odot \tanh\left(C_t\right)",
    ]


def test_gru_reads_r_z_and_h_tilde():
    # torch's (and Cho et al.'s eq. 7) order: h_t = z_t ⊙ h_{t−1} + (1 − z_t) ⊙ h̃_t; the reset
    # gate multiplies the whole recurrent product W_{h,h} · h_{t−1} + b_{h,h}, as in torch.nn.GRU
    assert notation.equations_latex(BUILTIN_CELLS["gru"]) == [
        rf"r_t &= \sigma\left(W_{{r}} {LINEAR} + b_{{r}}\right)",
        rf"z_t &= \sigma\left(W_{{z}} {LINEAR} + b_{{z}}\right)",
        r"\tilde{h}_t &= \tanh\left(W_{h,x} \cdot x_t + r_t \odot \left(W_{h,h} \cdot h_{t-1} + b_{h,h}\right)"
        r" + b_{h,x}\right)",
        r"h_t &= z_t \odot h_{t-1} + \left(1 - z_t\right) \odot \tilde{h}_t",
    ]


def test_plain_rnn_and_greff_ablations():
    assert notation.equations_latex(BUILTIN_CELLS["rnn_tanh"]) == [
        rf"h_t &= \tanh\left(W {LINEAR} + b\right)"]
    assert r"i_t &= 1 - f_t" in notation.equations_latex(BUILTIN_CELLS["coupled_lstm"])
    assert r"C_t &= C_{t-1} + i_t \odot \tilde{C}_t" in notation.equations_latex(BUILTIN_CELLS["lstm_no_forget_gate"])
    assert r"C_t &= f_t \odot C_{t-1} + \tilde{C}_t" in notation.equations_latex(BUILTIN_CELLS["lstm_no_input_gate"])
    assert notation.equations_latex(BUILTIN_CELLS["lstm_no_output_gate"])[-1] == r"h_t &= \tanh\left(C_t\right)"
    assert notation.equations_latex(BUILTIN_CELLS["lstm_no_output_activation"])[-1] == r"h_t &= o_t \odot C_t"


def test_lstm_gradient_with_respect_to_h_prev_is_whole():
    lines = dict((names[0], line) for names, line in notation.gradient_lines(BUILTIN_CELLS["lstm"]))
    assert lines["h_{t-1}"] == (r"\frac{\partial L}{\partial h_{t-1}} &= W_{f,h}^\top \cdot \delta_{f}"
                                r" + W_{i,h}^\top \cdot \delta_{i} + W_{C,h}^\top \cdot \delta_{C}"
                                r" + W_{o,h}^\top \cdot \delta_{o}")
    assert lines[r"\delta_{o}"] == (r"\delta_{o} &= \delta h_t \odot o_t \odot \left(1 - o_t\right)"
                                   r" \odot \tanh\left(C_t\right)")
    assert lines["C_{t-1}"] == (r"\frac{\partial L}{\partial C_{t-1}} &= \left(\delta C_t + \delta h_t \odot o_t"
                                r" \odot \left(1 - \tanh^{2}\left(C_t\right)\right)\right) \odot f_t")


def test_gru_gradient_with_respect_to_h_prev_is_whole():
    lines = dict((names[0], line) for names, line in notation.gradient_lines(BUILTIN_CELLS["gru"]))
    assert lines["h_{t-1}"] == (r"\frac{\partial L}{\partial h_{t-1}} &= \delta h_t \odot z_t"
                                r" + W_{r,h}^\top \cdot \delta_{r} + W_{z,h}^\top \cdot \delta_{z}"
                                r" + W_{h,h}^\top \cdot \left(r_t \odot \delta_{h}\right)")


def _mgu():
    """A user's cell (the minimal gated unit): names the library has never seen."""
    spec = CellSpec("mgu", gates="fn", states=("h",))
    f = spec.let("forget_gate", sigmoid(spec.gx["f"] + spec.gh["f"]), r"f_t")
    n = spec.let("candidate", tanh(spec.gx["n"] + f * spec.gh["n"]), r"\tilde{h}_t")
    spec.update("h", (1 - f) * spec.prev["h"] + f * n)
    return spec


def _odd_user_cell():
    spec = CellSpec("odd", gates="ab", states=("h", "m"), params=("scale",))
    u = spec.let("u", sigmoid(spec.gx["a"] + spec.gh["a"] + spec.param["scale"] * spec.prev["m"]))
    spec.update("m", u * spec.prev["m"] + (1 - u) * (spec.gx["b"] + spec.gh["b"]))
    spec.update("h", tanh(spec.prev["m"]) * u)
    return spec


def _janet():
    """A user's cell that names its candidate C̃_t although its only state is h."""
    spec = CellSpec("janet", gates="fc", states=("h",))
    f = spec.let("forget_gate", sigmoid(spec.gx["f"] + spec.gh["f"]), "f_t")
    candidate = spec.let("candidate", tanh(spec.gx["c"] + spec.gh["c"]), r"\tilde{C}_t")
    spec.update("h", f * spec.prev["h"] + (1 - f) * candidate)
    return spec


def test_a_summed_block_stays_whole_inside_a_gradient():
    lines = dict((names[0], line) for names, line in notation.gradient_lines(_odd_user_cell()))
    assert r"\left(W_{b} \cdot [h_{t-1}, x_t] + b_{b}\right)" in lines[r"\delta_{a}"], lines[r"\delta_{a}"]
    assert "W_{b,h}" not in lines[r"\delta_{a}"] and r"\mathrm{scale} \odot m_{t-1}" in notation.equations_latex(_odd_user_cell())[0]


def test_user_cells_keep_their_own_names():
    assert notation.equations_latex(_janet()) == [
        rf"f_t &= \sigma\left(W_{{f}} {LINEAR} + b_{{f}}\right)",
        rf"\tilde{{C}}_t &= \tanh\left(W_{{C}} {LINEAR} + b_{{C}}\right)",
        r"h_t &= f_t \odot h_{t-1} + \left(1 - f_t\right) \odot \tilde{C}_t",
    ]


# staged cells (lstmkit.staged) are not drawn as W_k · [h_{t−1}, x_t] + b_k: notation refuses them
CELLS = {**{k: v for k, v in BUILTIN_CELLS.items() if not v.staged}, "mgu": _mgu(), "odd": _odd_user_cell(),
         "janet": _janet()}


def test_staged_cells_are_refused_by_name():
    with pytest.raises(ValueError, match="'mut1' is a staged cell"):
        notation.equations_latex(BUILTIN_CELLS["mut1"])


@pytest.mark.parametrize("name", sorted(CELLS))
def test_no_listing_says_the_gradient_to_h_prev_is_zero(name):
    for names, line in notation.gradient_lines(CELLS[name]):
        if "h_{t-1}" in names:
            rhs = line.split("&=", 1)[1].strip()
            assert rhs != "0" and r"^\top" in rhs, line
    rendered = " ".join(notation.equations_latex(CELLS[name]) + notation.gradients_latex(CELLS[name]))
    for internal in ("gx_", "gh_", "g^{x}", "weight_", "new_", "__"):
        assert internal not in rendered, f"{name}: the library's name {internal!r} leaked into {rendered}"
    assert not re.search(r"(?<!\\)delta_", rendered), rendered


def _numeric_step(spec, rng, d=3, n=2):
    """Weights per block split into the columns on x_t and on h_{t−1}, and one step's values."""
    x, prev = rng.normal(size=n), {s: rng.normal(size=d) for s in spec.states}
    W_x = {g: rng.normal(size=(d, n)) for g in spec.gates}
    W_h = {g: rng.normal(size=(d, d)) for g in spec.gates}
    b_x = {g: rng.normal(size=d) for g in spec.gates}
    b_h = {g: rng.normal(size=d) for g in spec.gates}
    params = {p: rng.normal(size=d) for p in spec.param_names}
    return x, prev, W_x, W_h, b_x, b_h, params


@pytest.mark.parametrize("name", sorted(CELLS))
def test_rendered_gradient_to_h_prev_matches_finite_differences(name):
    """∂L/∂h_{t−1} = (direct part) + Σ_k W_{k,h}ᵀ · (what reaches block k's h side), as rendered."""
    spec = CELLS[name]
    cell = notation.CellNotation(spec)
    rng = np.random.default_rng(0)
    x, prev, W_x, W_h, b_x, b_h, params = _numeric_step(spec, rng)
    delta = {s: rng.normal(size=prev[s].shape) for s in spec.states}
    inputs = list(spec.gx.values()) + list(spec.gh.values()) + list(spec.prev.values()) + list(spec.param.values())
    unname = {**{cell.new_symbol[s]: cell.new_state[s] for s in spec.states}, **cell.expanded}

    def values(h_prev):
        gx = [W_x[g] @ x + b_x[g] for g in spec.gates]
        gh = [W_h[g] @ h_prev + b_h[g] for g in spec.gates]
        state = [h_prev if s == spec.output else prev[s] for s in spec.states]
        return gx + gh + state + [params[p] for p in spec.param_names]

    def evaluate(expr, h_prev):
        expr = sp.sympify(expr).xreplace(unname).xreplace(unname).xreplace(unname)
        function = sp.lambdify(inputs + list(cell.delta.values()), expr,
                               modules=[{"sigmoid": lambda v: 1 / (1 + np.exp(-v)),
                                         "relu": lambda v: np.maximum(v, 0),
                                         "positive": lambda v: (v > 0).astype(float)}, "numpy"])
        return function(*values(h_prev), *[delta[s] for s in spec.states]) * np.ones(prev[spec.output].shape)

    def loss(h_prev):
        return sum(float(delta[s] @ evaluate(cell.new_state[s], h_prev)) for s in spec.states)

    h0, eps = prev[spec.output], 1e-6
    numeric = np.array([(loss(h0 + eps * e) - loss(h0 - eps * e)) / (2 * eps) for e in np.eye(len(h0))])
    analytic = evaluate(notation._gradient(cell, spec.prev[spec.output]), h0)
    for g in cell.block_order:
        reaching_h_side = notation._gradient(cell, spec.gh[g])
        analytic = analytic + W_h[g].T @ evaluate(reaching_h_side, h0)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


def test_show_helpers_select_lines_and_reject_unknown_names():
    lstm = BUILTIN_CELLS["lstm"]
    shown = nb.show_equations(lstm, only=["f_t", "C_t"]).data
    assert r"f_t &=" in shown and r"C_t &=" in shown and r"o_t &=" not in shown
    shown = nb.show_gradients(lstmkit.derive(lstm), only=["h_{t-1}"]).data
    assert r"\partial h_{t-1}} &= W_{f,h}^\top" in shown and r"\delta_{f} &=" not in shown
    # the names chapters used before lstmkit.notation still select the same lines
    assert nb.show_gradients(lstm, only=[r"\partial g_{f}"]).data == nb.show_gradients(lstm, only=[r"\delta_{f}"]).data
    with pytest.raises(ValueError, match="no line named"):
        nb.show_equations(lstm, only=["q_t"])
    with pytest.raises(ValueError, match="no line named"):
        nb.show_gradients(lstm, only=["nothing"])


@pytest.mark.parametrize("layer_class", [lstmkit.LSTM, lstmkit.GRU, lstmkit.PeepholeLSTM, lstmkit.RNN])
def test_article_parameters_and_step_reproduce_the_layer(layer_class):
    layer = layer_class(3, 4, dtype=np.float64, seed=1)
    rng = np.random.default_rng(2)
    x_t = rng.normal(size=(2, 3))
    state = [rng.normal(size=(2, 4)) for _ in layer.cell.states]
    parameters = notation.article_parameters(layer)
    expected = notation.step(layer.cell, parameters, x_t, state)
    _, final = layer(x_t[None], tuple(s[None] for s in state) if len(state) > 1 else state[0][None])
    final = final if isinstance(final, tuple) else (final,)
    for mine, theirs in zip(expected, final):
        np.testing.assert_allclose(mine, theirs[0], rtol=0, atol=1e-13)


def test_article_gradients_and_set_gate():
    layer = lstmkit.LSTM(2, 3, dtype=np.float64, seed=0)
    notation.set_gate(layer, "f", weight=0.0, bias=[1.0, 2.0, 3.0])
    W_f, b_f = notation.article_parameters(layer)["f"]
    assert W_f.shape == (3, 5) and not W_f.any() and np.array_equal(b_f, [1.0, 2.0, 3.0])
    x = np.random.default_rng(0).normal(size=(4, 1, 2))
    layer(x)
    np.testing.assert_allclose(layer.gate_activations()["forget_gate"], 1 / (1 + np.exp(-np.array([1.0, 2, 3]))) + 0 * x[:, :, :1])
    layer.backward(np.ones((4, 1, 3)))
    d_W_f, d_b_f = notation.article_parameters(layer, gradients=True)["f"]
    rows = slice(3, 6)   # torch's order i, f, g, o
    np.testing.assert_array_equal(d_b_f, layer.grads["bias_hh_l0"][rows])
    np.testing.assert_array_equal(d_W_f[:, 3:], layer.grads["weight_ih_l0"][rows])
    before = {k: v.copy() for k, v in layer.params.items()}
    with pytest.raises(ValueError, match="no gate 'g'"):
        notation.set_gate(layer, "g", bias=0.0)
    with pytest.raises(ValueError):
        notation.set_gate(layer, "i", weight=np.zeros((3, 4)), bias=0.0)   # wrong shape: nothing changes
    assert all(np.array_equal(before[k], layer.params[k]) for k in before)
