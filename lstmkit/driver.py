"""Run a cell's generated kernels over a whole sequence, forward and back.

The layout follows the performance plan in DESIGN.md, with one change:

* forward: the generated loop over time; per step, ``x_t W_ihᵀ`` and
  ``h_{t−1} W_hhᵀ`` and the fused step kernel, which also adds both biases.
  DESIGN.md puts ``X W_ihᵀ`` in one GEMM before the loop. Both products of a
  step run in lstmkit's own kernel (``kernel_runtime.matmul_packed``) on
  weights packed once per sequence (BLAS would repack them every step), and
  that kernel runs as fast as BLAS's large GEMM: so ``x_t W_ihᵀ`` costs the
  same inside the loop, while the [T, B, G·d] array of pre-activations is
  never written to memory and read back. Forward allocates nothing of that size.
* backward: the generated loop runs the only truly sequential part,
  ``dh_{t−1} = dg_t W_hh`` (the same kernel, on ``W_hh`` packed) plus the step
  kernel; then ``dW_ih = dGᵀX``, ``dX = dG W_ih``, ``dW_hh = dGᵀH_prev`` and the
  bias sums are each one whole-sequence GEMM (BLAS) or reduction. Where d/dgh
  differs from d/dgx (the GRU's n block, ``r ⊙ d/dgx``), the loop keeps d/dgx,
  and the kernels' own ``hidden_gradient_rows`` turns it into d/dgh in place
  once the input side is done with it (``HIDDEN_GRADIENTS``).

Threads. lstmkit never uses BLAS's own threads: OpenBLAS's keep spinning for a
while after each product, and spinning ones took a third of the two cores
from whatever ran next. A small layer runs on the calling thread, its
products too small to gain from splitting. In a large one, each batch row's
recurrence being independent of the others, the loop over time runs on blocks
of rows at once, one Numba thread per block, each running its own small
products (``kernel_runtime.matmul_packed``), so that the blocks never
wait for one another inside the loop; and backward's whole-sequence products
after it run on the same Numba threads, one slab of rows each. The slabs
of ``dGᵀX`` and ``dGᵀH`` are fixed in number (``GRAM_SLABS``), so the
gradients do not depend on the number of threads.

Memory. Backward writes the gradient of the pre-activations into one
[T, B, G·d] buffer, the largest it allocates. The saved gate values are dead
once the loop backward is done (for the GRU, once they have turned d/dgx into
d/dgh): their memory holds the partial products of ``dGᵀX`` and ``dGᵀH`` and is
freed before ``dX`` is allocated where it can be. The layer returns the output
history itself as its output (read-only), not a copy.
Inference (``keep=False``) keeps no saved values and only two slots of each
state history other than the output. A :class:`Workspace` lends a tape its
buffers and gets them back, through :func:`release`, once backward is done,
so that a training loop reuses the same memory on every step.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numba
import numpy as np

from . import kernel_runtime

__all__ = ["Tape", "Workspace", "sequence_forward", "sequence_backward", "release", "row_blocks",
           "PARALLEL_MIN_WORK"]

# Below this many multiply-adds in the recurrent products of one sequence (about a
# millisecond of work on one core), threads save little and risk much: on a busy
# machine a thread that is not scheduled stalls the whole call for a time slice.
# Such loops run on the calling thread.
PARALLEL_MIN_WORK = 50_000_000
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

    def take(self, role, shape, dtype):
        """An uninitialised array of ``shape``: an idle buffer if one is large enough."""
        size = math.prod(shape)
        buffer = self._idle.pop(role, None)
        if buffer is None or buffer.dtype != dtype or buffer.size < size:
            buffer = np.empty(size, dtype)
        return buffer[:size].reshape(shape)

    def give(self, role, array):
        """Take back an array that ``take`` lent; nothing else may still use it."""
        buffer = array if array.base is None else array.base
        idle = self._idle.get(role)
        if idle is None or idle.dtype != buffer.dtype or idle.size < buffer.size:
            self._idle[role] = buffer


@dataclass
class Tape:
    """What one direction of one layer keeps from forward for backward."""

    x: np.ndarray               # [T, B, n] layer input
    histories: tuple            # per state: [T + 1, B, d] (two slots for dropped states in inference)
    saved: np.ndarray           # [T, B, S·d] ([1, B, S·d] in inference); backward frees it
    lengths: np.ndarray         # [B] int64
    weight_ih: np.ndarray
    weight_hh: np.ndarray
    params: tuple               # element-wise parameters, [d] each
    keep: bool                  # False: inference, backward cannot follow
    output_state: int           # index of the output state in histories
    workspace: Workspace        # where the buffers came from and go back to
    d_pre: np.ndarray = None    # backward's gradient of the pre-activations, from the workspace
    d_pre_h: np.ndarray = None  # its second gradient array (cells with no d/dgh factors)
    output_lent: bool = False   # the output history is the caller's y: never given back
    used: bool = False          # backward has run
    released: bool = False      # the buffers went back to the workspace


def release(tape: Tape):
    """Give a tape's buffers back to its workspace, for the next call to reuse.

    Backward calls it when done; the caller of an inference forward calls it
    once nothing reads the buffers any more. An output history the caller
    returned (``output_lent``) stays the caller's.
    """
    if tape.released:
        return
    tape.released = True
    workspace = tape.workspace
    if tape.saved is not None:     # backward frees it early
        workspace.give("saved", tape.saved)
    for role in ("d_pre", "d_pre_h"):
        if getattr(tape, role) is not None:
            workspace.give(role, getattr(tape, role))
    for k, history in enumerate(tape.histories):
        if not (tape.output_lent and k == tape.output_state):
            workspace.give(f"history {k}", history)
    tape.d_pre = tape.saved = tape.d_pre_h = tape.histories = None


def row_blocks(steps, batch, gates, hidden):
    """How many blocks of batch rows the loop over time runs at once (1: no threads)."""
    if not _large(steps, batch, gates, hidden):
        return 1
    return max(1, min(batch // MIN_BLOCK_ROWS, numba.get_num_threads()))


def _large(steps, batch, gates, hidden):
    """Worth Numba's threads: the whole-sequence products then run on them as well."""
    return steps * batch * gates * hidden >= PARALLEL_MIN_WORK


def products_on_numba_threads(steps, batch, gates, hidden, n_in):
    """Whether the whole-sequence products run on Numba's threads (see the module docstring)."""
    return _large(steps, batch, gates, hidden) and n_in > 0


# aᵀb over the rows of a sequence is summed from this many slabs of rows, whatever the
# number of threads, so that the gradients do not depend on the machine
GRAM_SLABS = 4


_blas_libraries = None


@contextlib.contextmanager
def _one_blas_thread():
    """A context in which every loaded BLAS runs on the calling thread alone.

    Calls each library's own thread setting (a few microseconds in all), rather
    than threadpoolctl's ``limit``, which costs more than a small layer's step.
    """
    global _blas_libraries
    if _blas_libraries is None:
        import scipy.linalg.cython_blas  # noqa: F401 (the BLAS np.dot calls inside @njit)
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
    return _one_blas_thread() if batch > 1 else contextlib.nullcontext()


def _run(serial, parallel, args, batch, blocks):
    if blocks > 1:
        parallel(*args, blocks)
    else:
        serial(*args, 0, batch)


@numba.njit(cache=True, nogil=True, parallel=True)
def _matmul_row_blocks(a, b, out, blocks):
    """out = a @ b, the rows split into ``blocks`` slabs, one Numba thread (and BLAS call) each."""
    rows = a.shape[0]
    for block in numba.prange(blocks):
        lo, hi = block * rows // blocks, (block + 1) * rows // blocks
        np.dot(a[lo:hi], b, out[lo:hi])


def sequence_forward(kernels, x, weight_ih, weight_hh, bias_ih, bias_hh, params, initial_states,
                     lengths, keep=True, workspace=None):
    """One direction of one layer. Returns ``(output, final_states, tape)``.

    ``x`` is [T, B, n] C-contiguous; ``initial_states`` one [B, d] array per
    state in ``kernels.STATES`` order; ``lengths`` [B] int64, or None for full
    rows. ``output`` is [T, B, d] and ``final_states`` are views of the tape's
    state histories: copy what must outlive :func:`release`. With
    ``keep=False`` nothing is saved for backward (the tape only carries the
    buffers for ``release``). Buffers come from ``workspace`` when one is given.
    """
    if workspace is None:
        workspace = Workspace()
    steps, batch, n_in = x.shape
    hidden = weight_hh.shape[1]
    dtype = x.dtype
    if lengths is None:
        lengths = np.full(batch, steps, np.int64)
    gates = len(kernels.GATES) * hidden
    if bias_ih is None:
        bias_ih = np.zeros(gates, dtype)
    if bias_hh is None:
        bias_hh = np.zeros(gates, dtype)
    x = np.ascontiguousarray(x)
    histories = []
    for k, (name, state) in enumerate(zip(kernels.STATES, initial_states)):
        slots = steps + 1 if keep or name == kernels.OUTPUT else 2
        history = workspace.take(f"history {k}", (slots, batch, hidden), dtype)
        history[0] = state
        histories.append(history)
    saved = workspace.take("saved", (steps if keep else min(steps, 1), batch, len(kernels.SAVED) * hidden),
                           dtype)
    if steps:
        args = (x, kernel_runtime.pack_transposed(weight_ih), kernel_runtime.pack_transposed(weight_hh),
                bias_ih, bias_hh, *histories, *params, saved, lengths)
        _run(kernels.forward_rows, kernels.forward_sequence, args, batch, row_blocks(steps, batch, gates, hidden))
    finals = [history[steps % history.shape[0]] for history in histories]
    output_state = kernels.STATES.index(kernels.OUTPUT)
    output = histories[output_state][1:]
    tape = Tape(x, tuple(histories), saved, lengths, weight_ih, weight_hh, tuple(params), keep,
                output_state, workspace)
    return output, finals, tape


def sequence_backward(kernels, tape: Tape, d_output, d_final_states, has_bias):
    """Backpropagation through time for one direction of one layer.

    ``d_output`` [T, B, d] must be zero past each row's length. Returns
    ``(dx, d_initial_states, grads)`` with grads keyed ``weight_ih``,
    ``weight_hh``, ``bias_ih``, ``bias_hh`` and the element-wise parameter names.
    """
    if not tape.keep:
        raise RuntimeError("an inference forward pass (keep=False) saved nothing for backward")
    if tape.used:
        raise RuntimeError("backward was already run for this forward pass; call forward again")
    tape.used = True
    steps, batch, n_in = tape.x.shape
    hidden = tape.weight_hh.shape[1]
    gates = len(kernels.GATES) * hidden
    d_pre = tape.d_pre = tape.workspace.take("d_pre", (steps, batch, gates), tape.x.dtype)
    gradient_arrays = [d_pre]
    if kernels.HIDDEN_GRADIENTS == "own array":
        tape.d_pre_h = tape.workspace.take("d_pre_h", d_pre.shape, d_pre.dtype)
        gradient_arrays.append(tape.d_pre_h)
    d_states = [np.array(d, dtype=tape.x.dtype, order="C", copy=True) for d in d_final_states]
    d_params = [np.zeros_like(p) for p in tape.params]
    d_pre_flat = d_pre.reshape(steps * batch, gates)
    d_pre_h_flat = gradient_arrays[-1].reshape(steps * batch, gates)
    x_flat = tape.x.reshape(steps * batch, n_in)
    output = tape.histories[tape.output_state]
    h_prev_flat = output[:steps].reshape(steps * batch, hidden)
    blocks = row_blocks(steps, batch, gates, hidden)
    threaded = products_on_numba_threads(steps, batch, gates, hidden, n_in)
    grads = {}
    with _blas_on_one_thread(batch):
        if steps:
            args = (d_output, kernel_runtime.pack(tape.weight_hh), *tape.histories, *tape.params,
                    tape.saved, tape.lengths, *d_states, *gradient_arrays, *d_params)
            _run(kernels.backward_rows, kernels.backward_sequence, args, batch, blocks)
            del args    # holds the saved values, which are freed below, and the packed W_hh
        if kernels.HIDDEN_GRADIENTS == "in place":
            # d_pre holds d/dgx: the input side first, then the saved values turn it into d/dgh
            grads["weight_ih"] = _gram(d_pre_flat, x_flat, threaded)
            if has_bias:
                grads["bias_ih"] = d_pre_flat.sum(axis=0)
            dx = _input_gradient(d_pre_flat, tape.weight_ih, tape.x.shape, threaded)
            _run(kernels.hidden_gradient_rows, kernels.hidden_gradient_sequence, (d_pre, tape.saved),
                 batch, blocks)
            # the saved values are dead now: they hold the partial products, then go
            grads["weight_hh"] = _gram(d_pre_flat, h_prev_flat, threaded, scratch=tape.saved)
            tape.saved = None
        else:
            # the saved values are dead: they hold the partial products, then go before dx comes
            grads["weight_ih"] = _gram(d_pre_flat, x_flat, threaded, scratch=tape.saved)
            grads["weight_hh"] = _gram(d_pre_h_flat, h_prev_flat, threaded, scratch=tape.saved)
            tape.saved = None
            dx = _input_gradient(d_pre_flat, tape.weight_ih, tape.x.shape, threaded)
            if has_bias:
                grads["bias_ih"] = d_pre_flat.sum(axis=0)
    if has_bias:
        grads["bias_hh"] = (grads["bias_ih"].copy() if kernels.HIDDEN_GRADIENTS == "same"
                            else d_pre_h_flat.sum(axis=0))
    grads.update(zip(kernels.PARAMS, d_params))
    release(tape)
    return dx, d_states, grads


def _gram(a, b, threaded, scratch=None):
    """aᵀb over the rows of a sequence: on Numba's threads (module docstring) or one BLAS call.

    ``scratch``: dead memory that may hold the partial products.
    """
    if threaded and a.shape[0] >= GRAM_SLABS:
        return _gram_row_slabs(a, b, scratch)
    return a.T @ b


def _input_gradient(d_pre_flat, weight_ih, shape, threaded):
    """dx = dG W_ih, [T, B, n]."""
    if not threaded:
        return (d_pre_flat @ weight_ih).reshape(shape)
    dx = np.empty(shape, d_pre_flat.dtype)
    _matmul_row_blocks(d_pre_flat, weight_ih, dx.reshape(d_pre_flat.shape[0], shape[2]),
                       min(numba.get_num_threads(), d_pre_flat.shape[0]))
    return dx


@numba.njit(cache=True, nogil=True, parallel=True)
def _gram_row_slabs_into(a, b, partials):
    rows, slabs = a.shape[0], partials.shape[0]
    for slab in numba.prange(slabs):
        lo, hi = slab * rows // slabs, (slab + 1) * rows // slabs
        np.dot(a[lo:hi].T, b[lo:hi], partials[slab])


def _gram_row_slabs(a, b, scratch=None):
    """aᵀb as the sum over GRAM_SLABS slabs of rows of aₖᵀbₖ, the slabs spread over
    Numba's threads; the partial products live in ``scratch`` if it is large enough."""
    shape = (GRAM_SLABS, a.shape[1], b.shape[1])
    size = math.prod(shape)
    if scratch is not None and scratch.size >= size:
        partials = scratch.reshape(-1)[:size].reshape(shape)
    else:
        partials = np.empty(shape, a.dtype)
    _gram_row_slabs_into(a, b, partials)
    return partials.sum(axis=0)
