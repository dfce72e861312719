"""Backward's weight-gradient products in NumPy's BLAS against SciPy's, slab by slab.

On threads, backward adds each chunk of time's dW_ih += dGᵀX and dW_hh += dGᵀH one slab of
dW's rows per thread, a gemm with beta = 1 each (``lstmkit.driver``). lstmkit calls
NumPy's own BLAS for them (``lstmkit.blas``); it used to call SciPy's, the one Numba's
``np.dot`` reaches, through Numba's ``numba_xxgemm``. This times both on the products of one
chunk at the course's sizes, the same call in the same interleaved rounds, on one thread (one
slab, half of dW's rows) and on two (both slabs at once, on the driver's threads), and checks
that they give the same bits.

SciPy's gemm is called here as ``numba_xxgemm`` called it: Fortran's ``sgemm``/``dgemm`` from
``scipy.linalg.cython_blas``, column-major, ``outᵀ[:, lo:hi] (+)= bᵀ · a[:, lo:hi]``.

    python benchmarks/blas_slabs.py                    # writes nothing
    python benchmarks/blas_slabs.py --json benchmarks/results/blas_slabs.json
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time
from pathlib import Path

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")     # each call on its own thread, as inside the driver

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lstmkit import blas, driver  # noqa: E402
from lstmkit.threads import on_threads  # noqa: E402

# (rows of one chunk of time = steps · B, gates G·d, columns of X or H): the products of a
# chunk at bench.py's sizes (T, B, n, d) = (100, 32, 32, 128), (100, 64, 128, 256) and
# (50, 128, 512, 512), chunked as the driver chunks them
SHAPES = [(1600, 512, 32), (1600, 512, 128), (960, 1024, 128), (960, 1024, 256), (512, 2048, 512)]


def _scipy_gemm(itemsize):
    """SciPy's Fortran ?gemm as a ctypes function (which lets the GIL go)."""
    from scipy.linalg import cython_blas

    capsule = cython_blas.__pyx_capi__["sgemm" if itemsize == 4 else "dgemm"]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    address = get_pointer(capsule, get_name(capsule))
    integer, real = ctypes.POINTER(ctypes.c_int), ctypes.c_void_p
    prototype = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, integer, integer, integer, real,
                                 ctypes.c_void_p, integer, ctypes.c_void_p, integer, real, ctypes.c_void_p, integer)
    return prototype(address)


def scipy_transposed_product_rows(gemm, a, b, out, add, lo, hi):
    """out[lo:hi] (+)= a[:, lo:hi]ᵀ b through SciPy's gemm, as lstmkit called it before."""
    size = out.itemsize
    depth, columns = b.shape
    c_int = ctypes.c_int
    scalars = np.array([1.0, 1.0 if add else 0.0], out.dtype)
    gemm(b"N", b"T", ctypes.byref(c_int(columns)), ctypes.byref(c_int(hi - lo)), ctypes.byref(c_int(depth)),
         scalars.ctypes.data, b.ctypes.data, ctypes.byref(c_int(b.strides[0] // size)),
         a.ctypes.data + lo * size, ctypes.byref(c_int(a.strides[0] // size)),
         scalars.ctypes.data + size, out.ctypes.data + lo * out.strides[0], ctypes.byref(c_int(out.strides[0] // size)))


def measure(shapes, dtype, rounds):
    rng = np.random.default_rng(0)
    scipy_gemm = _scipy_gemm(np.dtype(dtype).itemsize)
    implementations = {"numpy": blas.transposed_product_rows,
                       "scipy": lambda *args: scipy_transposed_product_rows(scipy_gemm, *args)}
    results = []
    for rows, gates, columns in shapes:
        d_pre = rng.standard_normal((rows, gates)).astype(dtype)
        operand = rng.standard_normal((rows, columns)).astype(dtype)
        start = rng.standard_normal((gates, columns)).astype(dtype)
        outs = {name: start.copy() for name in implementations}
        slabs = driver._row_blocks(gates, driver.PRODUCT_SLABS)
        same = True
        for add in (False, True):       # the bits: the same call on the same numbers
            for name, function in implementations.items():
                outs[name][...] = start
                for lo, hi in slabs:
                    function(d_pre, operand, outs[name], add, lo, hi)
            same &= bool(np.array_equal(outs["numpy"], outs["scipy"]))
        times = {(name, threads): [] for name in implementations for threads in (1, 2)}
        for round_ in range(rounds):
            order = list(implementations) if round_ % 2 == 0 else list(implementations)[::-1]
            for name in order:
                function = implementations[name]
                lo, hi = slabs[0]
                begin = time.perf_counter()
                function(d_pre, operand, outs[name], True, lo, hi)
                times[name, 1].append(time.perf_counter() - begin)
                begin = time.perf_counter()
                on_threads(function, [(d_pre, operand, outs[name], True, lo, hi) for lo, hi in slabs])
                times[name, 2].append(time.perf_counter() - begin)
        flops = 2.0 * rows * gates * columns
        record = {"rows": rows, "gates": gates, "columns": columns, "dtype": np.dtype(dtype).name,
                  "same_bits": same, "rounds": rounds}
        for (name, threads), values in times.items():
            work = flops / len(slabs) if threads == 1 else flops
            record[f"{name}_{threads}_thread_ms"] = 1e3 * float(np.median(values))
            record[f"{name}_{threads}_thread_gflops"] = work / float(np.median(values)) / 1e9
        for threads in (1, 2):
            record[f"numpy_over_scipy_time_{threads}_thread"] = (record[f"numpy_{threads}_thread_ms"]
                                                                 / record[f"scipy_{threads}_thread_ms"])
        results.append(record)
        print(f"{np.dtype(dtype).name} chunk rows {rows:5d}, G·d {gates:5d}, columns {columns:4d}: "
              f"one slab {record['numpy_1_thread_gflops']:5.1f} GFLOP/s NumPy's BLAS against "
              f"{record['scipy_1_thread_gflops']:5.1f} SciPy's; two slabs on two threads "
              f"{record['numpy_2_thread_gflops']:5.1f} against {record['scipy_2_thread_gflops']:5.1f}; "
              f"same bits: {same}", flush=True)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--json", metavar="PATH", help="write the results to PATH")
    args = parser.parse_args(argv)
    if not blas.GEMM:
        print("NumPy's BLAS has no CBLAS gemm lstmkit knows: lstmkit.blas uses NumPy's matmul", file=sys.stderr)
        return 1
    results = [record for dtype in args.dtypes for record in measure(SHAPES, dtype, args.rounds)]
    if args.json:
        from threadpoolctl import threadpool_info

        libraries = [{k: pool.get(k) for k in ("internal_api", "prefix", "filepath", "version", "architecture")}
                     for pool in threadpool_info() if pool.get("user_api") == "blas"]
        Path(args.json).write_text(json.dumps({"blas_libraries": libraries, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
