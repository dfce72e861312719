"""``backward(..., input_gradient=False)``: no gradient of the data, every other number unchanged.

torch computes no gradient for an input that does not require one; lstmkit's layers and
models skip dX = dG W_ih of the first layer when told so, and ``fit`` tells them.
"""
import numpy as np
import pytest

import lstmkit
from lstmkit import train
from lstmkit.models import SequenceClassifier, SequenceRegressor
from lstmkit.nn import MSELoss
from lstmkit.optim import SGD

LAYERS = {
    "lstm, 2 layers, bidirectional": lambda dtype: lstmkit.LSTM(4, 6, num_layers=2, bidirectional=True,
                                                                dtype=dtype, seed=1),
    "gru": lambda dtype: lstmkit.GRU(4, 6, dtype=dtype, seed=2),
    "staged GRU (reset before)": lambda dtype: lstmkit.GRU(4, 6, reset_after=False, num_layers=2,
                                                           dtype=dtype, seed=3),
    "projected LSTM": lambda dtype: lstmkit.LSTM(4, 6, proj_size=3, num_layers=2, dtype=dtype, seed=4),
    "peephole": lambda dtype: lstmkit.PeepholeLSTM(4, 6, dtype=dtype, seed=5),
}


def _backward(layer, x, lengths, **options):
    rng = np.random.default_rng(7)
    y, final = layer(x, lengths=lengths)
    finals = final if isinstance(final, tuple) else (final,)
    dy = rng.standard_normal(y.shape).astype(x.dtype)
    d_finals = tuple(rng.standard_normal(f.shape).astype(x.dtype) for f in finals)
    dx, d_initial = layer.backward(dy, d_finals if len(d_finals) > 1 else d_finals[0], **options)
    d_initial = d_initial if isinstance(d_initial, tuple) else (d_initial,)
    return dx, [*d_initial, *(layer.grads[name] for name in sorted(layer.grads))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_without_input_gradient_gives_every_other_number_bit_for_bit(name, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 5, 4)).astype(dtype)
    lengths = np.array([7, 3, 0, 5, 1])
    dx, full = _backward(LAYERS[name](dtype), x, lengths)
    skipped, without = _backward(LAYERS[name](dtype), x, lengths, input_gradient=False)
    assert dx.shape == x.shape and skipped is None
    assert len(full) == len(without)
    for a, b in zip(full, without):
        np.testing.assert_array_equal(a, b)


def test_an_unbatched_call_without_input_gradient():
    layer = lstmkit.LSTM(3, 4, seed=0)
    x = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
    y, _ = layer(x)
    dx, (dh, dc) = layer.backward(np.ones_like(y), input_gradient=False)
    assert dx is None and dh.shape == dc.shape == (1, 4)


@pytest.mark.parametrize("value", [0, 1, "no", None])
def test_input_gradient_must_be_a_bool_and_a_refusal_changes_nothing(value):
    layer = lstmkit.LSTM(3, 4, seed=0)
    x = np.random.default_rng(1).standard_normal((5, 2, 3)).astype(np.float32)
    y, _ = layer(x)
    with pytest.raises(TypeError, match="input_gradient must be True or False"):
        layer.backward(np.ones_like(y), input_gradient=value)
    dx, _ = layer.backward(np.ones_like(y))          # the forward pass is still there to run back
    assert dx.shape == x.shape


def _model_backward(make, inputs, **options):
    model = make()
    prediction = model.forward(inputs)
    d_inputs = model.backward(np.ones_like(prediction), **options)
    return d_inputs, [model.grads[name] for name in sorted(model.grads)]


def test_a_model_of_features_without_input_gradient():
    inputs = np.random.default_rng(2).standard_normal((4, 6, 2)).astype(np.float32)

    def make():
        return SequenceRegressor("lstm", 2, 5, seed=0)

    d_inputs, full = _model_backward(make, inputs)
    skipped, without = _model_backward(make, inputs, input_gradient=False)
    assert d_inputs.shape == inputs.shape and skipped is None
    for a, b in zip(full, without):
        np.testing.assert_array_equal(a, b)


def test_a_model_of_tokens_still_trains_its_embedding():
    tokens = np.random.default_rng(3).integers(0, 7, (4, 6))

    def make():
        return SequenceClassifier("gru", 7, 5, 3, seed=0)         # vocabulary 7, hidden 5, 3 classes

    _, full = _model_backward(make, tokens)
    _, without = _model_backward(make, tokens, input_gradient=False)
    for a, b in zip(full, without):
        np.testing.assert_array_equal(a, b)


def test_fit_asks_its_models_for_no_input_gradient_and_others_plainly():
    data = lstmkit.tasks.adding_problem(16, 5, seed=0)
    seen = []

    class Recording(SequenceRegressor):
        def backward(self, d_output, *, input_gradient=True):
            seen.append(input_gradient)
            return super().backward(d_output, input_gradient=input_gradient)

    class Plain(SequenceRegressor):            # a model written before the option: backward(d_output)
        def backward(self, d_output):
            seen.append("plain")
            return super().backward(d_output)

    for model_class in (Recording, Plain):
        model = model_class("lstm", 2, 4, seed=0)
        train.fit(model, MSELoss(), SGD(model.params, lr=0.1), data, steps=2, batch_size=8, progress=False)
    assert seen == [False, False, "plain", "plain"]
