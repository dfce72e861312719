"""Data for the experiments: seeded generators and bundled data, nothing downloaded.

Every function returns plain NumPy arrays in dicts, batch-first, in the form
:func:`lstmkit.train.fit` takes (``inputs``, ``targets``, optionally
``lengths``/``mask``), plus whatever a chapter needs to explain the data.
The same ``seed`` always gives the same data.

* :func:`adding_problem`: Hochreiter & Schmidhuber 1997, §5.4, and the
  later variant with values in U[0, 1];
* :func:`copy_memory`: Arjovsky et al. 2016, and its memoryless baseline;
* :func:`long_gap_language`: "I grew up in France … I speak fluent French",
  with a gap of filler and an optional change of subject;
* :func:`time_series_windows`: a real series from statsmodels' bundled data;
* :func:`char_corpus`, :func:`char_language_data`: characters of Python's
  own standard library source (a committed snapshot by default).
"""
from __future__ import annotations

import importlib
import inspect
import math

import numpy as np

__all__ = ["adding_problem", "adding_problem_sampler", "copy_memory", "copy_memory_baseline",
           "long_gap_language", "long_gap_sampler", "LongGapVocabulary", "time_series_windows",
           "TIME_SERIES", "char_corpus", "char_language_data", "encode", "decode"]


def _rng(seed):
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _positive(name, value, minimum=1):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


# -- the adding problem ---------------------------------------------------------------
def adding_problem(num_sequences, length=50, *, variant="uniform", dtype=np.float32, seed=None):
    """Sequences of (value, marker) pairs; the target is the sum of the two marked values.

    ``variant="uniform"`` (Le et al. 2015; Arjovsky et al. 2016): every
    sequence has ``length`` steps; values ~ U[0, 1]; the marker is 1 at one
    step in the first half and one in the second half, 0 elsewhere; the
    target is X₁ + X₂. Always predicting the mean, 1, gives MSE 1/6 ≈ 0.167.

    ``variant="hochreiter1997"`` (§5.4): lengths vary in [T, T + T/10];
    values ~ U[−1, 1]; X₁ is marked among the first ten pairs and X₂ among
    the first T/2 − 1 still unmarked ones; the first and the last pair carry
    marker −1 (if the first pair is the marked one, it keeps marker 1 and
    X₁ is set to 0); the target is 0.5 + (X₁ + X₂)/4. Sequences are padded
    with zeros to T + T/10 and the dict carries their ``lengths``.

    Returns ``{"inputs": [N, T, 2], "targets": [N, 1], "marked": [N, 2]}``
    (plus ``"lengths"`` [N] for the 1997 variant); ``marked`` are the two
    marked positions.
    """
    num_sequences = _positive("num_sequences", num_sequences)
    rng = _rng(seed)
    if variant == "uniform":
        length = _positive("length", length, 2)
        half = length // 2
        values = rng.uniform(0.0, 1.0, (num_sequences, length))
        first = rng.integers(0, half, num_sequences)
        second = rng.integers(half, length, num_sequences)
        markers = np.zeros((num_sequences, length))
        rows = np.arange(num_sequences)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        targets = values[rows, first] + values[rows, second]
        result = {}
    elif variant == "hochreiter1997":
        length = _positive("length", length, 24)          # T/2 − 1 must leave room after the first ten
        longest = length + length // 10
        lengths = rng.integers(length, longest + 1, num_sequences)
        values = rng.uniform(-1.0, 1.0, (num_sequences, longest))
        markers = np.zeros((num_sequences, longest))
        first = rng.integers(0, 10, num_sequences)
        # X₂: one of the first T/2 − 1 pairs other than X₁'s
        second = rng.integers(0, length // 2 - 2, num_sequences)
        second += second >= first
        rows = np.arange(num_sequences)
        markers[rows, 0] = -1.0
        markers[rows, lengths - 1] = -1.0
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        values[rows[first == 0], 0] = 0.0                   # "we set X₁ to zero"
        padding = np.arange(longest)[None, :] >= lengths[:, None]
        values[padding] = 0.0
        targets = 0.5 + (values[rows, first] + values[rows, second]) / 4.0
        result = {"lengths": lengths}
    else:
        raise ValueError(f"variant must be 'uniform' or 'hochreiter1997', got {variant!r}")
    inputs = np.stack([values, markers], axis=-1).astype(dtype)
    return {"inputs": inputs, "targets": targets[:, None].astype(dtype),
            "marked": np.stack([first, second], axis=1), **result}


def adding_problem_sampler(length=50, *, variant="uniform", dtype=np.float32):
    """``sample(batch_size, rng)`` making fresh adding-problem batches, for :func:`~lstmkit.train.fit`."""
    def sample(batch_size, rng):
        return adding_problem(batch_size, length, variant=variant, dtype=dtype, seed=rng)
    return sample


# -- copy memory ------------------------------------------------------------------------
def copy_memory(num_sequences, delay=100, *, num_symbols=8, copy_length=10, seed=None):
    """The copy-memory task of Arjovsky et al. 2016.

    Token 0 is the blank, 1 … ``num_symbols`` the symbols, ``num_symbols + 1``
    the delimiter. An input is ``copy_length`` random symbols, ``delay − 1``
    blanks, the delimiter, then ``copy_length`` blanks (T + 20 steps for the
    defaults). The target is blank for the first ``delay + copy_length``
    steps, then the symbols in their original order.

    Returns ``{"inputs": [N, T+20], "targets": [N, T+20], "vocab_size",
    "num_classes"}``; targets never contain the delimiter, so
    ``num_classes = num_symbols + 1``.
    """
    num_sequences = _positive("num_sequences", num_sequences)
    delay = _positive("delay", delay)
    num_symbols, copy_length = _positive("num_symbols", num_symbols), _positive("copy_length", copy_length)
    rng = _rng(seed)
    steps = delay + 2 * copy_length
    symbols = rng.integers(1, num_symbols + 1, (num_sequences, copy_length))
    inputs = np.zeros((num_sequences, steps), np.int64)
    inputs[:, :copy_length] = symbols
    inputs[:, delay + copy_length - 1] = num_symbols + 1
    targets = np.zeros((num_sequences, steps), np.int64)
    targets[:, -copy_length:] = symbols
    return {"inputs": inputs, "targets": targets, "vocab_size": num_symbols + 2,
            "num_classes": num_symbols + 1}


def copy_memory_baseline(delay, num_symbols=8, copy_length=10):
    """Cross-entropy per step of the memoryless strategy: blanks, then a uniform guess.

    It is right with certainty for ``delay + copy_length`` steps and pays
    log(num_symbols) on each of the last ``copy_length``:
    ``copy_length · log(num_symbols) / (delay + 2 · copy_length)``, which is
    10 · log 8 / (T + 20) for the defaults.
    """
    return copy_length * math.log(num_symbols) / (delay + 2 * copy_length)


# -- the long-gap language task -----------------------------------------------------------
class LongGapVocabulary:
    """The words of :func:`long_gap_language` and what role each plays."""

    COUNTRIES = ("France", "Spain", "Germany", "Italy", "Japan", "China", "Russia", "Brazil")
    LANGUAGES = ("French", "Spanish", "German", "Italian", "Japanese", "Chinese", "Russian", "Portuguese")
    # (subject word, pronoun, verb of the question); names are neutral about country
    SUBJECTS = (("I", "I", "speak"), ("Anna", "she", "speaks"), ("Lena", "she", "speaks"),
                ("Clara", "she", "speaks"), ("Tom", "he", "speaks"), ("Paul", "he", "speaks"),
                ("Max", "he", "speaks"))
    # filler sentences are grammatical English built from these parts of speech (see _filler_sentence)
    FILLER = {"determiner": ("the", "this", "my", "our"),
              "adjective": ("old", "small", "green", "quiet", "busy", "cold"),
              "noun": ("dog", "river", "train", "garden", "teacher", "window", "city", "book"),
              "transitive": ("liked", "saw", "found", "passed", "painted", "visited"),
              "intransitive": ("slept", "waited", "stopped", "moved", "shone"),
              "pronoun": ("we", "they"),
              "imperative": ("look", "wait", "listen"),
              "conjunction": ("and",)}
    ROLES = ("filler", "subject", "clause", "country", "period", "question")

    def __init__(self):
        words = ["<pad>", "."] + ["grew", "up", "in", "fluent"]
        words += sorted({w for s in self.SUBJECTS for w in s} - set(words))
        words += [w for group in self.FILLER.values() for w in group]
        words += list(self.COUNTRIES) + list(self.LANGUAGES)
        self.words = tuple(dict.fromkeys(words))
        self.index = {w: k for k, w in enumerate(self.words)}

    def ids(self, words):
        return np.array([self.index[w] for w in words], np.int64)

    def decode(self, tokens):
        """Token ids → the sentence as text."""
        return " ".join(self.words[t] for t in np.asarray(tokens).tolist() if t != 0)


def long_gap_language(num_sequences, gap=20, *, num_countries=8, sentence_length=6,
                      subject_change=0.0, seed=None):
    """Synthetic stories where the word to predict depends on a country named long before.

    ``"Anna grew up in Italy . the old dog saw the river . … she speaks fluent"`` → Italian

    A subject (``I`` or a name) grows up in one of ``num_countries``
    countries; ``gap`` filler tokens follow (sentences of about
    ``sentence_length`` tokens, each ending in "."); then the question
    "<pronoun> speak(s) fluent", after which the model must predict the
    language.

    With ``subject_change`` = p > 0, a fraction p of the stories introduce a
    second subject from another country halfway through the gap ("Tom grew
    up in Japan ."; its 6 tokens count towards the gap); the question is
    then about the new subject, and the answer is the new subject's
    language. A model has to forget the old subject: chapter 02 plots the
    forget gate at that moment.

    Returns a dict:

    * ``inputs`` [N, T] token ids (T = gap + 9) and ``targets`` [N] language
      ids (0 … num_countries−1), for :class:`~lstmkit.models.SequenceClassifier`;
    * ``target_tokens`` [N]: the language as a token id;
    * ``roles`` [N, T]: index into ``role_names`` for each token (filler,
      subject, clause, country, period, question);
    * ``country_positions`` [N, 2] (−1 where there is no second subject),
      ``countries`` [N, 2] (country ids, −1 likewise), ``subject_changed`` [N];
    * ``vocabulary`` (a :class:`LongGapVocabulary`: ``.words``,
      ``.decode(tokens)``), ``languages``, ``role_names``, ``gap``.
    """
    num_sequences = _positive("num_sequences", num_sequences)
    gap = _positive("gap", gap)
    sentence_length = _positive("sentence_length", sentence_length, 2)
    vocabulary = LongGapVocabulary()
    if not 2 <= num_countries <= len(vocabulary.COUNTRIES):
        raise ValueError(f"num_countries must lie in [2, {len(vocabulary.COUNTRIES)}], got {num_countries}")
    subject_change = float(subject_change)
    if not 0.0 <= subject_change <= 1.0:
        raise ValueError(f"subject_change is a probability in [0, 1], got {subject_change}")
    clause_length = 6                                           # "Tom grew up in Japan ."
    if subject_change > 0 and gap < clause_length + 4:
        raise ValueError(f"a subject change needs gap ≥ {clause_length + 4} (the new clause and some "
                         f"filler on each side), got {gap}")
    rng = _rng(seed)
    role = {name: k for k, name in enumerate(vocabulary.ROLES)}
    steps = clause_length + gap + 3
    inputs = np.empty((num_sequences, steps), np.int64)
    roles = np.empty((num_sequences, steps), np.int64)
    countries = np.full((num_sequences, 2), -1, np.int64)
    positions = np.full((num_sequences, 2), -1, np.int64)
    changed = rng.random(num_sequences) < subject_change

    def clause(subject, country):
        words = [vocabulary.SUBJECTS[subject][0], "grew", "up", "in", vocabulary.COUNTRIES[country], "."]
        kinds = ["subject", "clause", "clause", "clause", "country", "period"]
        return words, kinds

    for n in range(num_sequences):
        subject = int(rng.integers(len(vocabulary.SUBJECTS)))
        country = int(rng.integers(num_countries))
        words, kinds = clause(subject, country)
        countries[n, 0], positions[n, 0] = country, 4
        if changed[n]:
            before = (gap - clause_length) // 2
            filler_words, filler_kinds = _filler(vocabulary, before, sentence_length, rng)
            words, kinds = words + filler_words, kinds + filler_kinds
            subject = int(rng.choice([s for s in range(len(vocabulary.SUBJECTS)) if s != subject]))
            country = int(rng.choice([c for c in range(num_countries) if c != country]))
            countries[n, 1], positions[n, 1] = country, len(words) + 4
            new_words, new_kinds = clause(subject, country)
            words, kinds = words + new_words, kinds + new_kinds
            filler_words, filler_kinds = _filler(vocabulary, gap - clause_length - before, sentence_length, rng)
        else:
            filler_words, filler_kinds = _filler(vocabulary, gap, sentence_length, rng)
        _, pronoun, verb = vocabulary.SUBJECTS[subject]
        words = words + filler_words + [pronoun, verb, "fluent"]
        kinds = kinds + filler_kinds + ["question"] * 3
        inputs[n] = vocabulary.ids(words)
        roles[n] = [role[k] for k in kinds]
    final_country = np.where(countries[:, 1] >= 0, countries[:, 1], countries[:, 0])
    target_tokens = vocabulary.ids([vocabulary.LANGUAGES[c] for c in final_country])
    return {"inputs": inputs, "targets": final_country, "target_tokens": target_tokens,
            "roles": roles, "role_names": vocabulary.ROLES, "country_positions": positions,
            "countries": countries, "subject_changed": changed, "vocabulary": vocabulary,
            "languages": vocabulary.LANGUAGES[:num_countries], "gap": gap}


def _filler(vocabulary, count, sentence_length, rng):
    """``count`` tokens of filler: as few sentences as fit, of near-equal length, each ending in "."."""
    sentences = max(1, -(-count // sentence_length))
    lengths = [count // sentences + (k < count % sentences) for k in range(sentences)]
    words, kinds = [], []
    for length in lengths:
        sentence = _filler_sentence(vocabulary, length - 1, rng) + ["."]
        words += sentence
        kinds += ["filler"] * (len(sentence) - 1) + ["period"]
    return words, kinds


# The shape of a grammatical sentence of each length (without its "."); longer ones join two with "and".
_SENTENCE_SHAPES = {
    1: ("imperative",),                                                    # look .
    2: ("pronoun", "intransitive"),                                        # we waited .
    3: ("determiner", "noun", "intransitive"),                             # the dog slept .
    4: ("determiner", "adjective", "noun", "intransitive"),                # the old dog slept .
    5: ("determiner", "noun", "transitive", "determiner", "noun"),         # the dog saw the river .
    6: ("determiner", "adjective", "noun", "transitive", "determiner", "noun"),
    7: ("determiner", "adjective", "noun", "transitive", "determiner", "adjective", "noun"),
}


def _filler_sentence(vocabulary, words, rng):
    """A grammatical sentence of exactly ``words`` words (no full stop), drawn with ``rng``."""
    if words <= 0:
        return []
    if words in _SENTENCE_SHAPES:
        shape = _SENTENCE_SHAPES[words]
    else:                                              # "<6 words> and <the rest>", the rest ≥ 2 words
        first = 6 if words - 7 >= 2 else 5
        return (_filler_sentence(vocabulary, first, rng) + ["and"]
                + _filler_sentence(vocabulary, words - first - 1, rng))
    return [vocabulary.FILLER[part][int(rng.integers(len(vocabulary.FILLER[part])))] for part in shape]


def long_gap_sampler(gap, **options):
    """``sample(batch_size, rng)`` making fresh long-gap batches, for :func:`~lstmkit.train.fit`."""
    def sample(batch_size, rng):
        data = long_gap_language(batch_size, gap, seed=rng, **options)
        return {"inputs": data["inputs"], "targets": data["targets"]}
    return sample


# -- a real time series -----------------------------------------------------------------
TIME_SERIES = {
    "sunspots": "yearly sunspot numbers, 1700–2008 (statsmodels.datasets.sunspots)",
    "co2": "monthly mean CO₂ at Mauna Loa in ppm, 1958–2001 (statsmodels.datasets.co2, weekly "
           "readings averaged per month, gaps interpolated)",
    "elnino": "monthly sea surface temperature in °C, 1950–2010 (statsmodels.datasets.elnino)",
}


def _load_series(name):
    try:
        import statsmodels.datasets as datasets
    except ImportError as error:
        raise ImportError("time_series_windows needs statsmodels (pip install statsmodels); "
                          "its bundled data sets are read offline") from error
    if name == "sunspots":
        frame = datasets.sunspots.load_pandas().data
        return frame["SUNACTIVITY"].to_numpy(np.float64), frame["YEAR"].to_numpy(np.float64)
    if name == "co2":
        weekly = datasets.co2.load_pandas().data["co2"]
        monthly = weekly.resample("MS").mean().interpolate()
        index = monthly.index
        return monthly.to_numpy(np.float64), (index.year + (index.month - 1) / 12).to_numpy(np.float64)
    if name == "elnino":
        frame = datasets.elnino.load_pandas().data
        values = frame.drop(columns="YEAR").to_numpy(np.float64).reshape(-1)
        years = np.repeat(frame["YEAR"].to_numpy(np.float64), 12) + np.tile(np.arange(12) / 12, len(frame))
        return values, years
    raise ValueError(f"unknown series {name!r}; choose one of {sorted(TIME_SERIES)}")


def time_series_windows(name="sunspots", window=20, horizon=1, *, test_fraction=0.2,
                        normalize=True, dtype=np.float32):
    """A bundled series cut into (window → next ``horizon`` values) pairs, split by time.

    The first ``1 − test_fraction`` of the series is for training, the rest
    for testing: every training target lies before every test target (a test
    window may look back into the training part, as a forecaster would). With
    ``normalize``, values are standardised with the training part's mean and
    standard deviation only, so nothing leaks from the future.

    Returns ``{"train": {"inputs": [N, window, 1], "targets": [N, horizon],
    "target_index": [N]}, "test": {…}, "series": [L] (raw values), "time":
    [L] (decimal years), "mean", "std", "split": first test index,
    "description"}``. Multiply by ``std`` and add ``mean`` to map
    predictions back to the original units.
    """
    window, horizon = _positive("window", window), _positive("horizon", horizon)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    series, time = _load_series(name)
    split = int(round(len(series) * (1.0 - test_fraction)))
    if split < window + horizon or len(series) - split < horizon:
        raise ValueError(f"series {name!r} has {len(series)} values: too short for window={window}, "
                         f"horizon={horizon}, test_fraction={test_fraction}")
    mean, std = (series[:split].mean(), series[:split].std()) if normalize else (0.0, 1.0)
    scaled = (series - mean) / std
    # window k covers values [k, k + window) and predicts [k + window, k + window + horizon)
    starts = np.arange(len(series) - window - horizon + 1)
    inputs = np.stack([scaled[k:k + window] for k in starts])[:, :, None].astype(dtype)
    targets = np.stack([scaled[k + window:k + window + horizon] for k in starts]).astype(dtype)
    first_target = starts + window
    last_target = first_target + horizon - 1
    train, test = last_target < split, first_target >= split

    def part(selection):
        return {"inputs": inputs[selection], "targets": targets[selection],
                "target_index": first_target[selection]}

    return {"train": part(train), "test": part(test), "series": series, "time": time,
            "mean": float(mean), "std": float(std), "split": split, "description": TIME_SERIES[name]}


# -- a character corpus -----------------------------------------------------------------
DEFAULT_MODULES = ("textwrap", "heapq", "functools")
# The committed snapshot of DEFAULT_MODULES' source (Python 3.11.7; PSF licence in the .LICENSE.txt beside it)
SNAPSHOT = "python_stdlib_corpus.txt"


def _snapshot_text():
    from importlib import resources

    with resources.files("lstmkit").joinpath("data", SNAPSHOT).open("r", encoding="utf-8", newline="") as file:
        return file.read()


def char_corpus(modules=None, max_chars=None):
    """The source of some standard-library modules as one text, and its characters.

    By default (``modules=None``) the text is lstmkit's committed snapshot of
    ``textwrap``, ``heapq`` and ``functools`` from Python 3.11.7
    (``lstmkit/data/python_stdlib_corpus.txt``, PSF licence beside it), so it
    is the same text whichever Python runs it. Give module names to read the
    running interpreter's own source instead (their text differs between
    Python versions). Nothing is downloaded. Returns ``{"text", "vocab":
    sorted characters, "data": int64 ids into vocab, "modules"}``.
    """
    if max_chars is not None:
        max_chars = _positive("max_chars", max_chars)
    if modules is None:
        text, modules = _snapshot_text(), DEFAULT_MODULES
    else:
        if isinstance(modules, str):
            modules = (modules,)
        texts = []
        for module_name in modules:
            try:
                texts.append(inspect.getsource(importlib.import_module(module_name)))
            except (ImportError, OSError, TypeError) as error:
                raise ValueError(f"cannot read the source of standard-library module {module_name!r}: "
                                 f"{error}") from error
        text = "\n".join(texts)
    if max_chars is not None:
        text = text[:max_chars]
    vocab = sorted(set(text))
    return {"text": text, "vocab": vocab, "data": encode(text, vocab), "modules": tuple(modules)}


def encode(text, vocab):
    """Characters → int64 ids (their positions in ``vocab``)."""
    index = {char: k for k, char in enumerate(vocab)}
    try:
        return np.array([index[char] for char in text], np.int64)
    except KeyError as error:
        raise ValueError(f"character {error.args[0]!r} is not in the vocabulary") from None


def decode(ids, vocab):
    """Int ids → the text they stand for."""
    return "".join(vocab[k] for k in np.asarray(ids).tolist())


def char_language_data(seq_length=64, *, valid_fraction=0.1, modules=None, max_chars=None):
    """A character corpus cut into next-character training sequences.

    The text is split by position (the last ``valid_fraction`` is held out),
    then each part is cut into non-overlapping pieces of ``seq_length + 1``
    characters: ``inputs`` are the first ``seq_length``, ``targets`` the
    last ``seq_length`` (the same piece shifted by one). Returns ``{"train":
    {"inputs": [N, L], "targets": [N, L]}, "valid": {…}, "vocab", "text"}``.
    """
    seq_length = _positive("seq_length", seq_length)
    corpus = char_corpus(modules, max_chars)
    data = corpus["data"]
    split = int(len(data) * (1.0 - valid_fraction))

    def pieces(part):
        count = (len(part) - 1) // seq_length
        if count < 1:
            raise ValueError(f"a part of {len(part)} characters is too short for seq_length={seq_length}")
        usable = part[:count * seq_length + 1]
        return {"inputs": usable[:-1].reshape(count, seq_length).copy(),
                "targets": usable[1:].reshape(count, seq_length).copy()}

    return {"train": pieces(data[:split]), "valid": pieces(data[split:]),
            "vocab": corpus["vocab"], "text": corpus["text"]}
