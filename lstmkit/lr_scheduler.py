"""Learning-rate schedulers with the sequences of ``torch.optim.lr_scheduler``.

A scheduler changes its optimizer's ``lr`` once per ``step()``: call
``optimizer.step(grads)`` first, then ``scheduler.step()`` (``ReduceLROnPlateau``
takes the monitored value: ``scheduler.step(valid_loss)``). ``get_last_lr()``
returns ``[lr]``, a list as torch's does (lstmkit's optimizers have one
parameter group).

Each rule is written the way torch 2.13 computes it, step by step from the
previous rate (the chainable form), not from a closed formula: the two round
differently, and the tests ask for torch's sequence to the last bit.

``state_dict()`` returns plain arrays, so a checkpoint stores it without
pickling; ``load_state_dict`` checks everything before it changes anything.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["LRScheduler", "StepLR", "ExponentialLR", "CosineAnnealingLR", "ReduceLROnPlateau"]


def _finite_number(name, value, *, positive=False, non_negative=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{name}: expected a positive number, got {value!r}")
    if non_negative and not value >= 0:
        raise ValueError(f"{name}: expected a number ≥ 0, got {value!r}")
    return float(value)


def _whole_number(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name}: expected an integer ≥ {minimum}, got {value!r}")
    return int(value)


def _check_optimizer(optimizer):
    if "lr" not in getattr(optimizer, "HYPERPARAMETERS", ()):
        raise TypeError(f"optimizer: expected an lstmkit.optim optimizer with an lr, "
                        f"got {type(optimizer).__name__}")


class LRScheduler:
    """Common bookkeeping: the optimizer, its starting rate, the count of steps.

    Subclasses list their settings in ``SETTINGS`` and compute the next rate
    in ``_next_lr(lr)`` from the current one.
    """

    SETTINGS: tuple = ()

    def __init__(self, optimizer):
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        self.base_lr = float(optimizer.lr)
        self.last_epoch = -1
        self._step_count = 0
        self._is_initial = True         # torch's constructor takes one step that changes nothing
        self.step()
        self._is_initial = False

    def step(self):
        """Advance one epoch (or step) and set the optimizer's ``lr``."""
        self._step_count += 1
        self.last_epoch += 1
        self.optimizer.lr = self._next_lr(float(self.optimizer.lr))

    def _next_lr(self, lr):
        raise NotImplementedError

    def get_last_lr(self):
        """``[lr]``: the rate the last ``step()`` set, as a one-element list like torch's."""
        return [float(self.optimizer.lr)]

    # -- saving and loading ----------------------------------------------------------
    STATE = ("base_lr", "last_epoch", "_step_count")

    def state_dict(self):
        """Arrays only: the settings (checked on load) and the counters."""
        names = self.SETTINGS + self.STATE
        return {name.lstrip("_"): np.array(getattr(self, name), np.float64) for name in names}

    def load_state_dict(self, state_dict):
        """Restore from :meth:`state_dict` of a scheduler with the same settings."""
        values = self._checked_state(state_dict)
        for name in self.STATE:                  # all checked: now change things
            setattr(self, name, values[name] if name in self.REAL_STATE else int(values[name]))

    REAL_STATE = ("base_lr", "best")

    def _checked_state(self, state_dict):
        names = self.SETTINGS + self.STATE
        expected = {name.lstrip("_") for name in names}
        if set(state_dict) != expected:
            raise KeyError(f"{type(self).__name__} state: expected the entries {sorted(expected)}, "
                           f"got {sorted(state_dict)}")
        values = {}
        for name in names:
            key = name.lstrip("_")
            value = np.asarray(state_dict[key])
            allowed_infinite = name == "best"          # ±inf until the first step
            if (value.shape != () or value.dtype.kind not in "fiu" or np.isnan(value)
                    or not (allowed_infinite or np.isfinite(value))):
                raise ValueError(f"{type(self).__name__} state {key!r}: expected one finite number, "
                                 f"got {value.dtype} {value.shape} {value!r}")
            values[name] = float(value)
            if name not in self.SETTINGS and name not in self.REAL_STATE and (
                    values[name] < 0 or values[name] != int(values[name])):
                raise ValueError(f"{type(self).__name__} state {key!r}: expected a whole number ≥ 0, "
                                 f"got {values[name]}")
        for name in self.SETTINGS:
            if values[name] != float(getattr(self, name)):
                raise ValueError(f"{type(self).__name__} state: saved with {name}={values[name]}, "
                                 f"this scheduler has {name}={getattr(self, name)}")
        if values["base_lr"] < 0:
            raise ValueError(f"{type(self).__name__} state 'base_lr': expected a rate ≥ 0, got {values['base_lr']}")
        return values

    def __repr__(self):
        settings = ", ".join(f"{name}={getattr(self, name)}" for name in self.SETTINGS)
        return f"{type(self).__name__}({settings})"


class StepLR(LRScheduler):
    """lr × gamma every ``step_size`` epochs."""

    SETTINGS = ("step_size", "gamma")

    def __init__(self, optimizer, step_size, gamma=0.1):
        self.step_size = _whole_number("step_size", step_size, 1)
        self.gamma = _finite_number("gamma", gamma, positive=True)
        super().__init__(optimizer)

    def _next_lr(self, lr):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return lr
        return lr * self.gamma


class ExponentialLR(LRScheduler):
    """lr × gamma every epoch."""

    SETTINGS = ("gamma",)

    def __init__(self, optimizer, gamma):
        self.gamma = _finite_number("gamma", gamma, positive=True)
        super().__init__(optimizer)

    def _next_lr(self, lr):
        return lr if self._is_initial else lr * self.gamma


class CosineAnnealingLR(LRScheduler):
    """From the starting rate down to ``eta_min`` along half a cosine over ``T_max`` epochs,
    then back up (SGDR without restarts): η_t = η_min + ½(η_0 − η_min)(1 + cos(π t / T_max))."""

    SETTINGS = ("T_max", "eta_min")

    def __init__(self, optimizer, T_max, eta_min=0.0):
        self.T_max = _whole_number("T_max", T_max, 1)
        self.eta_min = _finite_number("eta_min", eta_min, non_negative=True)
        super().__init__(optimizer)

    def _next_lr(self, lr):
        if self._is_initial:
            return lr
        t, period = self.last_epoch, self.T_max
        if (t - 1 - period) % (2 * period) == 0:
            return lr + (self.base_lr - self.eta_min) * (1 - math.cos(math.pi / period)) / 2
        return ((1 + math.cos(math.pi * t / period)) / (1 + math.cos(math.pi * (t - 1) / period))
                * (lr - self.eta_min) + self.eta_min)


class ReduceLROnPlateau(LRScheduler):
    """lr × factor once the monitored value has not improved for ``patience`` epochs.

    ``step(value)`` takes the value (a validation loss for ``mode="min"``).
    "Improved" means better than the best so far by ``threshold`` (relative or
    absolute); after a reduction, ``cooldown`` epochs pass before counting again.
    """

    SETTINGS = ("factor", "patience", "threshold", "cooldown", "min_lr", "eps", "maximize", "relative")
    STATE = ("base_lr", "last_epoch", "_step_count", "best", "num_bad_epochs", "cooldown_counter")

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8):
        _check_optimizer(optimizer)
        if mode not in ("min", "max"):
            raise ValueError(f"mode: expected 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode: expected 'rel' or 'abs', got {threshold_mode!r}")
        self.factor = _finite_number("factor", factor, positive=True)
        if not self.factor < 1:
            raise ValueError(f"factor: expected a number in (0, 1), got {factor!r}")
        self.patience = _whole_number("patience", patience, 0)
        self.threshold = _finite_number("threshold", threshold, non_negative=True)
        self.cooldown = _whole_number("cooldown", cooldown, 0)
        self.min_lr = _finite_number("min_lr", min_lr, non_negative=True)
        self.eps = _finite_number("eps", eps, non_negative=True)
        self.maximize = float(mode == "max")
        self.relative = float(threshold_mode == "rel")
        self.optimizer = optimizer
        self.base_lr = float(optimizer.lr)
        self.last_epoch = 0
        self._step_count = 1
        self.best = -math.inf if self.maximize else math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    @property
    def mode(self):
        return "max" if self.maximize else "min"

    def _is_better(self, value):
        if self.maximize:
            return value > (self.best * (1 + self.threshold) if self.relative else self.best + self.threshold)
        return value < (self.best * (1 - self.threshold) if self.relative else self.best - self.threshold)

    def step(self, metrics):
        """One epoch ended with the monitored value ``metrics``."""
        value = _finite_number("metrics", float(metrics) if np.ndim(metrics) == 0 else metrics)
        self.last_epoch += 1
        self._step_count += 1
        if self._is_better(value):
            self.best = value
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0               # bad epochs in cooldown do not count
        if self.num_bad_epochs > self.patience:
            old_lr = float(self.optimizer.lr)
            new_lr = max(old_lr * self.factor, self.min_lr)
            if old_lr - new_lr > self.eps:
                self.optimizer.lr = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

