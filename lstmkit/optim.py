"""Optimizers and gradient clipping, with the update rules of ``torch.optim``.

An optimizer holds the model's ``params`` dict and updates its arrays in
place; ``step(grads)`` takes the gradients by the same names (a model's
``grads`` after ``backward``). Each rule below is written as torch's
documentation writes it, and the tests compare every one with torch on the
same gradients.

``state_dict()`` returns plain arrays (step count, hyperparameters, moment
buffers), so a checkpoint can store it without pickling.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "clip_grad_norm", "clip_grad_value", "global_norm"]


def global_norm(grads):
    """√(Σ over all arrays of Σ g²): the norm of every gradient taken as one vector."""
    return math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))


def clip_grad_norm(grads, max_norm):
    """Scale all gradients in place so their global norm is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``: the factor is
    ``min(1, max_norm / (norm + 1e-6))``. Returns the norm before clipping.
    Unlike torch (which by default scales by NaN), a NaN or infinite norm
    raises FloatingPointError: the step that produced it has diverged.
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be positive, got {max_norm}")
    total_norm = global_norm(grads)
    if not math.isfinite(total_norm):
        raise FloatingPointError(f"the gradient norm is {total_norm}; training has diverged")
    scale = max_norm / (total_norm + 1e-6)
    if scale < 1.0:
        for g in grads.values():
            g *= scale
    return total_norm


def clip_grad_value(grads, clip_value):
    """Clip every gradient element to [−clip_value, clip_value] in place, as
    ``torch.nn.utils.clip_grad_value_`` (min-char-rnn clips to ±5 this way)."""
    if not clip_value > 0:
        raise ValueError(f"clip_value must be positive, got {clip_value}")
    for g in grads.values():
        np.clip(g, -clip_value, clip_value, out=g)


def _number(name, value):
    """``value`` as a float; TypeError naming ``name`` for anything that is not a real number."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        if not (isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf"):
            raise TypeError(f"{name} must be a real number, got {value!r}")
    return float(value)


def _in_range(name, value, low, high=math.inf, *, low_open=False, high_open=True):
    """``value`` as a float in the interval; written so that NaN fails it (NaN compares false)."""
    value = _number(name, value)
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (above and below and math.isfinite(value)):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value}")
    return value


class Optimizer:
    """Common bookkeeping: the parameter dict, the step count, checked gradients.

    Subclasses list their hyperparameters in ``HYPERPARAMETERS`` and their
    per-parameter buffers in ``BUFFERS`` (those that can never be negative also
    in ``NON_NEGATIVE_BUFFERS``), check hyperparameters in ``_checked(**values)
    → values`` (used by the constructor and by ``load_state_dict``), and
    implement ``_update(name, param, grad)``.
    """

    HYPERPARAMETERS: tuple = ()
    BUFFERS: tuple = ()
    NON_NEGATIVE_BUFFERS: tuple = ()

    def __init__(self, params, **hyperparameters):
        if not isinstance(params, dict) or not params:
            raise TypeError("params: expected a non-empty dict name → array (a model's .params)")
        for name, value in params.items():
            if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
                raise TypeError(f"params[{name!r}]: expected a float NumPy array")
        for name, value in self._checked(**hyperparameters).items():
            setattr(self, name, value)
        self.params = params
        self.step_count = 0
        self.state = {buffer: {} for buffer in self.BUFFERS}

    @staticmethod
    def _checked(**values):
        return values

    def step(self, grads):
        """Apply one update. ``grads`` must hold a gradient for every parameter."""
        self._check_grads(grads)
        self.step_count += 1
        self._begin_step()
        for name, param in self.params.items():
            self._update(name, param, grads[name])

    def _begin_step(self):
        """Once per step, before the updates: what every parameter's update shares."""

    def _check_grads(self, grads):
        # every gradient is checked before any update, so a bad call leaves every parameter as it was
        if not isinstance(grads, Mapping):
            raise TypeError(f"grads: expected a dict name → array (a model's .grads), got {type(grads).__name__}")
        missing = [name for name in self.params if name not in grads]
        unexpected = [name for name in grads if name not in self.params]
        if missing or unexpected:
            raise KeyError(f"grads must have the keys of params: missing {missing}, unexpected {unexpected}")
        for name, param in self.params.items():
            grad = grads[name]
            if not isinstance(grad, np.ndarray) or grad.shape != param.shape:
                raise ValueError(f"grads[{name!r}]: expected an array of shape {param.shape}, "
                                 f"got {getattr(grad, 'shape', type(grad).__name__)}")
            if grad.dtype != param.dtype:
                raise TypeError(f"grads[{name!r}]: expected dtype {param.dtype} (the parameter's), "
                                f"got {grad.dtype}")
            if not np.all(np.isfinite(grad)):
                raise FloatingPointError(f"grads[{name!r}] contains NaN or inf")

    def _buffer(self, buffer, name, param, fill=0.0):
        state = self.state[buffer]
        if name not in state:
            state[name] = np.full_like(param, fill)
        return state[name]

    # -- saving and loading --------------------------------------------------------
    def state_dict(self):
        """Arrays only: ``step``, each hyperparameter, and ``<buffer>.<param name>``."""
        result = {"step": np.array(self.step_count, np.int64)}
        result.update({k: np.array(getattr(self, k), np.float64) for k in self.HYPERPARAMETERS})
        for buffer in self.BUFFERS:
            for name, value in self.state[buffer].items():
                result[f"{buffer}.{name}"] = value.copy()
        return result

    def load_state_dict(self, state_dict):
        """Restore from :meth:`state_dict`; everything is checked before anything changes.

        The step count must be a non-negative integer, the hyperparameters must
        pass the constructor's checks, and every buffer must be finite in the
        parameter's dtype (and non-negative where the rule only ever adds squares).
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"optimizer state: expected a dict of arrays, got {type(state_dict).__name__}")
        expected = {"step": ()}
        expected.update({k: np.shape(getattr(self, k)) for k in self.HYPERPARAMETERS})
        buffers = {}
        for key in state_dict:
            buffer, _, name = key.partition(".")
            if key in expected:
                continue
            if buffer not in self.BUFFERS or name not in self.params:
                raise KeyError(f"optimizer state: unexpected entry {key!r} for {type(self).__name__} "
                               f"over parameters {list(self.params)}")
            buffers[key] = (buffer, name)
        missing = [key for key in expected if key not in state_dict]
        if missing:
            raise KeyError(f"optimizer state: missing entries {missing} for {type(self).__name__}")
        for key, shape in expected.items():
            value = np.asarray(state_dict[key])
            if value.shape != shape or value.dtype.kind not in "fiu" or not np.all(np.isfinite(value)):
                raise ValueError(f"optimizer state {key!r}: expected a finite number of shape {shape}, "
                                 f"got {value.dtype} {value.shape}")
        step = float(np.asarray(state_dict["step"]))
        if not (step >= 0 and step == math.floor(step)):
            raise ValueError(f"optimizer state 'step': expected a non-negative integer, got {step}")
        try:
            hyperparameters = self._checked(**{
                key: (tuple(np.asarray(state_dict[key], np.float64).tolist()) if expected[key]
                      else float(np.asarray(state_dict[key], np.float64))) for key in self.HYPERPARAMETERS})
        except (TypeError, ValueError) as error:
            raise ValueError(f"optimizer state: {error}") from error
        staged = {}
        for key, (buffer, name) in buffers.items():
            value = np.asarray(state_dict[key])
            param = self.params[name]
            if value.shape != param.shape or value.dtype.kind != "f":
                raise ValueError(f"optimizer state {key!r}: expected a float array of shape "
                                 f"{param.shape}, got {value.dtype} {value.shape}")
            with np.errstate(over="ignore"):
                value = np.array(value, dtype=param.dtype)
            if not np.all(np.isfinite(value)):
                raise ValueError(f"optimizer state {key!r}: contains NaN or inf (in {param.dtype})")
            if buffer in self.NON_NEGATIVE_BUFFERS and np.any(value < 0):
                raise ValueError(f"optimizer state {key!r}: a sum of squares cannot be negative, "
                                 f"got minimum {value.min()}")
            staged[key] = value
        # all checked: now change things
        self.step_count = int(step)
        for key, value in hyperparameters.items():
            setattr(self, key, value)
        self.state = {buffer: {} for buffer in self.BUFFERS}
        for key, (buffer, name) in buffers.items():
            self.state[buffer][name] = staged[key]

    def __repr__(self):
        settings = ", ".join(f"{k}={getattr(self, k)}" for k in self.HYPERPARAMETERS)
        return f"{type(self).__name__}({settings})"


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, as ``torch.optim.SGD``::

        g ← g + weight_decay · p
        b ← g (first step),  b ← momentum · b + (1 − dampening) · g (later)
        g ← g + momentum · b (nesterov) or b
        p ← p − lr · g
    """

    HYPERPARAMETERS = ("lr", "momentum", "dampening", "weight_decay", "nesterov")
    BUFFERS = ("momentum_buffer",)

    def __init__(self, params, lr=1e-2, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                         nesterov=nesterov)

    @staticmethod
    def _checked(lr, momentum, dampening, weight_decay, nesterov):
        values = {"lr": _in_range("lr", lr, 0, low_open=True), "momentum": _in_range("momentum", momentum, 0),
                  "dampening": _in_range("dampening", dampening, -math.inf),
                  "weight_decay": _in_range("weight_decay", weight_decay, 0)}
        if nesterov not in (True, False, 0, 1):
            raise ValueError(f"nesterov must be True or False, got {nesterov!r}")
        if nesterov and (values["momentum"] <= 0 or values["dampening"] != 0):
            raise ValueError("Nesterov momentum needs momentum > 0 and dampening = 0")
        return {**values, "nesterov": float(bool(nesterov))}

    def _update(self, name, param, grad):
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        if self.momentum:
            buffers = self.state["momentum_buffer"]
            if name not in buffers:
                buffers[name] = np.array(grad, dtype=param.dtype, copy=True)
            else:
                buffers[name] *= self.momentum
                buffers[name] += (1.0 - self.dampening) * grad
            grad = grad + self.momentum * buffers[name] if self.nesterov else buffers[name]
        param -= self.lr * grad


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015), as ``torch.optim.Adam``::

        g ← g + weight_decay · p
        m ← β₁ m + (1 − β₁) g          v ← β₂ v + (1 − β₂) g²
        p ← p − lr / (1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + eps)
    """

    HYPERPARAMETERS = ("lr", "betas", "eps", "weight_decay")
    BUFFERS = ("exp_avg", "exp_avg_sq")
    NON_NEGATIVE_BUFFERS = ("exp_avg_sq",)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    @staticmethod
    def _checked(lr, betas, eps, weight_decay):
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        return {"lr": _in_range("lr", lr, 0, low_open=True),
                "betas": (_in_range("betas[0]", betas[0], 0, 1), _in_range("betas[1]", betas[1], 0, 1)),
                "eps": _in_range("eps", eps, 0), "weight_decay": _in_range("weight_decay", weight_decay, 0)}

    def _begin_step(self):
        # the bias corrections depend only on the step
        beta1, beta2 = self.betas
        self._step_size = self.lr / (1.0 - beta1 ** self.step_count)
        self._correction2_sqrt = math.sqrt(1.0 - beta2 ** self.step_count)

    def _update(self, name, param, grad):
        beta1, beta2 = self.betas
        if self.weight_decay:
            grad = self._decay(param, grad)
        exp_avg = self._buffer("exp_avg", name, param)
        exp_avg_sq = self._buffer("exp_avg_sq", name, param)
        exp_avg *= beta1
        exp_avg += (1.0 - beta1) * grad
        exp_avg_sq *= beta2
        exp_avg_sq += (1.0 - beta2) * (grad * grad)
        denominator = np.sqrt(exp_avg_sq)
        denominator /= self._correction2_sqrt
        denominator += self.eps
        param -= self._step_size * (exp_avg / denominator)

    def _decay(self, param, grad):
        return grad + self.weight_decay * param          # L2: the decay joins the gradient


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019), as ``torch.optim.AdamW``::

        p ← p · (1 − lr · weight_decay)        (before, and apart from, the gradient)
        then Adam's rule on the gradient alone
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def _decay(self, param, grad):
        param *= 1.0 - self.lr * self.weight_decay
        return grad


class RMSprop(Optimizer):
    """RMSprop (Hinton's lecture 6e), as ``torch.optim.RMSprop``::

        g ← g + weight_decay · p
        s ← α s + (1 − α) g²
        centered:  ḡ ← α ḡ + (1 − α) g,   r ← √(s − ḡ²) + eps;   else r ← √s + eps
        momentum:  b ← momentum · b + g / r,   p ← p − lr · b;     else p ← p − lr · g / r
    """

    HYPERPARAMETERS = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered")
    BUFFERS = ("square_avg", "grad_avg", "momentum_buffer")
    NON_NEGATIVE_BUFFERS = ("square_avg",)

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                         centered=centered)

    @staticmethod
    def _checked(lr, alpha, eps, weight_decay, momentum, centered):
        if centered not in (True, False, 0, 1):
            raise ValueError(f"centered must be True or False, got {centered!r}")
        return {"lr": _in_range("lr", lr, 0, low_open=True), "alpha": _in_range("alpha", alpha, 0),
                "eps": _in_range("eps", eps, 0), "weight_decay": _in_range("weight_decay", weight_decay, 0),
                "momentum": _in_range("momentum", momentum, 0), "centered": float(bool(centered))}

    def _update(self, name, param, grad):
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        square_avg = self._buffer("square_avg", name, param)
        square_avg *= self.alpha
        square_avg += (1.0 - self.alpha) * (grad * grad)
        if self.centered:
            grad_avg = self._buffer("grad_avg", name, param)
            grad_avg += (1.0 - self.alpha) * (grad - grad_avg)          # torch's lerp
            average = np.sqrt(square_avg - grad_avg * grad_avg)
        else:
            average = np.sqrt(square_avg)
        average += self.eps
        if self.momentum > 0:
            buffer = self._buffer("momentum_buffer", name, param)
            buffer *= self.momentum
            buffer += grad / average
            param -= self.lr * buffer
        else:
            param -= self.lr * (grad / average)


class Adagrad(Optimizer):
    """Adagrad (Duchi et al. 2011), as ``torch.optim.Adagrad`` and min-char-rnn::

        g ← g + weight_decay · p
        G ← G + g²
        p ← p − lr / (1 + (t − 1) · lr_decay) · g / (√G + eps)

    min-char-rnn writes the last line ``p −= lr · g / √(G + 1e-8)``; torch (and
    this class) add eps outside the root, which differs only where G ≈ 0.
    """

    HYPERPARAMETERS = ("lr", "lr_decay", "eps", "weight_decay", "initial_accumulator_value")
    BUFFERS = ("sum",)
    NON_NEGATIVE_BUFFERS = ("sum",)

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10):
        super().__init__(params, lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value)

    @staticmethod
    def _checked(lr, lr_decay, eps, weight_decay, initial_accumulator_value):
        return {"lr": _in_range("lr", lr, 0, low_open=True), "lr_decay": _in_range("lr_decay", lr_decay, 0),
                "eps": _in_range("eps", eps, 0), "weight_decay": _in_range("weight_decay", weight_decay, 0),
                "initial_accumulator_value": _in_range("initial_accumulator_value",
                                                       initial_accumulator_value, 0)}

    def _update(self, name, param, grad):
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        squared_sum = self._buffer("sum", name, param, self.initial_accumulator_value)
        squared_sum += grad * grad
        step_size = self.lr / (1.0 + (self.step_count - 1) * self.lr_decay)
        denominator = np.sqrt(squared_sum)
        denominator += self.eps
        param -= step_size * (grad / denominator)
