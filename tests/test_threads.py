"""lstmkit.threads: every call runs once, errors come back, sleeping workers wake, and
other Python threads and forked children get their calls run too."""
import multiprocessing
import threading
import time
import weakref

import numba
import numpy as np
import pytest

from lstmkit import threads


@numba.njit(nogil=True)
def _add_slab(out, value, lo, hi):
    for i in range(lo, hi):
        out[i] += value


@numba.njit(nogil=True)
def _fail_on_empty(out, lo, hi):
    if hi <= lo:
        raise ValueError("empty slab")
    for i in range(lo, hi):
        out[i] += 1.0


def _slabs(out, value, count):
    size = out.shape[0]
    return [(out, value, k * size // count, (k + 1) * size // count) for k in range(count)]


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_every_call_runs_once(count):
    out = np.zeros(101)
    for repeat in range(50):
        threads.on_threads(_add_slab, _slabs(out, 1.0, count))
    np.testing.assert_array_equal(out, np.full(101, 50.0))


def test_a_finished_call_leaves_no_reference_to_its_arrays():
    """The caller frees its arrays when it is done with them: a worker that held the last
    call's arguments while it waited kept 0.5 MB alive in chapter 08's memory table."""
    out = np.zeros(64)
    probe = weakref.ref(out)
    threads.on_threads(_add_slab, _slabs(out, 1.0, 3))
    del out
    assert probe() is None


def test_a_workers_error_reaches_the_caller_and_the_workers_go_on():
    out = np.zeros(4)
    with pytest.raises(ValueError, match="empty slab"):
        threads.on_threads(_fail_on_empty, [(out, 0, 2), (out, 3, 3)])     # the worker's call fails
    assert out[:2].tolist() == [1.0, 1.0]                                   # the caller's ran
    threads.on_threads(_fail_on_empty, [(out, 0, 2), (out, 2, 4)])
    assert out.tolist() == [2.0, 2.0, 1.0, 1.0]


def _finishes(function, seconds=60):
    """Run ``function`` on a thread of its own: a worker that never wakes fails the test
    instead of hanging it."""
    errors = []

    def run():
        try:
            function()
        except BaseException as error:   # noqa: BLE001
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=seconds)
    assert not thread.is_alive(), f"not done after {seconds} s"
    if errors:
        raise errors[0]


def test_sleeping_workers_wake_for_the_next_calls(monkeypatch):
    monkeypatch.setattr(threads, "WORKER_SPINS", 1)      # a worker sleeps as soon as it is done
    out = np.zeros(64)

    def calls():
        for _ in range(20):
            threads.on_threads(_add_slab, _slabs(out, 1.0, 2))
            time.sleep(0.001)

    _finishes(calls)
    np.testing.assert_array_equal(out, np.full(64, 20.0))


def test_calls_from_several_python_threads_all_run():
    outs = [np.zeros(1000) for _ in range(4)]
    errors = []

    def caller(out):
        try:
            for _ in range(200):
                threads.on_threads(_add_slab, _slabs(out, 1.0, 2))
        except BaseException as error:   # noqa: BLE001
            errors.append(error)

    callers = [threading.Thread(target=caller, args=(out,), daemon=True) for out in outs]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join(timeout=60)
    assert not errors and not any(thread.is_alive() for thread in callers)
    for out in outs:
        np.testing.assert_array_equal(out, np.full(1000, 200.0))


def _in_child(queue):
    out = np.zeros(10)
    threads.on_threads(_add_slab, _slabs(out, 2.0, 2))
    queue.put(out.tolist())


def test_a_forked_child_starts_workers_of_its_own():
    threads.on_threads(_add_slab, _slabs(np.zeros(10), 1.0, 2))        # the parent's workers exist
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child's calls never finished")
    assert child.exitcode == 0 and queue.get(timeout=5) == [2.0] * 10
