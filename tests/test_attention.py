"""Soft attention (lstmkit.attention): the hand-written backward against finite differences
and against torch's autograd, bad input, and the chapter-13 result on several seeds."""
import numpy as np
import pytest

from lstmkit.attention import AdditiveAttention, AttentionClassifier
from lstmkit.gradcheck import numerical_gradient, relative_error


def attention_case(seed=0, batch=3, steps=7, value_size=5, query_size=4, attention_size=6):
    rng = np.random.default_rng(seed)
    layer = AdditiveAttention(value_size, query_size, attention_size, dtype=np.float64, seed=seed)
    values = rng.standard_normal((batch, steps, value_size))
    query = rng.standard_normal((batch, query_size))
    mask = np.ones((batch, steps), bool)
    mask[1, 4:] = False                     # a shorter sequence: its last steps may not be attended to
    projection = rng.standard_normal((batch, value_size))
    return layer, values, query, mask, projection


def test_attention_backward_matches_finite_differences():
    layer, values, query, mask, projection = attention_case()

    def loss():
        context, _ = layer.forward(values, query, mask)
        return float(np.sum(context * projection))

    context, weights = layer.forward(values, query, mask)
    d_values, d_query = layer.backward(projection)
    analytic = {name: grad.copy() for name, grad in layer.grads.items()}
    errors = {"values": relative_error(d_values, numerical_gradient(loss, values)),
              "query": relative_error(d_query, numerical_gradient(loss, query))}
    for name, value in layer.params.items():
        errors[name] = relative_error(analytic[name], numerical_gradient(loss, value))
    assert max(errors.values()) < 1e-6, errors
    assert set(errors) == {"values", "query", "weight_key", "weight_query", "bias", "score"}
    # the weights are a distribution over the allowed steps, and the context is their average
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    assert np.all(weights[1, 4:] == 0.0) and np.all(d_values[1, 4:] == 0.0)
    np.testing.assert_allclose(context, np.einsum("bt,btd->bd", weights, values))


def test_attention_classifier_backward_matches_finite_differences():
    # the whole model: embedding → LSTM → attention with query h_T → head; h_T gets gradient twice
    rng = np.random.default_rng(1)
    model = AttentionClassifier("lstm", vocab_size=5, hidden_size=2, num_classes=3, embedding_dim=2,
                                attention_size=2, dtype=np.float64, seed=0)
    # at the initial scale the attention's own gradients are ~1e-6, where central differences
    # are mostly rounding noise: larger weights make every gradient measurable
    for name, value in model.params.items():
        if name.startswith(("rnn.", "attention.")):
            value *= 3.0
    tokens = rng.integers(0, 5, (2, 6))
    projection = rng.standard_normal((2, 3))

    def loss():
        return float(np.sum(model.predict(tokens) * projection))

    model.forward(tokens)
    model.backward(projection)
    analytic = {name: grad.copy() for name, grad in model.grads.items()}
    assert set(analytic) == set(model.params)
    errors = {name: relative_error(analytic[name], numerical_gradient(loss, value))
              for name, value in model.params.items()}
    assert max(errors.values()) < 1e-6, errors


def test_attention_agrees_with_torch_autograd():
    torch = pytest.importorskip("torch")
    layer, values, query, mask, projection = attention_case(seed=3)
    context, weights = layer.forward(values, query, mask)
    d_values, d_query = layer.backward(projection)

    t = {name: torch.tensor(value, requires_grad=True) for name, value in layer.params.items()}
    t_values = torch.tensor(values, requires_grad=True)
    t_query = torch.tensor(query, requires_grad=True)
    hidden = torch.tanh(t_values @ t["weight_key"].T + (t_query @ t["weight_query"].T + t["bias"])[:, None, :])
    scores = (hidden @ t["score"]).masked_fill(~torch.tensor(mask), float("-inf"))
    t_weights = torch.softmax(scores, dim=1)
    t_context = torch.einsum("bt,btd->bd", t_weights, t_values)
    (t_context * torch.tensor(projection)).sum().backward()

    np.testing.assert_allclose(weights, t_weights.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(context, t_context.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(d_values, t_values.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(d_query, t_query.grad.numpy(), rtol=1e-10, atol=1e-13)
    for name in layer.params:
        np.testing.assert_allclose(layer.grads[name], t[name].grad.numpy(), rtol=1e-10, atol=1e-13,
                                   err_msg=name)


def test_attention_rejects_bad_input_and_changes_nothing():
    layer, values, query, mask, projection = attention_case()
    with pytest.raises(RuntimeError, match="forward before backward"):
        layer.backward(projection)
    with pytest.raises(ValueError, match=r"values: expected shape \(B, T, 5\)"):
        layer.forward(values[..., :4], query)
    with pytest.raises(ValueError, match=r"query: expected shape \(3, 4\)"):
        layer.forward(values, query[:2])
    with pytest.raises(TypeError, match="float64"):
        layer.forward(values.astype(np.float32), query)
    empty = mask.copy()
    empty[0] = False
    with pytest.raises(ValueError, match="at least one step"):
        layer.forward(values, query, empty)
    with pytest.raises(ValueError, match="boolean"):
        layer.forward(values, query, mask.astype(int))
    assert layer._cache is None                        # nothing was kept from the failed calls
    layer.forward(values, query, mask)
    with pytest.raises(ValueError, match="d_context: expected shape"):
        layer.backward(projection[:, :2])
    assert layer.grads == {}
    with pytest.raises(ValueError, match="attention_size must be a positive integer"):
        AdditiveAttention(5, 4, 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_attention_solves_the_gap_the_lstm_alone_does_not(seed):
    # Chapter 13's result, per seed: the same data, budget and forget bias for both models.
    from lstmkit.experiments import train_long_gap, train_long_gap_with_attention

    gap, steps = 80, 150
    alone = train_long_gap("lstm", gap, steps=steps, seed=seed)["accuracy"]
    attended = train_long_gap_with_attention("lstm", gap, steps=steps, seed=seed)
    assert attended["accuracy"] > 0.95 and alone < 0.4, (attended["accuracy"], alone)
    weights = attended["attention_weights"]
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
    assert weights.shape == attended["test"]["inputs"].shape
