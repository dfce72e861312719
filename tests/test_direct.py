"""The direct path (lstmkit.direct) against the general one: the same bits for every result."""
import tracemalloc

import numpy as np
import pytest
from sympy import tanh

import lstmkit
from lstmkit import direct, driver
from lstmkit.cells import BUILTIN_CELLS
from lstmkit.codegen import load_kernels
from lstmkit.kernels import load
from lstmkit.symbolic import CellSpec

ONE_PRODUCT_CELLS = [cell for cell in sorted(BUILTIN_CELLS) if not getattr(load(cell), "STAGED", False)]


def call(layer, x, seed, *, state=False, d_state=False, d_output=True, input_gradient=True):
    """One training forward and backward: every array either returns, and the gradients."""
    rng = np.random.default_rng(seed)
    states = len(layer.kernels.STATES)
    batched = x.ndim == 3
    batch = x.shape[0 if layer.batch_first else 1]
    state_shape = (1, batch, layer.hidden_size) if batched else (1, layer.hidden_size)

    def some_state():
        parts = tuple(rng.standard_normal(state_shape).astype(layer.dtype) for _ in range(states))
        return parts if states > 1 else parts[0]

    y, final = layer(x, some_state() if state else None)
    dy = rng.standard_normal(y.shape).astype(layer.dtype) if d_output else None
    dx, d_initial = layer.backward(dy, some_state() if d_state else None, input_gradient=input_gradient)
    as_tuple = (lambda s: s if isinstance(s, tuple) else (s,))
    return [y, *as_tuple(final), dx, *as_tuple(d_initial), *(layer.grads[name] for name in layer.params)]


def both_paths(make_layer, x, **options):
    """``call`` on the direct path and on the general one, from two equal layers."""
    direct_layer, general_layer = make_layer(), make_layer()
    general_layer._direct = False
    direct_results, general_results = call(direct_layer, x, 1, **options), call(general_layer, x, 1, **options)
    assert type(direct_layer._tape.tapes[0]) is direct.DirectTape        # the call took the direct path
    assert type(general_layer._tape.tapes[0]) is driver.Tape
    return direct_results, general_results, direct_layer, general_layer


def assert_same_bits(direct_results, general_results):
    assert len(direct_results) == len(general_results)
    for k, (a, b) in enumerate(zip(direct_results, general_results)):
        if a is None or b is None:
            assert a is b, k
            continue
        assert a.shape == b.shape and a.dtype == b.dtype, k
        np.testing.assert_array_equal(a, b, err_msg=f"result {k}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", ONE_PRODUCT_CELLS)
def test_every_one_product_cell_gives_the_general_paths_bits(cell, dtype):
    x = np.random.default_rng(0).standard_normal((7, 3, 4)).astype(dtype)
    direct_results, general_results, direct_layer, general_layer = both_paths(
        lambda: lstmkit.RecurrentLayer(cell, 4, 5, dtype=dtype, seed=2), x, state=True, d_state=True)
    assert_same_bits(direct_results, general_results)
    assert list(direct_layer.grads) == list(general_layer.grads) == list(direct_layer.params)


OPTIONS = {
    "zero states, no d_state": {},
    "no d_output": {"d_output": False},
    "no input gradient": {"input_gradient": False},
    "states and d_state": {"state": True, "d_state": True},
}


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("layout", ["time-major", "batch_first", "unbatched", "no bias"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "peephole_lstm"])
def test_every_layout_and_option_gives_the_general_paths_bits(cell, layout, options):
    rng = np.random.default_rng(3)
    x = rng.standard_normal({"batch_first": (3, 6, 4), "unbatched": (6, 4)}.get(layout, (6, 3, 4)))
    kwargs = {"batch_first": layout == "batch_first", "bias": layout != "no bias"}
    direct_results, general_results, *_ = both_paths(
        lambda: lstmkit.RecurrentLayer(cell, 4, 5, dtype=np.float64, seed=4, **kwargs), x, **options)
    assert_same_bits(direct_results, general_results)


def test_a_user_cell_whose_hidden_gradients_need_their_own_array(tmp_path, monkeypatch):
    monkeypatch.setenv("LSTMKIT_CACHE_DIR", str(tmp_path))
    spec = CellSpec("two_tanh_rnn", gates="h", states=("h",))
    spec.update("h", tanh(spec.gx["h"]) + tanh(spec.gh["h"]) - spec.prev["h"] / 2)
    assert load_kernels(spec).HIDDEN_GRADIENTS == "own array"
    x = np.random.default_rng(5).standard_normal((6, 2, 3))
    direct_results, general_results, *_ = both_paths(
        lambda: lstmkit.RecurrentLayer(spec, 3, 4, dtype=np.float64, seed=6), x, state=True, d_state=True)
    assert_same_bits(direct_results, general_results)


def taken(layer, x, **kwargs):
    layer(x, **kwargs)
    return layer._tape is not None and type(layer._tape.tapes[0]) is direct.DirectTape


def test_which_calls_take_the_direct_path(monkeypatch):
    x = np.random.default_rng(7).standard_normal((5, 2, 3)).astype(np.float32)
    assert taken(lstmkit.LSTM(3, 4, seed=0), x)
    assert not taken(lstmkit.LSTM(3, 4, seed=0), x, lengths=np.array([5, 3]))
    assert not taken(lstmkit.LSTM(3, 4, seed=0), x, inference=True)
    assert not taken(lstmkit.LSTM(3, 4, num_layers=2, seed=0), x)
    assert not taken(lstmkit.LSTM(3, 4, bidirectional=True, seed=0), x)
    assert not taken(lstmkit.LSTM(3, 4, proj_size=2, seed=0), x)
    assert not taken(lstmkit.RecurrentLayer("gru_reset_before", 3, 4, seed=0), x)     # staged
    # threads and chunks of time are the general path's; the driver's settings are read per call
    layer = lstmkit.LSTM(3, 4, seed=0)
    assert taken(layer, x)
    monkeypatch.setattr(driver, "LOOP_PARALLEL_MIN_WORK", 0)
    assert not taken(layer, x)
    monkeypatch.undo()
    assert taken(layer, x)
    monkeypatch.setattr(driver, "BACKWARD_CHUNK_BYTES", 1)
    assert not taken(layer, x)


def test_buffers_are_reused_after_backward_and_never_under_a_pending_tape():
    rng = np.random.default_rng(8)
    layer = lstmkit.LSTM(3, 4, seed=0)
    x1, x2, x3 = (rng.standard_normal((5, 2, 3)).astype(np.float32) for _ in range(3))
    y1, _ = layer(x1)
    first = layer._tape.tapes[0]
    y2, _ = layer(x2)                  # no backward for the first pass: a set of its own
    second = layer._tape.tapes[0]
    assert not np.shares_memory(first.saved, second.saved)
    assert not np.shares_memory(first.histories[1], second.histories[1])
    kept = second.saved
    layer.backward(np.ones_like(y2))
    assert second.released and second.saved is None
    layer(x3)
    assert np.shares_memory(layer._tape.tapes[0].saved, kept)     # the second's set, reused
    assert not np.shares_memory(layer._tape.tapes[0].histories[0], y2)   # y is never reused


def test_a_bad_state_changes_nothing_and_backward_still_follows():
    rng = np.random.default_rng(9)
    layer, fresh = lstmkit.LSTM(3, 4, seed=0), lstmkit.LSTM(3, 4, seed=0)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    y, _ = layer(x)
    record = layer._tape
    bad = (np.zeros((1, 2, 4), np.float32), np.full((1, 2, 4), np.nan, np.float32))
    with pytest.raises(ValueError, match="state c: contains NaN"):
        layer(x, bad)
    with pytest.raises(ValueError, match="expected shape"):
        layer.backward(np.ones_like(y), (np.zeros((1, 2, 4), np.float32), np.zeros((1, 3, 4), np.float32)))
    assert layer._tape is record and not record.tapes[0].used
    dy = np.ones_like(y)
    fresh(x)
    assert_same_bits(layer.backward(dy)[0:1], fresh.backward(dy)[0:1])
    with pytest.raises(RuntimeError, match="already run"):
        layer.backward(dy)


def test_gate_activations_on_the_direct_path():
    rng = np.random.default_rng(10)
    layer, general = lstmkit.LSTM(3, 4, seed=0), lstmkit.LSTM(3, 4, seed=0)
    general._direct = False
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    y, _ = layer(x)
    general(x)
    for name, values in layer.gate_activations().items():
        np.testing.assert_array_equal(values, general.gate_activations()[name])
    layer.backward(np.ones_like(y))
    with pytest.raises(RuntimeError, match="backward consumed"):
        layer.gate_activations()


def _numpy_bytes(run):
    """(NumPy bytes still allocated after ``run()``, the peak while it ran), by tracemalloc."""
    tracemalloc.start()
    try:
        run()
        numpy_only = tracemalloc.DomainFilter(inclusive=True, domain=np.lib.tracemalloc_domain)
        kept = sum(trace.size for trace in tracemalloc.take_snapshot().filter_traces([numpy_only]).traces)
        return kept, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("steps, batch", [(50, 2), (200, 16)])   # direct; threaded and chunked
def test_a_layer_holds_what_the_general_path_holds(steps, batch):
    # chapter 08 prints what a layer keeps after forward and the peak of training in segments
    rng = np.random.default_rng(11)
    x = rng.standard_normal((steps, batch, 32))
    measured = {}
    for path in ("direct", "general"):
        warm = lstmkit.LSTM(32, 64, dtype=np.float64, seed=0)
        warm.backward(np.ones_like(warm(x)[0]))           # compiled before anything is counted
        after_forward, training = lstmkit.LSTM(32, 64, dtype=np.float64, seed=0), \
            lstmkit.LSTM(32, 64, dtype=np.float64, seed=0)
        after_forward._direct = training._direct = path == "direct"

        def forward_only():
            y, state = after_forward(x)
            del y, state

        def train_in_segments():
            state = None
            for start in range(0, steps, 25):
                y, state = training(x[start:start + 25], state)
                training.backward(np.ones_like(y))

        measured[path] = _numpy_bytes(forward_only)[0], _numpy_bytes(train_in_segments)[1]
        expected = direct.DirectTape if path == "direct" and batch == 2 else driver.Tape
        assert type(after_forward._tape.tapes[0]) is expected and type(training._tape.tapes[0]) is expected
    # no more than the general path (its buffers are its own, its plan and panels the workspace's)
    assert measured["direct"][0] <= measured["general"][0], measured
    assert measured["direct"][1] <= measured["general"][1] + 16 * 1024, measured
