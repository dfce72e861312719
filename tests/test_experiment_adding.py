"""The adding problem (U[0, 1] variant), T = 50, hidden 32, batch 64, Adam, at most 2,000 steps:
the LSTM gets below test MSE 0.01, the tanh RNN stays above 0.05 (the mean predictor scores ≈ 0.167).
Training is noisy, so each claim must hold for a majority of 3 seeds."""
import numba
import pytest
import scipy.linalg  # noqa: F401 (Numba's np.dot calls BLAS through SciPy: load it before the limit)
from threadpoolctl import threadpool_limits

from lstmkit.experiments import train_adding_problem


@pytest.fixture(autouse=True)
def one_thread():
    """These matrices are small: one thread is faster than two. On two cores shared with
    other work, the idle threads of NumPy's and SciPy's BLAS spin against each other and
    Numba's row-block threads wait for one another at every step (the chapters limit BLAS too)."""
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        numba.set_num_threads(threads)


def holds_for_most_seeds(claim, seeds=(0, 1, 2)):
    """Majority vote; stops as soon as the majority is decided. Returns (verdict, results)."""
    results = []
    for seed in seeds:
        results.append(claim(seed))
        passed = sum(ok for ok, _ in results)
        if passed * 2 > len(seeds) or (len(results) - passed) * 2 > len(seeds):
            break
    return sum(ok for ok, _ in results) * 2 > len(seeds), results


def test_lstm_learns_the_adding_problem_within_2000_steps():
    def claim(seed):
        run = train_adding_problem("lstm", length=50, hidden_size=32, steps=2000, batch_size=64,
                                   target_mse=0.01, seed=seed)
        return run["reached_step"] is not None, (run["reached_step"], run["test_mse"])

    verdict, results = holds_for_most_seeds(claim)
    assert verdict, results


def test_tanh_rnn_stays_above_0_05():
    def claim(seed):
        run = train_adding_problem("rnn_tanh", length=50, hidden_size=32, steps=2000, batch_size=64,
                                   seed=seed)
        assert 0.12 < run["baseline_mse"] < 0.22
        return run["best_test_mse"] > 0.05, (run["best_test_mse"], run["final_test_mse"])

    verdict, results = holds_for_most_seeds(claim)
    assert verdict, results
