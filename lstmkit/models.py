"""Small models built from a recurrent layer, for the tasks the chapters train on.

One class, :class:`SequenceModel`, covers them all:

    [Embedding] → recurrent layer → Linear head

* ``readout="last"``: the head sees each sequence's final hidden state (both
  directions concatenated when bidirectional) and returns one prediction per
  sequence, [B, output_size]: regression (adding problem, time series) or
  classification (the long-gap language task);
* ``readout="every"``: the head runs on every step and returns
  [B, T, output_size]: tagging (copy memory) and language models.

The named subclasses only fix those choices. Inputs are batch-first:
features [B, T, n], or token ids [B, T] when there is an embedding. Any cell
works: a built-in cell's name (``"lstm"``, ``"rnn_tanh"``, ``"gru"``, …), a
:class:`~lstmkit.symbolic.CellSpec`, or a layer class such as
:class:`~lstmkit.layers.LSTM`.

Parameters live in one flat ``params`` dict whose keys carry the part's
prefix, ``embedding.weight``, ``rnn.weight_ih_l0``, …, ``head.bias``: the
``state_dict`` keys of a torch module with attributes ``embedding``, ``rnn``
and ``head``. The arrays are the parts' own, so an optimizer updating
``model.params`` in place updates the parts.
"""
from __future__ import annotations

import contextlib

import numpy as np

from .layers import RecurrentLayer
from .module import Module
from .nn import Embedding, Linear

__all__ = ["SequenceModel", "SequenceRegressor", "SequenceClassifier", "SequenceTagger",
           "CharLanguageModel", "make_recurrent_layer"]


def make_recurrent_layer(cell, input_size, hidden_size, *, num_layers=1, bidirectional=False,
                         batch_first=True, dtype=np.float32, seed=None):
    """A recurrent layer from a cell name, a CellSpec or a RecurrentLayer subclass."""
    options = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first,
                   dtype=dtype, seed=seed)
    if isinstance(cell, str):
        return RecurrentLayer(cell, input_size, hidden_size, **options)
    from .symbolic import CellSpec  # here, not at import: built-in cells run without SymPy

    if isinstance(cell, CellSpec):
        return RecurrentLayer(cell, input_size, hidden_size, **options)
    if isinstance(cell, type) and issubclass(cell, RecurrentLayer) and cell is not RecurrentLayer:
        return cell(input_size, hidden_size, **options)
    raise TypeError(f"cell: expected a built-in cell name, a CellSpec or a RecurrentLayer subclass "
                    f"(e.g. lstmkit.LSTM), got {cell!r}")


class SequenceModel(Module):
    """[Embedding] → recurrent layer → Linear head; see the module docstring.

    Give ``input_size`` for float features [B, T, input_size], or
    ``vocab_size`` (and ``embedding_dim``) for token ids [B, T].

    ``forward(inputs, lengths=None)`` returns the head's output;
    ``backward(d_output)`` runs back through head, recurrent layer and
    embedding, fills ``grads`` (same keys as ``params``) and returns the
    gradient of the inputs (None for token ids, and with ``input_gradient=False``,
    which skips computing it: :func:`lstmkit.train.fit` never reads it).
    """

    def __init__(self, cell, hidden_size, output_size, *, input_size=None, vocab_size=None,
                 embedding_dim=None, padding_idx=None, num_layers=1, bidirectional=False,
                 readout="last", dtype=np.float32, seed=None):
        if (input_size is None) == (vocab_size is None):
            raise ValueError("give exactly one of input_size (float features) or vocab_size (token ids)")
        if readout not in ("last", "every"):
            raise ValueError(f"readout must be 'last' or 'every', got {readout!r}")
        embedding_rng, rnn_rng, head_rng = child_generators(seed, 3)
        self.embedding = None
        if vocab_size is not None:
            embedding_dim = embedding_dim if embedding_dim is not None else hidden_size
            self.embedding = Embedding(vocab_size, embedding_dim, padding_idx, dtype=dtype,
                                       seed=embedding_rng)
            input_size = embedding_dim
        elif embedding_dim is not None or padding_idx is not None:
            raise ValueError("embedding_dim and padding_idx need vocab_size (token-id inputs)")
        self.rnn = make_recurrent_layer(cell, input_size, hidden_size, num_layers=num_layers,
                                        bidirectional=bidirectional, dtype=dtype,
                                        seed=rnn_rng)
        features = hidden_size * self.rnn.num_directions
        self.head = Linear(features, output_size, dtype=dtype, seed=head_rng)
        self.readout = readout
        self.dtype = self.rnn.dtype
        self.input_size = None if self.embedding is not None else int(input_size)
        self.vocab_size = None if self.embedding is None else self.embedding.num_embeddings
        self.hidden_size, self.output_size = self.rnn.hidden_size, self.head.out_features
        self.params = {f"{part}.{name}": value for part, module in self._parts()
                       for name, value in module.params.items()}
        self.grads = {}
        self._cache = None

    def _parts(self):
        parts = [("embedding", self.embedding), ("rnn", self.rnn), ("head", self.head)]
        return [(name, module) for name, module in parts if module is not None]

    @property
    def cell(self):
        return self.rnn.cell

    def set_forget_bias(self, value=1.0):
        """Set the recurrent layer's forget-gate bias; see :meth:`RecurrentLayer.set_forget_bias`."""
        self.rnn.set_forget_bias(value)
        return self

    def load_state_dict(self, state_dict, strict=True):
        # the parts check their own entries; checking all first keeps a failed load harmless
        super().load_state_dict(state_dict, strict)
        self.rnn._tape = None

    def architecture(self):
        """What a checkpoint must match besides parameter shapes."""
        return {**self.rnn.architecture(), "class": type(self).__name__, "readout": self.readout}

    # -- forward and backward, side by side ---------------------------------------
    def forward(self, inputs, lengths=None, *, inference=False):
        """The head's output; ``inference=True``: the recurrent layer keeps nothing for backward."""
        if self.embedding is not None:
            if not isinstance(inputs, np.ndarray) or inputs.ndim != 2:
                raise ValueError(f"inputs: expected token ids of shape (B, T), got "
                                 f"{getattr(inputs, 'shape', type(inputs).__name__)}")
            features = self.embedding(inputs)
        else:
            if not isinstance(inputs, np.ndarray) or inputs.ndim != 3:
                raise ValueError(f"inputs: expected features of shape (B, T, {self.input_size}), got "
                                 f"{getattr(inputs, 'shape', type(inputs).__name__)}")
            features = inputs
        outputs, final_states = self.rnn.forward(features, None, lengths, inference=inference)
        if self.readout == "every":
            summary = outputs                                   # [B, T, D·d]
        else:
            summary = self._final_hidden(final_states)          # [B, D·d]
        self._cache = final_states
        return self.head(summary)

    def predict(self, inputs, lengths=None):
        """``forward`` for evaluation: nothing is kept for backward, and a forward pass
        whose backward is still to come is left alone."""
        with self._pending_backward_left_alone():
            return self.forward(inputs, lengths, inference=True)

    @contextlib.contextmanager
    def _pending_backward_left_alone(self):
        """Forward passes inside leave what the last forward kept for backward as it was."""
        tokens = self.embedding._tokens if self.embedding is not None else None
        saved = (self._cache, self.rnn._tape, self.head._x)
        try:
            yield
        finally:
            self._cache, self.rnn._tape, self.head._x = saved
            if self.embedding is not None:
                self.embedding._tokens = tokens

    def backward(self, d_output, *, input_gradient=True):
        if not isinstance(input_gradient, bool):
            raise TypeError(f"input_gradient must be True or False, got {input_gradient!r}")
        if self._cache is None:
            raise RuntimeError("call forward before backward")
        # an embedding scatters the recurrent layer's input gradient into its weights
        layer_input_gradient = input_gradient or self.embedding is not None
        final_states = self._cache
        d_summary = self.head.backward(d_output)
        if self.readout == "every":
            d_inputs, _ = self.rnn.backward(d_summary, input_gradient=layer_input_gradient)
        else:
            # the head saw only the final hidden state: the gradient enters there
            d_states = [np.zeros_like(s) for s in _as_tuple(final_states)]
            d_hidden = d_states[self._output_index()]
            directions, hidden = self.rnn.num_directions, self.rnn.hidden_size
            d_hidden[-directions:] = d_summary.reshape(-1, directions, hidden).transpose(1, 0, 2)
            d_state = tuple(d_states) if len(d_states) > 1 else d_states[0]
            d_inputs, _ = self.rnn.backward(None, d_state, input_gradient=layer_input_gradient)
        if self.embedding is not None:
            d_inputs = self.embedding.backward(d_inputs)
        self.grads = {f"{part}.{name}": grad for part, module in self._parts()
                      for name, grad in module.grads.items()}
        return d_inputs

    def _output_index(self):
        kernels = self.rnn.kernels
        return kernels.STATES.index(kernels.OUTPUT)

    def _final_hidden(self, final_states):
        hidden = _as_tuple(final_states)[self._output_index()]    # [L·D, B, d]
        top = hidden[-self.rnn.num_directions:]                    # the last layer's directions
        return np.ascontiguousarray(top.transpose(1, 0, 2).reshape(top.shape[1], -1))

    def __repr__(self):
        source = (f"vocab_size={self.vocab_size}, embedding_dim={self.embedding.embedding_dim}"
                  if self.embedding is not None else f"input_size={self.input_size}")
        extra = f", num_layers={self.rnn.num_layers}" if self.rnn.num_layers != 1 else ""
        extra += ", bidirectional=True" if self.rnn.bidirectional else ""
        return (f"{type(self).__name__}(cell={self.rnn.cell.name!r}, {source}, hidden_size={self.hidden_size}, "
                f"output_size={self.output_size}{extra}, readout={self.readout!r}, dtype={self.dtype})")


def child_generators(seed, count):
    """Independent generators (for a model's parts, an experiment's stages) from one seed (int, None, SeedSequence or Generator)."""
    if isinstance(seed, np.random.Generator):
        return seed.spawn(count)
    if not isinstance(seed, np.random.SeedSequence):
        seed = np.random.SeedSequence(seed)
    return [np.random.default_rng(child) for child in seed.spawn(count)]


def _as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


class SequenceRegressor(SequenceModel):
    """Features [B, T, input_size] → one real vector per sequence [B, output_size].

    The adding problem and time-series forecasting; pair it with :class:`~lstmkit.nn.MSELoss`.
    """

    def __init__(self, cell, input_size, hidden_size, output_size=1, **options):
        super().__init__(cell, hidden_size, output_size, input_size=input_size, readout="last", **options)


class SequenceClassifier(SequenceModel):
    """Token ids [B, T] → class logits per sequence [B, num_classes].

    The long-gap language task; pair it with :class:`~lstmkit.nn.SoftmaxCrossEntropy`.
    """

    def __init__(self, cell, vocab_size, hidden_size, num_classes, embedding_dim=None, **options):
        super().__init__(cell, hidden_size, num_classes, vocab_size=vocab_size,
                         embedding_dim=embedding_dim, readout="last", **options)


class SequenceTagger(SequenceModel):
    """Token ids [B, T] → class logits at every step [B, T, num_classes] (copy memory)."""

    def __init__(self, cell, vocab_size, hidden_size, num_classes, embedding_dim=None, **options):
        super().__init__(cell, hidden_size, num_classes, vocab_size=vocab_size,
                         embedding_dim=embedding_dim, readout="every", **options)


class CharLanguageModel(SequenceModel):
    """Characters [B, T] → logits of the next character at every step [B, T, vocab_size]."""

    def __init__(self, cell, vocab_size, hidden_size, embedding_dim=None, **options):
        super().__init__(cell, hidden_size, vocab_size, vocab_size=vocab_size,
                         embedding_dim=embedding_dim, readout="every", **options)

    def sample(self, prompt, length, temperature=1.0, seed=None):
        """Continue ``prompt`` (a 1-d array of token ids) by ``length`` sampled tokens.

        Each step draws from softmax(logits / temperature); a low temperature
        approaches greedy decoding. Returns the new token ids (without the prompt).
        """
        prompt = np.asarray(prompt)
        if prompt.ndim != 1 or prompt.size == 0 or prompt.dtype.kind not in "iu":
            raise ValueError(f"prompt: expected a non-empty 1-d array of token ids, got {prompt!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        rng = np.random.default_rng(seed)
        with self._pending_backward_left_alone():
            features = self.embedding(prompt[None, :].astype(np.int64))
            outputs, state = self.rnn.forward(features, inference=True)
            logits = self.head(outputs[:, -1])[0]
            generated = np.empty(length, np.int64)
            for k in range(length):
                scaled = logits.astype(np.float64) / temperature
                probabilities = np.exp(scaled - scaled.max())
                probabilities /= probabilities.sum()
                generated[k] = rng.choice(self.vocab_size, p=probabilities)
                outputs, state = self.rnn.forward(self.embedding(generated[None, k:k + 1]), state,
                                                  inference=True)
                logits = self.head(outputs[:, -1])[0]
        return generated
