import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from lstmkit.agreement import max_relative_difference  # noqa: F401 (the tests import it from here)
from lstmkit.reproducible import pin_library_code

# every kernel the tests start (nbval's, the student edition's) prints the committed digits
pin_library_code()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def one_thread():
    """Training tests run on one thread: their matrices are small, and on two cores shared
    with other work, idle BLAS and Numba threads only get in each other's way (the chapters
    limit BLAS too). The results do not depend on it."""
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        numba.set_num_threads(threads)


def holds_for_most_seeds(claim, seeds=(0, 1, 2)):
    """Majority vote of ``claim(seed) -> (ok, details)``; stops as soon as the majority is
    decided. Returns (verdict, results)."""
    results = []
    for seed in seeds:
        results.append(claim(seed))
        passed = sum(ok for ok, _ in results)
        if passed * 2 > len(seeds) or (len(results) - passed) * 2 > len(seeds):
            break
    return sum(ok for ok, _ in results) * 2 > len(seeds), results


def numpy_state(torch_module):
    """A torch module's state_dict as NumPy arrays, for load_state_dict."""
    return {name: value.detach().numpy() for name, value in torch_module.state_dict().items()}
