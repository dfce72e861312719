"""Backward's memory, measured as the operating system sees it: the rise of the resident set's
high-water mark (VmHWM) in a fresh process, which counts Numba's allocations as well as NumPy's
(tracemalloc sees only the latter)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"),
                                reason="needs Linux's /proc/self/clear_refs to reset the high-water mark")

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import lstmkit
    from lstmkit import driver

    large, chunk_steps = sys.argv[1] == "large", int(sys.argv[2])
    steps, batch, n_in, hidden = 2000, 16, 24, 32
    gates = 4 * hidden
    driver.PARALLEL_MIN_WORK = 0 if large else 10**12
    driver.BACKWARD_CHUNK_BYTES = chunk_steps * batch * gates * 8
    rng = np.random.default_rng(10)
    x = rng.standard_normal((steps, batch, n_in))
    dy = rng.standard_normal((steps, batch, hidden))
    warm = lstmkit.LSTM(n_in, hidden, dtype=np.float64, seed=0)
    warm(x[:50]); warm.backward(dy[:50])              # compile outside the measurement
    del warm
    layer = lstmkit.LSTM(n_in, hidden, dtype=np.float64, seed=0)   # an empty workspace

    def status(field):
        with open("/proc/self/status") as lines:
            return next(int(l.split()[1]) * 1024 for l in lines if l.startswith(field))

    layer(x)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                                  # the high-water mark starts again from here
    resident = status("VmRSS")
    dx, _ = layer.backward(dy)
    print(json.dumps({
        "rise": status("VmHWM") - resident,
        "results": dx.nbytes + sum(g.nbytes for g in layer.grads.values()),
        "chunks": [list(c) for c in driver.backward_chunks(steps, batch * gates * 8)],
        "step_bytes": batch * gates * 8, "steps": steps,
        "packed": 2 * layer.params["weight_hh_l0"].nbytes}))
""")
SLACK = 4 * 2**20          # interpreter, allocator and page-table noise


def measure(large, chunk_steps):
    environment = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")  # large arrays: fresh pages, freed at once
    done = subprocess.run([sys.executable, "-c", SCRIPT, "large" if large else "small", str(chunk_steps)],
                          capture_output=True, text=True, env=environment, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("large", [False, True])
def test_backward_adds_one_chunk_of_time_to_what_forward_left(large):
    """Backward's peak is its results (dx and the parameter gradients), the packed W_hh and the
    gradient of the pre-activations of one chunk of time, not of the whole sequence (on both
    ways of computing the products). The same measurement with the whole sequence as one chunk
    exceeds that bound: it can tell the two apart."""
    chunked = measure(large, chunk_steps=64)
    assert len(chunked["chunks"]) > 1
    chunk_bytes = max(stop - start for start, stop in chunked["chunks"]) * chunked["step_bytes"]
    whole_bytes = chunked["steps"] * chunked["step_bytes"]
    bound = chunked["results"] + chunk_bytes + chunked["packed"] + SLACK
    assert bound < chunked["results"] + whole_bytes
    assert chunked["rise"] <= bound, chunked

    whole = measure(large, chunk_steps=chunked["steps"])
    assert len(whole["chunks"]) == 1
    assert whole["rise"] > bound, whole
