"""One comparison of a layer with ``torch.nn``, used by ``python -m lstmkit demo`` and the tests.

torch is the test oracle, never a dependency: it is imported when a comparison runs,
not when lstmkit is imported.
"""
from __future__ import annotations

import numpy as np

__all__ = ["TORCH_CELLS", "max_relative_difference", "torch_agreement"]

# lstmkit cell → (torch.nn class name, its extra constructor arguments)
TORCH_CELLS = {"lstm": ("LSTM", {}), "gru": ("GRU", {}), "rnn_tanh": ("RNN", {"nonlinearity": "tanh"}),
               "rnn_relu": ("RNN", {"nonlinearity": "relu"})}


def max_relative_difference(actual, expected):
    """max |a − e| / max |e|: one number per tensor, robust to entries near zero."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise ValueError(f"shapes differ: {actual.shape} and {expected.shape}")
    scale = np.abs(expected).max(initial=0.0)
    diff = np.abs(actual - expected).max(initial=0.0)
    return float(diff if scale == 0.0 else diff / scale)


def _as_list(state):
    return list(state) if isinstance(state, tuple) else [state]


def torch_agreement(layer, x, state=None, *, lengths=None, seed=0):
    """Run ``layer`` and the ``torch.nn`` module of its cell on the same parameters, input,
    initial state and random output gradients; return ``{what: max relative difference}``
    for the output, the final states, the input gradient, the initial-state gradients
    (when ``state`` is given) and every parameter gradient.

    The layer keeps its own parameters (torch's module receives a copy). Returns None
    for a cell torch does not have; raises ImportError without torch.
    """
    import torch

    if layer.kernels.CELL not in TORCH_CELLS:
        return None
    if lengths is not None:
        raise NotImplementedError("compare ragged batches through torch.nn.utils.rnn.pack_padded_sequence")
    class_name, options = TORCH_CELLS[layer.kernels.CELL]
    torch_dtype = torch.float64 if layer.dtype == np.float64 else torch.float32
    reference = getattr(torch.nn, class_name)(
        layer.input_size, layer.hidden_size, num_layers=layer.num_layers, bias=layer.bias,
        batch_first=layer.batch_first, bidirectional=layer.bidirectional, dtype=torch_dtype, **options,
        **({"proj_size": layer.proj_size} if getattr(layer, "proj_size", 0) else {}))  # GRU/RNN refuse the word
    reference.load_state_dict({name: torch.tensor(value) for name, value in layer.state_dict().items()})

    rng = np.random.default_rng(seed)
    y, final = layer(x, state)
    finals = _as_list(final)
    dy = rng.standard_normal(y.shape).astype(layer.dtype)
    d_finals = [rng.standard_normal(f.shape).astype(layer.dtype) for f in finals]
    dx, d_initial = layer.backward(dy, tuple(d_finals) if len(d_finals) > 1 else d_finals[0])

    x_t = torch.tensor(x, requires_grad=True)
    initial_t = None if state is None else [torch.tensor(s, requires_grad=True) for s in _as_list(state)]
    y_t, final_t = reference(x_t, None if state is None else
                             (tuple(initial_t) if len(initial_t) > 1 else initial_t[0]))
    finals_t = _as_list(final_t)
    loss = (y_t * torch.tensor(dy)).sum() + sum((f * torch.tensor(d)).sum() for f, d in zip(finals_t, d_finals))
    loss.backward()

    pairs = {"output": (y, y_t), "input gradient": (dx, x_t.grad)}
    pairs.update({f"final state {name}": (f, f_t)
                  for name, f, f_t in zip(layer.kernels.STATES, finals, finals_t)})
    if state is not None:
        pairs.update({f"initial state gradient {name}": (d, s.grad)
                      for name, d, s in zip(layer.kernels.STATES, _as_list(d_initial), initial_t)})
    if set(layer.grads) != {name for name, _ in reference.named_parameters()}:
        raise AssertionError(f"parameter names differ: {sorted(layer.grads)} and "
                             f"{sorted(name for name, _ in reference.named_parameters())}")
    pairs.update({f"gradient {name}": (layer.grads[name], p.grad) for name, p in reference.named_parameters()})
    return {what: max_relative_difference(ours, theirs.detach().numpy()) for what, (ours, theirs) in pairs.items()}
