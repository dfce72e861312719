"""The speed-ups must not change the numbers: threaded row blocks, inference mode,
and the vectorizable activations of the generated kernels."""
import math

import numba
import numpy as np
import pytest

import lstmkit
from lstmkit import driver, kernel_runtime
from lstmkit.codegen import load_kernels
from conftest import max_relative_difference


def run_layer(layer, x, lengths=None, seed=0):
    rng = np.random.default_rng(seed)
    y, final = layer(x, lengths=lengths)
    finals = final if isinstance(final, tuple) else (final,)
    dy = rng.standard_normal(y.shape).astype(x.dtype)
    d_finals = tuple(rng.standard_normal(f.shape).astype(x.dtype) for f in finals)
    dx, d_initial = layer.backward(dy, d_finals if len(d_finals) > 1 else d_finals[0])
    return [y, *finals, dx, *(d_initial if isinstance(d_initial, tuple) else (d_initial,)),
            *(layer.grads[name] for name in sorted(layer.grads))]


@pytest.mark.parametrize("cell", ["lstm", "gru", "peephole_lstm", "rnn_tanh"])
def test_row_blocks_on_threads_match_one_thread(cell, monkeypatch):
    """Forcing the threaded loop over blocks of rows changes nothing but the speed."""
    assert numba.get_num_threads() >= 1
    rng = np.random.default_rng(3)
    x = rng.standard_normal((9, 5, 4))
    lengths = np.array([9, 3, 0, 7, 9])
    layer = lstmkit.RecurrentLayer(cell, 4, 6, num_layers=2, bidirectional=True, dtype=np.float64, seed=1)
    monkeypatch.setattr(driver, "PARALLEL_MIN_WORK", 10**12)
    assert driver.row_blocks(9, 5, 4 * 6, 6) == 1
    one_thread = run_layer(layer, x, lengths)
    monkeypatch.setattr(driver, "PARALLEL_MIN_WORK", 0)
    assert driver.row_blocks(9, 5, 4 * 6, 6) == min(5, numba.get_num_threads())
    threaded = run_layer(layer, x, lengths)
    for a, b in zip(one_thread, threaded):
        assert max_relative_difference(b, a) < 1e-13


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inference_gives_the_same_outputs_and_keeps_nothing(cell, dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((7, 3, 2)).astype(dtype)
    layer = lstmkit.RecurrentLayer(cell, 2, 5, num_layers=2, dtype=dtype, seed=2)
    y, final = layer(x, lengths=np.array([7, 2, 5]))
    y_inference, final_inference = layer.forward(x, lengths=np.array([7, 2, 5]), inference=True)
    np.testing.assert_array_equal(y_inference, y)
    for a, b in zip(final if isinstance(final, tuple) else (final,),
                    final_inference if isinstance(final_inference, tuple) else (final_inference,)):
        np.testing.assert_array_equal(b, a)
    with pytest.raises(RuntimeError, match="call forward before backward"):
        layer.backward(np.ones_like(y))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_saturated_inputs_give_finite_outputs_and_gradients(dtype):
    x = np.full((5, 2, 3), 1e3, dtype)
    x[:, 1] = -1e3
    for cell in ("lstm", "gru", "rnn_tanh", "peephole_lstm"):
        layer = lstmkit.RecurrentLayer(cell, 3, 4, dtype=dtype, seed=0)
        for value in run_layer(layer, x):
            assert np.all(np.isfinite(value)), cell


def _apply(function, values, out):
    """Call a kernel module's scalar function on each value, compiled as kernels call it."""
    @numba.njit
    def apply(values, out):
        for index in range(values.shape[0]):
            out[index] = function(values[index])

    apply(values, out)


def _units_in_last_place(actual, exact, dtype):
    exact = exact.astype(np.longdouble)
    spacing = np.maximum(np.spacing(np.abs(exact).astype(dtype)), np.finfo(dtype).tiny)
    return float(np.max(np.abs(actual.astype(np.longdouble) - exact) / spacing.astype(np.longdouble)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_generated_activations_are_accurate_to_a_few_ulp(dtype):
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.standard_normal(20000) * 4, rng.uniform(-40, 40, 20000),
                             [0.0, 1e-30, -1e-8, 0.5 * math.log(2), 30.0, -30.0]]).astype(dtype)
    wide = values.astype(np.longdouble)
    exact = {"sigmoid": 1 / (1 + np.exp(-wide)), "tanh": np.tanh(wide), "expm1": np.expm1(wide)}
    for name, reference in exact.items():
        got = np.empty_like(values)
        _apply(getattr(kernel_runtime, name), values, got)
        assert got.dtype == dtype
        assert _units_in_last_place(got, reference, dtype) < 4, name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_generated_activations_saturate_and_keep_nan(dtype):
    values = np.array([1e3, -1e3, np.inf, -np.inf, np.nan], dtype)
    for name, expected in (("sigmoid", [1, 0, 1, 0]), ("tanh", [1, -1, 1, -1])):
        got = np.empty_like(values)
        _apply(getattr(kernel_runtime, name), values, got)
        np.testing.assert_allclose(got[:4], expected, atol=float(np.finfo(dtype).tiny) * 2**40)
        assert np.isnan(got[4]), name
