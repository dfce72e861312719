"""The adding problem (U[0, 1] variant), T = 50, hidden 32, batch 64, Adam, at most 2,000 steps:
the LSTM gets below test MSE 0.01, the tanh RNN stays above 0.05 (the mean predictor scores ≈ 0.167).
Training is noisy, so each claim must hold for a majority of 3 seeds."""
import pytest

from conftest import holds_for_most_seeds
from lstmkit.experiments import train_adding_problem

pytestmark = pytest.mark.usefixtures("one_thread")


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
