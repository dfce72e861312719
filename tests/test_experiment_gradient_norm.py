"""Vanishing gradients at initialization, measured: ‖∂h_T/∂x_t‖ against the lag T − t (hidden 32)."""
import numpy as np
import pytest
import torch

from conftest import numpy_state
import lstmkit
from lstmkit.experiments import gradient_norm_by_lag

HIDDEN, INPUT, LAG = 32, 8, 50


def test_the_identity_trick_gives_the_true_jacobian_norms():
    """Check gradient_norm_by_lag against torch's autograd Jacobian of h_T."""
    torch.manual_seed(0)
    reference = torch.nn.LSTM(3, 4, dtype=torch.float64)
    layer = lstmkit.LSTM(3, 4, dtype=np.float64)
    layer.load_state_dict(numpy_state(reference))
    norms = gradient_norm_by_lag(layer, 6, samples=2, seed=5)
    sequences = np.random.default_rng(5).standard_normal((6, 2, 3))
    expected = []
    for s in range(2):
        x = torch.from_numpy(sequences[:, s])                             # [T, n], unbatched
        jacobian = torch.autograd.functional.jacobian(lambda x: reference(x)[1][0][0], x)  # [d, T, n]
        expected.append(jacobian.pow(2).sum(dim=(0, 2)).sqrt().numpy()[::-1])
    np.testing.assert_allclose(norms, np.mean(expected, axis=0), rtol=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tanh_rnn_gradient_vanishes_by_lag_50(seed):
    rnn = lstmkit.RNN(INPUT, HIDDEN, dtype=np.float64, seed=seed)
    norms = gradient_norm_by_lag(rnn, LAG + 1, seed=seed)
    assert norms[LAG] < 1e-6 * norms[0], norms[[0, 10, 25, LAG]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forget_bias_one_keeps_the_lstm_gradient_alive(seed):
    open_gate = lstmkit.LSTM(INPUT, HIDDEN, dtype=np.float64, seed=seed).set_forget_bias(1.0)
    half_open = lstmkit.LSTM(INPUT, HIDDEN, dtype=np.float64, seed=seed).set_forget_bias(0.0)
    norms_open = gradient_norm_by_lag(open_gate, LAG + 1, seed=seed)
    norms_half = gradient_norm_by_lag(half_open, LAG + 1, seed=seed)
    assert norms_open[LAG] >= 1e3 * norms_half[LAG], (norms_open[LAG], norms_half[LAG])
    assert np.all(np.diff(np.log(norms_half[5:])) < 0.05)                 # decays steadily


def test_bad_layers_are_refused():
    with pytest.raises(ValueError, match="unidirectional"):
        gradient_norm_by_lag(lstmkit.LSTM(2, 3, bidirectional=True), 4)
    with pytest.raises(TypeError, match="RecurrentLayer"):
        gradient_norm_by_lag("lstm", 4)
