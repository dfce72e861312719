"""Run a cell's generated kernels over a whole sequence, forward and back.

The sequence stage of the pipeline (ARCHITECTURE.md). Every call into a kernel
module is arranged in the order of its ``FORWARD_ARGS``/``BACKWARD_ARGS``, the
calling convention the generator writes into each module (``_Convention``):

* forward: the generated loop over time; per step, ``x_t W_ihᵀ`` and
  ``h_{t−1} W_hhᵀ`` and the fused step kernel, which also adds both biases.
  Both products of a step run in lstmkit's own kernel
  (``kernel_runtime.matmul_packed``) on weights packed once per sequence (BLAS
  would repack them every step), and that kernel runs as fast as BLAS's large
  GEMM: so ``x_t W_ihᵀ`` costs the same inside the loop as one GEMM before it,
  while the [T, B, G·d] array of pre-activations is never written to memory
  and read back. Forward allocates nothing of that size.
* backward: the generated loop runs the only truly sequential part,
  ``dh_{t−1} = dg_t W_hh`` (the same kernel, on ``W_hh`` packed) plus the step
  kernel; then ``dW_ih += dGᵀX``, ``dX = dG W_ih``, ``dW_hh += dGᵀH_prev`` and the
  bias sums are each one GEMM (BLAS) or reduction over one chunk of time
  (Memory, below). Where d/dgh differs from d/dgx (the GRU's n block,
  ``r ⊙ d/dgx``), the loop keeps d/dgx, and the kernels' own
  ``hidden_gradient_rows`` turns it into d/dgh in place once the input side is
  done with it (``HIDDEN_GRADIENTS``); a cell without such factors gets a
  second array.

Threads. lstmkit never uses BLAS's own threads: OpenBLAS's keep spinning for a
while after each product, and spinning ones took a third of the two cores
from whatever ran next. A small layer runs on the calling thread, its
products too small to gain from splitting. In a large one, each batch row's
recurrence being independent of the others, the loop over time runs on blocks
of rows at once, one thread per block (as many blocks as
``numba.get_num_threads()`` allows), each running its own small
products (``kernel_runtime.matmul_packed``), so that the blocks never
wait for one another inside the loop; and backward's products after it run on
threads too, one slab of rows each. The threads are Python's (``_on_threads``,
:mod:`lstmkit.threads`), each in a kernel that releases the GIL. The slabs of ``dW_ih`` and
``dW_hh`` are fixed in number (``PRODUCT_SLABS``), and so are backward's blocks of rows for
a cell with element-wise parameters (``_fixed_block_count``), so the gradients do not depend
on the number of threads.

Memory. The gradient of the pre-activations of a whole sequence, [T, B, G·d],
is the largest array backpropagation through time could need, and backward
never holds it: it runs the loop over one chunk of time (``backward_chunks``,
at most ``BACKWARD_CHUNK_BYTES`` of that gradient), adds the chunk's products
into ``dW_ih`` and ``dW_hh`` where they lie (BLAS's gemm with beta = 1), writes
its rows of ``dX``, and goes on to the chunk before, carrying the gradients of
the states. So backward adds to what forward kept only its results, the packed
``W_hh`` and one chunk. The chunks depend on the shape alone: the gradients'
rounding does not depend on the machine. The layer returns the output history
itself as its output (read-only), not a copy.
Inference (``inference=True``) keeps no saved values and only two slots of each
state history other than the output. A :class:`Workspace` lends a tape its
buffers and gets them back, through :func:`release`, once backward is done,
so that a training loop reuses the same memory on every step.
"""
from __future__ import annotations

import contextlib
import functools
import math
import operator
from dataclasses import dataclass

import numba
import numpy as np
from . import blas, kernel_runtime, threads

__all__ = ["Tape", "Workspace", "sequence_forward", "sequence_backward", "release", "row_block_count",
           "backward_chunks", "column_sums", "PARALLEL_MIN_WORK", "LOOP_PARALLEL_MIN_WORK"]

# Below this many multiply-adds in the recurrent products of one sequence (about a
# millisecond of work on one core), threads save little and risk much: on a busy
# machine a thread that is not scheduled stalls the whole call for a time slice.
# Such loops run on the calling thread.
PARALLEL_MIN_WORK = 50_000_000

# The loop over time alone runs on blocks of rows from this much work (same measure) when
# the cell has no element-wise parameters: then a block's rows give the same bits as the
# whole batch's, and only the speed changes. A start of the threads costs 10–30 µs
# (lstmkit.threads), and the loop's share of the work is the larger at small widths.
# Forward+backward of the LSTM, float32, 2 blocks against 1, interleaved, 40 rounds
# (results/loop_threads.json): 0.80–0.89 of the time at 6.6–26 million (the adding
# problem's (50, 64, 2, 32) among them), 0.92–0.94 at 3.3 million, where a run just
# before gave 1.03–1.08: below about 5 million the gain is lost in the noise. The products
# after backward's loop keep PARALLEL_MIN_WORK, which decides how they round.
LOOP_PARALLEL_MIN_WORK = 5_000_000
MIN_BLOCK_ROWS = kernel_runtime.TILE_ROWS   # a block of rows fills a register tile of the recurrent product


class Workspace:
    """Buffers that one direction of one layer reuses from call to call.

    A training step needs the same few large arrays every time. Fresh ones
    cost more than the arithmetic at small sizes: glibc gives large freed
    blocks back to the OS, and every page faults in again on first touch. A
    buffer here is lent to one tape at a time (``take`` removes it) and comes
    back through :func:`release`; one idle buffer is kept per role, the
    largest seen, so the memory held is that of one call.
    """

    def __init__(self):
        self._idle = {}   # role → 1-d buffer
        self._full_lengths = None
        self._panels = {}   # role → ((weight's shape, dtype, transposed), panels)
        self._plans = {}    # a call's shape → its _Plan

    def packed(self, role, weight, transposed):
        """``weight`` packed for the recurrent product (``kernel_runtime.pack_transposed`` if
        ``transposed``, else ``pack``), packed anew on every call: an optimizer may have
        changed it in place since the last. A small weight's panels are kept here and packed
        into again, because allocating them cost more than packing: at (128, 32) float32,
        pack_transposed took 6.8 µs and packing into kept panels 2.1 (issue 17, B = 1). A
        large weight's are not kept (they would add 1.5 × the weights to what a layer holds
        between calls, and at that size the allocation costs nothing next to the packing).
        """
        if weight.nbytes > KEEP_PANELS_BYTES:
            return kernel_runtime.pack_transposed(weight) if transposed else kernel_runtime.pack(weight)
        key = (weight.shape, weight.dtype, transposed)
        kept = self._panels.get(role)
        if kept is None or kept[0] != key:
            columns, depth = weight.shape if transposed else weight.shape[::-1]
            kept = self._panels[role] = (key, kernel_runtime.empty_panels(columns, depth, weight))
        kernel_runtime._pack_into(weight, transposed, kept[1])
        return kept[1]

    def full_lengths(self, steps, batch):
        """[batch] int64 of ``steps``, the lengths of full rows; the same array while they stay."""
        if self._full_lengths is None or self._full_lengths[0] != (steps, batch):
            self._full_lengths = ((steps, batch), np.full(batch, steps, np.int64))
        return self._full_lengths[1]      # nothing writes it: the kernels only read lengths

    def take(self, role, shape, dtype):
        """An uninitialised array of ``shape``: an idle buffer if one is large enough."""
        idle = self._idle.pop(role, None)
        if idle is not None:
            if idle.shape == shape and idle.dtype == dtype:     # as the last call: most calls
                return idle
            buffer = idle if idle.base is None else idle.base
            size = math.prod(shape)
            if buffer.dtype == dtype and buffer.size >= size:
                return buffer[:size].reshape(shape)
        return np.empty(math.prod(shape), dtype).reshape(shape)

    def give(self, role, array):
        """Take back an array that ``take`` lent; nothing else may still use it."""
        idle = self._idle.get(role)
        if idle is not None:
            size = array.size if array.base is None else array.base.size
            if idle.dtype == array.dtype and (idle.size if idle.base is None else idle.base.size) >= size:
                return
        self._idle[role] = array      # as lent: the next call of the same shape takes it as it is

    def plan(self, kernels, x, hidden, inference):
        """The :class:`_Plan` of a call on ``x`` (one per shape, kept here)."""
        key = (kernels, x.shape, hidden, x.dtype, inference, PARALLEL_MIN_WORK, LOOP_PARALLEL_MIN_WORK)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= MAX_PLANS:      # sequences of ever new lengths: keep the newest
                del self._plans[next(iter(self._plans))]
            plan = self._plans[key] = _Plan(kernels, *x.shape, hidden, x.dtype, inference)
        return plan


MAX_PLANS = 64     # per workspace, i.e. per layer and direction


class _Plan:
    """What a call of one shape needs besides its arrays, worked out once per shape: the
    buffers' shapes, the calling convention's order, whether threads are worth it, the
    lengths of full rows and zero biases. Redoing it on every call took about 15 µs of
    the Python of a forward+backward at (100, 1, 16, 32) (issue 17)."""

    def __init__(self, kernels, steps, batch, n_in, hidden, dtype, inference):
        self.steps, self.batch, self.n_in, self.hidden = steps, batch, n_in, hidden
        self.gates = gates = len(kernels.GATES) * hidden
        self.histories = [(_history_role(k), (steps + 1 if not inference or name == kernels.OUTPUT else 2,
                                              batch, hidden))
                          for k, name in enumerate(kernels.STATES)]
        self.saved_shape = (min(steps, 1) if inference else steps, batch, len(kernels.SAVED) * hidden)
        self.output_state = kernels.STATES.index(kernels.OUTPUT)
        # threads for the loop: blocks are counted per call (the number of threads may change)
        self.loop_on_threads = _loop_on_threads(steps, batch, gates, hidden, kernels.PARAMS)
        self.params = bool(kernels.PARAMS)
        self.threaded = products_on_threads(steps, batch, gates, hidden, n_in)
        convention = _convention(kernels)
        self.forward_order, self.backward_order = convention.forward_order, convention.backward_order
        self.full_lengths = np.full(batch, steps, np.int64)       # nothing writes these:
        self.zero_bias = np.zeros(gates, dtype)                  # the kernels only read them
        self.own_array = kernels.HIDDEN_GRADIENTS == "own array"
        self.step_bytes = (2 if self.own_array else 1) * batch * gates * dtype.itemsize

    def blocks(self):
        """How many blocks of rows the loop over time runs at once: 1 below its threshold
        (``_loop_on_threads``), else as many as threads allow."""
        return _block_count(self.batch) if self.loop_on_threads else 1

    def backward_blocks(self):
        """The blocks of backward's loop: a cell with element-wise parameters sums their
        gradients block by block, so it takes a fixed number (``_fixed_block_count``)."""
        if self.params and self.loop_on_threads:
            return _fixed_block_count(self.batch)
        return self.blocks()


@functools.lru_cache(maxsize=None)
def _history_role(k):
    return f"history {k}"


@dataclass
class Tape:
    """What one direction of one layer keeps from forward for backward."""

    x: np.ndarray               # [T, B, n] layer input
    histories: tuple            # per state: [T + 1, B, d] (two slots for dropped states in inference)
    saved: np.ndarray           # [T, B, S·d] ([1, B, S·d] in inference)
    lengths: np.ndarray         # [B] int64
    weight_ih: np.ndarray
    weight_hh: np.ndarray
    params: tuple               # element-wise parameters, [d] each
    inference: bool             # True: nothing saved, backward cannot follow
    output_state: int           # index of the output state in histories
    workspace: Workspace        # where the buffers came from and go back to
    d_pre: np.ndarray = None    # backward's gradient of the pre-activations, one chunk, from the workspace
    d_pre_h: np.ndarray = None  # its second gradient array (cells with no d/dgh factors)
    output_lent: bool = False   # the output history is the caller's y: never given back
    used: bool = False          # backward has run
    released: bool = False      # the buffers went back to the workspace
    plan: "_Plan" = None        # the call's shape, as sequence_forward worked it out

    def claim_for_backward(self):
        """Mark the tape as read by backward; refuse an inference tape or a second backward."""
        if self.inference:
            raise RuntimeError("an inference forward pass (inference=True) saved nothing for backward")
        if self.used:
            raise RuntimeError("backward was already run for this forward pass; call forward again")
        self.used = True


def release(tape: Tape):
    """Give a tape's buffers back to its workspace, for the next call to reuse.

    Backward calls it when done; the caller of an inference forward calls it
    once nothing reads the buffers any more. An output history the caller
    returned (``output_lent``) stays the caller's.
    """
    if tape.released:
        return
    tape.released = True
    give = tape.workspace.give
    if tape.saved is not None:
        give("saved", tape.saved)
    if tape.d_pre is not None:
        give("d_pre", tape.d_pre)
    if tape.d_pre_h is not None:
        give("d_pre_h", tape.d_pre_h)
    for k, history in enumerate(tape.histories):
        if not (tape.output_lent and k == tape.output_state):
            give(_history_role(k), history)
    tape.d_pre = tape.saved = tape.d_pre_h = tape.histories = None


def row_block_count(steps, batch, gates, hidden, params=False):
    """How many blocks of batch rows the loop over time runs at once (1: no threads), for a
    cell in stages (a one-product cell: ``_Plan.blocks``); ``params``: backward's loop of a cell
    with element-wise parameters (``_fixed_block_count``)."""
    if not _large(steps, batch, gates, hidden):
        return 1
    return _fixed_block_count(batch) if params else _block_count(batch)


def _block_count(batch):
    return max(1, min(batch // MIN_BLOCK_ROWS, numba.get_num_threads()))


def _fixed_block_count(batch):
    """Backward's blocks of rows for a cell with element-wise parameters: each block sums its
    rows' share of their gradients, so the blocks are PRODUCT_SLABS whatever the number of
    threads (as the products' slabs are), and the gradients round the same on any machine. With
    as many blocks as threads, the peephole LSTM's differed in 4 of 7 numbers between 1 and 2
    threads."""
    return max(1, min(batch // MIN_BLOCK_ROWS, PRODUCT_SLABS))


def _large(steps, batch, gates, hidden):
    """Worth threads: the whole-sequence products then run on them as well."""
    return steps * batch * gates * hidden >= PARALLEL_MIN_WORK


def _loop_on_threads(steps, batch, gates, hidden, params):
    """Whether the loop over time of a one-product cell runs on blocks of rows. A cell with
    element-wise parameters sums their gradients block by block, so its blocks change how
    they round: it keeps ``PARALLEL_MIN_WORK``, as the staged cells do."""
    work = steps * batch * gates * hidden
    return work >= PARALLEL_MIN_WORK or (not params and work >= LOOP_PARALLEL_MIN_WORK)


def products_on_threads(steps, batch, gates, hidden, n_in):
    """Whether the whole-sequence products run on threads (see the module docstring)."""
    return _large(steps, batch, gates, hidden) and n_in > 0


# On threads, dW_ih += dGᵀX and dW_hh += dGᵀH are computed in this many slabs of
# the gradient's rows, whatever the number of threads, so that the gradients do not depend
# on the machine. Two, one per core here: four cost up to 3 % more, eight 7-11 %.
PRODUCT_SLABS = 2

# Weights of at most this many bytes keep their packed panels in the workspace (Workspace.packed).
KEEP_PANELS_BYTES = 1 << 20

# Backward runs in chunks of time whose gradient of the pre-activations takes at most
# this many bytes: the largest buffer backward allocates. Each chunk costs a few thread
# starts and smaller BLAS products, so small layers run in one chunk.
BACKWARD_CHUNK_BYTES = 4 << 20


_blas_libraries = None


@contextlib.contextmanager
def _one_blas_thread():
    """A context in which every loaded BLAS runs on the calling thread alone.

    Calls each library's own thread setting (a few microseconds in all), rather
    than threadpoolctl's ``limit``, which costs more than a small layer's step.
    """
    global _blas_libraries
    if _blas_libraries is None:
        from threadpoolctl import ThreadpoolController

        _blas_libraries = ThreadpoolController().select(user_api="blas").lib_controllers
    previous = [library.get_num_threads() for library in _blas_libraries]
    for library in _blas_libraries:
        library.set_num_threads(1)
    try:
        yield
    finally:
        for library, threads in zip(_blas_libraries, previous):
            library.set_num_threads(threads)


def _blas_on_one_thread(batch):
    """The context every call runs in: BLAS's own threads unused (module docstring).

    A single row is left alone: its products are matrix-vector ones, which BLAS
    keeps on one thread anyway, and switching costs a noticeable part of such a call.
    """
    return _one_blas_thread() if batch > 1 else _NO_CONTEXT


_NO_CONTEXT = contextlib.nullcontext()


def _named(names, arrays, prefix=""):
    """{"H": h, "C": c}: the arrays of the kernels' calling convention, where a state or an
    element-wise parameter ``s`` is the array ``S`` and its gradient ``D_S``."""
    return {prefix + name.upper(): array for name, array in zip(names, arrays)}


class _Convention:
    """A kernel module's calling convention, read once from its FORWARD_ARGS and BACKWARD_ARGS.

    The driver gathers its arrays in one order of its own (``forward_names``,
    ``backward_names``); ``arrange`` puts them in the order the module's lists give,
    which may leave some out (backward reads only some state histories). Decided once
    per module, so a call costs what a hand-written tuple did: at (100, 1, 16, 32) a
    whole forward+backward takes about 250 µs, and building a dict of named arrays on
    every call measured 2 % of that.
    """

    def __init__(self, kernels):
        states = [s.upper() for s in kernels.STATES]
        params = [p.upper() for p in kernels.PARAMS]
        self.forward_names = ("X", "W_IH_T_PACKED", "W_HH_T_PACKED", "BIAS_IH", "BIAS_HH", *states, *params,
                              "SAVED", "LENGTHS")
        self.backward_names = ("D_OUT", "W_HH_PACKED", *states, *params, "SAVED", "LENGTHS",
                               *(f"D_{s}" for s in states), "D_GX", "D_GH", *(f"D_{p}" for p in params))
        self.forward_order = _order(kernels, self.forward_names, kernels.FORWARD_ARGS)
        self.backward_order = _order(kernels, self.backward_names, kernels.BACKWARD_ARGS)


def _order(kernels, gathered, wanted):
    """Positions in ``gathered`` of the names ``wanted``, in order; None if they are the same."""
    unknown = [name for name in wanted if name not in gathered]
    if unknown:
        raise RuntimeError(f"{kernels.__name__} wants the array(s) {unknown}, which the driver does not "
                           f"have (it has {list(gathered)}); regenerate the kernels")
    order = [gathered.index(name) for name in wanted]
    return None if order == list(range(len(gathered))) else order


def arrange(values, order):
    """The arguments of one call: ``values`` in the driver's order, rearranged by ``order``."""
    return values if order is None else [values[k] for k in order]


_conventions = {}     # kernel module -> its _Convention


def _convention(kernels) -> _Convention:
    convention = _conventions.get(kernels)
    if convention is None:
        convention = _conventions[kernels] = _Convention(kernels)
    return convention


# Blocks of rows and slabs of products run on Python threads, each calling a kernel that
# releases the GIL (nogil=True): the calling thread runs the first, lstmkit.threads' workers
# the others. Numba's own parallel loops (one prange function per cell, dtype and loop)
# compiled in 4-12 s each, 138 s for the built-in cells, against 0 here; a thread's start
# costs tens of µs when its worker is spinning (lstmkit.threads says why it spins), and
# threads are used only above LOOP_PARALLEL_MIN_WORK.
_on_threads = threads.on_threads


def _row_blocks(batch, blocks):
    """(lo, hi) of ``blocks`` blocks of the batch's rows."""
    return [(block * batch // blocks, (block + 1) * batch // blocks) for block in range(blocks)]


def _run(rows_function, args, batch, blocks):
    """A kernel's ``*_rows`` function on the whole batch, in ``blocks`` blocks of rows at once."""
    if blocks == 1:     # a small layer: no lists of calls to build (µs at B = 1)
        rows_function(*args, 0, batch)
        return
    _on_threads(rows_function, [(*args, lo, hi) for lo, hi in _row_blocks(batch, blocks)])


def sequence_forward(kernels, x, weight_ih, weight_hh, bias_ih, bias_hh, params, initial_states,
                     lengths, inference=False, workspace=None):
    """One direction of one layer. Returns ``(output, final_states, tape)``.

    ``x`` is [T, B, n] C-contiguous; ``initial_states`` one [B, d] array per
    state in ``kernels.STATES`` order; ``lengths`` [B] int64, or None for full
    rows. ``output`` is [T, B, d] and ``final_states`` are views of the tape's
    state histories: copy what must outlive :func:`release`. With
    ``inference=True`` nothing is saved for backward (the tape only carries the
    buffers for ``release``). Buffers come from ``workspace`` when one is given.
    """
    if workspace is None:
        workspace = Workspace()
    x = np.ascontiguousarray(x)
    plan = workspace.plan(kernels, x, weight_hh.shape[1], inference)
    dtype, steps = x.dtype, plan.steps
    if lengths is None:
        lengths = plan.full_lengths
    if bias_ih is None:
        bias_ih = plan.zero_bias
    if bias_hh is None:
        bias_hh = plan.zero_bias
    histories = []
    for (role, shape), state in zip(plan.histories, initial_states):
        history = workspace.take(role, shape, dtype)
        history[0] = state
        histories.append(history)
    saved = workspace.take("saved", plan.saved_shape, dtype)
    if steps:
        # packed anew on every call (Workspace.packed says where the panels live)
        values = [x, workspace.packed("W_ih", weight_ih, True), workspace.packed("W_hh", weight_hh, True),
                  bias_ih, bias_hh, *histories, *params, saved, lengths]
        _run(kernels.forward_rows, arrange(values, plan.forward_order), plan.batch, plan.blocks())
    finals = [history[steps % history.shape[0]] for history in histories]
    output = histories[plan.output_state][1:]
    tape = Tape(x, tuple(histories), saved, lengths, weight_ih, weight_hh, tuple(params), inference,
                plan.output_state, workspace, plan=plan)
    return output, finals, tape


def backward_chunks(steps, step_bytes):
    """The ``(start, stop)`` steps of backward's chunks in the order it runs them, latest first.

    ``step_bytes``: the gradient of the pre-activations of one step. Chunks hold at most
    ``BACKWARD_CHUNK_BYTES`` of it (one step at least), as even as can be. They depend on
    the shape alone, and so does the rounding of the gradients.
    """
    if steps == 0:
        return []
    count = -(-steps // max(1, BACKWARD_CHUNK_BYTES // max(step_bytes, 1)))
    bounds = [chunk * steps // count for chunk in range(count + 1)]
    return [(bounds[chunk], bounds[chunk + 1]) for chunk in reversed(range(count))]


@functools.lru_cache(maxsize=256)
def _chunk_plan(steps, step_bytes, chunk_bytes):
    """``backward_chunks`` and the longest chunk's steps, computed once per shape and
    ``BACKWARD_CHUNK_BYTES`` (``chunk_bytes``, which the tests change): 5 µs of a B = 1
    call's Python otherwise (issue 17)."""
    chunks = tuple(backward_chunks(steps, step_bytes))
    return chunks, max((stop - start for start, stop in chunks), default=0)


def sequence_backward(kernels, tape: Tape, d_output, d_final_states, has_bias, input_gradient=True):
    """Backpropagation through time for one direction of one layer.

    ``d_output`` [T, B, d] must be zero past each row's length. Returns
    ``(dx, d_initial_states, grads)`` with grads keyed ``weight_ih``,
    ``weight_hh``, ``bias_ih``, ``bias_hh`` and the element-wise parameter names;
    ``dx`` is None with ``input_gradient=False`` (dX = dG W_ih is then not computed).
    """
    tape.claim_for_backward()
    plan, workspace = tape.plan, tape.workspace
    steps, batch, n_in, hidden, gates = plan.steps, plan.batch, plan.n_in, plan.hidden, plan.gates
    dtype = tape.x.dtype
    chunks, chunk_steps = _chunk_plan(steps, plan.step_bytes, BACKWARD_CHUNK_BYTES)
    tape.d_pre = workspace.take("d_pre", (chunk_steps, batch, gates), dtype)
    gradient_arrays = [tape.d_pre]
    if plan.own_array:
        tape.d_pre_h = workspace.take("d_pre_h", tape.d_pre.shape, dtype)
        gradient_arrays.append(tape.d_pre_h)
    d_states = [np.array(d, dtype=dtype, order="C", copy=True) for d in d_final_states]
    d_params = [np.zeros_like(p) for p in tape.params]
    output = tape.histories[tape.output_state]
    blocks, threaded = plan.backward_blocks(), plan.threaded
    grads = {}    # the first chunk sets each result, the others add to it
    dx = np.empty(tape.x.shape, dtype) if input_gradient else None
    w_hh_packed = workspace.packed("W_hh backward", tape.weight_hh, False) if steps else None
    with _blas_on_one_thread(batch):
        for start, stop in chunks:
            rows = (stop - start) * batch
            if stop - start == steps:       # one chunk, the whole sequence: no views to take
                chunk_arrays, lengths = gradient_arrays, tape.lengths
                values = [d_output, w_hh_packed, *tape.histories, *tape.params, tape.saved]
            else:
                chunk_arrays = [array[:stop - start] for array in gradient_arrays]
                lengths = tape.lengths - start if start else tape.lengths
                values = [d_output[start:stop], w_hh_packed, *[h[start:stop + 1] for h in tape.histories],
                          *tape.params, tape.saved[start:stop]]
            d_gh = chunk_arrays[1] if len(chunk_arrays) > 1 else None     # "own array" cells
            values += [lengths, *d_states, chunk_arrays[0], d_gh, *d_params]
            _backward_rows(kernels, arrange(values, plan.backward_order), d_params, batch, blocks)
            d_pre_x = chunk_arrays[0].reshape(rows, gates)
            input_side = ("weight_ih", d_pre_x, tape.x[start:stop].reshape(rows, n_in))
            hidden_side = ("weight_hh", chunk_arrays[-1].reshape(rows, gates), output[start:stop].reshape(rows, hidden))
            dx_product = (d_pre_x, tape.weight_ih, dx[start:stop].reshape(rows, n_in)) if input_gradient else None
            if has_bias:
                _add_sum(grads, "bias_ih", d_pre_x)
            if kernels.HIDDEN_GRADIENTS == "in place":
                # the array holds d/dgx until the input side is done with it, then d/dgh
                _weight_gradients(grads, [input_side], threaded, dx_product)
                _run(kernels.hidden_gradient_rows, (chunk_arrays[0], tape.saved[start:stop]), batch, blocks)
                _weight_gradients(grads, [hidden_side], threaded)
            else:
                _weight_gradients(grads, [input_side, hidden_side], threaded, dx_product)
            if has_bias and kernels.HIDDEN_GRADIENTS != "same":
                _add_sum(grads, "bias_hh", hidden_side[1])
    if not steps:    # no chunk ran
        grads = {"weight_ih": np.zeros((gates, n_in), dtype), "weight_hh": np.zeros((gates, hidden), dtype)}
        if has_bias:
            grads["bias_ih"], grads["bias_hh"] = np.zeros(gates, dtype), np.zeros(gates, dtype)
    elif has_bias and kernels.HIDDEN_GRADIENTS == "same":
        grads["bias_hh"] = grads["bias_ih"].copy()
    if d_params:
        grads.update(zip(kernels.PARAMS, d_params))
    release(tape)
    return dx, d_states, grads


def _backward_rows(kernels, args, d_params, batch, blocks):
    """The loop of backward over the batch in ``blocks`` blocks of rows. An element-wise
    parameter's gradient is a sum over rows: each block sums into its own row of a partial
    array, and the blocks are added in order at the end."""
    if blocks == 1 or not d_params:
        _run(kernels.backward_rows, args, batch, blocks)
        return
    partials = [np.zeros((blocks,) + d.shape, d.dtype) for d in d_params]
    positions = [next(k for k, a in enumerate(args) if a is d) for d in d_params]
    calls = []
    for block, (lo, hi) in enumerate(_row_blocks(batch, blocks)):
        call = list(args)
        for position, partial in zip(positions, partials):
            call[position] = partial[block]
        calls.append((*call, lo, hi))
    _on_threads(kernels.backward_rows, calls)
    for d, partial in zip(d_params, partials):
        for block in range(blocks):
            d += partial[block]


def _weight_gradients(grads, products, threaded, dx_product=None):
    """One chunk's products after the loop: ``grads[name] += d_preᵀ operand`` (or = if it is not
    there yet) for each ``(name, d_pre, operand)`` of ``products`` (dW_ih += dGᵀX, dW_hh += dGᵀH),
    and with ``dx_product = (d_pre, weight_ih, out)``, ``out = d_pre W_ih`` (dX = dG W_ih).

    On threads, ``PRODUCT_SLABS`` tasks at once (module docstring), task k the k-th slab of
    every product's rows: a gemm of NumPy's BLAS adding each slab of dW where it lies
    (:mod:`lstmkit.blas`), and a matmul for dX's slab: one start of the threads and one wait
    for all three products, not one each. The same calls, so the same bits; forward+backward
    at (100, 32, 32, 128) float32 took 0.96 and 0.99 of the time in two interleaved runs
    (issue 17, results/issue17h_merged_ab*.json). Otherwise NumPy's matmul, which costs less
    than a call through ctypes on a small layer's products.
    """
    if not threaded:
        for name, d_pre, operand in products:
            if name in grads:
                grads[name] += d_pre.T @ operand
            else:
                grads[name] = d_pre.T @ operand
        if dx_product is not None:
            d_pre, weight_ih, out = dx_product
            np.matmul(d_pre, weight_ih, out=out)
        return
    add = products[0][0] in grads
    if not add:
        for name, d_pre, operand in products:
            grads[name] = np.empty((d_pre.shape[1], operand.shape[1]), d_pre.dtype)
    gate_slabs = _row_blocks(products[0][1].shape[1], PRODUCT_SLABS)
    # dX's slabs, of the chunk's rows, are fixed in number too: BLAS rounds a row differently
    # depending on the rows around it in one call, so slabs that followed the thread count
    # gave dx bits that depended on the machine
    row_slabs = []
    if dx_product is not None:
        rows = len(dx_product[0])
        row_slabs = _row_blocks(rows, min(PRODUCT_SLABS, rows))

    def slab(k):
        lo, hi = gate_slabs[k]
        for name, d_pre, operand in products:
            blas.transposed_product_rows(d_pre, operand, grads[name], add, lo, hi)
        if k < len(row_slabs):
            blas.product_rows(*dx_product, *row_slabs[k])

    _on_threads(slab, [(k,) for k in range(PRODUCT_SLABS)])


def _add_sum(grads, name, a):
    """grads[name] += the sum of a's rows, or = if it is not there yet."""
    if name in grads:
        grads[name] += column_sums(a)
    else:
        grads[name] = column_sums(a)


def column_sums(a):
    """``a.sum(axis=0)`` of a [rows, columns] ``a``, to the same bits: a bias's gradient."""
    if a.shape[1] == 1:       # one column is a contiguous vector, which NumPy sums pairwise
        return a.sum(axis=0)
    return _column_sums(a)


@numba.njit(cache=True, nogil=True)
def _column_sums(a):
    """The sums of a's columns, adding row after row to a zero, as NumPy's a.sum(axis=0)
    does when a has two columns or more (the same bits), without its reduction machinery:
    at [1600, 512] float32 58 µs against 91, at [100, 128] (B = 1) 1.4 against 4.1, and
    inside backward at (100, 32, 32, 128), its data no longer in the caches, 385 µs a call
    against 459 (issue 17). On two threads, in slabs of columns, it took 540."""
    sums = np.zeros(a.shape[1], a.dtype)
    for row in range(a.shape[0]):
        values = a[row]
        for j in range(sums.size):
            sums[j] += values[j]
    return sums


kernel_runtime.repair_cache_indexes(list(globals().items()), "lstmkit.driver")
