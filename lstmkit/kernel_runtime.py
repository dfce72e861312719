"""Run-time support that every generated kernel module imports.

Written by hand, once, rather than printed into each kernel file: vectorizable
σ, tanh and expm1 for the step kernels, the recurrent product of the loops over
time, and the compiler pipeline that tells LLVM the step kernels' array arguments
never overlap. Knows Numba, not SymPy: all of lstmkit's compiled low-level code is
here (:mod:`lstmkit.blas` calls BLAS from Python).

The LLVM IR below is written for the LLVM of the llvmlite that pyproject.toml
pins (numba 0.68 / llvmlite 0.50, LLVM 22).

Numba's cache tracks each kernel's own file only. So every kernel file carries a
hash of this module (RUNTIME_KEY): after editing it, regenerate the kernels
(python -m lstmkit generate; a test fails until then), and user cells are
rewritten on their next load. Either way their files change and they recompile.
"""
import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.compiler import CompilerBase, DefaultPassBuilder
from numba.extending import intrinsic, overload

__all__ = ["JIT_OPTIONS", "NoOverlapCompiler", "expm1", "sigmoid", "tanh", "matmul_packed", "pack",
           "pack_transposed", "panel_width", "empty_panels"]

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
# a few dozen rows against the same weights. BLAS copies the weights into its own
# blocked layout on every call above about 10⁶ multiply-adds, which costs about as much
# as the arithmetic (OpenBLAS, one core: 15–85 GFLOP/s float32 on these products).
# Here the weights are packed once per sequence, into panels of W columns
# (packed[p, k, c] = B[k, p·W + c]), and each step multiplies the rows of a by them
# with a register tile of 4 rows × W columns: 16 vector sums with AVX-512, 8 with AVX2
# (fewer if the product is narrower than W), each k adding
# broadcast(a[i, k]) · packed[p, k, :] with one fused multiply-add per vector. The
# sums run along the output columns, so nothing is ever added across vector lanes:
# 108–117 GFLOP/s float32 and 52–58 float64 on one core with AVX-512, 79–89 and 37–46
# with AVX2, at every size the course uses.
# Numba has no vector type, so the tile's loop over k is written in LLVM IR (_tile).
#
# Every out[i, j] is the sequential chain s = fma(a[i, k], B[k, j], s) over k from 0,
# one rounding per step: its bits do not depend on where its row falls in a block of
# rows, nor on how many threads split the batch. (It is not BLAS's rounding; it agrees
# with it to rounding.)


def _host_vector_bytes():
    """64 where the processor has AVX-512 (32 registers of 64 bytes), else 32 (AVX2's 16
    registers of 32 bytes; on other processors LLVM splits them into what there is)."""
    import llvmlite.binding as llvm
    from numba.core import config

    if config.CPU_FEATURES:      # Numba told to compile for other features than the host's
        return 64 if "+avx512f" in config.CPU_FEATURES.split(",") else 32
    try:
        return 64 if llvm.get_host_cpu_features().get("avx512f") else 32
    except RuntimeError:         # LLVM cannot tell: the narrower tile never spills
        return 32


# The tile must fit the registers: its sums, one panel row and the broadcast number. With
# AVX-512 that is 4 rows × 4 vectors of 64 bytes (16 + 4 + 1 of 32 registers). The same
# tile with AVX2 needed 32 of 16 registers: its sums spilled to memory, and the product
# ran at 25-30 GFLOP/s float32 on one core of an AMD EPYC without AVX-512, against
# 79-89 for 4 rows × 2 vectors of 32 bytes (8 + 2 + 1 registers) and 69-83 for 3 vectors
# (issue 17; a second pair of runs: 29-30 against 80-89). Every element is the same chain of
# fused multiply-adds whatever the tile (below), so the results are bit for bit those of
# the wide tile. Numba's cache is kept per processor, so a cached kernel always matches.
VECTOR_BYTES = _host_vector_bytes()
TILE_ROWS = 4       # rows of a per register tile
TILE_VECTORS = 4 if VECTOR_BYTES == 64 else 2    # vectors per row of a tile (see above)
PANEL_VECTORS = tuple(sorted({1, 2, TILE_VECTORS}))   # fewer where the product is narrow (panel_width)
# Fewer rows than a tile's (B = 1, a batch's last rows on a thread): so many panels at once,
# rows → panels, so that a row has as many independent sums as with AVX-512's wide panels.
# With 2 sums a row, each waited on the one fma before it: h W_hhᵀ at B = 1, d = 32 float32
# took 0.79-0.80 µs against 0.72 with 4 panels at once, and 0.70 with the AVX-512 tile (split
# by LLVM, on the same AVX2 machine); at d = 128 5.4-5.5 against 3.8-4.0 and 3.7-3.8 (issue 17).
# Backward's dg W_hh at B = 1 has d columns, 2 panels at d = 32: taken 2 at once (_halvings),
# 0.70-0.74 µs against 0.82 one by one.
PANEL_GROUP = {} if TILE_VECTORS == 4 else {1: 4, 2: 2}
_GROUP_BY_ROWS = tuple(PANEL_GROUP.get(rows, 1) for rows in range(TILE_ROWS))
ALIGN = 64          # byte alignment of packed weights: no vector load crosses a cache line


def _halvings(group):
    """4 → (4, 2): the groups of panels a tile of so few rows takes, the rest one by one."""
    return tuple(group >> k for k in range(group.bit_length() - 1))


_I1, _I32, _I64 = ir.IntType(1), ir.IntType(32), ir.IntType(64)


def _function(module, name, type_):
    """Declare an LLVM function (an intrinsic) once per module."""
    try:
        return module.get_global(name)
    except KeyError:
        return ir.Function(module, type_, name)


@intrinsic
def _tile(typingctx, a, packed, out, i0, rows, p, group):
    """out[i0:i0+rows, p*W:(p+group)*W] = a[i0:i0+rows] @ panels p to p+group-1 (columns
    >= N not stored).

    a [M, K], packed [P, K, W], out [M, N]: C-contiguous, same float dtype;
    1 <= rows <= TILE_ROWS, W = vectors · lanes with vectors in PANEL_VECTORS, group 1 or,
    for fewer rows than TILE_ROWS, one of _halvings(PANEL_GROUP[rows]). No bounds checks:
    the caller checks.
    """
    if not (isinstance(a, types.Array) and isinstance(packed, types.Array)
            and isinstance(out, types.Array)):
        return None
    dtype = a.dtype
    if not isinstance(dtype, types.Float) or packed.dtype != dtype or out.dtype != dtype:
        return None
    if a.ndim != 2 or packed.ndim != 3 or out.ndim != 2:
        return None
    if a.layout != "C" or packed.layout != "C" or out.layout != "C":
        return None
    signature = types.void(a, packed, out, types.intp, types.intp, types.intp, types.intp)

    def codegen(context, builder, sig, args):
        a_v, b_v, c_v = args[:3]
        i0_v, rows_v, p_v, group_v = [context.cast(builder, x, t, types.intp)
                                      for x, t in zip(args[3:], sig.args[3:])]
        real = context.get_value_type(dtype)
        bits = dtype.bitwidth
        esize = bits // 8
        lanes = VECTOR_BYTES // esize
        vec = ir.VectorType(real, lanes)
        ivec = ir.VectorType(_I64, lanes)
        mvec = ir.VectorType(_I1, lanes)
        splat0 = ir.Constant(ir.VectorType(_I32, lanes), [0] * lanes)
        name = f"v{lanes}f{bits}"
        module = builder.module
        fma = _function(module, f"llvm.fma.{name}", ir.FunctionType(vec, [vec, vec, vec]))
        # old (alignment-argument) form; LLVM upgrades it when it parses the module
        masked_store = _function(module, f"llvm.masked.store.{name}.p0",
                                 ir.FunctionType(ir.VoidType(),
                                                 [vec, ir.PointerType(), _I32, mvec]))

        def splat(value, vtype):
            v = builder.insert_element(ir.Constant(vtype, ir.Undefined), value,
                                       ir.Constant(_I32, 0))
            return builder.shuffle_vector(v, ir.Constant(vtype, ir.Undefined), splat0)

        def const(x):
            return ir.Constant(_I64, x)

        A = context.make_array(sig.args[0])(context, builder, a_v)
        B = context.make_array(sig.args[1])(context, builder, b_v)
        C = context.make_array(sig.args[2])(context, builder, c_v)
        lda = cgutils.unpack_tuple(builder, A.shape, 2)[1]
        _, depth, width = cgutils.unpack_tuple(builder, B.shape, 3)
        ldc = cgutils.unpack_tuple(builder, C.shape, 2)[1]
        a_base = builder.gep(A.data, [builder.mul(i0_v, lda)])
        panels_at_most = max(PANEL_GROUP.values(), default=1)
        j0 = [builder.mul(builder.add(p_v, const(g)), width) for g in range(panels_at_most)]
        b_base = [builder.gep(B.data, [builder.mul(j, depth)]) for j in j0]
        c_base = [builder.gep(C.data, [builder.add(builder.mul(i0_v, ldc), j)]) for j in j0]
        # lane j0 + v*lanes + l is stored only if it is < N
        limit = splat(ldc, ivec)
        index = ir.Constant(ivec, list(range(lanes)))
        masks = [[builder.icmp_signed("<", builder.add(splat(builder.add(j, const(v * lanes)), ivec), index),
                                      limit)
                  for v in range(TILE_VECTORS)] for j in j0]
        zero = ir.Constant(vec, [0.0] * lanes)
        fn = builder.function
        end_bb = fn.append_basic_block("tile.end")
        default_bb = fn.append_basic_block("tile.default")
        # one loop per (panels, rows, vectors per panel row): the key is (group · 8 + rows) · 8 + vectors
        key = builder.add(builder.mul(builder.add(builder.mul(group_v, const(8)), rows_v), const(8)),
                          builder.sdiv(width, const(lanes)))
        switch = builder.switch(key, default_bb)
        with builder.goto_block(default_bb):
            # no tile for this (rows, vectors): matmul_packed checks its shapes, so this is
            # a bug; stop rather than leave the output unwritten
            trap = _function(module, "llvm.trap", ir.FunctionType(ir.VoidType(), []))
            builder.call(trap, [])
            builder.unreachable()
        cases = [(1, m, vectors) for m in range(1, TILE_ROWS + 1) for vectors in PANEL_VECTORS]
        cases += [(group, m, vectors) for m, largest in PANEL_GROUP.items()
                  for group in _halvings(largest) for vectors in PANEL_VECTORS]
        for group, m, vectors in cases:
            name = f"{group}.{m}.{vectors}"
            case_bb = fn.append_basic_block(f"tile.panels{group}.rows{m}.vectors{vectors}")
            switch.add_case(const((group * 8 + m) * 8 + vectors), case_bb)
            builder.position_at_end(case_bb)
            a_rows = [builder.gep(a_base, [builder.mul(const(r), lda)]) for r in range(m)]
            loop_bb = fn.append_basic_block(f"tile.loop{name}")
            exit_bb = fn.append_basic_block(f"tile.exit{name}")
            builder.cbranch(builder.icmp_signed(">", depth, const(0)), loop_bb, exit_bb)
            builder.position_at_end(loop_bb)
            k = builder.phi(_I64)
            k.add_incoming(const(0), case_bb)
            # sums [panel][row][vector]
            acc = [[[builder.phi(vec) for _ in range(vectors)] for _ in range(m)] for _ in range(group)]
            for phi in (phi for panel in acc for row in panel for phi in row):
                phi.add_incoming(zero, case_bb)
            b = []
            for g in range(group):
                b_row = builder.gep(b_base[g], [builder.mul(k, width)])
                b.append([builder.load(builder.gep(b_row, [const(v * lanes)]), typ=vec, align=esize)
                          for v in range(vectors)])
            x = [splat(builder.load(builder.gep(a_rows[r], [k]), typ=real, align=esize), vec)
                 for r in range(m)]
            new = [[[builder.call(fma, [x[r], b[g][v], acc[g][r][v]]) for v in range(vectors)]
                    for r in range(m)] for g in range(group)]
            k_next = builder.add(k, const(1))
            body_bb = builder.block
            k.add_incoming(k_next, body_bb)
            for g in range(group):
                for r in range(m):
                    for v in range(vectors):
                        acc[g][r][v].add_incoming(new[g][r][v], body_bb)
            builder.cbranch(builder.icmp_signed("<", k_next, depth), loop_bb, exit_bb)
            builder.position_at_end(exit_bb)
            final = []
            for g in range(group):
                for r in range(m):
                    for v in range(vectors):
                        phi = builder.phi(vec)
                        phi.add_incoming(zero, case_bb)
                        phi.add_incoming(new[g][r][v], body_bb)
                        final.append((g, r, v, phi))
            # all phis first, then the stores. A panel inside out's N columns (all but the last
            # panel of a product whose N is not a multiple of W) takes plain stores: a masked
            # store (vmaskmovps) cost so much on an AMD EPYC (Zen 3) that 100 steps of x_t W_ihᵀ and
            # h W_hhᵀ at B = 8, n = 16, d = 32 float32 took 0.23 ms with masked stores
            # everywhere against 0.12 (issue 17)
            for g in range(group):
                inside = builder.icmp_signed("<=", builder.add(j0[g], const(vectors * lanes)), ldc)
                with builder.if_else(inside) as (whole_panel, last_panel):
                    for plain in (True, False):
                        with (whole_panel if plain else last_panel):
                            for _, r, v, phi in (item for item in final if item[0] == g):
                                ptr = builder.gep(c_base[g], [builder.add(builder.mul(const(r), ldc),
                                                                          const(v * lanes))])
                                if plain:
                                    builder.store(phi, builder.bitcast(ptr, vec.as_pointer()), align=esize)
                                else:
                                    builder.call(masked_store, [phi, ptr, ir.Constant(_I32, esize),
                                                                masks[g][v]])
            builder.branch(end_bb)
        builder.position_at_end(end_bb)
        return context.get_dummy_value()

    return signature, codegen


@numba.njit(cache=True, nogil=True)
def panel_width(itemsize, columns):
    """Columns per panel: 4 vectors (64 float32, 32 float64), or 2 or 1 where the
    product has no more columns than that, so that no lane computes padding."""
    lanes = VECTOR_BYTES // itemsize
    vectors = 1 if columns <= lanes else (2 if columns <= 2 * lanes else TILE_VECTORS)
    return vectors * lanes


@numba.njit(cache=True, nogil=True)
def _aligned_empty(size, like):
    """An uninitialised 1-d array of ``size`` elements of like's dtype, ALIGN-byte aligned."""
    buffer = np.empty(size + ALIGN // like.itemsize, like.dtype)
    offset = ((-buffer.ctypes.data) % ALIGN) // like.itemsize
    return buffer[offset:offset + size]


_panel_shapes = {}   # (columns, depth, itemsize) → [ceil(N/W), K, W]


def empty_panels(columns, depth, like):
    """An uninitialised, ALIGN-byte aligned [ceil(N/W), K, W] array of like's dtype, for N
    columns of depth K.

    Shaped in Python: inside @njit, reshape's error path (a message that formats the
    shapes) was most of the 4.6 s of string functions compiled for a learner's first layer."""
    key = (columns, depth, like.itemsize)
    shape = _panel_shapes.get(key)
    if shape is None:
        width = panel_width(like.itemsize, columns)
        shape = _panel_shapes[key] = (-(-columns // width), depth, width)
    flat = _aligned_empty(shape[0] * shape[1] * shape[2], like)
    if flat.size == 0:   # NumPy's view of no elements loses the aligned offset: set it again
        buffer = np.empty(ALIGN // like.itemsize, like.dtype)
        return np.ndarray(shape, like.dtype, buffer=buffer, offset=(-buffer.ctypes.data) % ALIGN)
    return flat.reshape(shape)


@numba.njit(cache=True, nogil=True)
def _pack_into(b, transposed, packed):
    """b [K, N] (or b [N, K] when transposed) into the panels ``packed``; zero past column N."""
    columns, depth = (b.shape[0], b.shape[1]) if transposed else (b.shape[1], b.shape[0])
    width = packed.shape[2]
    for p in range(packed.shape[0]):
        j0 = p * width
        n = min(width, columns - j0)
        # each loop reads b in memory order: reading b.T across its rows took 3× as long
        # (2.2 against 0.7 ms for a [2048, 512] float32 W_hh), a tiled loop for both 1.6×
        if transposed:
            for c in range(n):
                for k in range(depth):
                    packed[p, k, c] = b[j0 + c, k]
        else:
            for k in range(depth):
                for c in range(n):
                    packed[p, k, c] = b[k, j0 + c]
        for k in range(depth):
            for c in range(n, width):
                packed[p, k, c] = 0


def pack(b, out=None):
    """b [K, N] in panels, for out = a @ b (backward: pack(W_hh)); into ``out`` if given
    (from ``empty_panels`` for b's N and K)."""
    packed = empty_panels(b.shape[1], b.shape[0], b) if out is None else out
    _pack_into(b, False, packed)
    return packed


def pack_transposed(b, out=None):
    """b [N, K] in panels, for out = a @ b.T (forward: pack_transposed(W_hh)); into ``out`` if given."""
    packed = empty_panels(b.shape[0], b.shape[1], b) if out is None else out
    _pack_into(b, True, packed)
    return packed


# The tile loop is compiled once per dtype as a C function (a cfunc) and called by its symbol
# name: a kernel that calls matmul_packed then holds a call, not the tile's 12 unrolled
# variants. Numba links every function a kernel calls into that kernel's own module and
# optimizes and compiles it there again: for the tile that was 0.2-0.35 s of every loop over
# time that multiplies (a function calling matmul_packed compiled in 0.29-0.43 s against
# 0.07 s for an empty one; issue 17, compile time). The symbols are registered with LLVM
# before anything can call them: matmul_packed is handed out by this module's __getattr__,
# which links first (_link_products), and every kernel module imports it.
_PRODUCT_SYMBOLS = {4: "lstmkit_matmul_packed_f32", 8: "lstmkit_matmul_packed_f64"}
_product_signature = types.void(types.voidptr, types.intp, types.intp, types.voidptr, types.intp, types.intp,
                                types.voidptr, types.intp)
_products = {itemsize: types.ExternalFunction(symbol, _product_signature)
             for itemsize, symbol in _PRODUCT_SYMBOLS.items()}
_product_f32, _product_f64 = _products[4], _products[8]
_linked = []     # the cfuncs, kept alive while their symbols are registered


def _product_tiles(a_data, rows, depth, packed_data, panels, width, out_data, columns):
    """The tile loop of matmul_packed on C-contiguous arrays given by their first elements."""
    a = numba.carray(a_data, (rows, depth))
    packed = numba.carray(packed_data, (panels, depth, width))
    out = numba.carray(out_data, (rows, columns))
    group = _GROUP_BY_ROWS[rows] if rows < TILE_ROWS else 1
    first = 0
    while group > 1:     # few rows: several panels at once (PANEL_GROUP), halving for the rest
        while first + group <= panels:
            _tile(a, packed, out, 0, rows, first, group)
            first += group
        group //= 2
    for p in range(first, panels):
        for i in range(0, rows, TILE_ROWS):
            _tile(a, packed, out, i, min(TILE_ROWS, rows - i), p, 1)


def _product_entry(real):
    """_product_tiles as a C function for arrays of ``real``, compiled or loaded from Numba's
    cache. A compilation raises Numba's ``numba:compile`` event as a jitted function's does
    (a cfunc's raises none), so that lstmkit.compile_notice and benchmarks/compile_time.py see it."""
    from numba.core import event
    from numba.core.ccallback import CFunc

    pointer = types.CPointer(real)
    signature = types.void(pointer, types.intp, types.intp, pointer, types.intp, types.intp, pointer, types.intp)
    entry = CFunc(_product_tiles, (signature.args, signature.return_type), locals={}, options={"nogil": True})
    entry.enable_caching()
    uncached = entry._compile_uncached

    def compile_uncached():
        with event.trigger_event("numba:compile", data={"dispatcher": _EventSource, "args": signature.args,
                                                        "return_type": signature.return_type}):
            return uncached()

    entry._compile_uncached = compile_uncached
    repair_cache_indexes([(f"_product_tiles, {real}", entry)], "lstmkit.kernel_runtime")
    entry.compile()
    return entry


class _EventSource:
    """What a ``numba:compile`` event's listeners read of the compiled function."""
    py_func = _product_tiles


def _link_products():
    """Compile (or load from Numba's cache) the tile loops and register their symbols, once."""
    if not _linked:
        import llvmlite.binding as llvm

        entries = {4: _product_entry(types.float32), 8: _product_entry(types.float64)}
        for itemsize, entry in entries.items():
            llvm.add_symbol(_PRODUCT_SYMBOLS[itemsize], entry.address)
        _linked.append(entries)


@intrinsic
def _address(typingctx, array):
    """The address of an array's first element."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.bitcast(data, ir.IntType(8).as_pointer())

    return types.voidptr(array), codegen


def _check_layouts(a, packed, out):
    """Nothing at run time: typing fails unless the tile can read the arrays through their
    pointers (C-contiguous, the same float dtype, 2, 3 and 2 dimensions), as _tile's did."""


def _layouts_typed(dimensions):
    """The typing of a layout check: arrays of ``dimensions`` (a, packed, out), C-contiguous,
    one float dtype."""
    def typed(a, packed, out):
        arrays = (a, packed, out)
        if (all(isinstance(x, types.Array) and x.layout == "C" for x in arrays)
                and (a.ndim, packed.ndim, out.ndim) == dimensions
                and isinstance(a.dtype, types.Float) and a.dtype == packed.dtype == out.dtype):
            return lambda a, packed, out: None
        return None

    return typed


overload(_check_layouts)(_layouts_typed((2, 3, 2)))


@numba.njit(cache=True, nogil=True)
def _panels_fit(packed, depth, columns, itemsize):
    """Whether ``packed`` holds the panels of a matrix of ``depth`` rows and ``columns`` columns
    (pack, pack_transposed): as many panels of the width panel_width gives as cover the columns."""
    panels, packed_depth, width = packed.shape
    return (packed_depth == depth and width == panel_width(itemsize, columns)
            and panels * width >= columns and (panels - 1) * width < max(columns, 1))


@numba.njit(cache=True, nogil=True)
def _matmul_packed(a, packed, out):
    """out = a @ B for C-contiguous a [M, K], packed = pack(B) and out [M, N].

    With packed = pack_transposed(b), out = a @ b.T. Each out[i, j] is the
    sequential fused multiply-add chain over k (see above).
    """
    rows, depth = a.shape
    panels, _, width = packed.shape
    columns = out.shape[1]
    if out.shape[0] != rows or not _panels_fit(packed, depth, columns, a.itemsize):
        raise ValueError("matmul_packed: expected a [M, K], packed [ceil(N/W), K, W] and out [M, N]")
    _check_layouts(a, packed, out)
    if a.itemsize == 4:
        _product_f32(_address(a), rows, depth, _address(packed), panels, width, _address(out), columns)
    else:
        _product_f64(_address(a), rows, depth, _address(packed), panels, width, _address(out), columns)


# Fewer rows than a tile (B < TILE_ROWS): a product of one row loads each vector of the panels
# for one multiply-add, while a tile of 4 rows shares each load among 4. So forward multiplies
# x_t W_ihᵀ for as many steps at once as fit this many bytes of results (matmul_packed_steps,
# whole tiles of rows), instead of step by step: at B = 1, n = 16, d = 32 float32, 100 steps
# took 18 µs against 29 (issue 17). Each element is the same chain of fused multiply-adds
# either way, so the results keep their bits.
INPUT_AHEAD_BYTES = 1 << 18


@numba.njit(cache=True, nogil=True)
def _matmul_packed_steps(x, t0, t1, packed, out):
    """out[:rows] = x[t0:t1] @ W for x [T, batch, K] C-contiguous, whose steps t0 to t1 − 1 lie
    one after another as a [rows, K] matrix, rows = (t1 − t0)·batch, and packed = pack(W) (or
    pack_transposed(Wᵀ)), as matmul_packed: each out[i, j] the sequential fma chain over k."""
    steps, batch, depth = x.shape
    panels, _, width = packed.shape
    columns = out.shape[1]
    rows = (t1 - t0) * batch
    if not 0 <= t0 <= t1 <= steps or out.shape[0] < rows or not _panels_fit(packed, depth, columns, x.itemsize):
        raise ValueError("matmul_packed_steps: expected x [T, B, K], 0 <= t0 <= t1 <= T, "
                         "packed [ceil(N/W), K, W] and out [>= (t1 - t0)·B, N]")
    if rows == 0:
        return
    _check_steps_layouts(x, packed, out)
    if x.itemsize == 4:
        _product_f32(_address(x[t0]), rows, depth, _address(packed), panels, width, _address(out), columns)
    else:
        _product_f64(_address(x[t0]), rows, depth, _address(packed), panels, width, _address(out), columns)


def _check_steps_layouts(x, packed, out):
    """As _check_layouts, for x [T, B, K]."""


overload(_check_steps_layouts)(_layouts_typed((3, 3, 2)))


_LINKED_PRODUCTS = {"matmul_packed": _matmul_packed, "matmul_packed_steps": _matmul_packed_steps}


def __getattr__(name):
    """``matmul_packed`` and ``matmul_packed_steps``, linked first (see _link_products)."""
    if name in _LINKED_PRODUCTS:
        _link_products()
        globals()[name] = _LINKED_PRODUCTS[name]
        return _LINKED_PRODUCTS[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def repair_cache_indexes(functions, owner):
    """Reset every Numba cache index of ``functions`` (``(name, function)`` pairs; what is not
    a cached Numba function is skipped) that Numba could not read.

    Numba reads a function's index (``<module>.<function>-<line>.py*.nbi``, in ``__pycache__``
    or under ``NUMBA_CACHE_DIR``) at its first call and lets an error there escape: a truncated
    or overwritten index would make lstmkit unusable until someone deleted it. Reading it here,
    the way Numba does, finds such an index; an empty one takes its place, with a warning that
    names it, and the function compiles again. ``owner`` says whose functions they are.
    """
    import os
    import warnings

    for name, function in functions:
        cache_file = getattr(getattr(function, "_cache", None), "_cache_file", None)
        if cache_file is None:
            continue
        try:
            cache_file._load_index()
        except Exception as error:      # whatever unpickling a damaged file raises
            warnings.warn(
                f"lstmkit: the Numba cache index {os.path.basename(cache_file._index_path)} of "
                f"{owner} ({name}) could not be read ({type(error).__name__}: {error}); it was reset in "
                f"{os.path.dirname(cache_file._index_path)} and the function is compiled again",
                RuntimeWarning, stacklevel=3)
            cache_file.flush()


class NoOverlapCompiler(CompilerBase):
    """Numba's nopython pipeline, telling LLVM that no two array arguments overlap.

    A step kernel touches many arrays; without this LLVM would have to check at run
    time that none of them overlap, gives up ("too many memory checks") and leaves
    the loop scalar. The sequence functions never pass overlapping arrays.
    """

    def define_pipelines(self):
        self.state.flags.noalias = True
        return [DefaultPassBuilder.define_nopython_pipeline(self.state)]


repair_cache_indexes(list(globals().items()), "lstmkit.kernel_runtime")
