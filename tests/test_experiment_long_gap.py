"""The long-gap language task ("I grew up in France … I speak fluent French"): at a short gap
both the tanh RNN and the LSTM get the language right; at a long gap only the LSTM does.
Each claim must hold for a majority of 3 seeds."""
import numpy as np
import pytest

from conftest import holds_for_most_seeds
from lstmkit.experiments import gate_trace, train_long_gap

pytestmark = pytest.mark.usefixtures("one_thread")
SHORT_GAP, LONG_GAP = 5, 20


def test_both_cells_bridge_a_short_gap():
    def claim(seed):
        rnn = train_long_gap("rnn_tanh", SHORT_GAP, seed=seed)["accuracy"]
        lstm = train_long_gap("lstm", SHORT_GAP, seed=seed)["accuracy"]
        return rnn > 0.9 and lstm > 0.9, (rnn, lstm)

    verdict, results = holds_for_most_seeds(claim)
    assert verdict, results


def test_only_the_lstm_bridges_a_long_gap():
    def claim(seed):
        rnn = train_long_gap("rnn_tanh", LONG_GAP, seed=seed)
        lstm = train_long_gap("lstm", LONG_GAP, seed=seed)
        # chance is 1/4: the RNN stays near it, the LSTM is (nearly) always right
        return lstm["accuracy"] > 0.9 and rnn["accuracy"] < 0.4, (rnn["accuracy"], lstm["accuracy"])

    verdict, results = holds_for_most_seeds(claim)
    assert verdict, results


def test_the_lstm_follows_a_change_of_subject():
    def claim(seed):
        run = train_long_gap("lstm", LONG_GAP, subject_change=0.5, seed=seed)
        ok = run["accuracy_changed"] > 0.9 and run["accuracy_unchanged"] > 0.9
        return ok, (run["accuracy_changed"], run["accuracy_unchanged"], run)

    verdict, results = holds_for_most_seeds(claim)
    assert verdict, [r[:2] for _, r in results]
    # the trace a chapter plots: one value per step and unit, from the model that learned it
    run = next(r[2] for ok, r in results if ok)
    story = run["test"]["inputs"][np.argmax(run["test"]["subject_changed"])]
    trace = gate_trace(run["model"], story)
    assert trace["forget_gate"].shape == (len(story), 32)
    assert np.all((trace["forget_gate"] > 0) & (trace["forget_gate"] < 1))
    assert trace["prediction"].shape == (4,)
