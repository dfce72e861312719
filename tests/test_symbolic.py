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
    spec = derivation.spec
    if spec.staged:     # one backward kernel per stage (lstmkit.staged), each with its own CSE
        kernels = [(subexprs, gradients) for _, subexprs, gradients in derivation.backward]
        incoming = {sp.Symbol(f"d_{s}", real=True) for s in spec.states} | {
            sp.Symbol(f"d_{o}", real=True) for o in derivation.operand_symbols.values()} | {
            spec.x, spec.t, spec.below, *spec.constant.values()}
    else:
        kernels = [(derivation.backward_cse, derivation.gradients)]
        incoming = set(derivation.grad_out.values())
    for subexprs, gradients in kernels:
        expressions = [e for _, e in subexprs] + list(gradients.values())
        for expr in expressions:
            for node in sp.preorder_traversal(expr):
                assert not isinstance(node, (*ACTIVATIONS, sp.exp)), (name, expr)
        # everything backward reads is saved, a previous state, a parameter or an incoming gradient
        allowed = (set(derivation.saved) | set(spec.prev.values()) | set(spec.param.values())
                   | incoming | {s for s, _ in subexprs})
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


# -- names: the generator's namespace is reserved (issue 11, section 1) ----------------------
def _cell_with_intermediate(name):
    spec = CellSpec("named", gates="h", states=("h",))
    value = spec.let(name, tanh(spec.gx["h"] + spec.gh["h"]))
    spec.update("h", value * spec.prev["h"] + value)
    return spec


@pytest.mark.parametrize("name, reason", [
    ("d_h", "starts like"),        # was overwritten by the incoming gradient: 100 % wrong
    ("d_c", "starts like"),
    ("d_gx_h", "starts like"),
    ("tmp0", "starts like"),       # sympy.cse's names
    ("tanh_0", "starts like"),     # the names of unnamed activations
    ("h_prev", "new Python identifier"),
    ("GX", "array GX"), ("SAVED", "array SAVED"), ("D_OUT", "array D_OUT"), ("lengths", "array LENGTHS"),
    ("range", "builtin"), ("max", "builtin"), ("abs", "builtin"),
    ("lambda", "keyword"), ("if", "keyword"), ("match", "keyword"),
    ("real", "generated kernels use"), ("hidden", "generated kernels use"), ("math", "generated kernels use"),
    ("H", "by case alone"),                # the array of state h
])
def test_intermediate_names_the_generator_uses_are_refused_at_definition(name, reason):
    with pytest.raises(CellSpecError, match=f"{name!r}.*{reason}"):
        _cell_with_intermediate(name)


@pytest.mark.parametrize("kwargs, message", [
    (dict(gates=("a-b",)), "gate name 'a-b' is not a Python identifier"),
    (dict(gates=("f", "1")), "gate name '1' is not a Python identifier"),
    (dict(gates="h", states=("a-b",), output="a-b"), "state name 'a-b' is not a Python identifier"),
    (dict(gates="h", states=("lambda",), output="lambda"), "state name 'lambda' is a Python keyword"),
    (dict(gates="h", states=("h", "H")), "state name 'H' differs from the name 'h' by case alone"),
    (dict(gates="h", states=("x",), output="x"), "state name 'x' would name the kernels' array X"),
    (dict(gates="h", params=("range",)), "parameter name 'range' is a Python builtin"),
    (dict(gates="h", params=("d_scale",)), "parameter name 'd_scale' starts like"),
    (dict(gates="h", states=("h", "c"), params=("C_prev",)), "previous value of the state 'c'"),
    (dict(gates="h", params=("w_hh_packed",)), "array W_HH_PACKED"),
])
def test_gate_state_and_parameter_names_are_checked_when_the_spec_is_written(kwargs, message):
    with pytest.raises(CellSpecError, match=message):
        CellSpec("named", **kwargs)


def test_names_of_the_builtin_cells_and_ordinary_names_pass():
    _cell_with_intermediate("candidate")
    _cell_with_intermediate("delta")       # a prefix only when it is d_
    _cell_with_intermediate("previous")
    for spec in BUILTIN_CELLS.values():
        assert spec.validate() is spec


# -- functions and numbers ----------------------------------------------------------------
@pytest.mark.parametrize("function, reason", [
    (sp.floor, "derivative only as"), (sp.sign, "DiracDelta"), (sp.Heaviside, "DiracDelta"),
    (sp.LambertW, "LambertW"), (lambda u: sp.Mod(u, 2), "derivative only as"),
    (sp.gamma, "polygamma"), (sp.Function("f"), "f"),
])
def test_functions_the_kernels_cannot_compute_are_refused_at_definition(function, reason):
    spec = CellSpec("f_cell", gates="h")
    with pytest.raises(CellSpecError, match=f"new h uses .*cannot compute: .*{reason}"):
        spec.update("h", function(spec.gx["h"] + spec.gh["h"]))


@pytest.mark.parametrize("value", [sp.I, sp.zoo, sp.nan, sp.oo, sp.sqrt(-2), sp.log(-1)])
def test_numbers_that_are_not_finite_reals_are_refused(value):
    spec = CellSpec("n_cell", gates="h")
    with pytest.raises(CellSpecError, match="finite real numbers"):
        spec.update("h", tanh(spec.gx["h"] + spec.gh["h"]) * value)


def test_equations_given_as_text_or_not_scalar_are_refused():
    spec = CellSpec("t_cell", gates="h")
    with pytest.raises(CellSpecError, match="string"):
        spec.update("h", "tanh(gx_h + gh_h)")
    with pytest.raises(CellSpecError, match="scalar SymPy expression"):
        spec.update("h", spec.gx["h"] > 0)


def test_printable_functions_and_constants_derive():
    """The printer emits math.* for these and SymPy differentiates them: accepted, and
    numbers such as π, e and √2 are printed in the arrays' precision, not as math.pi."""
    from lstmkit.codegen import kernel_source

    spec = CellSpec("functions", gates="ab")
    u, v = spec.gx["a"] + spec.gh["a"], spec.gx["b"] * spec.gh["b"]
    spec.update("h", sp.sqrt(2) * sp.exp(-u**2) + sp.pi * sp.log(2 + tanh(v)) + sp.E * sp.sin(u)
                + sp.Abs(v) + sp.Max(u, v / 3) + sp.Piecewise((u, v > 0), (u / 2, True)))
    source = kernel_source(spec)
    import re

    assert not re.search(r"math\.(pi|e\b|sqrt\(real)", source)
    assert "real(3.141592653589793)" in source and "real(1.4142135623730951)" in source


@pytest.mark.parametrize("through_intermediates", [False, True])
def test_derivation_time_grows_with_the_size_of_the_equations_not_exponentially(through_intermediates):
    """tanh nested 10 deep took 20-50 s (and 273 s on a busy machine) in the sum detection,
    which substituted gx = total − gh and re-evaluated every nested tanh."""
    import time

    spec = CellSpec("deep", gates="h", states=("h",))
    u = spec.gx["h"] + spec.gh["h"]
    for depth in range(10):
        u = tanh(u + spec.prev["h"])
        if through_intermediates:
            u = spec.let(f"level{depth}", u)
    spec.update("h", u)
    start = time.process_time()
    derivation = derive(spec)
    assert derivation.summed_blocks
    assert time.process_time() - start < 10, "derivation is exponential in the nesting depth again"
