"""The LSTM with a projection, ``LSTM(..., proj_size=p)``: against torch (full and ragged
batches, stacks, both directions, unbatched), against finite differences, and its checks."""
import numpy as np
import pytest
import torch

from conftest import max_relative_difference, numpy_state
from test_lengths_bidirectional import torch_run
import lstmkit
from lstmkit.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from lstmkit.gradcheck import layer_gradcheck

TOLERANCE = {np.float64: 1e-10, np.float32: 1e-4}
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}


def pair(input_size, hidden_size, proj_size, dtype=np.float64, **options):
    torch.manual_seed(0)
    reference = torch.nn.LSTM(input_size, hidden_size, proj_size=proj_size, dtype=TORCH_DTYPE[dtype], **options)
    layer = lstmkit.LSTM(input_size, hidden_size, proj_size=proj_size, dtype=dtype, **options)
    layer.load_state_dict(numpy_state(reference))
    return layer, reference


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("num_layers,bidirectional,batch_first,with_state", [
    (1, False, False, True), (2, True, False, True), (3, False, True, False), (2, True, True, False)])
def test_forward_and_every_gradient_match_torch(dtype, num_layers, bidirectional, batch_first, with_state):
    steps, batch, n, d, p = 9, 4, 5, 8, 3
    layer, reference = pair(n, d, p, dtype, num_layers=num_layers, bidirectional=bidirectional,
                            batch_first=batch_first)
    rng = np.random.default_rng(1)
    slots = num_layers * (2 if bidirectional else 1)
    x = rng.standard_normal((batch, steps, n) if batch_first else (steps, batch, n)).astype(dtype)
    state = ((rng.standard_normal((slots, batch, p)).astype(dtype),
              rng.standard_normal((slots, batch, d)).astype(dtype)) if with_state else None)
    y, (h, c) = layer(x, state)
    assert y.shape == x.shape[:2] + (p * (2 if bidirectional else 1),)
    assert h.shape == (slots, batch, p) and c.shape == (slots, batch, d)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dh, dc = rng.standard_normal(h.shape).astype(dtype), rng.standard_normal(c.shape).astype(dtype)
    dx, (dh0, dc0) = layer.backward(dy, (dh, dc))

    x_t = torch.tensor(x, requires_grad=True)
    state_t = tuple(torch.tensor(s, requires_grad=True) for s in state) if with_state else None
    y_t, (h_t, c_t) = reference(x_t, state_t)
    ((y_t * torch.tensor(dy)).sum() + (h_t * torch.tensor(dh)).sum() + (c_t * torch.tensor(dc)).sum()).backward()

    pairs = {"output": (y, y_t), "h_n": (h, h_t), "c_n": (c, c_t), "dx": (dx, x_t.grad)}
    if with_state:
        pairs.update(dh0=(dh0, state_t[0].grad), dc0=(dc0, state_t[1].grad))
    assert list(layer.grads) == [name for name, _ in reference.named_parameters()]
    pairs.update({name: (layer.grads[name], value.grad) for name, value in reference.named_parameters()})
    errors = {what: max_relative_difference(ours, theirs.detach().numpy()) for what, (ours, theirs) in pairs.items()}
    assert max(errors.values()) < TOLERANCE[dtype], errors


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("num_layers,bidirectional,batch_first", [(1, False, False), (2, True, True)])
def test_ragged_lengths_match_torch_packed_sequences(num_layers, bidirectional, batch_first):
    steps, batch, n, d, p = 7, 5, 3, 6, 2
    layer, reference = pair(n, d, p, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first)
    rng = np.random.default_rng(2)
    lengths = np.array([7, 3, 1, 5, 3])
    slots = num_layers * (2 if bidirectional else 1)
    x = rng.standard_normal((batch, steps, n) if batch_first else (steps, batch, n))
    initial = (rng.standard_normal((slots, batch, p)), rng.standard_normal((slots, batch, d)))
    valid = np.arange(steps)[:, None] < lengths[None, :]
    valid = valid.T if batch_first else valid
    dy = rng.standard_normal(x.shape[:2] + (p * (2 if bidirectional else 1),)) * valid[..., None]
    d_final = [rng.standard_normal(s.shape) for s in initial]

    y, final = layer(x, initial, lengths)
    dx, d_initial = layer.backward(dy, tuple(d_final))
    y_t, final_t, dx_t, d_initial_t, grads_t = torch_run(reference, x, initial, lengths, dy, d_final, batch_first)

    np.testing.assert_allclose(y, y_t, atol=1e-10)
    for ours, theirs in [*zip(final, final_t), (dx, dx_t), *zip(d_initial, d_initial_t)]:
        np.testing.assert_allclose(ours, theirs, atol=1e-10)
    for name, value in grads_t.items():
        np.testing.assert_allclose(layer.grads[name], value, atol=1e-10, err_msg=name)


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
def test_an_unbatched_sequence_matches_torch():
    layer, reference = pair(4, 6, 2, num_layers=2)
    x = np.random.default_rng(3).standard_normal((5, 4))
    y, (h, c) = layer(x)
    y_t, (h_t, c_t) = reference(torch.tensor(x))
    assert y.shape == (5, 2) and h.shape == (2, 2) and c.shape == (2, 6)
    for ours, theirs in ((y, y_t), (h, h_t), (c, c_t)):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), atol=1e-12)


@pytest.mark.parametrize("make_layer", [
    lambda: lstmkit.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2, dtype=np.float64, seed=0),
    # any cell whose step reads h_{t−1} only through W_hh: the peephole LSTM, which torch lacks
    lambda: lstmkit.RecurrentLayer("peephole_lstm", 3, 5, num_layers=2, proj_size=3, dtype=np.float64, seed=0),
], ids=["lstm", "peephole_lstm"])
def test_gradients_match_finite_differences(make_layer):
    layer = make_layer()
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 3, 3))
    slots = layer.num_layers * layer.num_directions
    state = (rng.standard_normal((slots, 3, layer.proj_size)), rng.standard_normal((slots, 3, 5)))
    errors = layer_gradcheck(layer, x, state, lengths=np.array([6, 2, 4]))
    assert set(errors) >= {f"weight_hr_l{k}" for k in range(layer.num_layers)}
    assert max(errors.values()) < 1e-6, errors


def test_step_by_step_equals_the_whole_sequence_and_inference_equals_training():
    layer = lstmkit.LSTM(3, 6, proj_size=2, dtype=np.float64, seed=5)
    x = np.random.default_rng(5).standard_normal((8, 2, 3))
    y, (h, c) = layer(x)
    state, pieces = None, []
    for t in range(8):
        y_t, state = layer(x[t:t + 1], state)
        pieces.append(y_t)
    np.testing.assert_array_equal(np.concatenate(pieces), y)
    np.testing.assert_array_equal(state[0], h)
    np.testing.assert_array_equal(state[1], c)
    y_inference, _ = layer(x, inference=True)
    np.testing.assert_array_equal(y_inference, y)


def test_dropout_between_projected_layers_is_off_in_eval_mode():
    layer = lstmkit.LSTM(3, 6, num_layers=2, proj_size=2, dropout=0.5, dtype=np.float64, seed=6)
    plain = lstmkit.LSTM(3, 6, num_layers=2, proj_size=2, dtype=np.float64, seed=6)
    x = np.random.default_rng(6).standard_normal((5, 2, 3))
    np.testing.assert_array_equal(layer.eval()(x)[0], plain(x)[0])
    assert not np.array_equal(layer.train()(x)[0], plain(x)[0])


@pytest.mark.parametrize("proj_size,error,message", [
    (6, ValueError, "proj_size has to be smaller than hidden_size"),
    (-1, ValueError, "positive integer or zero"),
    (2.0, TypeError, "proj_size must be an integer"),
    (True, TypeError, "proj_size must be an integer"),
])
def test_a_bad_proj_size_is_refused(proj_size, error, message):
    with pytest.raises(error, match=message):
        lstmkit.LSTM(3, 6, proj_size=proj_size)


@pytest.mark.parametrize("cell", ["gru", "gru_reset_before", "mut1"])
def test_a_cell_that_reads_h_element_wise_cannot_be_projected(cell):
    with pytest.raises(ValueError, match="cannot be projected"):
        lstmkit.RecurrentLayer(cell, 4, 4, proj_size=2)


def test_a_state_of_the_unprojected_width_is_refused_with_both_shapes_named():
    layer = lstmkit.LSTM(3, 6, proj_size=2, dtype=np.float64)
    x = np.zeros((4, 2, 3))
    with pytest.raises(ValueError, match=r"\(1, 2, 2\)"):
        layer(x, (np.zeros((1, 2, 6)), np.zeros((1, 2, 6))))
    with pytest.raises(TypeError, match=r"h \(1, 2, 2\), c \(1, 2, 6\)"):
        layer(x, np.zeros((1, 2, 2)))


def test_parameters_are_torchs_and_a_checkpoint_keeps_the_projection(tmp_path):
    torch_names = [name for name, _ in torch.nn.LSTM(3, 6, num_layers=2, bidirectional=True, proj_size=2)
                   .named_parameters()]
    layer = lstmkit.LSTM(3, 6, num_layers=2, bidirectional=True, proj_size=2, seed=0)
    assert [name for name, _ in layer.named_parameters()] == torch_names
    assert layer.params["weight_hr_l1_reverse"].shape == (2, 6)
    assert layer.params["weight_ih_l1"].shape == (24, 4)       # the layer below's output: 2 · p
    assert "proj_size=2" in repr(layer)
    path = save_checkpoint(tmp_path / "lstmp.npz", layer)
    other = lstmkit.LSTM(3, 6, num_layers=2, bidirectional=True, proj_size=2, seed=1)
    load_checkpoint(path, other)
    for name in layer.params:
        np.testing.assert_array_equal(other.params[name], layer.params[name])
    unprojected = lstmkit.LSTM(3, 6, num_layers=2, bidirectional=True, seed=1)
    before = {name: value.copy() for name, value in unprojected.params.items()}
    with pytest.raises(CheckpointError):
        load_checkpoint(path, unprojected)
    for name, value in before.items():
        np.testing.assert_array_equal(unprojected.params[name], value)


def test_set_gate_takes_the_article_weight_on_the_projected_h():
    from lstmkit.notation import set_gate

    layer = lstmkit.LSTM(3, 6, num_layers=2, bidirectional=True, proj_size=2, dtype=np.float64, seed=0)
    set_gate(layer, "f", weight=0.0, bias=12.0, layer_index=1)      # W_f [d, p + 2p]: h is p wide
    x = np.random.default_rng(7).standard_normal((4, 2, 3))
    layer(x)
    forget = layer.gate_activations(layer=1)["forget_gate"]
    np.testing.assert_allclose(forget, 1 / (1 + np.exp(-12.0)), rtol=1e-12)
