"""Every built-in cell torch lacks against an independent NumPy reference written from the papers
(tests/references.py): forward outputs and final states agree to 1e-12 in float64."""
import numpy as np
import pytest

import lstmkit
from references import GATE_ORDER, STAGED_REFERENCES, VARIANTS, greff_lstm

TOLERANCE = 1e-12


def case(cell, seed=0, steps=8, batch=3, n_in=4, hidden=5):
    """A float64 layer with peephole weights large enough to matter, an input and a non-zero state."""
    rng = np.random.default_rng(seed)
    layer = lstmkit.RecurrentLayer(cell, n_in, hidden, dtype=np.float64, seed=seed)
    state = {name: value * (4.0 if name.startswith("weight_c") else 1.0) for name, value in layer.params.items()}
    layer.load_state_dict(state)
    x = rng.standard_normal((steps, batch, n_in))
    y0, c0 = rng.standard_normal((2, 1, batch, hidden))
    return layer, x, y0, c0


def test_every_built_in_cell_torch_lacks_has_a_reference():
    torch_has = {"lstm", "gru", "rnn_tanh", "rnn_relu"}
    staged = {name for name, spec in lstmkit.BUILTIN_CELLS.items() if spec.staged}
    assert set(lstmkit.BUILTIN_CELLS) - torch_has - staged == set(VARIANTS) == set(GATE_ORDER)
    assert staged == set(STAGED_REFERENCES)      # tests/test_staged_cells.py holds them to these


@pytest.mark.parametrize("cell", sorted(VARIANTS))
def test_forward_agrees_with_the_reference_from_the_paper(cell):
    layer, x, y0, c0 = case(cell)
    assert "".join(layer.kernels.GATES) == GATE_ORDER[cell]          # the storage the reference reads
    y, (h_final, c_final) = layer(x, (y0, c0))
    y_ref, h_ref, c_ref = greff_lstm(x, layer.params, GATE_ORDER[cell], y0[0], c0[0], **VARIANTS[cell])
    for what, ours, reference in (("y", y, y_ref), ("h_T", h_final[0], h_ref), ("c_T", c_final[0], c_ref)):
        error = np.abs(ours - reference).max()
        assert error < TOLERANCE, f"{cell}: {what} differs by {error:.1e}"


@pytest.mark.parametrize("cell", sorted(VARIANTS))
def test_forward_agrees_in_every_layer_and_direction(cell):
    """Two layers, bidirectional: each direction of each layer is the paper's block on its own input."""
    rng = np.random.default_rng(1)
    layer = lstmkit.RecurrentLayer(cell, 3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=1)
    x = rng.standard_normal((6, 2, 3))
    y, _ = layer(x)
    layer_input = x
    for depth in range(2):
        outputs = []
        for suffix, reverse in (("", False), ("_reverse", True)):
            params = {name.replace(f"_l{depth}{suffix}", "_l0"): value for name, value in layer.params.items()
                      if name.endswith(f"_l{depth}{suffix}")}
            source = layer_input[::-1] if reverse else layer_input
            zeros = np.zeros((2, 4))
            out, _, _ = greff_lstm(source, params, GATE_ORDER[cell], zeros, zeros, **VARIANTS[cell])
            outputs.append(out[::-1] if reverse else out)
        layer_input = np.concatenate(outputs, axis=2)
    assert np.abs(y - layer_input).max() < TOLERANCE


def test_an_output_gate_peeping_at_the_previous_cell_would_fail():
    """The reference made wrong once (o_t sees c_{t−1} instead of c_t) disagrees by far more than
    the tolerance: the comparison above can tell the two apart."""
    layer, x, y0, c0 = case("peephole_lstm")
    y, _ = layer(x, (y0, c0))
    wrong, _, _ = greff_lstm(x, layer.params, GATE_ORDER["peephole_lstm"], y0[0], c0[0],
                             output_peephole_reads_previous_cell=True, **VARIANTS["peephole_lstm"])
    assert np.abs(y - wrong).max() > 1e-3
