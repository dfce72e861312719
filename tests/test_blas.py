"""lstmkit.blas (backward's slab products in NumPy's BLAS) and the driver's bias sums."""
import numpy as np
import pytest

import lstmkit
from lstmkit import blas, driver


def test_numpy_blas_has_a_gemm_lstmkit_calls():
    """NumPy's wheel links OpenBLAS with CBLAS symbols lstmkit knows; without them every
    threaded backward would fall back to matmul and an added temporary (slower, not wrong)."""
    assert set(blas.GEMM) == {4, 8}, "lstmkit.blas found no cblas ?gemm in NumPy's BLAS"


def _operands(rng, dtype, rows=37, gates=24, columns=5):
    a = rng.standard_normal((rows, gates)).astype(dtype)
    b = rng.standard_normal((rows, columns)).astype(dtype)
    start = rng.standard_normal((gates, columns)).astype(dtype)
    return a, b, start


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("gemm", ["numpy's cblas", "matmul fallback"])
def test_transposed_product_rows_sets_and_adds_slab_by_slab(dtype, gemm, rng, monkeypatch):
    if gemm == "matmul fallback":
        monkeypatch.setattr(blas, "GEMM", {})
    a, b, start = _operands(rng, dtype)
    slabs = [(0, 0), (0, 10), (10, 24)]
    out = start.copy()
    for lo, hi in slabs:
        blas.transposed_product_rows(a, b, out, False, lo, hi)
    # setting is NumPy's own product, to the bit: the same BLAS, the same call
    np.testing.assert_array_equal(out, a.T @ b)
    out = start.copy()
    for lo, hi in slabs:
        blas.transposed_product_rows(a, b, out, True, lo, hi)
    exact = start.astype(np.float64) + a.T.astype(np.float64) @ b.astype(np.float64)
    tolerance = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(out, exact, rtol=tolerance, atol=tolerance)


def test_transposed_product_rows_of_an_empty_slab_changes_nothing(rng):
    a, b, start = _operands(rng, np.float32)
    out = start.copy()
    blas.transposed_product_rows(a, b, out, False, 7, 7)
    np.testing.assert_array_equal(out, start)


def test_transposed_product_rows_reads_rows_of_any_stride(rng):
    """The driver passes chunks of longer arrays: a's and b's rows lie further apart than
    their widths, and out's slab starts past row 0."""
    wide_a = rng.standard_normal((20, 40))
    wide_b = rng.standard_normal((20, 9))
    a, b = wide_a[:, 3:27], wide_b[:, 2:7]
    out = np.zeros((24, 5))
    blas.transposed_product_rows(a, b, out, False, 5, 24)
    np.testing.assert_array_equal(out[:5], 0.0)
    np.testing.assert_allclose(out[5:], a[:, 5:24].T @ b, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("case", ["dtypes", "strided columns", "shapes", "slab"])
def test_transposed_product_rows_refuses_arrays_it_cannot_read_and_writes_nothing(case, rng):
    """The gemm reads raw addresses: a layout it cannot read must raise, not read past an array."""
    a, b, start = _operands(rng, np.float64)
    out = start.copy()
    lo, hi = 0, 24
    if case == "dtypes":
        a = a.astype(np.float32)
    elif case == "strided columns":
        a = np.repeat(a, 2, axis=1)[:, ::2]
    elif case == "shapes":
        b = b[:-1]
    else:
        hi = 25
    with pytest.raises(ValueError, match="transposed_product_rows: expected"):
        blas.transposed_product_rows(a, b, out, True, lo, hi)
    np.testing.assert_array_equal(out, start)


def test_product_rows_is_numpys_matmul(rng):
    a = rng.standard_normal((13, 8)).astype(np.float32)
    w = rng.standard_normal((8, 3)).astype(np.float32)
    out = np.full((13, 3), np.nan, np.float32)
    blas.product_rows(a, w, out, 0, 6)
    blas.product_rows(a, w, out, 6, 13)
    np.testing.assert_array_equal(out, a @ w)


def test_threaded_backward_without_cblas_gives_the_same_gradients_to_rounding(monkeypatch):
    """The fallback (NumPy's matmul, then an addition) adds the chunks in another order:
    the same gradients to rounding, on a layer large enough for the threaded products."""
    monkeypatch.setattr(driver, "BACKWARD_CHUNK_BYTES", 64 * 512 * 8 * 3)    # several chunks
    rng = np.random.default_rng(3)
    x = rng.standard_normal((20, 64, 32))
    dy = rng.standard_normal((20, 64, 128))
    grads = {}
    for gemm in ("numpy's cblas", "matmul fallback"):
        if gemm == "matmul fallback":
            monkeypatch.setattr(blas, "GEMM", {})
        layer = lstmkit.RecurrentLayer("lstm", 32, 128, dtype=np.float64, seed=0)
        assert driver.products_on_threads(20, 64, 4 * 128, 128, 32)
        layer(x)
        dx, _ = layer.backward(dy)
        grads[gemm] = dict(layer.grads, dx=dx)
    for name, value in grads["numpy's cblas"].items():
        np.testing.assert_allclose(grads["matmul fallback"][name], value, rtol=1e-11, atol=1e-11, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 3), (2, 2), (9, 1), (100, 1), (0, 4), (1000, 3), (37, 24), (3000, 128)])
@pytest.mark.parametrize("values", ["normal", "negative zeros", "inf and nan"])
def test_column_sums_are_numpys_sums_to_the_bit(dtype, shape, values):
    """driver.column_sums replaces a.sum(axis=0) for the bias gradients: the same bits."""
    rng = np.random.default_rng(sum(shape))
    a = (rng.standard_normal(shape) * 10.0 ** rng.integers(-4, 5, shape)).astype(dtype)
    if values == "negative zeros":
        a[::2] = -0.0
    if values == "inf and nan" and a.size >= 3:
        a.flat[:3] = [np.inf, -np.inf, np.nan]
    with np.errstate(invalid="ignore"):
        expected = a.sum(axis=0)
        sums = driver.column_sums(a)
    assert sums.dtype == expected.dtype and sums.shape == expected.shape
    width = f"u{np.dtype(dtype).itemsize}"
    np.testing.assert_array_equal(sums.view(width), expected.view(width))


def test_a_blas_without_known_symbols_leaves_gemm_empty(monkeypatch):
    """A NumPy linked to a BLAS whose symbols lstmkit.blas does not know: no gemm, and no
    error at import (transposed_product_rows then uses matmul, tested above)."""
    monkeypatch.setattr(blas, "_CBLAS_SYMBOLS", (("no_such_sgemm", "no_such_dgemm", blas.ctypes.c_int),))
    assert blas._numpy_gemm() == {}


def test_the_first_known_symbols_are_taken(monkeypatch):
    """Names tried in order: an unknown pair first is skipped, the next found."""
    known = blas._CBLAS_SYMBOLS
    monkeypatch.setattr(blas, "_CBLAS_SYMBOLS", (("no_such_sgemm", "no_such_dgemm", blas.ctypes.c_int), *known))
    found = blas._numpy_gemm()
    assert set(found) == {4, 8} and found[4].__name__ in {names[0] for names in known}
