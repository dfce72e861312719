"""The task generators: seeded, shaped as documented, and faithful to the papers' definitions."""
import inspect
import math
import textwrap

import numpy as np
import pytest

from lstmkit import tasks
from lstmkit.nn import SoftmaxCrossEntropy


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            np.testing.assert_array_equal(a[key], b[key])


# -- adding problem -------------------------------------------------------------------------
def test_adding_uniform_variant():
    data = tasks.adding_problem(5000, 50, seed=0)
    assert_same(data, tasks.adding_problem(5000, 50, seed=0))
    assert not np.array_equal(data["inputs"], tasks.adding_problem(5000, 50, seed=1)["inputs"])
    values, markers = data["inputs"][..., 0], data["inputs"][..., 1]
    assert data["inputs"].shape == (5000, 50, 2) and data["inputs"].dtype == np.float32
    assert np.all((values >= 0) & (values <= 1))
    assert np.all(markers.sum(axis=1) == 2)
    assert np.all(markers[:, :25].sum(axis=1) == 1) and np.all(markers[:, 25:].sum(axis=1) == 1)
    np.testing.assert_allclose(data["targets"][:, 0], (values * markers).sum(axis=1), rtol=1e-6)
    # predicting the mean (1) scores the variance of a sum of two U[0,1]: 1/6
    assert np.mean((data["targets"] - 1.0) ** 2) == pytest.approx(1 / 6, abs=0.01)


def test_adding_hochreiter_1997_variant():
    T = 100
    data = tasks.adding_problem(3000, T, variant="hochreiter1997", seed=2)
    values, markers, lengths = data["inputs"][..., 0], data["inputs"][..., 1], data["lengths"]
    assert data["inputs"].shape == (3000, T + T // 10, 2)
    assert lengths.min() >= T and lengths.max() <= T + T // 10 and len(set(lengths.tolist())) > 5
    rows = np.arange(3000)
    first, second = data["marked"][:, 0], data["marked"][:, 1]
    assert np.all(first < 10) and np.all(second < T // 2 - 1) and np.all(first != second)
    assert np.all(markers[rows, first] == 1) and np.all(markers[rows, second] == 1)
    assert np.all((markers == 1).sum(axis=1) == 2)
    assert np.all(markers[rows, lengths - 1] == -1)                    # the final pair
    first_is_marked = (first == 0) | (second == 0)
    assert np.all(markers[~first_is_marked, 0] == -1)                  # the first pair
    assert np.all(values[first == 0, 0] == 0)                          # "we set X1 to zero"
    inside = np.arange(T + T // 10)[None, :] < lengths[:, None]
    assert np.all(np.abs(values[inside & (markers == 0)]) <= 1)
    assert np.all(data["inputs"][~inside] == 0)                        # padding
    expected = 0.5 + (values[rows, first] + values[rows, second]) / 4.0
    np.testing.assert_allclose(data["targets"][:, 0], expected, atol=1e-6)
    assert np.all((data["targets"] >= 0) & (data["targets"] <= 1))
    with pytest.raises(ValueError, match="variant"):
        tasks.adding_problem(2, variant="later")


def test_adding_sampler_draws_fresh_batches_from_the_generator():
    sample = tasks.adding_problem_sampler(20)
    rng = np.random.default_rng(0)
    a, b = sample(8, rng), sample(8, rng)
    assert a["inputs"].shape == (8, 20, 2) and not np.array_equal(a["inputs"], b["inputs"])
    again = tasks.adding_problem_sampler(20)(8, np.random.default_rng(0))
    np.testing.assert_array_equal(a["inputs"], again["inputs"])


# -- copy memory ----------------------------------------------------------------------------
def test_copy_memory_layout():
    T = 30
    data = tasks.copy_memory(50, T, seed=0)
    inputs, targets = data["inputs"], data["targets"]
    assert inputs.shape == targets.shape == (50, T + 20)
    symbols = inputs[:, :10]
    assert symbols.min() >= 1 and symbols.max() <= 8
    assert np.all(inputs[:, 10:T + 9] == 0) and np.all(inputs[:, T + 9] == 9) and np.all(inputs[:, T + 10:] == 0)
    assert np.all(targets[:, :T + 10] == 0)
    np.testing.assert_array_equal(targets[:, T + 10:], symbols)
    assert data["vocab_size"] == 10 and data["num_classes"] == 9
    assert_same(data, tasks.copy_memory(50, T, seed=0))


@pytest.mark.parametrize("delay", [10, 100])
def test_copy_memory_baseline_is_the_memoryless_strategy(delay):
    """Score the strategy itself: certain blanks for delay + 10 steps, then a uniform guess."""
    data = tasks.copy_memory(20, delay, seed=1)
    logits = np.full(data["targets"].shape + (data["num_classes"],), -1e9)
    logits[:, :delay + 10, 0] = 0.0
    logits[:, delay + 10:, 1:] = 0.0
    loss = SoftmaxCrossEntropy()(logits, data["targets"])
    assert loss == pytest.approx(tasks.copy_memory_baseline(delay), rel=1e-9)
    assert tasks.copy_memory_baseline(delay) == pytest.approx(10 * math.log(8) / (delay + 20))


# -- long-gap language task -----------------------------------------------------------------
def test_long_gap_language_stories():
    data = tasks.long_gap_language(300, gap=15, num_countries=5, seed=0)
    assert_same(data, tasks.long_gap_language(300, gap=15, num_countries=5, seed=0))
    vocabulary = data["vocabulary"]
    words = np.array(vocabulary.words)
    inputs = data["inputs"]
    assert inputs.shape == (300, 6 + 15 + 3)
    assert not data["subject_changed"].any() and np.all(data["countries"][:, 1] == -1)
    rows = np.arange(300)
    country_words = words[inputs[rows, data["country_positions"][:, 0]]]
    np.testing.assert_array_equal(country_words, np.array(vocabulary.COUNTRIES)[data["countries"][:, 0]])
    np.testing.assert_array_equal(data["targets"], data["countries"][:, 0])
    np.testing.assert_array_equal(words[data["target_tokens"]], np.array(data["languages"])[data["targets"]])
    assert set(data["targets"].tolist()) == set(range(5))
    assert not np.isin(inputs, data["target_tokens"]).any()          # the answer never appears
    role = {name: k for k, name in enumerate(data["role_names"])}
    assert np.all((data["roles"] == role["country"]).sum(axis=1) == 1)
    assert np.all(data["roles"][:, 6:21] != role["country"])           # the gap is filler only
    assert np.all(words[inputs[:, -1]] == "fluent") and np.all(words[inputs[:, -4]] == ".")
    assert np.all(words[inputs[:, 7]] != ".")                          # no one-word sentences
    text = vocabulary.decode(inputs[0])
    assert text.split()[1:4] == ["grew", "up", "in"] and text.endswith("fluent")
    subjects = {s[0]: s for s in vocabulary.SUBJECTS}
    for row in inputs[:20]:                                            # "I speak", "she speaks", …
        _, pronoun, verb = subjects[words[row[0]]]
        assert list(words[row[-3:-1]]) == [pronoun, verb]


def test_long_gap_subject_change_variant():
    data = tasks.long_gap_language(400, gap=30, subject_change=0.5, seed=1)
    changed = data["subject_changed"]
    assert 0.35 < changed.mean() < 0.65
    words = np.array(data["vocabulary"].words)
    rows = np.arange(400)[changed]
    first, second = data["countries"][changed, 0], data["countries"][changed, 1]
    assert np.all(first != second) and np.all(second >= 0)
    np.testing.assert_array_equal(data["targets"][changed], second)    # the later subject counts
    np.testing.assert_array_equal(data["targets"][~changed], data["countries"][~changed, 0])
    positions = data["country_positions"][changed, 1]
    np.testing.assert_array_equal(words[data["inputs"][rows, positions]],
                                  np.array(data["vocabulary"].COUNTRIES)[second])
    assert np.all(positions > data["country_positions"][changed, 0] + 6)
    subjects = {s[0]: s for s in data["vocabulary"].SUBJECTS}
    for row, position in zip(data["inputs"][rows], positions):         # the question is about the new subject
        new_subject = words[row[position - 4]]
        assert words[row[-3]] == subjects[new_subject][1]
        assert new_subject != words[row[0]]
    with pytest.raises(ValueError, match="gap"):
        tasks.long_gap_language(2, gap=9, subject_change=1.0)


def test_long_gap_sampler_only_carries_training_arrays():
    batch = tasks.long_gap_sampler(8, num_countries=3)(16, np.random.default_rng(0))
    assert set(batch) == {"inputs", "targets"} and batch["targets"].max() < 3


# -- a real time series ---------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(tasks.TIME_SERIES))
def test_time_series_windows_are_time_ordered_and_leak_free(name):
    data = tasks.time_series_windows(name, window=12, horizon=3)
    series, split = data["series"], data["split"]
    assert np.all(np.isfinite(series)) and len(series) == len(data["time"])
    assert np.all(np.diff(data["time"]) > 0)
    train, test = data["train"], data["test"]
    assert train["inputs"].shape[1:] == (12, 1) and train["targets"].shape[1] == 3
    assert np.all(train["target_index"] + 2 < split) and np.all(test["target_index"] >= split)
    assert train["target_index"].min() == 12                           # first full window
    scaled = (series - data["mean"]) / data["std"]
    assert scaled[:split].mean() == pytest.approx(0, abs=1e-9)         # train statistics only
    assert scaled[:split].std() == pytest.approx(1, abs=1e-9)
    for part in (train, test):
        k = len(part["target_index"]) // 2
        start = part["target_index"][k]
        np.testing.assert_allclose(part["inputs"][k, :, 0], scaled[start - 12:start], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(part["targets"][k] * data["std"] + data["mean"], series[start:start + 3],
                                   rtol=1e-5)


def test_time_series_rejects_unknown_names_and_impossible_windows():
    with pytest.raises(ValueError, match="sunspots"):
        tasks.time_series_windows("ftse")
    with pytest.raises(ValueError, match="too short"):
        tasks.time_series_windows("sunspots", window=400)


# -- a character corpus ---------------------------------------------------------------------
def test_char_corpus_reads_the_standard_library():
    corpus = tasks.char_corpus(("textwrap",))
    assert corpus["text"] == inspect.getsource(textwrap)
    assert corpus["vocab"] == sorted(set(corpus["text"]))
    assert tasks.decode(corpus["data"], corpus["vocab"]) == corpus["text"]
    with pytest.raises(ValueError, match="not_a_module_at_all"):
        tasks.char_corpus(("not_a_module_at_all",))
    with pytest.raises(ValueError, match="vocabulary"):
        tasks.encode("€", ["a"])


def test_char_corpus_default_is_the_committed_snapshot_whatever_python_runs(monkeypatch):
    # The chapter's corpus must not depend on the interpreter: the default reads the committed
    # file, never the running Python's modules (reading them here would fail).
    def no_source(module):
        raise OSError("the default corpus must not read the interpreter's modules")

    monkeypatch.setattr(tasks.inspect, "getsource", no_source)
    corpus = tasks.char_corpus()
    assert corpus["modules"] == ("textwrap", "heapq", "functools")
    assert len(corpus["text"]) == 81155 and len(corpus["vocab"]) == 95
    assert corpus["text"].startswith('"""Text wrapping and filling.')
    assert "def total_ordering(cls):" in corpus["text"] and "def heappush(heap, item):" in corpus["text"]
    assert tasks.char_corpus(max_chars=100)["text"] == corpus["text"][:100]
    assert tasks.char_language_data(32, max_chars=5000)["text"] == corpus["text"][:5000]


def test_char_corpus_snapshot_is_python_3_11_source_and_ships_its_licence():
    from importlib import resources

    data = resources.files("lstmkit").joinpath("data")
    licence = data.joinpath("python_stdlib_corpus.LICENSE.txt").read_text(encoding="utf-8")
    assert "PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2" in licence and "3.11.7" in licence
    import sys
    if sys.version_info[:2] == (3, 11):      # the snapshot is exactly what 3.11 reads from its own library
        assert tasks.char_corpus()["text"] == tasks.char_corpus(tasks.DEFAULT_MODULES)["text"]


def test_char_language_data_targets_are_the_next_characters():
    data = tasks.char_language_data(32, max_chars=20000)
    train, valid = data["train"], data["valid"]
    for part in (train, valid):
        np.testing.assert_array_equal(part["inputs"][:, 1:], part["targets"][:, :-1])
        np.testing.assert_array_equal(part["inputs"][1:, 0], part["targets"][:-1, -1])
    text = data["text"]
    assert tasks.decode(train["inputs"][0], data["vocab"]) == text[:32]
    split = int(len(text) * 0.9)
    assert tasks.decode(valid["inputs"][0], data["vocab"]) == text[split:split + 32]
    assert len(train["inputs"]) == (split - 1) // 32


def test_long_gap_filler_sentences_are_grammatical():
    # Every filler sentence ends on a noun or an intransitive/imperative verb, never on
    # "the" or "quiet" ("our quiet dog . the small ." was what the old generator wrote).
    vocabulary = tasks.LongGapVocabulary()
    parts = vocabulary.FILLER
    can_end = set(parts["noun"]) | set(parts["intransitive"]) | set(parts["imperative"])
    for gap in (3, 7, 20, 41, 100):
        data = tasks.long_gap_language(20, gap, seed=gap, sentence_length=9)
        for row, roles in zip(data["inputs"], data["roles"]):
            words = [vocabulary.words[t] for t in row]
            kinds = [vocabulary.ROLES[r] for r in roles]
            for k, (word, kind) in enumerate(zip(words, kinds)):
                if kind == "period" and kinds[k - 1] == "filler":
                    assert words[k - 1] in can_end, " ".join(words)
