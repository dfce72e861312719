"""Run-time support that every generated kernel module imports.

Written by hand, once, rather than printed into each kernel file: vectorizable
σ, tanh and expm1 for the step kernels, the recurrent product of the loops over
time, and the compiler pipeline that tells LLVM the step kernels' array arguments
never overlap. Knows Numba, not SymPy.

Numba's cache tracks each kernel's own file only: after editing this module,
clear the kernels' __pycache__ (or change a kernel) so they recompile.
"""
import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core.compiler import CompilerBase, DefaultPassBuilder
from numba.extending import intrinsic, overload

__all__ = ["JIT_OPTIONS", "NoOverlapCompiler", "expm1", "sigmoid", "tanh", "matmul_transposed",
           "recurrent_product"]

# How every kernel and every activation here is compiled; lstmkit.codegen says why.
JIT_OPTIONS = {"error_model": "numpy", "fastmath": {"contract"}}


# -- Activations ---------------------------------------------------------------------
# math.exp and math.tanh are calls into the C library, one element at a time. These
# are arithmetic alone, so LLVM vectorizes the step loops (16 float32 or 8 float64
# lanes with AVX-512), and each is compiled for the precision of its argument.
# They are accurate to a few units in the last place. Saturated inputs give exactly
# 0 or ±1, so gradients stay finite; NaN stays NaN.


@intrinsic
def _power_of_two(typingctx, k):
    """2**k for a float k that holds an integer, built from the exponent bits."""
    if not isinstance(k, types.Float):
        return None

    def codegen(context, builder, signature, args):
        bits = signature.args[0].bitwidth
        integer = ir.IntType(bits)
        real = args[0].type
        # k + 1.5·2**m (m fraction bits) holds k in its low bits: integer k without a
        # float-to-int conversion, which LLVM would do one lane at a time
        magic = 1.5 * 2.0 ** MANTISSA[bits]
        shifted = builder.bitcast(builder.fadd(args[0], ir.Constant(real, magic)), integer)
        magic_bits = int(np.array(magic, dtype=f"f{bits // 8}").view(f"i{bits // 8}"))
        exponent = builder.add(builder.sub(shifted, ir.Constant(integer, magic_bits)),
                               ir.Constant(integer, BIAS[bits]))
        return builder.bitcast(builder.shl(exponent, ir.Constant(integer, MANTISSA[bits])), real)

    return k(k), codegen


MANTISSA = {32: 23, 64: 52}           # fraction bits of IEEE single and double
BIAS = {32: 127, 64: 1023}            # exponent bias
LN2_PARTS = {32: (6.9314575195e-01, 1.4286067653e-06),   # ln 2 = high + low, high with
             64: (6.93147180369123816490e-01,           # trailing zero bits so that
                  1.90821492927058770002e-10)}           # k·high is exact (fdlibm)
SATURATION = {32: 80.0, 64: 700.0}    # |x| beyond which e**x would leave the normal range


def expm1(x):
    """e**x − 1. Kernels compile the overload below; this body is for Python callers."""
    return math.expm1(x)


@overload(expm1, jit_options=JIT_OPTIONS)
def _expm1(x):
    if not isinstance(x, types.Float):
        return None
    real = np.float32 if x.bitwidth == 32 else np.float64
    # x = k·ln 2 + r with |r| ≤ ln(2)/2, and e**x − 1 = 2**k·(e**r − 1) + (2**k − 1).
    # e**r − 1 = r·(1 + r/2! + r²/3! + ...): as many Taylor terms as the precision needs.
    epsilon, r_max = float(np.finfo(real).eps), math.log(2) / 2
    terms = 1
    while r_max ** terms / math.factorial(terms + 1) >= epsilon / 2:
        terms += 1
    taylor = tuple(real(1 / math.factorial(k)) for k in range(terms, 0, -1))  # 1/n!, ..., 1/1!
    log2_e, half, one = real(1 / math.log(2)), real(0.5), real(1)
    ln2_high, ln2_low = (real(part) for part in LN2_PARTS[x.bitwidth])

    def expm1_impl(x):
        k = np.floor(x * log2_e + half)
        r = (x - k * ln2_high) - k * ln2_low
        series = taylor[0]
        for coefficient in taylor[1:]:
            series = series * r + coefficient
        series = series * r
        scale = _power_of_two(k)
        return scale * series + (scale - one)

    return expm1_impl


def sigmoid(x):
    """σ(x) = 1 / (1 + e**−x). Kernels compile the overload below."""
    return 1.0 / (1.0 + math.exp(-x))


@overload(sigmoid, jit_options=JIT_OPTIONS)
def _sigmoid(x):
    if not isinstance(x, types.Float):
        return None
    real = np.float32 if x.bitwidth == 32 else np.float64
    limit, one, two = real(SATURATION[x.bitwidth]), real(1), real(2)

    def sigmoid_impl(x):
        x = limit if x > limit else x     # σ is 0 or 1 to the last bit long before
        x = -limit if x < -limit else x
        return one / (two + expm1(-x))   # 1 / (1 + e**−x)

    return sigmoid_impl


def tanh(x):
    """tanh(x). Kernels compile the overload below."""
    return math.tanh(x)


@overload(tanh, jit_options=JIT_OPTIONS)
def _tanh(x):
    if not isinstance(x, types.Float):
        return None
    real = np.float32 if x.bitwidth == 32 else np.float64
    limit, two = real(20), real(2)

    def tanh_impl(x):
        x = limit if x > limit else x     # tanh(20) is 1 to the last bit
        x = -limit if x < -limit else x
        e = expm1(two * x)               # (e**2x − 1) / (e**2x + 1), exact near 0
        return e / (e + two)

    return tanh_impl


# -- The recurrent product ---------------------------------------------------------
# h_(t−1) W_hhᵀ (and dg_t W_hh in backward) is a small product repeated every step:
# a few dozen rows against the same weights. Above about 10⁶ multiply-adds BLAS
# copies the weights into its own blocked layout on every call, which costs about as
# much as the arithmetic (OpenBLAS, one core: 55 GFLOP/s on 16 rows × 128 by 128 × 512).
# Here the weights are read as stored: out[i, j] = Σ_k a[i, k]·b[j, k], with a and b
# both row-major. Each 4 × 4 block of the output is 16 sums over k held in registers,
# 8 rows read per k for 16 multiply-adds, and the sums are vectorized over k (77 GFLOP/s
# on that product, 70–100 on others). That needs the 'reassoc' flag: each sum is added
# up in vector lanes, then across them. It changes only how each sum is rounded, as
# BLAS's own blocking does; inf and NaN still follow IEEE rules.
# Every output element goes through the one loop below, so a number never depends
# on where its row falls in a block of rows, nor on how many threads split the batch.
# BLAS still wins on small products, where it skips the packing altogether, and
# where the weights are small next to the rows: the driver chooses
# (driver.register_blocked) and recurrent_product follows its choice.

@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract", "reassoc"})
def recurrent_product(a, b, b_transposed, out, register_blocked):
    """out = a @ b.T: matmul_transposed if ``register_blocked``, else one BLAS call.

    ``b_transposed`` is b.T, row-major: BLAS is fastest with a @ b_transposed (up
    to 2× faster than with the view b.T at these sizes), the loop reads b's rows.
    The driver decides which runs (driver.register_blocked).
    """
    if register_blocked:
        matmul_transposed(a, b, out)
    else:
        np.dot(a, b_transposed, out)


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract", "reassoc"})
def matmul_transposed(a, b, out):
    """out = a @ b.T for C-contiguous a [M, K], b [N, K] and out [M, N]."""
    rows, depth = a.shape
    columns = b.shape[0]
    if b.shape[1] != depth or out.shape[0] != rows or out.shape[1] != columns:
        raise ValueError("matmul_transposed: expected a [M, K], b [N, K] and out [M, N]")
    last_row, last_column = rows - 1, columns - 1
    zero = a.dtype.type(0)
    for j in range(0, columns, 4):
        # past the last column (row), repeat it: the same sum again, stored twice
        j0, j1, j2, j3 = j, min(j + 1, last_column), min(j + 2, last_column), min(j + 3, last_column)
        for i in range(0, rows, 4):
            i0, i1, i2, i3 = i, min(i + 1, last_row), min(i + 2, last_row), min(i + 3, last_row)
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
            s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = zero
            for k in range(depth):
                a0, a1, a2, a3 = a[i0, k], a[i1, k], a[i2, k], a[i3, k]
                b0, b1, b2, b3 = b[j0, k], b[j1, k], b[j2, k], b[j3, k]
                s00 += a0 * b0
                s01 += a0 * b1
                s02 += a0 * b2
                s03 += a0 * b3
                s10 += a1 * b0
                s11 += a1 * b1
                s12 += a1 * b2
                s13 += a1 * b3
                s20 += a2 * b0
                s21 += a2 * b1
                s22 += a2 * b2
                s23 += a2 * b3
                s30 += a3 * b0
                s31 += a3 * b1
                s32 += a3 * b2
                s33 += a3 * b3
            out[i0, j0], out[i0, j1], out[i0, j2], out[i0, j3] = s00, s01, s02, s03
            out[i1, j0], out[i1, j1], out[i1, j2], out[i1, j3] = s10, s11, s12, s13
            out[i2, j0], out[i2, j1], out[i2, j2], out[i2, j3] = s20, s21, s22, s23
            out[i3, j0], out[i3, j1], out[i3, j2], out[i3, j3] = s30, s31, s32, s33


class NoOverlapCompiler(CompilerBase):
    """Numba's nopython pipeline, telling LLVM that no two array arguments overlap.

    A step kernel touches many arrays; without this LLVM would have to check at run
    time that none of them overlap, gives up ("too many memory checks") and leaves
    the loop scalar. The sequence functions never pass overlapping arrays.
    """

    def define_pipelines(self):
        self.state.flags.noalias = True
        return [DefaultPassBuilder.define_nopython_pipeline(self.state)]
