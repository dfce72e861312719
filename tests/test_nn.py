"""Linear, Embedding and the losses: finite differences (float64) and agreement with torch."""
import numpy as np
import pytest
import torch

from conftest import numpy_state
from lstmkit.gradcheck import numerical_gradient, relative_error
from lstmkit.nn import Embedding, Linear, MSELoss, SoftmaxCrossEntropy, lengths_to_mask

TOL = 1e-7


def to_torch(array):
    return torch.tensor(array, dtype=torch.float64, requires_grad=True)


# -- Linear -----------------------------------------------------------------------------
def test_linear_gradcheck_on_a_sequence():
    rng = np.random.default_rng(0)
    layer = Linear(4, 3, dtype=np.float64, seed=1)
    x = rng.standard_normal((2, 5, 4))          # [B, T, n]: the same layer on every step
    projection = rng.standard_normal((2, 5, 3))

    def loss():
        return float(np.sum(layer(x) * projection))

    layer(x)
    dx = layer.backward(projection)
    assert relative_error(dx, numerical_gradient(loss, x)) < TOL
    grads = {k: v.copy() for k, v in layer.grads.items()}
    for name, value in layer.params.items():
        assert relative_error(grads[name], numerical_gradient(loss, value)) < TOL, name


def test_linear_matches_torch():
    rng = np.random.default_rng(1)
    layer = Linear(6, 4, dtype=np.float64)
    reference = torch.nn.Linear(6, 4, dtype=torch.float64)
    layer.load_state_dict(numpy_state(reference))
    x, dy = rng.standard_normal((3, 7, 6)), rng.standard_normal((3, 7, 4))
    x_t = to_torch(x)
    y_t = reference(x_t)
    y_t.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(layer(x), y_t.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(layer.backward(dy), x_t.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(layer.grads["weight"], reference.weight.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(layer.grads["bias"], reference.bias.grad.numpy(), atol=1e-12)


def test_linear_without_bias_and_float32():
    layer = Linear(3, 2, bias=False)
    assert list(layer.params) == ["weight"] and layer.params["weight"].dtype == np.float32
    y = layer(np.ones((4, 3), np.float32))
    assert y.dtype == np.float32 and y.shape == (4, 2)
    layer.backward(np.ones((4, 2), np.float32))
    assert list(layer.grads) == ["weight"]


def test_linear_rejects_bad_input_clearly():
    layer = Linear(3, 2, dtype=np.float64)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        layer(np.ones((4, 5)))
    with pytest.raises(TypeError, match="float64"):
        layer(np.ones((4, 3), np.float32))
    with pytest.raises(RuntimeError, match="forward"):
        Linear(3, 2).backward(np.ones((1, 2), np.float32))
    layer(np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"\(4, 2\)"):
        layer.backward(np.ones((4, 3)))


def test_load_state_dict_checks_everything_first():
    layer = Linear(3, 2, dtype=np.float64, seed=0)
    before = layer.state_dict()
    bad = {"weight": np.zeros((2, 3)), "bias": np.zeros(5)}      # the weight is fine, the bias is not
    with pytest.raises(ValueError, match="bias"):
        layer.load_state_dict(bad)
    for name in before:
        np.testing.assert_array_equal(layer.params[name], before[name])
    with pytest.raises(KeyError, match="missing"):
        layer.load_state_dict({"weight": np.zeros((2, 3))})


# -- Embedding --------------------------------------------------------------------------
def test_embedding_gradient_is_a_scatter_add():
    rng = np.random.default_rng(2)
    embedding = Embedding(7, 3, dtype=np.float64, seed=0)
    tokens = np.array([[1, 2, 1, 6], [0, 1, 3, 3]])          # repeats must accumulate
    projection = rng.standard_normal((2, 4, 3))

    def loss():
        return float(np.sum(embedding(tokens) * projection))

    embedding(tokens)
    assert embedding.backward(projection) is None
    numeric = numerical_gradient(loss, embedding.params["weight"])
    assert relative_error(embedding.grads["weight"], numeric) < TOL


def test_embedding_matches_torch_with_padding_idx():
    rng = np.random.default_rng(3)
    reference = torch.nn.Embedding(9, 4, padding_idx=0, dtype=torch.float64)
    embedding = Embedding(9, 4, padding_idx=0, dtype=np.float64)
    assert np.all(embedding.params["weight"][0] == 0)
    embedding.load_state_dict(numpy_state(reference))
    tokens = rng.integers(0, 9, (3, 5))
    tokens[:, -2:] = 0
    dy = rng.standard_normal((3, 5, 4))
    y_t = reference(torch.from_numpy(tokens))
    y_t.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(embedding(tokens), y_t.detach().numpy(), atol=1e-12)
    embedding.backward(dy)
    np.testing.assert_allclose(embedding.grads["weight"], reference.weight.grad.numpy(), atol=1e-12)


def test_embedding_rejects_bad_tokens():
    embedding = Embedding(5, 2)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        embedding(np.array([[0, 5]]))
    with pytest.raises(TypeError, match="integer"):
        embedding(np.array([[0.0, 1.0]]))


# -- losses -----------------------------------------------------------------------------
def test_mse_matches_torch_and_finite_differences():
    rng = np.random.default_rng(4)
    prediction, target = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    loss = MSELoss()
    value = loss(prediction, target)
    d_prediction = loss.backward()
    p_t = to_torch(prediction)
    v_t = torch.nn.functional.mse_loss(p_t, torch.from_numpy(target))
    v_t.backward()
    assert value == pytest.approx(v_t.item(), abs=1e-12)
    np.testing.assert_allclose(d_prediction, p_t.grad.numpy(), atol=1e-12)
    numeric = numerical_gradient(lambda: MSELoss()(prediction, target), prediction)
    assert relative_error(d_prediction, numeric) < TOL


def test_mse_with_a_mask_over_steps():
    rng = np.random.default_rng(5)
    prediction, target = rng.standard_normal((3, 6, 2)), rng.standard_normal((3, 6, 2))
    mask = lengths_to_mask(np.array([6, 2, 4]), 6)              # [B, T]: padded steps do not count
    loss = MSELoss()
    value = loss(prediction, target, mask)
    d_prediction = loss.backward()
    inside = mask[:, :, None].repeat(2, axis=2)
    assert value == pytest.approx(np.mean((prediction - target)[inside] ** 2), rel=1e-12)
    assert np.all(d_prediction[~inside] == 0)
    numeric = numerical_gradient(lambda: MSELoss()(prediction, target, mask), prediction)
    assert relative_error(d_prediction, numeric) < TOL


@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 5)])
def test_cross_entropy_matches_torch_with_ignored_steps(shape):
    rng = np.random.default_rng(6)
    logits = rng.standard_normal(shape) * 3
    targets = rng.integers(0, shape[-1], shape[:-1])
    mask = rng.random(shape[:-1]) < 0.7
    mask.reshape(-1)[0] = True
    loss = SoftmaxCrossEntropy()
    value = loss(logits, targets, mask)
    d_logits = loss.backward()
    logits_t = to_torch(logits)
    ignored = torch.from_numpy(np.where(mask, targets, -100))
    v_t = torch.nn.functional.cross_entropy(logits_t.reshape(-1, shape[-1]), ignored.reshape(-1),
                                            ignore_index=-100)
    v_t.backward()
    assert value == pytest.approx(v_t.item(), rel=1e-12)
    np.testing.assert_allclose(d_logits, logits_t.grad.numpy(), atol=1e-12)
    # without a mask it is torch's plain mean
    plain = SoftmaxCrossEntropy()(logits, targets)
    torch_plain = torch.nn.functional.cross_entropy(torch.from_numpy(logits).reshape(-1, shape[-1]),
                                                    torch.from_numpy(targets).reshape(-1))
    assert plain == pytest.approx(torch_plain.item(), rel=1e-12)


def test_cross_entropy_finite_differences_with_weights():
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((4, 3, 6))
    targets = rng.integers(0, 6, (4, 3))
    weights = rng.random((4, 3))
    loss = SoftmaxCrossEntropy()
    loss(logits, targets, weights)
    numeric = numerical_gradient(lambda: SoftmaxCrossEntropy()(logits, targets, weights), logits)
    assert relative_error(loss.backward(), numeric) < TOL


def test_cross_entropy_is_stable_for_large_logits():
    logits = np.array([[1000.0, 0.0, -1000.0]])
    loss = SoftmaxCrossEntropy()
    assert loss(logits, np.array([0])) == pytest.approx(0.0, abs=1e-12)
    assert loss(logits, np.array([1])) == pytest.approx(1000.0)
    assert np.all(np.isfinite(loss.backward()))


def test_losses_reject_bad_input_clearly():
    with pytest.raises(ValueError, match=r"\(4,\)"):
        SoftmaxCrossEntropy()(np.zeros((4, 3)), np.zeros(5, np.int64))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        SoftmaxCrossEntropy()(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(TypeError, match="integer"):
        SoftmaxCrossEntropy()(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="no positions"):
        SoftmaxCrossEntropy()(np.zeros((2, 3)), np.array([0, 1]), np.zeros(2, bool))
    with pytest.raises(ValueError, match="shape"):
        MSELoss()(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="mask"):
        MSELoss()(np.zeros((2, 3)), np.zeros((2, 3)), np.ones(3, bool))
    # a masked-out position may hold any target, e.g. padding
    assert SoftmaxCrossEntropy()(np.zeros((2, 3)), np.array([0, -1]), np.array([True, False])) \
        == pytest.approx(np.log(3))


# -- issue 11: backward after the caller changed the input in place ------------------------------
def test_linear_and_embedding_backward_use_the_input_forward_saw():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 4))
    d_y = rng.standard_normal((2, 5, 3))
    linear = Linear(4, 3, dtype=np.float64, seed=1)
    linear(x.copy())
    expected = linear.backward(d_y), dict(linear.grads)
    linear(x)
    x *= 3.0                                  # the caller reuses its buffer before backward
    got = linear.backward(d_y), linear.grads
    np.testing.assert_array_equal(got[0], expected[0])
    for name in expected[1]:
        np.testing.assert_array_equal(got[1][name], expected[1][name])

    tokens = np.array([[0, 1, 1], [2, 0, 3]])
    embedding = Embedding(5, 3, dtype=np.float64, seed=0)
    d_rows = rng.standard_normal((2, 3, 3))
    embedding(tokens.copy())
    embedding.backward(d_rows)
    expected_weight = embedding.grads["weight"].copy()
    embedding(tokens)
    tokens[:] = 4
    embedding.backward(d_rows)
    np.testing.assert_array_equal(embedding.grads["weight"], expected_weight)
