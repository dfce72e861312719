"""The speed-ups must not change the numbers: threaded row blocks, inference mode,
and the vectorizable activations of the generated kernels."""
import math

import numba
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

import lstmkit
from lstmkit import driver, kernel_runtime
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


def ragged_case(cell, seed, hidden=6):
    """A two-layer bidirectional float64 layer and 9 sequences of 9 steps with ragged lengths."""
    x = np.random.default_rng(seed).standard_normal((9, 9, 4))
    lengths = np.array([9, 3, 0, 7, 9, 1, 9, 8, 2])
    layer = lstmkit.RecurrentLayer(cell, 4, hidden, num_layers=2, bidirectional=True, dtype=np.float64,
                                   seed=seed)
    return layer, x, lengths


@pytest.mark.parametrize("cell", ["lstm", "gru", "peephole_lstm", "rnn_tanh"])
def test_row_block_count_on_threads_match_one_thread(cell, monkeypatch):
    """Forcing the threaded loop over blocks of rows changes nothing but the speed."""
    hidden = 6
    layer, x, lengths = ragged_case(cell, seed=3, hidden=hidden)
    monkeypatch.setattr(driver, "PARALLEL_MIN_WORK", 10**12)
    assert driver.row_block_count(9, 9, 4 * hidden, hidden) == 1
    one_thread = run_layer(layer, x, lengths)
    monkeypatch.setattr(driver, "PARALLEL_MIN_WORK", 0)
    assert driver.row_block_count(9, 9, 4 * hidden, hidden) == min(9 // driver.MIN_BLOCK_ROWS,
                                                               numba.get_num_threads())
    threaded = run_layer(layer, x, lengths)
    for a, b in zip(one_thread, threaded):
        assert max_relative_difference(b, a) < 1e-13


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru", "peephole_lstm", "rnn_tanh"])
def test_backward_in_chunks_of_time_matches_one_chunk(cell, threaded, monkeypatch):
    """Backward in chunks of time (here one step each) carries the state gradients from
    chunk to chunk and adds up every parameter gradient: only the rounding differs."""
    layer, x, lengths = ragged_case(cell, seed=4)
    monkeypatch.setattr(driver, "PARALLEL_MIN_WORK", 0 if threaded else 10**12)
    step_bytes = 9 * 6 * 8                     # the smallest here: batch 9, one gate of 6, float64
    assert len(driver.backward_chunks(9, step_bytes)) == 1
    one_chunk = run_layer(layer, x, lengths)
    monkeypatch.setattr(driver, "BACKWARD_CHUNK_BYTES", 1)
    assert len(driver.backward_chunks(9, step_bytes)) == 9
    chunked = run_layer(layer, x, lengths)
    for a, b in zip(one_chunk, chunked):
        assert max_relative_difference(b, a) < 1e-13


@pytest.mark.parametrize("cell", ["lstm", "gru", "peephole_lstm", "depth_gated_lstm"])
def test_threaded_results_do_not_depend_on_the_number_of_threads(cell, monkeypatch):
    """Every product split over threads splits the same way on any machine: a notebook
    executed on two cores prints the same digits on eight. So do the sums of an element-wise
    parameter's gradient over rows (the peephole LSTM's, the depth-gated LSTM's)."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs at least 2 Numba threads (this machine has 1 core)")
    rng = np.random.default_rng(9)
    x = rng.standard_normal((11, 10, 5)).astype(np.float32)
    lengths = np.array([11, 4, 0, 9, 11, 7, 1, 11, 3, 10])
    monkeypatch.setattr(driver, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(driver, "BACKWARD_CHUNK_BYTES", 4 * 10 * 4 * 7 * 4)   # chunks of 4 (LSTM) or 2 steps (GRU)
    hidden = 7
    assert driver.row_block_count(11, 10, 4 * hidden, hidden) == 2   # blocks of 5 rows: not a multiple of 4
    results = []
    threads_before = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            # the depth-gated cell reads the layer below: one direction
            layer = lstmkit.RecurrentLayer(cell, 5, hidden, num_layers=2, bidirectional=cell != "depth_gated_lstm",
                                           seed=3)
            results.append(run_layer(layer, x, lengths))
    finally:
        numba.set_num_threads(threads_before)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", ["lstm", "gru", "peephole_lstm"])
def test_loop_on_threads_below_the_products_threshold_changes_no_bit(cell, monkeypatch):
    """Between LOOP_PARALLEL_MIN_WORK and PARALLEL_MIN_WORK the loop over time of a cell
    without element-wise parameters runs on blocks of rows, its products as on one thread;
    a cell with them (the peephole LSTM) keeps one block. Every number keeps its bits."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs at least 2 Numba threads (this machine has 1 core)")
    rng = np.random.default_rng(11)
    steps, batch, n_in, hidden = 11, 10, 5, 7
    x = rng.standard_normal((steps, batch, n_in)).astype(np.float32)
    lengths = np.array([11, 4, 0, 9, 11, 7, 1, 11, 3, 10])
    kernels = lstmkit.RecurrentLayer(cell, n_in, hidden).kernels
    work = steps * batch * len(kernels.GATES) * hidden * hidden
    monkeypatch.setattr(driver, "PARALLEL_MIN_WORK", work + 1)
    results, blocks = [], []
    threads_before = numba.get_num_threads()
    try:
        numba.set_num_threads(2)
        for loop_min_work in (work, 10**12):
            monkeypatch.setattr(driver, "LOOP_PARALLEL_MIN_WORK", loop_min_work)
            plan = driver._Plan(kernels, steps, batch, n_in, hidden, np.dtype(np.float32), False)
            blocks.append((plan.blocks(), plan.threaded))
            layer = lstmkit.RecurrentLayer(cell, n_in, hidden, num_layers=2, dtype=np.float32, seed=5)
            results.append(run_layer(layer, x, lengths))
    finally:
        numba.set_num_threads(threads_before)
    assert blocks == [(1 if kernels.PARAMS else 2, False), (1, False)]
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


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


# -- the recurrent product (kernel_runtime.matmul_packed) ----------------------------------
@intrinsic
def _fma(typingctx, x, y, z):
    """x·y + z with one rounding (LLVM's fma), for the reference below."""
    if not (isinstance(x, types.Float) and x == y == z):
        return None

    def codegen(context, builder, signature, args):
        real = args[0].type
        fma = kernel_runtime._function(builder.module, f"llvm.fma.f{x.bitwidth}",
                                       ir.FunctionType(real, [real] * 3))
        return builder.call(fma, args)

    return x(x, y, z), codegen


@numba.njit
def _fma_chain(a, b, out):
    """out = a @ b, each element the sequential fma chain over k: the kernel's definition."""
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            total = a.dtype.type(0)
            for k in range(a.shape[1]):
                total = _fma(a[i, k], b[k, j], total)
            out[i, j] = total


@settings(max_examples=60, deadline=None, derandomize=True)
@given(rows=st.integers(0, 11), depth=st.integers(0, 70), columns=st.integers(1, 150),
       dtype=st.sampled_from([np.float32, np.float64]), transposed=st.booleans())
def test_recurrent_product_is_the_fma_chain_of_a_times_b(rows, depth, columns, dtype, transposed):
    """Both packings (forward: W_hhᵀ, backward: W_hh), any tail of rows and columns:
    every element is bit for bit the sequential fused multiply-add over k, and so
    within a few roundings of the exact product."""
    rng = np.random.default_rng(rows * 100_000 + depth * 1000 + columns)
    a = rng.standard_normal((rows, depth)).astype(dtype)
    b = rng.standard_normal((depth, columns)).astype(dtype)
    packed = kernel_runtime.pack_transposed(np.ascontiguousarray(b.T)) if transposed else kernel_runtime.pack(b)
    assert packed.ctypes.data % kernel_runtime.ALIGN == 0
    out = np.full((rows, columns), np.nan, dtype)
    kernel_runtime.matmul_packed(a, packed, out)
    reference = np.empty_like(out)
    _fma_chain(a, b, reference)
    np.testing.assert_array_equal(out, reference)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    assert np.all(np.abs(out - exact) <= depth * np.finfo(dtype).eps * (np.abs(a) @ np.abs(b)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", [1, 2, 3])
def test_recurrent_product_of_few_rows_on_several_panels_is_the_fma_chain(rows, dtype):
    """Fewer rows than a tile's take several panels at once (kernel_runtime.PANEL_GROUP):
    every count of panels, whole groups and a remainder, with a last panel cut short."""
    rng = np.random.default_rng(rows)
    lanes = kernel_runtime.VECTOR_BYTES // np.dtype(dtype).itemsize
    for columns in sorted({1, lanes, lanes + 1, 2 * lanes, 3 * lanes + 5, 4 * lanes, 8 * lanes + 3, 150}):
        a = rng.standard_normal((rows, 23)).astype(dtype)
        b = rng.standard_normal((23, columns)).astype(dtype)
        out = np.full((rows, columns), np.nan, dtype)
        kernel_runtime.matmul_packed(a, kernel_runtime.pack_transposed(np.ascontiguousarray(b.T)), out)
        reference = np.empty_like(out)
        _fma_chain(a, b, reference)
        np.testing.assert_array_equal(out, reference, err_msg=f"{columns} columns")


@settings(max_examples=40, deadline=None, derandomize=True)
@given(rows=st.integers(2, 19), split=st.integers(1, 18), depth=st.integers(1, 70),
       columns=st.integers(1, 150))
def test_recurrent_product_row_does_not_depend_on_its_block(rows, split, depth, columns):
    """Row blocks of any size give the very same bits (threads split the batch into
    blocks): no row takes another path through the sums."""
    split = min(split, rows - 1)
    rng = np.random.default_rng(rows * 100_000 + depth * 1000 + columns)
    a = rng.standard_normal((rows, depth)).astype(np.float32)
    packed = kernel_runtime.pack_transposed(rng.standard_normal((columns, depth)).astype(np.float32))
    whole, parts = np.empty((rows, columns), np.float32), np.empty((rows, columns), np.float32)
    kernel_runtime.matmul_packed(a, packed, whole)
    kernel_runtime.matmul_packed(a[:split], packed, parts[:split])
    kernel_runtime.matmul_packed(a[split:], packed, parts[split:])
    np.testing.assert_array_equal(parts, whole)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_recurrent_product_writes_nothing_past_its_columns(dtype):
    """Whole panels take plain vector stores, the last panel of a product whose columns are
    not a multiple of its width a masked one: nothing lands past the last column, in the next
    row's columns or past the end of out (guard values after it in the same buffer)."""
    rng = np.random.default_rng(7)
    lanes = kernel_runtime.VECTOR_BYTES // np.dtype(dtype).itemsize
    for columns in sorted({1, lanes - 1, lanes + 1, 2 * lanes - 3, 3 * lanes + 5, 4 * lanes + 1, 150}):
        for rows in (1, 2, 3, 4, 5, 9):
            a = rng.standard_normal((rows, 19)).astype(dtype)
            w = rng.standard_normal((columns, 19)).astype(dtype)
            buffer = np.full(rows * columns + 4 * lanes, -7.0, dtype)
            out = buffer[:rows * columns].reshape(rows, columns)
            kernel_runtime.matmul_packed(a, kernel_runtime.pack_transposed(w), out)
            assert np.all(buffer[rows * columns:] == -7.0), f"{rows} rows, {columns} columns"
            reference = np.empty_like(out)
            _fma_chain(a, np.ascontiguousarray(w.T), reference)
            np.testing.assert_array_equal(out, reference, err_msg=f"{rows} rows, {columns} columns")


def test_recurrent_product_refuses_shapes_that_do_not_fit():
    a, packed = np.ones((4, 16), np.float32), kernel_runtime.pack_transposed(np.ones((70, 16), np.float32))
    for a_, out in ((a, np.empty((4, 200), np.float32)),        # more panels' worth of columns
                    (a[:, :8].copy(), np.empty((4, 70), np.float32)),   # another depth
                    (a, np.empty((5, 70), np.float32))):        # another number of rows
        with pytest.raises(ValueError, match="expected a"):
            kernel_runtime.matmul_packed(a_, packed, out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_products_of_several_steps_are_the_fma_chain(dtype):
    """matmul_packed_steps: steps t0 to t1 − 1 of x [T, B, K] as one matrix of rows."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((9, 3, 21)).astype(dtype)
    b = rng.standard_normal((21, 37)).astype(dtype)
    packed = kernel_runtime.pack_transposed(np.ascontiguousarray(b.T))
    for t0, t1 in ((0, 9), (2, 5), (8, 9), (4, 4)):
        out = np.full((30, 37), np.nan, dtype)
        kernel_runtime.matmul_packed_steps(x, t0, t1, packed, out)
        reference = np.empty(((t1 - t0) * 3, 37), dtype)
        _fma_chain(np.ascontiguousarray(x[t0:t1].reshape(-1, 21)), b, reference)
        np.testing.assert_array_equal(out[:(t1 - t0) * 3], reference)
        assert np.isnan(out[(t1 - t0) * 3:]).all()      # nothing written past its rows
    for t0, t1, out in ((3, 2, np.empty((30, 37), dtype)), (0, 10, np.empty((30, 37), dtype)),
                        (0, 9, np.empty((26, 37), dtype)), (0, 9, np.empty((27, 30), dtype))):
        with pytest.raises(ValueError, match="expected x"):
            kernel_runtime.matmul_packed_steps(x, t0, t1, packed, out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_relu", "peephole_lstm"])
def test_fewer_rows_than_a_tile_give_the_bits_of_a_tile(cell, dtype):
    """Below TILE_ROWS rows forward multiplies x_t W_ihᵀ several steps at once
    (kernel_runtime.INPUT_AHEAD_BYTES); its rows must be those of a batch of 4, which
    multiplies step by step. d = 512 in float64 holds 16 steps ahead at B = 1 and 5 at
    B = 3, so 37 steps cross several groups and end in a short one. (Forward only: backward's
    BLAS products round a row differently next to other rows.)"""
    hidden = 512 if dtype == np.float64 else 128
    rng = np.random.default_rng(11)
    x = rng.standard_normal((37, kernel_runtime.TILE_ROWS, 5)).astype(dtype)
    layer = lstmkit.RecurrentLayer(cell, 5, hidden, dtype=dtype, seed=2)
    whole = layer(x, inference=True)
    for batch in range(1, kernel_runtime.TILE_ROWS):
        ahead = kernel_runtime.INPUT_AHEAD_BYTES // (batch * layer.params["weight_ih_l0"].shape[0] * x.itemsize)
        if dtype == np.float64 and cell != "rnn_relu":     # one gate holds 64 steps
            assert 1 <= ahead < 37
        part = layer(np.ascontiguousarray(x[:, :batch]), inference=True)
        np.testing.assert_array_equal(part[0], whole[0][:, :batch])
        for final, whole_final in zip(part[1] if isinstance(part[1], tuple) else (part[1],),
                                      whole[1] if isinstance(whole[1], tuple) else (whole[1],)):
            np.testing.assert_array_equal(final, whole_final[:, :batch])


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


# -- buffers reused from call to call (driver.Workspace) -------------------------------------
def _tape_buffers(layer):
    """The buffers a workspace lends again (backward frees the saved values instead; an output
    history returned as y stays the caller's)."""
    tape = layer._tape.tapes[0]
    return [history for k, history in enumerate(tape.histories)
            if not (tape.output_lent and k == tape.output_state)]


def run_layer_keeping_buffers(layer, x, seed):
    """run_layer, and the first tape's buffers as forward left them."""
    buffers = []
    forward = layer.forward

    def spy(*args, **kwargs):
        result = forward(*args, **kwargs)
        buffers.extend(_tape_buffers(layer))
        return result

    layer.forward = spy
    try:
        return run_layer(layer, x, seed=seed), buffers
    finally:
        del layer.forward


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_reused_buffers_change_no_result_the_caller_holds(cell, batch_first, num_layers):
    """A second step reuses the first step's memory, and nothing the first step returned
    (outputs, final states, input gradients, parameter gradients) changes."""
    rng = np.random.default_rng(5)
    layer = lstmkit.RecurrentLayer(cell, 3, 4, num_layers=num_layers, batch_first=batch_first, seed=0)
    shape = (2, 6, 3) if batch_first else (6, 2, 3)
    first_x, second_x = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))

    first, first_buffers = run_layer_keeping_buffers(layer, first_x, seed=1)
    assert layer._tape.tapes[0].released               # backward gave the buffers back
    assert layer._tape.tapes[0].saved is None          # and freed the saved values
    first_copies = [a.copy() for a in first]
    second, second_buffers = run_layer_keeping_buffers(layer, second_x, seed=2)
    for before, after in zip(first_buffers, second_buffers):
        assert np.shares_memory(before, after)       # the same memory, reused
    for kept, copy in zip(first, first_copies):
        np.testing.assert_array_equal(kept, copy)
    # and the second step's numbers are those of a fresh layer
    fresh = lstmkit.RecurrentLayer(cell, 3, 4, num_layers=num_layers, batch_first=batch_first, seed=0)
    for a, b in zip(second, run_layer(fresh, second_x, seed=2)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_calls_of_changing_lengths_match_a_fresh_layer(cell, monkeypatch):
    """Each shape's plan and buffers are kept (driver.Workspace): shorter, longer and repeated
    lengths, past the number of plans kept, give a fresh layer's numbers, bit for bit."""
    monkeypatch.setattr(driver, "MAX_PLANS", 3)
    rng = np.random.default_rng(11)
    layer = lstmkit.RecurrentLayer(cell, 3, 4, seed=0)
    for steps in (6, 4, 6, 9, 1, 5, 6, 0, 4):
        x = rng.standard_normal((steps, 2, 3)).astype(np.float32)
        fresh = lstmkit.RecurrentLayer(cell, 3, 4, seed=0)
        for a, b in zip(run_layer(layer, x, seed=steps), run_layer(fresh, x, seed=steps)):
            np.testing.assert_array_equal(a, b)
        assert len(layer._workspaces[0]._plans) <= 3


def test_no_reuse_before_backward_and_inference_outputs_stay_put():
    rng = np.random.default_rng(6)
    layer = lstmkit.LSTM(3, 4, seed=0)
    x1, x2 = (rng.standard_normal((5, 2, 3)).astype(np.float32) for _ in range(2))
    layer(x1)
    pending = _tape_buffers(layer)
    layer(x2)                      # the first pass had no backward: its tape is not recycled
    for before, after in zip(pending, _tape_buffers(layer)):
        assert not np.shares_memory(before, after)

    y1, (h1, c1) = layer.forward(x1, inference=True)
    kept = [y1.copy(), h1.copy(), c1.copy()]
    y2, _ = layer.forward(x2, inference=True)
    assert not np.shares_memory(y1, y2)
    for a, b in zip((y1, h1, c1), kept):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_training_output_is_the_history_backward_reads_and_read_only(cell):
    """No copy of y next to the tape: y is the output history, so changing it in place
    would change the gradients; it raises instead, and the next call does not reuse it."""
    rng = np.random.default_rng(10)
    layer = lstmkit.RecurrentLayer(cell, 3, 4, seed=0)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    y, _ = layer(x)
    tape = layer._tape.tapes[0]
    assert np.shares_memory(y, tape.histories[tape.output_state])
    with pytest.raises(ValueError, match="read-only"):
        y[0, 0, 0] = 1.0
    kept = y.copy()
    layer.backward(np.ones_like(y))
    layer(rng.standard_normal((5, 2, 3)).astype(np.float32))
    np.testing.assert_array_equal(y, kept)
    y_inference, _ = layer.forward(x, inference=True)
    y_inference[0, 0, 0] = 1.0                       # nothing reads it: the caller's to change


def test_gate_activations_after_backward_raise():
    """Backward gives the saved values' memory back for reuse: reading them after it is an error."""
    rng = np.random.default_rng(7)
    layer = lstmkit.LSTM(3, 4, seed=0)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    y, _ = layer(x)
    layer.gate_activations()
    layer.backward(np.ones_like(y))
    with pytest.raises(RuntimeError, match="call gate_activations before backward"):
        layer.gate_activations()


@pytest.mark.parametrize("batch_first", [False, True])
def test_backward_without_output_gradient_is_backward_with_zeros(batch_first):
    rng = np.random.default_rng(8)
    layer = lstmkit.GRU(3, 4, num_layers=2, batch_first=batch_first, dtype=np.float64, seed=0)
    x = rng.standard_normal((2, 6, 3) if batch_first else (6, 2, 3))
    lengths = np.array([6, 3])
    d_state = rng.standard_normal((2, 2, 4))
    y, _ = layer(x, lengths=lengths)
    dx_zeros, d_h0_zeros = layer.backward(np.zeros_like(y), d_state)
    grads_zeros = dict(layer.grads)
    layer(x, lengths=lengths)
    dx_none, d_h0_none = layer.backward(None, d_state)
    np.testing.assert_array_equal(dx_none, dx_zeros)
    np.testing.assert_array_equal(d_h0_none, d_h0_zeros)
    for name, grad in grads_zeros.items():
        np.testing.assert_array_equal(layer.grads[name], grad)
    assert np.abs(grads_zeros["weight_hh_l0"]).max() > 0


def test_backward_chunks_cover_the_sequence_latest_first():
    """The chunks are even, latest first, within their bytes (one step at least)."""
    limit = driver.BACKWARD_CHUNK_BYTES
    for steps, step_bytes in [(0, 4), (1, 1), (100, 1), (100, limit // 7), (50, limit // 4 + 1), (7, 2 * limit),
                              (1000, 3)]:
        chunks = driver.backward_chunks(steps, step_bytes)
        covered = [t for start, stop in reversed(chunks) for t in range(start, stop)]
        assert covered == list(range(steps))
        sizes = [stop - start for start, stop in chunks]
        assert all(size >= 1 for size in sizes)
        if sizes:
            assert max(sizes) - min(sizes) <= 1
            assert max(sizes) <= max(1, limit // step_bytes)
            assert len(sizes) == -(-steps // max(1, limit // step_bytes))



def test_layers_keep_blas_on_one_thread_and_give_the_setting_back():
    """BLAS's own threads spin after each product and slow whatever runs next: the driver
    runs every call with BLAS on one thread, and restores the caller's setting after."""
    import scipy.linalg.cython_blas  # noqa: F401 (a second BLAS in the process: each is set)
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        with driver._blas_on_one_thread(batch=2):
            inside = blas_threads()
        after = blas_threads()
    assert len(inside) >= 1 and set(inside.values()) == {1}
    assert after == before and set(before.values()) == {2}
