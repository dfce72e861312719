"""The schedulers give torch.optim.lr_scheduler's learning-rate sequences, bit for bit."""
import math

import numpy as np
import pytest
import torch

from lstmkit import lr_scheduler, optim


def _pair(lr=0.1):
    ours = optim.SGD({"w": np.zeros(3)}, lr=lr)
    theirs = torch.optim.SGD([torch.zeros(3, requires_grad=True)], lr=lr)
    return ours, theirs


def _sequence(scheduler, optimizer, steps, metrics=None):
    rates = [scheduler.get_last_lr()[0]]
    for k in range(steps):
        optimizer.step(*([] if isinstance(optimizer, torch.optim.Optimizer) else [{"w": np.zeros(3)}]))
        scheduler.step(*([] if metrics is None else [metrics[k]]))
        rates.append(float(scheduler.get_last_lr()[0]))
    return rates


CASES = {
    "StepLR": (lambda o: lr_scheduler.StepLR(o, step_size=3, gamma=0.7),
               lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.7)),
    "ExponentialLR": (lambda o: lr_scheduler.ExponentialLR(o, gamma=0.93),
                      lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.93)),
    "CosineAnnealingLR": (lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=7, eta_min=0.003),
                          lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=7, eta_min=0.003)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_schedule_equals_torch_bit_for_bit(name):
    make_ours, make_theirs = CASES[name]
    ours, theirs = _pair(0.1)
    expected = _sequence(make_theirs(theirs), theirs, 40)      # 40 steps: past T_max twice over
    got = _sequence(make_ours(ours), ours, 40)
    assert got == expected
    assert ours.lr == got[-1]                                   # the optimizer uses the rate it reports


def test_reduce_on_plateau_equals_torch():
    metrics = [1.0, 0.9, 0.9, 0.95, 0.91, 0.92, 0.93, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
    for options in ({"patience": 2, "factor": 0.5}, {"patience": 1, "cooldown": 2, "min_lr": 0.02},
                    {"mode": "max", "patience": 0, "threshold_mode": "abs", "threshold": 0.05}):
        ours, theirs = _pair(0.1)
        expected = _sequence(torch.optim.lr_scheduler.ReduceLROnPlateau(theirs, **options), theirs,
                             len(metrics), metrics)
        got = _sequence(lr_scheduler.ReduceLROnPlateau(ours, **options), ours, len(metrics), metrics)
        assert got == expected, options
        assert len(set(got)) > 1, "the case must actually reduce the rate"


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_dict_round_trip_continues_the_same_sequence(name):
    make_ours, _ = CASES[name]
    first, second = _pair(0.1)[0], _pair(0.1)[0]
    scheduler = make_ours(first)
    _sequence(scheduler, first, 9)
    state, lr = scheduler.state_dict(), first.lr
    resumed = make_ours(second)
    resumed.load_state_dict(state)
    second.lr = lr
    assert _sequence(resumed, second, 12) == _sequence(scheduler, first, 12)


def test_plateau_state_round_trip_keeps_best_and_counters():
    optimizer = _pair(0.1)[0]
    scheduler = lr_scheduler.ReduceLROnPlateau(optimizer, patience=3)
    assert math.isinf(scheduler.state_dict()["best"])
    for value in (1.0, 0.8, 0.9, 0.95):
        scheduler.step(value)
    other = lr_scheduler.ReduceLROnPlateau(_pair(0.1)[0], patience=3)
    other.load_state_dict(scheduler.state_dict())
    assert (other.best, other.num_bad_epochs, other.last_epoch) == (0.8, 2, 4)


@pytest.mark.parametrize("make, message", [
    (lambda o: lr_scheduler.StepLR(o, step_size=0), "step_size"),
    (lambda o: lr_scheduler.StepLR(o, step_size=2.5), "step_size"),
    (lambda o: lr_scheduler.StepLR(o, step_size=2, gamma=float("nan")), "gamma"),
    (lambda o: lr_scheduler.ExponentialLR(o, gamma=-1.0), "gamma"),
    (lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=0), "T_max"),
    (lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=5, eta_min=float("inf")), "eta_min"),
    (lambda o: lr_scheduler.ReduceLROnPlateau(o, factor=1.0), "factor"),
    (lambda o: lr_scheduler.ReduceLROnPlateau(o, mode="lowest"), "mode"),
    (lambda o: lr_scheduler.ReduceLROnPlateau(o, patience=-1), "patience"),
    (lambda o: lr_scheduler.StepLR({"lr": 0.1}, step_size=2), "optimizer"),
])
def test_bad_settings_are_refused_and_leave_the_rate_alone(make, message):
    optimizer = _pair(0.1)[0]
    with pytest.raises((ValueError, TypeError), match=message):
        make(optimizer)
    assert optimizer.lr == 0.1


def test_bad_state_is_refused_before_anything_changes():
    optimizer = _pair(0.1)[0]
    scheduler = lr_scheduler.StepLR(optimizer, step_size=3)
    _sequence(scheduler, optimizer, 4)
    before = scheduler.state_dict()
    for change in ({"gamma": np.array(0.5)}, {"last_epoch": np.array(-2.0)},
                   {"step_count": np.array(np.nan)}, {"step_size": np.array(7.0)}):
        state = {**before, **change}
        with pytest.raises(ValueError):
            scheduler.load_state_dict(state)
        assert all(np.array_equal(scheduler.state_dict()[k], before[k]) for k in before)
    with pytest.raises(KeyError, match="entries"):
        scheduler.load_state_dict({k: v for k, v in before.items() if k != "gamma"})
    plateau = lr_scheduler.ReduceLROnPlateau(optimizer)
    with pytest.raises(ValueError, match="metrics"):
        plateau.step(float("nan"))
