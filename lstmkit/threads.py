"""The driver's threads: blocks of rows and slabs of products, run all at once.

``on_threads(function, calls)`` runs ``function(*args)`` for every ``args`` in ``calls``: the
first on the calling thread, each other on a worker thread of its own, and returns when all are
done. ``function`` is a compiled kernel that releases the GIL (``nogil=True``), so the calls
really run side by side.

Starting a thread that sleeps costs the operating system's wake-up: 0.14–0.18 ms per start
on the project's 2-core virtual machine with a ``concurrent.futures`` pool (a worker waking from
its queue, then the caller waking from its wait), and a forward+backward starts threads two to
nine times. So a worker here spins for a while after each task, reading a flag in memory, and
takes the next task without sleeping if it comes within about a millisecond, as the next
block of a training step does; only then does it sleep on an event. The caller, once its own
call is done, spins on the workers' flags in the same way. Both spins run in compiled code
without the GIL: each side takes the GIL only after the other has let it go, so neither
waits for the other to be woken up. A start then costs about 10 µs
(``benchmarks/thread_starts.py``; ``ARCHITECTURE.md``, Why each fast path exists, has the
layer's times).

The flags are read and written with LLVM's atomic loads (acquire) and stores (release): the
worker's results are in memory before its flag says so. A caller that finds the workers
busy (another Python thread in the middle of its own calls) runs its calls on the
``concurrent.futures`` pool instead, and a forked child process starts workers of its own.
"""
import concurrent.futures
import os
import threading
import time

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .kernel_runtime import repair_cache_indexes

__all__ = ["on_threads"]

# A worker spins this many reads of its flag for the next task before it sleeps (between
# 0.2 and 2 ms on the 2-core machine: longer than a training step's gaps between starts,
# benchmarks/thread_starts.py), and the caller this
# many for the workers to finish before it polls with short sleeps (a worker that the
# machine has not scheduled).
WORKER_SPINS = 1_000_000
CALLER_SPINS = 4_000_000
POLL_SECONDS = 50e-6
# A worker that sees its task reads its flag this many times more before it asks for the GIL:
# for the few µs in which the caller, still holding it, starts its own call. Asked at once,
# the worker sleeps until the GIL is let go and is woken by the operating system. A start
# with a kernel that does nothing, one setting after another in one process: 23 µs with 0,
# 14 with 3000, 6 with 10 000, 9 with 30 000 and 28 with 100 000.
SETTLE_SPINS = 10_000

GO, DONE = 0, 8       # a worker's two flags, 64 bytes apart (cache lines of their own)


@intrinsic
def _load_acquire(typingctx, flags, index):
    """flags[index], read atomically with acquire order."""
    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, signature.args[0], array, [args[1]])
        return builder.load_atomic(pointer, "acquire", 8)

    return types.int64(flags, index), codegen


@intrinsic
def _store_release(typingctx, flags, index, value):
    """flags[index] = value, written atomically with release order."""
    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, signature.args[0], array, [args[1]])
        builder.store_atomic(args[2], pointer, "release", 8)
        return context.get_dummy_value()

    return types.none(flags, index, value), codegen


@numba.njit(cache=True, nogil=True)
def _finish_and_wait(flags, done, next_task, spins, settle):
    """A worker: say that task ``done`` is finished, once the GIL is let go, and spin until
    task ``next_task`` is published (True) or ``spins`` reads have passed (False). Then
    ``settle`` reads more before asking for the GIL (SETTLE_SPINS says why)."""
    _store_release(flags, DONE, done)
    for _ in range(spins):
        if _load_acquire(flags, GO) == next_task:
            seen = 0
            for _ in range(settle):
                seen += _load_acquire(flags, GO)
            return seen >= 0    # always: it only keeps the settling reads from being optimized away
    return False


@numba.njit(cache=True, nogil=True)
def _wait_for(flags, index, value, spins):
    """Spin until flags[index] == value (True) or ``spins`` reads have passed (False)."""
    for _ in range(spins):
        if _load_acquire(flags, index) == value:
            return True
    return False


@numba.njit(cache=True)
def _publish(flags, index, value):
    _store_release(flags, index, value)


class _Worker:
    """One thread that runs the tasks it is given, one at a time."""

    def __init__(self):
        self.flags = np.zeros(16, np.int64)
        self.task_number = 0
        self.task = self.error = None
        self.sleeping = False
        self.wake = threading.Event()
        threading.Thread(target=self._serve, daemon=True, name="lstmkit").start()

    def _serve(self):
        finished = 0
        while True:
            if not _finish_and_wait(self.flags, finished, finished + 1, WORKER_SPINS, SETTLE_SPINS):
                while True:             # sleep until start() sets the event
                    self.wake.clear()
                    self.sleeping = True
                    if _wait_for(self.flags, GO, finished + 1, 1):    # published meanwhile
                        break
                    self.wake.wait()
                self.sleeping = False
            finished += 1
            function, args = self.task
            try:
                function(*args)
            except BaseException as error:   # noqa: BLE001 (raised again in the caller)
                self.error = error
            # no reference to the call's arrays while waiting: the caller frees them when it is
            # done with them (a kept array once added 0.5 MB to chapter 08's peak memory)
            function = args = None

    def start(self, function, args):
        self.task_number += 1
        self.task, self.error = (function, args), None
        _publish(self.flags, GO, self.task_number)
        if self.sleeping:
            self.wake.set()

    def join(self):
        """Wait for the task given last; raise its exception, if it had one."""
        if not _wait_for(self.flags, DONE, self.task_number, CALLER_SPINS):
            while not _wait_for(self.flags, DONE, self.task_number, 1):
                time.sleep(POLL_SECONDS)
        error, self.error, self.task = self.error, None, None
        if error is not None:
            raise error


_workers = []
_workers_pid = None
_workers_lock = threading.Lock()
_pool = None


def on_threads(function, calls):
    """``function(*args)`` for every ``args`` in ``calls``, all at once; returns when all are done."""
    global _workers, _workers_pid
    if len(calls) == 1:
        function(*calls[0])
        return
    if not _workers_lock.acquire(blocking=False):
        _on_pool(function, calls)        # another thread's calls hold the workers
        return
    try:
        if _workers_pid != os.getpid():     # a forked child: its parent's threads are not here
            _workers, _workers_pid = [], os.getpid()
        while len(_workers) < len(calls) - 1:
            _workers.append(_Worker())
        workers = _workers[:len(calls) - 1]
        for worker, args in zip(workers, calls[1:]):
            worker.start(function, args)
        errors = []
        try:
            function(*calls[0])
        finally:    # no buffer is handed back while another thread still writes it
            for worker in workers:
                try:
                    worker.join()
                except BaseException as error:   # noqa: BLE001
                    errors.append(error)
        if errors:
            raise errors[0]
    finally:
        _workers_lock.release()


def _on_pool(function, calls):
    global _pool
    if _pool is None or _pool._max_workers < len(calls) - 1:
        if _pool is not None:
            _pool.shutdown(wait=False)
        _pool = concurrent.futures.ThreadPoolExecutor(len(calls) - 1, thread_name_prefix="lstmkit-pool")
    others = [_pool.submit(function, *args) for args in calls[1:]]
    try:
        function(*calls[0])
    finally:
        concurrent.futures.wait(others)
    for other in others:
        other.result()


repair_cache_indexes(list(globals().items()), "lstmkit.threads")
