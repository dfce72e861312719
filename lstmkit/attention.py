"""Soft attention over a recurrent layer's hidden states (chapter 13).

Xu et al. (2015, "Show, Attend and Tell") let an LSTM look, at every word it
writes, at a weighted average of all the image's regions, with weights it
computes itself: a score per region from a small network ``f_att`` of the
region and the LSTM's state, a softmax over the scores, and the average
under those weights (their deterministic "soft" attention, Bahdanau et al.
2015's additive form). Here the regions are the hidden states h_1 … h_T of
an LSTM that has read a sentence, and the state asking is the last one, h_T:

    e_t = vᵀ tanh(W_k h_t + W_q q + b)        one score per step
    α   = softmax(e_1 … e_T)                   weights, Σ_t α_t = 1
    c   = Σ_t α_t h_t                          the context vector

:class:`AdditiveAttention` is that layer, forward and backward side by side
like :mod:`lstmkit.nn`'s layers; :class:`AttentionClassifier` puts it
between an LSTM and a linear head: token ids → Embedding → recurrent layer
→ attention with query h_T → Linear on c. The head sees only what attention
retrieves, so the gradient reaches the step that matters in one hop instead
of through every step in between.
"""
from __future__ import annotations

import contextlib

import numpy as np

from .models import child_generators, make_recurrent_layer
from .module import Module, check_float_array, check_float_dtype, check_sizes
from .nn import Embedding, Linear, lengths_to_mask

__all__ = ["AdditiveAttention", "AttentionClassifier"]


class AdditiveAttention(Module):
    """Additive soft attention: ``forward(values [B, T, d], query [B, q], mask=None)``
    returns the context ``c`` [B, d] and the weights ``α`` [B, T].

    Parameters (``params``): ``weight_key`` W_k [a, d], ``weight_query`` W_q
    [a, q], ``bias`` b [a] and ``score`` v [a], where a = ``attention_size``.
    Initialised like :class:`~lstmkit.nn.Linear`: U(−1/√fan_in, 1/√fan_in).
    ``mask`` [B, T] (True where a step may be attended to) gives the other
    steps weight 0; every row needs at least one True.
    """

    def __init__(self, value_size, query_size, attention_size, *, dtype=np.float32, seed=None):
        self.value_size, self.query_size, self.attention_size = check_sizes(
            value_size=value_size, query_size=query_size, attention_size=attention_size)
        self.dtype = check_float_dtype(dtype)
        rng = np.random.default_rng(seed)

        def uniform(shape, fan_in):
            bound = 1.0 / np.sqrt(fan_in)
            return rng.uniform(-bound, bound, shape).astype(self.dtype)

        a, d, q = self.attention_size, self.value_size, self.query_size
        self.params = {"weight_key": uniform((a, d), d), "weight_query": uniform((a, q), q),
                       "bias": uniform(a, q), "score": uniform(a, a)}
        self.grads = {}
        self._cache = None

    # -- forward and backward, side by side -----------------------------------------------------
    def forward(self, values, query, mask=None):
        check_float_array(values, "attention values", self.dtype)
        check_float_array(query, "attention query", self.dtype)
        if values.ndim != 3 or values.shape[2] != self.value_size:
            raise ValueError(f"attention values: expected shape (B, T, {self.value_size}), got {values.shape}")
        batch, steps = values.shape[:2]
        if query.shape != (batch, self.query_size):
            raise ValueError(f"attention query: expected shape ({batch}, {self.query_size}), got {query.shape}")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != (batch, steps) or mask.dtype != bool:
                raise ValueError(f"attention mask: expected a boolean array of shape ({batch}, {steps}), "
                                 f"got {mask.dtype} {mask.shape}")
            if not mask.any(axis=1).all():
                raise ValueError("attention mask: every sequence needs at least one step to attend to")
        p = self.params
        hidden = np.tanh(values @ p["weight_key"].T + (query @ p["weight_query"].T + p["bias"])[:, None, :])
        scores = hidden @ p["score"]                                        # e_t         [B, T]
        if mask is not None:
            scores = np.where(mask, scores, -np.inf)
        weights = np.exp(scores - scores.max(axis=1, keepdims=True))       # softmax, stably
        weights /= weights.sum(axis=1, keepdims=True)                       # α_t         [B, T]
        context = np.einsum("bt,btd->bd", weights, values)                  # Σ_t α_t h_t [B, d]
        self._cache = (values, query, hidden, weights)
        return context, weights

    def backward(self, d_context):
        """∂L/∂c [B, d] → (∂L/∂values [B, T, d], ∂L/∂query [B, q]); fills ``grads``."""
        if self._cache is None:
            raise RuntimeError("call forward before backward")
        values, query, hidden, weights = self._cache
        check_float_array(d_context, "attention d_context", self.dtype)
        if d_context.shape != (values.shape[0], self.value_size):
            raise ValueError(f"attention d_context: expected shape {(values.shape[0], self.value_size)}, "
                             f"got {d_context.shape}")
        p = self.params
        # c = Σ_t α_t h_t: each h_t receives α_t ∂L/∂c, each α_t receives h_t · ∂L/∂c
        d_values = weights[:, :, None] * d_context[:, None, :]
        d_weights = np.einsum("btd,bd->bt", values, d_context)
        # softmax: ∂L/∂e_t = α_t (∂L/∂α_t − Σ_s α_s ∂L/∂α_s); masked steps have α = 0 and get 0
        d_scores = weights * (d_weights - (weights * d_weights).sum(axis=1, keepdims=True))
        # e_t = v · u_t with u_t = tanh(z_t), z_t = W_k h_t + W_q q + b
        d_score = np.einsum("bt,bta->a", d_scores, hidden)
        d_z = d_scores[:, :, None] * p["score"] * (1.0 - hidden ** 2)       # [B, T, a]
        d_z_query = d_z.sum(axis=1)                                          # q and b are shared by all t
        self.grads = {"weight_key": np.einsum("bta,btd->ad", d_z, values),
                      "weight_query": d_z_query.T @ query,
                      "bias": d_z_query.sum(axis=0),
                      "score": d_score}
        d_values += d_z @ p["weight_key"]
        d_query = d_z_query @ p["weight_query"]
        return d_values, d_query

    def __repr__(self):
        return (f"AdditiveAttention(value_size={self.value_size}, query_size={self.query_size}, "
                f"attention_size={self.attention_size}, dtype={self.dtype})")


class AttentionClassifier(Module):
    """Token ids [B, T] → Embedding → recurrent layer → attention (query h_T) → Linear → logits [B, C].

    The same parts as :class:`~lstmkit.models.SequenceClassifier`, plus
    attention between the recurrent layer and the head: the head reads the
    context c = Σ_t α_t h_t instead of h_T. ``attention_size`` defaults to
    ``hidden_size``. Parameter names carry the part's prefix
    (``embedding.weight``, ``rnn.weight_ih_l0``, ``attention.score``,
    ``head.bias``). After ``forward``, ``attention_weights`` holds α [B, T].
    ``lengths`` (optional) mark padded steps: they are not attended to, and
    the query is each sequence's last real step.
    """

    def __init__(self, cell, vocab_size, hidden_size, num_classes, embedding_dim=None, *,
                 attention_size=None, dtype=np.float32, seed=None):
        embedding_rng, rnn_rng, attention_rng, head_rng = child_generators(seed, 4)
        embedding_dim = hidden_size if embedding_dim is None else embedding_dim
        attention_size = hidden_size if attention_size is None else attention_size
        self.embedding = Embedding(vocab_size, embedding_dim, dtype=dtype, seed=embedding_rng)
        self.rnn = make_recurrent_layer(cell, embedding_dim, hidden_size, dtype=dtype, seed=rnn_rng)
        self.attention = AdditiveAttention(hidden_size, hidden_size, attention_size, dtype=dtype,
                                           seed=attention_rng)
        self.head = Linear(hidden_size, num_classes, dtype=dtype, seed=head_rng)
        self.dtype, self.hidden_size = self.rnn.dtype, self.rnn.hidden_size
        self.vocab_size, self.num_classes = self.embedding.num_embeddings, self.head.out_features
        self.params = {f"{part}.{name}": value for part, module in self._parts()
                       for name, value in module.params.items()}
        self.grads = {}
        self.attention_weights = None
        self._last = None

    def _parts(self):
        return [("embedding", self.embedding), ("rnn", self.rnn), ("attention", self.attention),
                ("head", self.head)]

    def set_forget_bias(self, value=1.0):
        """Set the recurrent layer's forget-gate bias; see :meth:`RecurrentLayer.set_forget_bias`."""
        self.rnn.set_forget_bias(value)
        return self

    # -- forward and backward, side by side ---------------------------------------------------
    def forward(self, inputs, lengths=None, *, inference=False):
        if not isinstance(inputs, np.ndarray) or inputs.ndim != 2:
            raise ValueError(f"inputs: expected token ids of shape (B, T), got "
                             f"{getattr(inputs, 'shape', type(inputs).__name__)}")
        batch, steps = inputs.shape
        outputs, _ = self.rnn.forward(self.embedding(inputs), None, lengths, inference=inference)  # h_1 … h_T
        last = np.full(batch, steps - 1) if lengths is None else np.asarray(lengths) - 1
        mask = None if lengths is None else lengths_to_mask(lengths, steps)
        query = np.ascontiguousarray(outputs[np.arange(batch), last])                          # h_T
        context, self.attention_weights = self.attention(outputs, query, mask)
        self._last = last
        return self.head(context)

    def backward(self, d_logits):
        if self._last is None:
            raise RuntimeError("call forward before backward")
        d_context = self.head.backward(d_logits)
        d_outputs, d_query = self.attention.backward(d_context)
        d_outputs[np.arange(len(self._last)), self._last] += d_query    # h_T was also the query
        d_features, _ = self.rnn.backward(d_outputs)
        self.embedding.backward(d_features)
        self.grads = {f"{part}.{name}": grad for part, module in self._parts()
                      for name, grad in module.grads.items()}
        return None

    def predict(self, inputs, lengths=None):
        """``forward`` for evaluation, leaving what the last ``forward`` kept for backward alone."""
        with self._pending_backward_left_alone():
            return self.forward(inputs, lengths, inference=True)

    @contextlib.contextmanager
    def _pending_backward_left_alone(self):
        saved = (self.embedding._tokens, self.rnn._tape, self.attention._cache, self.head._x, self._last)
        try:
            yield
        finally:
            (self.embedding._tokens, self.rnn._tape, self.attention._cache, self.head._x,
             self._last) = saved

    def __repr__(self):
        return (f"AttentionClassifier(cell={self.rnn.cell.name!r}, vocab_size={self.vocab_size}, "
                f"embedding_dim={self.embedding.embedding_dim}, hidden_size={self.hidden_size}, "
                f"attention_size={self.attention.attention_size}, num_classes={self.num_classes}, "
                f"dtype={self.dtype})")
