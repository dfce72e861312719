"""The symbolic layer: spec validation, and what the derivation promises."""
import pytest
import sympy as sp

import lstmkit
from lstmkit import CellSpec, CellSpecError, derive, sigmoid, tanh
from lstmkit.cells import BUILTIN_CELLS
from lstmkit.symbolic import ACTIVATIONS


def test_unbound_symbol_is_rejected_at_definition():
    spec = CellSpec("broken", gates="f", states=("h",))
    with pytest.raises(CellSpecError, match=r"unbound symbol\(s\) \['q'\]"):
        spec.let("forget_gate", sigmoid(spec.gx["f"] + sp.Symbol("q")))


def test_missing_state_update_is_rejected():
    spec = CellSpec("half", gates="fg", states=("h", "c"))
    spec.update("h", tanh(spec.gx["g"] + spec.gh["g"]) * sigmoid(spec.gx["f"]))
    with pytest.raises(CellSpecError, match=r"no update given for state\(s\) \['c'\]"):
        spec.validate()


def test_wrong_number_of_gate_blocks_is_rejected():
    spec = CellSpec("extra_block", gates="fgz", states=("h",))
    spec.update("h", sigmoid(spec.gx["f"] + spec.gh["f"]) * tanh(spec.gx["g"] + spec.gh["g"]))
    with pytest.raises(CellSpecError, match=r"gate block\(s\) \['z'\] are declared but never used"):
        derive(spec)


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="not an identifier", gates="f"), "identifier"),
    (dict(name="c", gates=""), "at least one gate"),
    (dict(name="c", gates="ff"), "distinct"),
    (dict(name="c", gates="f", states=("h",), output="c"), "not one of the states"),
])
def test_malformed_spec_arguments(kwargs, message):
    with pytest.raises(CellSpecError, match=message):
        CellSpec(**kwargs)


def test_update_of_unknown_state_and_reused_name():
    spec = CellSpec("cell", gates="f")
    with pytest.raises(CellSpecError, match="not one of the states"):
        spec.update("c", spec.gx["f"])
    spec.let("gate", sigmoid(spec.gx["f"]))
    with pytest.raises(CellSpecError, match="not a new Python identifier"):
        spec.let("gate", spec.gx["f"])


@pytest.mark.parametrize("name", sorted(BUILTIN_CELLS))
def test_backward_recomputes_nothing_transcendental(name):
    derivation = derive(BUILTIN_CELLS[name])
    expressions = [e for _, e in derivation.backward_cse] + list(derivation.gradients.values())
    for expr in expressions:
        for node in sp.preorder_traversal(expr):
            assert not isinstance(node, (*ACTIVATIONS, sp.exp)), (name, expr)
    # everything backward reads is saved, a previous state, a parameter or an incoming gradient
    spec = derivation.spec
    allowed = (set(derivation.saved) | set(spec.prev.values()) | set(spec.param.values())
               | set(derivation.grad_out.values()) | {s for s, _ in derivation.backward_cse})
    for expr in expressions:
        assert expr.free_symbols <= allowed, (name, expr.free_symbols - allowed)


def test_activation_derivatives_are_written_through_outputs():
    spec = lstmkit.rnn_spec("tanh")
    derivation = derive(spec)
    (saved,) = derivation.saved
    gradient = sp.expand(derivation.raw_gradients[sp.Symbol("d_g_h", real=True)])
    assert gradient == sp.expand(sp.Symbol("d_h", real=True) * (1 - saved**2))

    x = sp.Symbol("x")
    assert sp.simplify(sp.diff(sigmoid(x), x) - sigmoid(x) * (1 - sigmoid(x))) == 0


def test_derived_gradients_equal_direct_differentiation():
    """The CSE'd gradients, with saved values substituted back, equal sympy.diff of the expansion."""
    for name in ("lstm", "gru", "peephole_lstm", "coupled_lstm"):
        derivation = derive(BUILTIN_CELLS[name])
        spec = derivation.spec
        back = dict(derivation.activations)
        expanded_saved = {}
        for sym, expr in back.items():
            expanded_saved[sym] = expr.xreplace(expanded_saved).xreplace(
                {sp.Symbol(i.name, real=True): e for i, e in zip(
                    spec.intermediates, _expanded(spec))})
        values = {s: 0.3 + 0.1 * k for k, s in enumerate(spec.input_symbols)}
        values.update({s: 0.7 - 0.2 * k for k, s in enumerate(derivation.grad_out.values())})
        expanded = spec.expanded_updates()
        tmp_values = {}
        for sym, expr in derivation.backward_cse:
            tmp_values[sym] = expr.xreplace(tmp_values)
        for grad_sym, expr in derivation.gradients.items():
            generated = expr.xreplace(tmp_values).xreplace(expanded_saved).xreplace(values)
            wrt = grad_sym.name[2:]
            target = next(s for s in spec.input_symbols if s.name in (wrt, "gx_" + wrt[2:]))
            direct = sum(derivation.grad_out[s] * sp.diff(expanded[s], target) for s in spec.states)
            assert abs(float(generated.evalf()) - float(direct.xreplace(values).evalf())) < 1e-12, \
                (name, grad_sym)


def _expanded(spec):
    values, out = {}, []
    for item in spec.intermediates:
        expr = item.expr.xreplace(values)
        values[sp.Symbol(item.name, real=True)] = expr
        out.append(expr)
    return out


def test_summed_blocks_detection():
    assert derive(BUILTIN_CELLS["lstm"]).summed_blocks
    assert derive(BUILTIN_CELLS["lstm"]).hidden_factors is None
    gru = derive(BUILTIN_CELLS["gru"])
    assert not gru.summed_blocks  # r ⊙ (W_hn h + b_hn)
    assert "gh_n" in [str(s) for s in gru.saved]
    # d/dgh = factor · d/dgx block by block: 1 for r and z, the reset gate for n
    reset_gate = sp.Symbol("reset_gate", real=True)
    assert gru.hidden_factors == {"r": 1, "z": 1, "n": reset_gate}
    assert not any(str(g).startswith("d_gh_") for g in gru.gradients)
    for gate, factor in gru.hidden_factors.items():
        d_gx = gru.raw_gradients[sp.Symbol(f"d_gx_{gate}", real=True)]
        d_gh = gru.raw_gradients[sp.Symbol(f"d_gh_{gate}", real=True)]
        assert sp.expand(factor * d_gx - d_gh) == 0


def test_latex_views():
    spec = BUILTIN_CELLS["lstm"]
    equations = spec.equations_latex()
    assert any(line.startswith(r"f_t &= \sigma") for line in equations)
    assert any(r"\tilde{C}_t" in line for line in equations)
    gradients = derive(spec).gradients_latex()
    assert len(gradients) == len(derive(spec).gradients)
    assert all(r"\frac{\partial L}" in line for line in gradients)
    assert spec._repr_latex_().startswith("$")


def test_spec_key_changes_with_equations():
    a = lstmkit.lstm_spec()
    b = lstmkit.lstm_spec(peepholes=True)
    assert a.key == lstmkit.lstm_spec().key
    assert a.key != b.key
