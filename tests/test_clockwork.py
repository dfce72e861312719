"""The Clockwork RNN (Koutník et al. 2014): the step number and a structural weight mask.

Against a NumPy reference written from the paper (tests/references.py), with a dense
recurrent matrix loaded so that the block-triangular structure must come from the layer;
the mask held through training; gradients, lengths, and a sequence fed in pieces.
"""
import numpy as np
import pytest

import lstmkit
from lstmkit.gradcheck import layer_gradcheck
from references import clockwork_rnn

PERIODS = (1, 2, 4)


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_forward_agrees_with_the_reference_from_the_paper(dtype, tolerance):
    rng = np.random.default_rng(0)
    layer = lstmkit.ClockworkRNN(3, 6, periods=PERIODS, dtype=dtype, seed=0)
    dense = {name: rng.uniform(-0.5, 0.5, value.shape) for name, value in layer.params.items()}
    layer.load_state_dict(dense)          # W_hh dense: the mask must act in forward
    x = rng.standard_normal((11, 2, 3)).astype(dtype)
    h0 = rng.standard_normal((1, 2, 6)).astype(dtype)
    y, h_final = layer(x, h0)
    params64 = {name: value.astype(np.float64) for name, value in layer.params.items()}
    y_ref, h_ref = clockwork_rnn(x.astype(np.float64), params64, h0[0].astype(np.float64), PERIODS)
    assert np.abs(y - y_ref).max() < tolerance
    assert np.abs(h_final[0] - h_ref).max() < tolerance
    # the slowest module (period 4) keeps its initial value for steps 1-3 and moves at step 4
    np.testing.assert_array_equal(y[:3, :, 4:], np.broadcast_to(h0[0, :, 4:], (3, 2, 2)))
    assert np.all(y[3, :, 4:] != h0[0, :, 4:])


def test_the_mask_holds_through_training():
    rng = np.random.default_rng(1)
    layer = lstmkit.ClockworkRNN(2, 8, periods=(1, 2, 4, 8), num_layers=2, bidirectional=True, seed=1)
    mask = layer.weight_masks["weight_hh_l1_reverse"]
    assert mask.shape == (8, 8) and np.array_equal(mask, np.kron(np.triu(np.ones((4, 4))), np.ones((2, 2))))
    optimizer = lstmkit.optim.Adam(layer.params, lr=0.1)
    for _ in range(3):
        y, _ = layer(rng.standard_normal((9, 3, 2)).astype(np.float32))
        layer.backward(np.ones_like(y))
        for name, mask in layer.weight_masks.items():
            assert np.all(layer.grads[name][mask == 0] == 0), name
        optimizer.step(layer.grads)
    for name, mask in layer.weight_masks.items():
        assert np.all(layer.params[name][mask == 0] == 0) and np.any(layer.params[name][mask == 1] != 0)


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(2)
    layer = lstmkit.ClockworkRNN(3, 6, periods=PERIODS, num_layers=2, bidirectional=True, dtype=np.float64, seed=2)
    x = rng.standard_normal((9, 3, 3))
    errors = layer_gradcheck(layer, x, rng.standard_normal((4, 3, 6)), lengths=np.array([9, 4, 6]))
    assert max(errors.values()) < 1e-6, errors


def test_a_sequence_fed_in_pieces_runs_as_one():
    rng = np.random.default_rng(3)
    layer = lstmkit.ClockworkRNN(3, 6, periods=PERIODS, num_layers=2, dtype=np.float64, seed=3)
    x = rng.standard_normal((10, 2, 3))
    y, final = layer(x)
    state, pieces = None, []
    for start in range(0, 10, 3):
        piece, state = layer(x[start:start + 3], state, first_step=start)
        pieces.append(piece)
    np.testing.assert_allclose(np.concatenate(pieces), y, atol=1e-13)
    np.testing.assert_allclose(state, final, atol=1e-13)
    # and backward counts the steps from there too
    piece, _ = layer(x[3:], layer(x[:3])[1], first_step=3)
    dy = rng.standard_normal(piece.shape)
    layer.backward(dy)
    grads_offset = {k: v.copy() for k, v in layer.grads.items()}
    layer(x[3:], layer(x[:3])[1], first_step=0)
    layer.backward(dy)
    assert any(np.abs(grads_offset[k] - layer.grads[k]).max() > 1e-6 for k in grads_offset)
    errors = layer_gradcheck(layer, x[3:], None)
    assert max(errors.values()) < 1e-6


def test_lengths_match_each_sequence_alone():
    rng = np.random.default_rng(4)
    lengths = np.array([7, 2, 5])
    layer = lstmkit.ClockworkRNN(3, 6, periods=PERIODS, dtype=np.float64, seed=4)
    x = rng.standard_normal((7, 3, 3))
    dy = rng.standard_normal((7, 3, 6))
    y, final = layer(x, None, lengths)
    dx, _ = layer.backward(dy)
    grads = {k: v.copy() for k, v in layer.grads.items()}
    summed = {k: np.zeros_like(v) for k, v in grads.items()}
    for b, length in enumerate(lengths):
        y_b, final_b = layer(x[:length, b:b + 1])
        np.testing.assert_allclose(y[:length, b:b + 1], y_b, atol=1e-12)
        np.testing.assert_allclose(final[:, b:b + 1], final_b, atol=1e-12)
        dx_b, _ = layer.backward(np.ascontiguousarray(dy[:length, b:b + 1]))
        np.testing.assert_allclose(dx[:length, b:b + 1], dx_b, atol=1e-12)
        for name, grad in layer.grads.items():
            summed[name] += grad
    for name, grad in grads.items():
        np.testing.assert_allclose(grad, summed[name], atol=1e-12, err_msg=name)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="strictly ascending"):
        lstmkit.ClockworkRNN(3, 6, periods=(2, 1, 4))
    with pytest.raises(ValueError, match="modules of equal size"):
        lstmkit.ClockworkRNN(3, 7, periods=PERIODS)
    with pytest.raises(ValueError, match="first_step"):
        lstmkit.ClockworkRNN(3, 6, periods=PERIODS)(np.zeros((2, 1, 3), np.float32), first_step=-1)
    from lstmkit.cells import clockwork_spec
    with pytest.raises(ValueError, match=r"takes the per-unit constants \['period'\]"):
        lstmkit.RecurrentLayer(clockwork_spec(), 3, 6)


def test_a_checkpoint_of_other_periods_is_refused(tmp_path):
    from lstmkit.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    path = save_checkpoint(tmp_path / "cw.npz", lstmkit.ClockworkRNN(3, 6, periods=PERIODS, seed=0))
    other = lstmkit.ClockworkRNN(3, 6, periods=(1, 3, 9), seed=1)
    before = {name: value.copy() for name, value in other.params.items()}
    with pytest.raises(CheckpointError, match="different architecture.*constants"):
        load_checkpoint(path, other)
    for name, value in before.items():
        np.testing.assert_array_equal(other.params[name], value)
    same = lstmkit.ClockworkRNN(3, 6, periods=PERIODS, seed=1)
    load_checkpoint(path, same)
