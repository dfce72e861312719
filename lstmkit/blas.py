"""BLAS's gemm with beta = 1, from the BLAS that NumPy itself links.

Backward adds each chunk of time's weight-gradient product into dW where it lies (dW_ih +=
dGᵀX, dW_hh += dGᵀH), on threads, one slab of dW's rows each (:mod:`lstmkit.driver`). That is
a gemm with beta = 1, which NumPy's matmul does not offer. :func:`transposed_product_rows`
calls the gemm of NumPy's own BLAS through its C interface (``cblas_sgemm``,
``cblas_dgemm``), found next to NumPy's extension module, with ctypes, which lets the GIL go
for the call.

Why NumPy's BLAS: lstmkit used to reach SciPy's, the BLAS that Numba's ``np.dot`` calls,
through Numba's private ``numba_xxgemm``. On the slabs backward multiplies at bench.py's sizes,
NumPy's (OpenBLAS 0.3.31 in its wheel) took 0.73–0.95 of the time of SciPy's (OpenBLAS 0.3.30)
float32 on one core, 0.73–1.05 with two slabs on two threads, with the same bits (issue 17,
``benchmarks/blas_slabs.py``, results/blas_slabs.json). The products dX = dG·W_ih of the
slabs are NumPy's matmul (:func:`product_rows`).

A NumPy built against a BLAS whose symbols are not among ``_CBLAS_SYMBOLS`` leaves ``GEMM``
empty; each slab is then NumPy's matmul, added to dW afterwards: the same numbers to
rounding, one temporary array more.
"""
from __future__ import annotations

import ctypes
import importlib

import numpy as np

__all__ = ["GEMM", "transposed_product_rows", "product_rows"]

# (sgemm, dgemm, integer type of sizes): NumPy 2's wheels (scipy-openblas, 64-bit integers),
# NumPy 1's (openblas64_), then a BLAS of 32-bit integers (MKL, a system's CBLAS)
_CBLAS_SYMBOLS = (("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", ctypes.c_int64),
                  ("cblas_sgemm64_", "cblas_dgemm64_", ctypes.c_int64),
                  ("cblas_sgemm", "cblas_dgemm", ctypes.c_int))
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112      # CBLAS's enum values


def _numpy_gemm():
    """{itemsize: cblas ?gemm of NumPy's BLAS, as a ctypes function}; {} if not found."""
    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):
        try:
            # dlsym on the extension module's handle also searches the libraries it links
            library = ctypes.CDLL(importlib.import_module(module).__file__)
            break
        except (ImportError, OSError):
            continue
    else:
        return {}
    for single, double, integer in _CBLAS_SYMBOLS:
        try:
            functions = {4: (getattr(library, single), ctypes.c_float),
                         8: (getattr(library, double), ctypes.c_double)}
        except AttributeError:
            continue
        for function, real in functions.values():
            function.restype = None
            function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, integer, integer, integer, real,
                                 ctypes.c_void_p, integer, ctypes.c_void_p, integer, real, ctypes.c_void_p, integer]
        return {size: function for size, (function, _) in functions.items()}
    return {}


GEMM = _numpy_gemm()


def transposed_product_rows(a, b, out, add, lo, hi):
    """out[lo:hi] (+)= a[:, lo:hi]ᵀ b for a [K, M], b [K, N], out [M, N] of one float dtype,
    each with rows of unit stride: one gemm, beta = 1 to add (``add``) and 0 to set. The gemm
    reads the arrays through their addresses, so their layout is checked first."""
    size = out.itemsize
    if not (a.dtype == b.dtype == out.dtype and a.ndim == b.ndim == out.ndim == 2
            and a.strides[1] == b.strides[1] == out.strides[1] == size
            and a.shape[0] == b.shape[0] and out.shape == (a.shape[1], b.shape[1]) and 0 <= lo <= hi <= len(out)):
        raise ValueError(f"transposed_product_rows: expected a [K, M], b [K, N], out [M, N] of one dtype with "
                         f"rows of unit stride and 0 <= lo <= hi <= M; got a {a.shape} {a.dtype}, b {b.shape} "
                         f"{b.dtype}, out {out.shape} {out.dtype}, lo {lo}, hi {hi}")
    if hi == lo:
        return
    gemm = GEMM.get(size)
    if gemm is None:
        product = a[:, lo:hi].T @ b
        if add:
            out[lo:hi] += product
        else:
            out[lo:hi] = product
        return
    depth, columns = b.shape
    gemm(_ROW_MAJOR, _TRANS, _NO_TRANS, hi - lo, columns, depth,
         1.0, a.ctypes.data + lo * size, a.strides[0] // size,
         b.ctypes.data, b.strides[0] // size,
         1.0 if add else 0.0, out.ctypes.data + lo * out.strides[0], out.strides[0] // size)


def product_rows(a, b, out, lo, hi):
    """out[lo:hi] = a[lo:hi] @ b: NumPy's matmul, which lets the GIL go."""
    np.matmul(a[lo:hi], b, out=out[lo:hi])
