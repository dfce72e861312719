"""The benchmark's plain NumPy LSTM and GRU compute what lstmkit computes."""
import sys
from pathlib import Path

import numpy as np
import pytest

import lstmkit
from conftest import max_relative_difference

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import numpy_reference  # noqa: E402


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_numpy_reference_matches_lstmkit(cell):
    rng = np.random.default_rng(6)
    steps, batch, n_in, hidden = 7, 3, 5, 4
    params = numpy_reference.init_params(cell, n_in, hidden, np.float64, rng)
    layer = {"lstm": lstmkit.LSTM, "gru": lstmkit.GRU}[cell](n_in, hidden, dtype=np.float64)
    layer.load_state_dict({f"{name}_l0": value for name, value in params.items()})
    x = rng.standard_normal((steps, batch, n_in))
    dy = rng.standard_normal((steps, batch, hidden))

    y_ref, cache = numpy_reference.FORWARD[cell](x, params)
    dx_ref, grads_ref = numpy_reference.BACKWARD[cell](dy, cache)
    y, _ = layer(x)
    dx, _ = layer.backward(dy)

    assert max_relative_difference(y, y_ref) < 1e-12
    assert max_relative_difference(dx, dx_ref) < 1e-12
    assert set(grads_ref) == {name[:-3] for name in layer.grads}
    for name, value in grads_ref.items():
        assert max_relative_difference(layer.grads[f"{name}_l0"], value) < 1e-12, name
