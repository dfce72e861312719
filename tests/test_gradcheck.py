"""Finite-difference gradient checks of every built-in cell: every parameter, the input, the state."""
import numpy as np
import pytest

import lstmkit
from lstmkit.cells import BUILTIN_CELLS
from lstmkit.gradcheck import layer_gradcheck, relative_error


@pytest.mark.parametrize("name", sorted(BUILTIN_CELLS))
def test_builtin_cell_gradients_match_finite_differences(name, rng):
    n_in = 4 if getattr(lstmkit.load_kernels(name), "RAW_INPUT", False) else 3   # MUT1, MUT2 read x raw
    layer = lstmkit.RecurrentLayer(name, n_in, 4, num_layers=2, dtype=np.float64, seed=3)
    x = rng.standard_normal((5, 2, n_in))
    states = tuple(rng.standard_normal((2, 2, 4)) for _ in layer.kernels.STATES)
    errors = layer_gradcheck(layer, x, states if len(states) > 1 else states[0])
    checked = {"input"} | {f"state_{s}" for s in layer.kernels.STATES} | set(layer.params)
    assert set(errors) == checked
    assert max(errors.values()) < 1e-6, {k: v for k, v in errors.items() if v >= 1e-6}


@pytest.mark.parametrize("name", ["lstm", "gru", "peephole_lstm"])
def test_bidirectional_variable_length_gradients(name, rng):
    layer = lstmkit.RecurrentLayer(name, 2, 3, num_layers=2, bidirectional=True, batch_first=True,
                                   dtype=np.float64, seed=4)
    x = rng.standard_normal((3, 6, 2))
    errors = layer_gradcheck(layer, x, lengths=np.array([6, 2, 4]))
    assert max(errors.values()) < 1e-6, errors


def test_gradient_check_can_fail():
    """A wrong gradient is caught: the check is not vacuous."""
    class Broken(lstmkit.LSTM):
        def backward(self, d_output, d_state=None):
            dx, d_initial = super().backward(d_output, d_state)
            self.grads["weight_hh_l0"] = self.grads["weight_hh_l0"] * 1.001
            return dx, d_initial

    layer = Broken(2, 3, dtype=np.float64, seed=0)
    errors = layer_gradcheck(layer, np.random.default_rng(0).standard_normal((4, 2, 2)))
    assert errors["weight_hh_l0"] > 1e-4
    assert relative_error(np.ones(3), np.ones(3)) == 0.0


def test_gradient_check_needs_float64():
    with pytest.raises(TypeError, match="float64"):
        layer_gradcheck(lstmkit.LSTM(2, 3), np.zeros((2, 1, 2), np.float32))
