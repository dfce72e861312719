"""Property test: random cells from a small grammar derive, generate, compile, pass the
gradient check and run the same step by step as over the whole sequence.

The grammar (issue 11): gates fed by gx alone, gh alone or both (sometimes with a
constant factor on gh), σ, tanh and relu, products, sums, constants including irrational
ones (√2, π, e), and one or two states. These are the shapes that broke the generator
before: numbers in a hidden-side factor, a gate with no gh, math constants, names.

Every example compiles its own kernels (several seconds each), so the example count is
small and fixed, and the examples are derandomized: the same cells on every run and
every machine, no example database.
"""
import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lstmkit import CellSpec, RecurrentLayer, relu, sigmoid, tanh
from lstmkit.gradcheck import layer_gradcheck

EXAMPLES = 6
CONSTANTS = (sp.Rational(1, 2), sp.Integer(2), -sp.Rational(3, 4), sp.sqrt(2) / 2, sp.pi / 4, 1 / sp.E)
ACTIVATIONS = (sigmoid, tanh, relu)


@st.composite
def cells(draw):
    """A CellSpec drawn from the grammar, with a description of how it was drawn."""
    states = ("h",) if draw(st.booleans()) else ("h", "c")
    gates = tuple("abc"[:draw(st.integers(1, 3))])
    spec = CellSpec("random_cell", gates="".join(gates), states=states)
    values = []                 # the gates' values: intermediates
    for gate in gates:
        feed = draw(st.sampled_from(("gx", "gh", "both", "both, gh scaled")))
        gx, gh = spec.gx[gate], spec.gh[gate]
        pre = {"gx": gx, "gh": gh, "both": gx + gh,
               "both, gh scaled": gx + draw(st.sampled_from(CONSTANTS)) * gh}[feed]
        if draw(st.booleans()):  # a previous state inside the gate too
            pre += draw(st.sampled_from(CONSTANTS)) * spec.prev[draw(st.sampled_from(states))]
        activation = draw(st.sampled_from(ACTIVATIONS))
        values.append(spec.let(f"gate_{gate}", activation(pre)))

    leaves = st.sampled_from(values + [spec.prev[s] for s in states] + list(CONSTANTS))

    def extend(children):
        return st.one_of(
            st.tuples(children, children).map(lambda pair: pair[0] * pair[1]),
            st.tuples(children, children).map(lambda pair: pair[0] + pair[1]),
            st.tuples(st.sampled_from(ACTIVATIONS), children).map(lambda pair: pair[0](pair[1])),
        )

    expressions = st.recursive(leaves, extend, max_leaves=6)
    updates = {s: draw(expressions) for s in states}
    used = set().union(*(sp.sympify(e).free_symbols for e in updates.values()))
    for value in values:        # every gate block must be used: add the unused ones
        if value not in used:
            updates["h"] = updates["h"] + value / 2
    # keep the states from growing over the steps: a leak towards 0
    for s in states:
        spec.update(s, updates[s] / 2)
    return spec


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        directory = tmp_path_factory.mktemp("kernels")
        patch.setenv("LSTMKIT_CACHE_DIR", str(directory))
        yield directory


@settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(spec=cells())
def test_random_cells_derive_compile_and_pass_the_gradient_check(cache_dir, spec):
    rng = np.random.default_rng(7)
    layer = RecurrentLayer(spec, 2, 3, dtype=np.float64, seed=11)
    x = rng.standard_normal((4, 2, 2))
    state = tuple(0.5 * rng.standard_normal((1, 2, 3)) for _ in spec.states)
    state = state if len(state) > 1 else state[0]
    errors = layer_gradcheck(layer, x, state)
    assert max(errors.values()) < 1e-6, (spec.equations_latex(), errors)

    # the same numbers one step at a time, the state carried from call to call
    whole, final = layer.forward(x, state, inference=True)
    carried, steps = state, []
    for t in range(x.shape[0]):
        y, carried = layer.forward(x[t:t + 1], carried, inference=True)
        steps.append(y)
    np.testing.assert_array_equal(np.concatenate(steps), whole)
    for a, b in zip(final if isinstance(final, tuple) else (final,),
                    carried if isinstance(carried, tuple) else (carried,)):
        np.testing.assert_array_equal(a, b)
