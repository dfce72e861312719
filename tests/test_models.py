"""Composite models: finite differences, agreement with the same model built in torch,
forget-gate bias, gate values, sampling."""
import numpy as np
import pytest
import torch

import lstmkit
from lstmkit.gradcheck import numerical_gradient, relative_error
from conftest import numpy_state
from lstmkit.models import (CharLanguageModel, SequenceClassifier, SequenceModel, SequenceRegressor,
                            SequenceTagger)

TOL = 1e-6


def model_gradcheck(model, inputs, lengths=None, seed=0):
    """Relative errors of every parameter's (and float inputs') gradient against central differences."""
    rng = np.random.default_rng(seed)
    projection = rng.standard_normal(model.forward(inputs, lengths).shape)

    def loss():
        return float(np.sum(model.forward(inputs, lengths) * projection))

    model.forward(inputs, lengths)
    d_inputs = model.backward(projection)
    analytic = {k: v.copy() for k, v in model.grads.items()}
    assert set(analytic) == set(model.params)
    errors = {name: relative_error(analytic[name], numerical_gradient(loss, value))
              for name, value in model.params.items()}
    if d_inputs is not None:
        errors["inputs"] = relative_error(d_inputs, numerical_gradient(loss, inputs))
    return errors


@pytest.mark.parametrize("cell,num_layers,bidirectional", [("lstm", 1, False), ("gru", 2, True),
                                                           (lstmkit.PeepholeLSTM, 1, True)])
def test_regressor_gradcheck_with_lengths(cell, num_layers, bidirectional):
    rng = np.random.default_rng(0)
    model = SequenceRegressor(cell, 2, 3, output_size=2, num_layers=num_layers,
                              bidirectional=bidirectional, dtype=np.float64, seed=1)
    inputs = rng.standard_normal((3, 5, 2))
    errors = model_gradcheck(model, inputs, lengths=np.array([5, 2, 4]))
    assert max(errors.values()) < TOL, errors


def test_classifier_and_tagger_gradcheck():
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 6, (3, 5))
    classifier = SequenceClassifier("rnn_tanh", 6, 4, 3, embedding_dim=2, dtype=np.float64, seed=0)
    errors = model_gradcheck(classifier, tokens)
    assert max(errors.values()) < TOL, errors
    tagger = SequenceTagger("coupled_lstm", 6, 4, 5, embedding_dim=3, bidirectional=True,
                            dtype=np.float64, seed=0)
    errors = model_gradcheck(tagger, tokens, lengths=np.array([5, 1, 3]))
    assert max(errors.values()) < TOL, errors


class TorchSequenceModel(torch.nn.Module):
    """The same architecture in torch: embedding → rnn → head on the final state or every step."""

    def __init__(self, rnn, head, embedding=None, readout="last"):
        super().__init__()
        self.embedding, self.rnn, self.head, self.readout = embedding, rnn, head, readout

    def forward(self, inputs, lengths=None):
        features = self.embedding(inputs) if self.embedding is not None else inputs
        if lengths is not None:
            features = torch.nn.utils.rnn.pack_padded_sequence(features, lengths, batch_first=True,
                                                               enforce_sorted=False)
        outputs, final = self.rnn(features)
        if lengths is not None:
            outputs, _ = torch.nn.utils.rnn.pad_packed_sequence(outputs, batch_first=True,
                                                                total_length=inputs.shape[1])
        if self.readout == "every":
            return self.head(outputs)
        hidden = final[0] if isinstance(final, tuple) else final
        directions = 2 if self.rnn.bidirectional else 1
        return self.head(torch.cat(list(hidden[-directions:]), dim=1))


@pytest.mark.parametrize("readout", ["last", "every"])
def test_model_matches_torch(readout):
    rng = np.random.default_rng(2)
    torch.manual_seed(0)
    reference = TorchSequenceModel(
        torch.nn.LSTM(5, 4, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64),
        torch.nn.Linear(8, 3, dtype=torch.float64), torch.nn.Embedding(11, 5, dtype=torch.float64),
        readout)
    model = SequenceModel("lstm", 4, 3, vocab_size=11, embedding_dim=5, num_layers=2,
                          bidirectional=True, readout=readout, dtype=np.float64)
    assert list(model.params) == list(reference.state_dict())
    model.load_state_dict(numpy_state(reference))
    tokens, lengths = rng.integers(0, 11, (4, 6)), np.array([6, 3, 1, 4])
    out = model.forward(tokens, lengths)
    d_out = rng.standard_normal(out.shape)
    if readout == "every":
        d_out *= (np.arange(6)[None, :] < lengths[:, None])[..., None]
    model.backward(d_out)
    out_t = reference(torch.from_numpy(tokens), torch.from_numpy(lengths))
    if readout == "every":   # torch's head sees zeros past each end too: compare inside only
        out_t = out_t * torch.from_numpy(np.arange(6)[None, :] < lengths[:, None])[..., None]
        out = out * (np.arange(6)[None, :] < lengths[:, None])[..., None]
    out_t.backward(torch.from_numpy(d_out))
    np.testing.assert_allclose(out, out_t.detach().numpy(), atol=1e-10)
    for name, p in reference.named_parameters():
        np.testing.assert_allclose(model.grads[name], p.grad.numpy(), atol=1e-10, err_msg=name)


def test_params_are_the_parts_own_arrays():
    model = SequenceClassifier("lstm", 7, 4, 3, seed=0)
    assert model.params["rnn.weight_hh_l0"] is model.rnn.params["weight_hh_l0"]
    assert model.params["embedding.weight"] is model.embedding.params["weight"]
    model.params["head.bias"] += 1.0                       # what an optimizer does
    np.testing.assert_array_equal(model.head.params["bias"], model.params["head.bias"])


def test_same_seed_same_model_and_any_cell_form():
    a = SequenceRegressor("lstm", 2, 4, seed=5)
    b = SequenceRegressor(lstmkit.LSTM, 2, 4, seed=5)
    c = SequenceRegressor(lstmkit.get_cell("lstm"), 2, 4, seed=5)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
        np.testing.assert_array_equal(a.params[name], c.params[name])
    assert not np.array_equal(a.params["head.weight"], SequenceRegressor("lstm", 2, 4, seed=6).params["head.weight"])
    with pytest.raises(TypeError, match="cell"):
        SequenceRegressor(42, 2, 4)
    with pytest.raises(ValueError, match="exactly one"):
        SequenceModel("lstm", 4, 1)


def test_model_rejects_bad_inputs_clearly():
    regressor = SequenceRegressor("lstm", 2, 4, seed=0)
    with pytest.raises(ValueError, match=r"\(B, T, 2\)"):
        regressor.forward(np.zeros((3, 2), np.float32))
    classifier = SequenceClassifier("lstm", 5, 4, 2, seed=0)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        classifier.forward(np.zeros((3, 4, 2), np.int64))
    with pytest.raises(RuntimeError, match="forward"):
        SequenceRegressor("lstm", 2, 4).backward(np.zeros((1, 1), np.float32))


# -- forget-gate bias and gate values ------------------------------------------------------
def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def test_forget_bias_sets_the_forget_block_in_every_layer_and_direction():
    layer = lstmkit.LSTM(3, 4, num_layers=2, bidirectional=True, seed=0)
    before = layer.state_dict()
    assert layer.set_forget_bias(1.0) is layer
    forget = slice(4, 8)                                    # gates i, f, g, o
    for name, value in layer.params.items():
        changed = np.ones(value.shape, bool)
        if name.startswith("bias_ih"):
            assert np.all(value[forget] == 1.0)
        if name.startswith("bias_hh"):
            assert np.all(value[forget] == 0.0)
        if name.startswith("bias"):
            changed[forget] = False
        np.testing.assert_array_equal(value[changed], before[name][changed])
    coupled = lstmkit.CoupledLSTM(3, 4, seed=0).set_forget_bias(2.0)       # gates f, g, o
    assert np.all(coupled.params["bias_ih_l0"][:4] == 2.0)
    for cell in (lstmkit.GRU(3, 4), lstmkit.RNN(3, 4), lstmkit.RecurrentLayer("lstm_no_forget_gate", 3, 4)):
        with pytest.raises(ValueError, match="no forget gate"):
            cell.set_forget_bias(1.0)
    with pytest.raises(ValueError, match="bias=True"):
        lstmkit.LSTM(3, 4, bias=False).set_forget_bias(1.0)


def test_gate_activations_are_the_lstm_equations():
    """Recompute the LSTM step by step in NumPy and compare every saved gate value."""
    rng = np.random.default_rng(4)
    layer = lstmkit.LSTM(3, 4, dtype=np.float64, seed=0).set_forget_bias(1.0)
    x = rng.standard_normal((5, 2, 3))
    layer(x)
    gates = layer.gate_activations()
    p = layer.params
    h, c = np.zeros((2, 4)), np.zeros((2, 4))
    for t in range(5):
        z = x[t] @ p["weight_ih_l0"].T + p["bias_ih_l0"] + h @ p["weight_hh_l0"].T + p["bias_hh_l0"]
        i, f, g, o = sigmoid(z[:, :4]), sigmoid(z[:, 4:8]), np.tanh(z[:, 8:12]), sigmoid(z[:, 12:])
        c = f * c + i * g
        h = o * np.tanh(c)
        np.testing.assert_allclose(gates["forget_gate"][t], f, atol=1e-12)
        np.testing.assert_allclose(gates["input_gate"][t], i, atol=1e-12)
        np.testing.assert_allclose(gates["candidate"][t], g, atol=1e-12)
        np.testing.assert_allclose(gates["output_gate"][t], o, atol=1e-12)
    with pytest.raises(ValueError, match="layer"):
        layer.gate_activations(layer=1)
    with pytest.raises(RuntimeError, match="forward"):
        lstmkit.LSTM(3, 4).gate_activations()


# -- sampling -----------------------------------------------------------------------------
def test_sampling_is_seeded_and_leaves_a_pending_backward_alone():
    model = CharLanguageModel("lstm", 10, 8, seed=0)
    prompt = np.array([1, 2, 3])
    first = model.sample(prompt, 20, seed=7)
    assert first.shape == (20,) and first.min() >= 0 and first.max() < 10
    np.testing.assert_array_equal(first, model.sample(prompt, 20, seed=7))
    tokens = np.random.default_rng(0).integers(0, 10, (2, 5))
    out = model.forward(tokens)
    model.sample(prompt, 5, seed=1)
    model.backward(np.ones_like(out))                       # still the gradient of that forward
    reference = CharLanguageModel("lstm", 10, 8, seed=0)
    reference.forward(tokens)
    reference.backward(np.ones_like(out))
    for name in model.grads:
        np.testing.assert_array_equal(model.grads[name], reference.grads[name])


@pytest.mark.parametrize("model_class, inputs", [
    (CharLanguageModel, np.random.default_rng(1).integers(0, 10, (3, 6))),
    (SequenceRegressor, np.random.default_rng(1).standard_normal((3, 6, 10)).astype(np.float32)),
])
def test_predict_is_forward_keeping_nothing_and_leaves_a_pending_backward_alone(model_class, inputs):
    model, reference = model_class("lstm", 10, 8, seed=0), model_class("lstm", 10, 8, seed=0)
    out = model.forward(inputs[:2])
    predicted = model.predict(inputs)
    np.testing.assert_array_equal(predicted, reference.forward(inputs))
    assert model.rnn._tape is not None and model.rnn._tape.x_shape[:2] == (6, 2)   # the pending pass
    model.backward(np.ones_like(out))
    reference.forward(inputs[:2])
    reference.backward(np.ones_like(out))
    for name in model.grads:
        np.testing.assert_array_equal(model.grads[name], reference.grads[name])


def test_cold_sampling_is_greedy():
    model = CharLanguageModel("gru", 6, 5, dtype=np.float64, seed=1)
    prompt = np.array([0, 3])
    sampled = model.sample(prompt, 6, temperature=1e-4, seed=0)
    sequence = list(prompt)
    for token in sampled:                 # greedy decoding by re-running the whole prefix
        logits = model.forward(np.array([sequence]))[0, -1]
        assert token == int(np.argmax(logits))
        sequence.append(token)
