"""Building blocks around the recurrent layers: a per-step linear layer, an
embedding, and two losses.

Each block keeps its forward and its backward side by side (micrograd style)
and, like :class:`~lstmkit.layers.RecurrentLayer`, stores parameters in a
``params`` dict (torch's names and shapes) and fills a ``grads`` dict with
the same keys when ``backward`` runs. Losses return a float from
``forward`` and the gradient of that float from ``backward``.

Every block accepts any number of leading axes, so the same ``Linear`` is
applied to every time step of a ``[B, T, n]`` sequence at once.
"""
from __future__ import annotations

import numpy as np

from .module import FLOAT_DTYPES, Module, check_float_array, check_float_dtype, check_sizes

__all__ = ["Linear", "Embedding", "Loss", "MSELoss", "SoftmaxCrossEntropy", "lengths_to_mask"]


class Linear(Module):
    """``y = x Wᵀ + b`` on the last axis, as ``torch.nn.Linear``.

    Leading axes are kept, so on a sequence ``[B, T, in_features]`` it is the
    same dense layer applied at every time step. Parameters ``weight``
    [out, in] and ``bias`` [out], initialised as torch does: U(−1/√in, 1/√in).
    """

    def __init__(self, in_features, out_features, bias=True, *, dtype=np.float32, seed=None):
        self.in_features, self.out_features = check_sizes(in_features=in_features, out_features=out_features)
        self.dtype = check_float_dtype(dtype)
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.in_features)
        self.params = {"weight": rng.uniform(-bound, bound, (self.out_features, self.in_features)).astype(self.dtype)}
        if bias:
            self.params["bias"] = rng.uniform(-bound, bound, self.out_features).astype(self.dtype)
        self.grads = {}
        self._x = None

    def forward(self, x):
        check_float_array(x, "Linear input", self.dtype)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"Linear input: expected shape (..., {self.in_features}), got {x.shape}")
        # backward reads x (∂L/∂W = Σ dyᵀ x): a copy, unless it is read-only (a recurrent layer's
        # output), so that the caller changing x in place before backward cannot change the gradients
        self._x = x.copy() if x.flags.writeable else x
        y = x @ self.params["weight"].T
        if "bias" in self.params:
            y += self.params["bias"]
        return y

    def backward(self, d_y):
        """Gradient of the output → gradient of the input; fills ``grads``."""
        if self._x is None:
            raise RuntimeError("call forward before backward")
        x = self._x
        expected = x.shape[:-1] + (self.out_features,)
        check_float_array(d_y, "Linear d_output", self.dtype)
        if d_y.shape != expected:
            raise ValueError(f"Linear d_output: expected shape {expected}, got {d_y.shape}")
        d_y_flat = d_y.reshape(-1, self.out_features)
        x_flat = x.reshape(-1, self.in_features)
        self.grads = {"weight": d_y_flat.T @ x_flat}      # sum over all steps of dyᵀ x
        if "bias" in self.params:
            self.grads["bias"] = d_y_flat.sum(axis=0)
        return d_y @ self.params["weight"]

    def __repr__(self):
        return f"Linear({self.in_features}, {self.out_features}, bias={'bias' in self.params}, dtype={self.dtype})"


class Embedding(Module):
    """Token ids → rows of ``weight`` [num_embeddings, embedding_dim], as ``torch.nn.Embedding``.

    Initialised N(0, 1) as in torch. ``padding_idx`` (optional) is a row kept
    at zero that receives no gradient, for padded positions.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, *, dtype=np.float32, seed=None):
        self.num_embeddings, self.embedding_dim = check_sizes(num_embeddings=num_embeddings,
                                                              embedding_dim=embedding_dim)
        if padding_idx is not None:
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(f"padding_idx must lie in [0, {self.num_embeddings}), got {padding_idx}")
            padding_idx = int(padding_idx) % self.num_embeddings
        self.padding_idx = padding_idx
        self.dtype = check_float_dtype(dtype)
        weight = np.random.default_rng(seed).standard_normal((self.num_embeddings, self.embedding_dim))
        if padding_idx is not None:
            weight[padding_idx] = 0.0
        self.params = {"weight": weight.astype(self.dtype)}
        self.grads = {}
        self._tokens = None

    def forward(self, tokens):
        if not isinstance(tokens, np.ndarray) or tokens.dtype.kind not in "iu":
            got = tokens.dtype if isinstance(tokens, np.ndarray) else type(tokens).__name__
            raise TypeError(f"Embedding input: expected an integer array of token ids, got {got}")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.num_embeddings):
            raise ValueError(f"Embedding input: token ids must lie in [0, {self.num_embeddings}), "
                             f"got range [{tokens.min()}, {tokens.max()}]")
        self._tokens = tokens.copy()        # backward scatters into these rows: the caller's may change
        return self.params["weight"][tokens]

    def backward(self, d_y):
        """Scatter-add the output gradient into the rows that were looked up. Returns None:
        token ids have no gradient."""
        if self._tokens is None:
            raise RuntimeError("call forward before backward")
        expected = self._tokens.shape + (self.embedding_dim,)
        check_float_array(d_y, "Embedding d_output", self.dtype)
        if d_y.shape != expected:
            raise ValueError(f"Embedding d_output: expected shape {expected}, got {d_y.shape}")
        d_weight = np.zeros_like(self.params["weight"])
        np.add.at(d_weight, self._tokens.reshape(-1), d_y.reshape(-1, self.embedding_dim))
        if self.padding_idx is not None:
            d_weight[self.padding_idx] = 0.0
        self.grads = {"weight": d_weight}
        return None

    def __repr__(self):
        pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"Embedding({self.num_embeddings}, {self.embedding_dim}{pad}, dtype={self.dtype})"


def lengths_to_mask(lengths, steps):
    """[B] sequence lengths → [B, steps] boolean mask, True where a step lies inside its sequence."""
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or lengths.dtype.kind not in "iu":
        raise ValueError(f"lengths: expected a 1-d integer array, got shape {lengths.shape} dtype {lengths.dtype}")
    return np.arange(steps)[None, :] < lengths[:, None]


def _check_mask(mask, leading_shape, what):
    """A mask covers the leading axes of the values it selects; returns it as float weights."""
    mask = np.asarray(mask)
    if mask.shape != tuple(leading_shape[:mask.ndim]) or mask.ndim == 0:
        raise ValueError(f"{what} mask: expected shape {tuple(leading_shape)} or a leading part of it, "
                         f"got {mask.shape}")
    if mask.dtype.kind not in "biuf" or (mask.dtype.kind != "b" and np.any(mask < 0)):
        raise TypeError(f"{what} mask: expected booleans or non-negative weights, got dtype {mask.dtype}")
    return mask


class Loss:
    """What every loss shares: ``loss(prediction, target, mask=None)`` is ``forward``, which
    keeps what ``backward()`` needs in ``_cache``; ``count`` is how many elements or positions
    the last mean ran over."""

    def __init__(self):
        self._cache = None
        self.count = 0

    def __call__(self, prediction, target, mask=None):
        return self.forward(prediction, target, mask)


class MSELoss(Loss):
    """Mean squared error, as ``torch.nn.MSELoss()`` (mean over every element).

    ``forward(prediction, target, mask=None)``: with a mask (over the leading
    axes, e.g. [B, T] for [B, T, k] predictions) the mean runs over the
    selected elements only. ``backward()`` returns d loss / d prediction.
    """

    def forward(self, prediction, target, mask=None):
        if not isinstance(prediction, np.ndarray) or prediction.dtype not in FLOAT_DTYPES:
            raise TypeError("MSELoss prediction: expected a float32 or float64 NumPy array")
        target = np.asarray(target)
        if target.shape != prediction.shape:
            raise ValueError(f"MSELoss target: expected shape {prediction.shape} (the prediction's), got {target.shape}")
        difference = prediction - target.astype(prediction.dtype, copy=False)
        if mask is None:
            weights, count = None, difference.size
        else:
            weights = _check_mask(mask, prediction.shape, "MSELoss").astype(prediction.dtype)
            weights = weights.reshape(weights.shape + (1,) * (prediction.ndim - weights.ndim))
            count = float(np.broadcast_to(weights, prediction.shape).sum())
        if count == 0:
            raise ValueError("MSELoss: the mask selects no elements")
        squared = difference * difference if weights is None else difference * difference * weights
        self._cache = (difference, weights, count)
        self.count = count
        return float(squared.sum(dtype=np.float64) / count)

    def backward(self):
        if self._cache is None:
            raise RuntimeError("call forward before backward")
        difference, weights, count = self._cache
        d_prediction = difference * (2.0 / count)       # d/dp (p − t)² = 2 (p − t)
        return d_prediction if weights is None else d_prediction * weights


class SoftmaxCrossEntropy(Loss):
    """Softmax cross-entropy over classes on the last axis, for single labels or sequences.

    ``forward(logits, targets, mask=None)``: ``logits`` [..., C], integer
    ``targets`` [...]; the mean of −log softmax(logits)[target] over the
    positions the mask selects (all when omitted). Padded steps are masked
    out, as ``torch.nn.CrossEntropyLoss(ignore_index=...)`` does. A float mask
    weights each position. ``backward()`` returns d loss / d logits =
    (softmax − one_hot) · mask / Σ mask.
    """

    def forward(self, logits, targets, mask=None):
        if not isinstance(logits, np.ndarray) or logits.dtype not in FLOAT_DTYPES or logits.ndim < 1:
            raise TypeError("SoftmaxCrossEntropy logits: expected a float32 or float64 NumPy array [..., C]")
        targets = np.asarray(targets)
        classes = logits.shape[-1]
        if targets.shape != logits.shape[:-1]:
            raise ValueError(f"SoftmaxCrossEntropy targets: expected shape {logits.shape[:-1]} "
                             f"(the logits' without the class axis), got {targets.shape}")
        if targets.dtype.kind not in "iu":
            raise TypeError(f"SoftmaxCrossEntropy targets: expected integer class ids, got {targets.dtype}")
        weights = None
        if mask is not None:
            weights = _check_mask(mask, targets.shape, "SoftmaxCrossEntropy").astype(logits.dtype)
            weights = np.broadcast_to(weights.reshape(weights.shape + (1,) * (targets.ndim - weights.ndim)),
                                      targets.shape)
        selected = targets if weights is None else targets[weights > 0]
        if selected.size and (selected.min() < 0 or selected.max() >= classes):
            raise ValueError(f"SoftmaxCrossEntropy targets: class ids must lie in [0, {classes}), "
                             f"got range [{selected.min()}, {selected.max()}]")
        count = targets.size if weights is None else float(weights.sum())
        if count == 0:
            raise ValueError("SoftmaxCrossEntropy: the mask selects no positions")
        safe_targets = np.where(weights > 0, targets, 0) if weights is not None else targets
        # log softmax, shifted by the row maximum so exp never overflows
        shifted = logits - logits.max(axis=-1, keepdims=True)
        exp = np.exp(shifted)
        total = exp.sum(axis=-1, keepdims=True)
        log_probs_target = np.take_along_axis(shifted, safe_targets[..., None], axis=-1)[..., 0] \
            - np.log(total[..., 0])
        losses = -log_probs_target if weights is None else -log_probs_target * weights
        self._cache = (exp / total, safe_targets, weights, count)
        self.count = count
        return float(losses.sum(dtype=np.float64) / count)

    def backward(self):
        if self._cache is None:
            raise RuntimeError("call forward before backward")
        probabilities, targets, weights, count = self._cache
        d_logits = probabilities.copy()                          # softmax …
        np.put_along_axis(d_logits, targets[..., None],
                          np.take_along_axis(d_logits, targets[..., None], axis=-1) - 1.0, axis=-1)  # … − one_hot
        d_logits *= 1.0 / count
        return d_logits if weights is None else d_logits * weights[..., None]
