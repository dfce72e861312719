"""Dropout between layers, as torch.nn.LSTM's ``dropout=p``: training mode only, masks from the
layer's seeded generator, kept for backward; evaluation mode is exactly ``dropout=0``."""
import numpy as np
import pytest
import torch

import lstmkit
from lstmkit.gradcheck import numerical_gradient


def _pair(p, **kwargs):
    options = dict(input_size=3, hidden_size=5, num_layers=3, dtype=np.float64, seed=0, **kwargs)
    return lstmkit.LSTM(dropout=p, **options), lstmkit.LSTM(dropout=0.0, **options)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_evaluation_mode_is_exactly_no_dropout(bidirectional):
    dropped, plain = _pair(0.4, bidirectional=bidirectional)
    assert dropped.eval() is dropped and not dropped.training
    x = np.random.default_rng(1).standard_normal((7, 2, 3))
    dy = np.random.default_rng(2).standard_normal((7, 2, 5 * (2 if bidirectional else 1)))
    for layer in (dropped, plain):
        layer(x)
        layer.backward(dy)
    y_dropped, _ = dropped(x)
    y_plain, _ = plain(x)
    np.testing.assert_array_equal(y_dropped, y_plain)
    for name in plain.grads:
        np.testing.assert_array_equal(dropped.grads[name], plain.grads[name])


def test_evaluation_mode_agrees_with_torch_in_evaluation_mode():
    theirs = torch.nn.LSTM(3, 5, num_layers=2, dropout=0.5).double().eval()
    ours = lstmkit.LSTM(3, 5, num_layers=2, dropout=0.5, dtype=np.float64).eval()
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((6, 2, 3))
    np.testing.assert_allclose(ours(x)[0], theirs(torch.tensor(x))[0].detach().numpy(), rtol=1e-12, atol=1e-14)


def test_training_mode_keeps_one_minus_p_and_scales_by_its_inverse():
    p = 0.3
    layer = lstmkit.LSTM(4, 64, num_layers=3, dropout=p, dtype=np.float64, seed=0)
    layer(np.ones((50, 8, 4)))
    masks = layer._tape.masks
    assert len(masks) == 2 and masks[0].shape == (50, 8, 64)            # between layers only
    values = np.concatenate([m.ravel() for m in masks])
    assert set(np.unique(values)) == {0.0, 1 / (1 - p)}
    kept, n = np.count_nonzero(values), values.size
    sigma = np.sqrt(n * p * (1 - p))
    assert abs(kept - n * (1 - p)) < 5 * sigma, (kept, n)
    again = lstmkit.LSTM(4, 64, num_layers=3, dropout=p, dtype=np.float64, seed=0)
    again(np.ones((50, 8, 4)))
    np.testing.assert_array_equal(again._tape.masks[0], masks[0])          # seeded
    layer(np.ones((50, 8, 4)))
    assert not np.array_equal(layer._tape.masks[0], masks[0])               # a new mask each call


def test_the_gradient_with_the_mask_fixed_passes_a_finite_difference_check():
    layer = lstmkit.LSTM(2, 3, num_layers=2, dropout=0.5, bidirectional=True, dtype=np.float64, seed=4)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 2, 2))
    projection = rng.standard_normal((4, 2, 6))

    def loss():
        layer._dropout_rng = np.random.default_rng(11)      # the same masks on every call
        y, _ = layer(x)
        return float((y * projection).sum())

    loss()
    dx, _ = layer.backward(projection)
    assert np.any(layer._tape.masks[0] == 0)
    analytic = {**{k: v.copy() for k, v in layer.grads.items()}, "x": dx}
    for name, array in {**layer.params, "x": x}.items():
        np.testing.assert_allclose(analytic[name], numerical_gradient(loss, array), rtol=1e-6, atol=1e-8,
                                   err_msg=name)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), "0.2", True])
def test_a_dropout_that_is_not_a_probability_is_refused(p):
    with pytest.raises(ValueError, match=r"dropout must be a probability in \[0, 1\]"):
        lstmkit.LSTM(3, 4, num_layers=2, dropout=p)


def test_one_layer_with_dropout_warns_as_torch_does():
    with pytest.warns(UserWarning, match="expects num_layers greater than 1"):
        lstmkit.GRU(3, 4, dropout=0.2)


def test_train_and_eval_reach_the_layer_inside_a_model_and_fit_evaluates_without_dropout():
    from lstmkit import tasks
    from lstmkit.models import SequenceRegressor
    from lstmkit.train import evaluate

    model = SequenceRegressor("lstm", 2, 4, seed=0)
    model.rnn = lstmkit.LSTM(2, 4, num_layers=2, dropout=0.5, batch_first=True, seed=0)
    model.params.update({f"rnn.{k}": v for k, v in model.rnn.params.items()})
    data = tasks.adding_problem_sampler(8)(16, np.random.default_rng(0))
    assert model.eval() is model and not model.rnn.training
    in_eval = evaluate(model, lstmkit.nn.MSELoss(), data)
    model.train()
    assert model.rnn.training
    assert evaluate(model, lstmkit.nn.MSELoss(), data) == in_eval          # dropout off while evaluating
    assert model.rnn.training                                                # and back on after
