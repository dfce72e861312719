"""The models learn the real data the chapters use: Python's own source and a real time series."""
import numpy as np
import pytest

from lstmkit import tasks
from lstmkit.models import CharLanguageModel, SequenceRegressor
from lstmkit.nn import MSELoss, SoftmaxCrossEntropy
from lstmkit.optim import Adam
from lstmkit.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")


def test_char_model_beats_the_unigram_entropy_of_held_out_source():
    data = tasks.char_language_data(32, max_chars=30000)
    vocab_size = len(data["vocab"])
    counts = np.bincount(data["train"]["targets"].ravel(), minlength=vocab_size)
    frequencies = counts / counts.sum()
    valid_targets = data["valid"]["targets"].ravel()
    # the best model that ignores context: training-set character frequencies (smoothed)
    unigram = -np.mean(np.log((counts[valid_targets] + 1) / (counts.sum() + vocab_size)))
    model = CharLanguageModel("lstm", vocab_size, 64, embedding_dim=16, seed=0)
    history = fit(model, SoftmaxCrossEntropy(), Adam(model.params, lr=1e-2), data["train"], steps=200,
                  batch_size=32, eval_data=data["valid"], eval_every=100, clip_norm=5.0, progress=False)
    assert history["eval_loss"][-1] < 0.85 * unigram, (history["eval_loss"], unigram, frequencies.max())
    text = tasks.decode(model.sample(tasks.encode("def ", data["vocab"]), 50, temperature=0.5, seed=0),
                        data["vocab"])
    assert len(text) == 50 and set(text) <= set(data["vocab"])


def test_sunspot_forecast_beats_persistence():
    data = tasks.time_series_windows("sunspots", window=20)
    model = SequenceRegressor("lstm", 1, 32, seed=0)
    history = fit(model, MSELoss(), Adam(model.params, lr=1e-2), data["train"], epochs=30, batch_size=32,
                  eval_data=data["test"], clip_norm=1.0, restore_best=False, progress=False, seed=0)
    # persistence: next year's value is this year's
    persistence = float(np.mean((data["test"]["inputs"][:, -1, :] - data["test"]["targets"]) ** 2))
    assert history["eval_loss"][-1] < 0.6 * persistence, (history["eval_loss"][-1], persistence)
