"""Finite-difference checks of the generated backward passes.

The loss is a fixed random projection of everything a layer returns,
``L = Σ y ⊙ R_y + Σ_s state_s ⊙ R_s``, so its gradient with respect to the
outputs is simply ``(R_y, R_s)``: that is what ``backward`` receives, and
central differences of ``L`` are what it is compared against.
"""
from __future__ import annotations

import numpy as np

__all__ = ["relative_error", "layer_gradcheck", "numerical_gradient"]


def relative_error(analytic, numeric):
    """max |a − n| / max(|a|, |n|) over one tensor (0 when both are 0)."""
    analytic, numeric = np.asarray(analytic), np.asarray(numeric)
    scale = max(np.abs(analytic).max(initial=0.0), np.abs(numeric).max(initial=0.0))
    return 0.0 if scale == 0.0 else float(np.abs(analytic - numeric).max() / scale)


def numerical_gradient(loss, array, eps=1e-6):
    """Central differences of ``loss()`` with respect to every entry of ``array`` (in place)."""
    grad = np.zeros_like(array)
    flat, grad_flat = array.reshape(-1), grad.reshape(-1)
    for index in range(flat.size):
        original = flat[index]
        flat[index] = original + eps
        plus = loss()
        flat[index] = original - eps
        minus = loss()
        flat[index] = original
        grad_flat[index] = (plus - minus) / (2 * eps)
    return grad


def _as_list(state):
    return list(state) if isinstance(state, tuple) else [state]


def layer_gradcheck(layer, x, state=None, lengths=None, eps=1e-6, seed=0):
    """Compare ``layer.backward`` with central differences, for every parameter,
    the input and the initial state(s). Needs a float64 layer.

    Returns ``{name: relative error}`` with names ``input``, ``state_<s>`` and
    the parameter names.
    """
    if layer.dtype != np.float64:
        raise TypeError("gradient checks need a float64 layer (finite differences in float32 are noise)")
    rng = np.random.default_rng(seed)
    x = np.array(x, dtype=np.float64)
    y, final = layer(x, state, lengths)
    projection_y = rng.standard_normal(y.shape)
    projection_states = [rng.standard_normal(s.shape) for s in _as_list(final)]
    if state is None:
        state = tuple(np.zeros_like(s) for s in _as_list(final))
    states = [np.array(s, dtype=np.float64) for s in _as_list(state)]
    packed = lambda: tuple(states) if len(states) > 1 else states[0]  # noqa: E731

    def loss():
        out, fin = layer.forward(x, packed(), lengths, inference=True)
        return float(np.sum(out * projection_y)
                     + sum(np.sum(f * p) for f, p in zip(_as_list(fin), projection_states)))

    d_state = tuple(projection_states) if len(projection_states) > 1 else projection_states[0]
    dx, d_initial = layer.backward(projection_y, d_state)
    analytic = {name: g.copy() for name, g in layer.grads.items()}
    errors = {"input": relative_error(dx, numerical_gradient(loss, x, eps))}
    for name, s, d in zip(layer.kernels.STATES, states, _as_list(d_initial)):
        errors[f"state_{name}"] = relative_error(d, numerical_gradient(loss, s, eps))
    for name, value in layer.params.items():
        errors[name] = relative_error(analytic[name], numerical_gradient(loss, value, eps))
    return errors
