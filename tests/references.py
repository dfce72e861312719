"""Independent NumPy references for the built-in cells torch lacks, written from the papers.

Written from the equations as the papers print them, one time step at a time, in
float64, without lstmkit's cell specs. Only the storage of the parameters is
lstmkit's (torch's): ``weight_ih`` [G·d, n] and ``weight_hh`` [G·d, d] stack one
block per gate in the order ``GATE_ORDER`` gives, the two biases add up, and a
peephole weight is a vector [d] (a diagonal matrix, as in both papers).

Greff et al. 2015, "LSTM: A Search Space Odyssey", eqs. (1)–(6), their notation:

    z_t = g(W_z x_t + R_z y_{t−1} + b_z)                      block input
    i_t = σ(W_i x_t + R_i y_{t−1} + p_i ⊙ c_{t−1} + b_i)      input gate
    f_t = σ(W_f x_t + R_f y_{t−1} + p_f ⊙ c_{t−1} + b_f)      forget gate
    c_t = z_t ⊙ i_t + c_{t−1} ⊙ f_t                           cell
    o_t = σ(W_o x_t + R_o y_{t−1} + p_o ⊙ c_t + b_o)          output gate
    y_t = h(c_t) ⊙ o_t                                        block output

with g = h = tanh. The peepholes are those of Gers & Schmidhuber 2000 ("Recurrent
nets that time and count"): the input and forget gates look at the cell state of
the previous step, the output gate at the cell state just computed.

Greff's eight variants each change one thing in that block: NIG i_t = 1, NFG
f_t = 1, NOG o_t = 1, NIAF g(x) = x, NOAF h(x) = x, NP no peepholes, CIFG couples
the gates. Greff's vanilla block has peepholes; lstmkit's built-in variants start
from torch's LSTM, which has none, so each is NP plus the variant's change. Greff
writes CIFG as f_t = 1 − i_t; lstmkit keeps the forget gate's weights and sets
i_t = 1 − f_t (as Jozefowicz et al. 2015 and chapter 09 do): the same family, with
the other gate's parameters.
"""
import numpy as np

# lstmkit's storage: the order of the gate blocks in weight_ih / weight_hh / the biases.
# "g" is the block input z (torch calls it g).
GATE_ORDER = {
    "peephole_lstm": "ifgo",
    "coupled_lstm": "fgo",
    "lstm_no_input_gate": "fgo",
    "lstm_no_forget_gate": "igo",
    "lstm_no_output_gate": "ifg",
    "lstm_no_input_activation": "ifgo",
    "lstm_no_output_activation": "ifgo",
}

# which of Greff's changes each built-in cell makes
VARIANTS = {
    "peephole_lstm": {"peepholes": True},
    "coupled_lstm": {"coupled": True},
    "lstm_no_input_gate": {"input_gate": False},
    "lstm_no_forget_gate": {"forget_gate": False},
    "lstm_no_output_gate": {"output_gate": False},
    "lstm_no_input_activation": {"block_input_activation": False},
    "lstm_no_output_activation": {"block_output_activation": False},
}


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def greff_lstm(x, params, gate_order, y0, c0, *, input_gate=True, forget_gate=True, output_gate=True,
               block_input_activation=True, block_output_activation=True, peepholes=False, coupled=False,
               output_peephole_reads_previous_cell=False):
    """One layer over x [T, B, n] from y0, c0 [B, d]; returns (y [T, B, d], y_T, c_T).

    ``params`` holds lstmkit's names for one layer (``weight_ih_l0`` …, ``weight_ci_l0`` …).
    ``output_peephole_reads_previous_cell`` is a deliberate mistake (o_t sees c_{t−1}),
    there so a test can show that the comparison would catch it.
    """
    d = y0.shape[1]
    W = {gate: params["weight_ih_l0"][k * d:(k + 1) * d] for k, gate in enumerate(gate_order)}
    R = {gate: params["weight_hh_l0"][k * d:(k + 1) * d] for k, gate in enumerate(gate_order)}
    bias = params["bias_ih_l0"] + params["bias_hh_l0"]
    b = {gate: bias[k * d:(k + 1) * d] for k, gate in enumerate(gate_order)}
    p = {"i": params.get("weight_ci_l0"), "f": params.get("weight_cf_l0"), "o": params.get("weight_co_l0")}
    g = np.tanh if block_input_activation else (lambda a: a)
    h = np.tanh if block_output_activation else (lambda a: a)

    y_prev, c_prev = y0, c0
    outputs = []
    for x_t in x:
        def net(gate):
            return x_t @ W[gate].T + y_prev @ R[gate].T + b[gate]

        z_t = g(net("g"))
        f_t = sigmoid(net("f") + (p["f"] * c_prev if peepholes else 0.0)) if forget_gate else 1.0
        if coupled:
            i_t = 1.0 - f_t
        elif input_gate:
            i_t = sigmoid(net("i") + (p["i"] * c_prev if peepholes else 0.0))
        else:
            i_t = 1.0
        c_t = z_t * i_t + c_prev * f_t
        if output_gate:
            seen = c_prev if output_peephole_reads_previous_cell else c_t
            o_t = sigmoid(net("o") + (p["o"] * seen if peepholes else 0.0))
        else:
            o_t = 1.0
        y_t = h(c_t) * o_t
        outputs.append(y_t)
        y_prev, c_prev = y_t, c_t
    return np.stack(outputs), y_prev, c_prev


# --------------------------------------------------------------------------------------
# Staged cells (lstmkit.staged), from their papers. Storage: weight_ih holds one block per
# gate fed by x_t, weight_hh one per gate with a recurrent matrix, each in the order given
# (INPUT_ORDER, RECURRENT_ORDER), each product with its own bias (bias_ih, bias_hh).
# --------------------------------------------------------------------------------------
INPUT_ORDER = {"gru_reset_before": "rzn", "mut1": "zr", "mut2": "zn", "mut3": "zrn"}
RECURRENT_ORDER = {"gru_reset_before": "rzn", "mut1": "rn", "mut2": "zrn", "mut3": "zrn"}


def _blocks(weight, bias, order, d):
    W = {gate: weight[k * d:(k + 1) * d] for k, gate in enumerate(order)}
    b = {gate: bias[k * d:(k + 1) * d] for k, gate in enumerate(order)}
    return W, b


def cho_gru(x, params, h0):
    """Cho et al. 2014 (arXiv:1406.1078v3, eqs. 5–8), in torch's storage, over x [T, B, n]:

        r = σ(W_r x + U_r h_{t−1}),  z = σ(W_z x + U_z h_{t−1})
        h̃ = tanh(W x + U (r ⊙ h_{t−1}))
        h_t = z ⊙ h_{t−1} + (1 − z) ⊙ h̃

    (the reset gate before the product U; torch's and Keras's biases b_i·, b_h· added inside).
    Returns (y [T, B, d], h_T).
    """
    d = h0.shape[1]
    W, bx = _blocks(params["weight_ih_l0"], params["bias_ih_l0"], "rzn", d)
    U, bh = _blocks(params["weight_hh_l0"], params["bias_hh_l0"], "rzn", d)
    h = h0
    outputs = []
    for x_t in x:
        r = sigmoid(x_t @ W["r"].T + bx["r"] + h @ U["r"].T + bh["r"])
        z = sigmoid(x_t @ W["z"].T + bx["z"] + h @ U["z"].T + bh["z"])
        h_tilde = np.tanh(x_t @ W["n"].T + bx["n"] + (r * h) @ U["n"].T + bh["n"])
        h = z * h + (1.0 - z) * h_tilde
        outputs.append(h)
    return np.stack(outputs), h


def mut(number, x, params, h0):
    """MUT1–3 of Jozefowicz, Zaremba & Sutskever 2015, section 3 (their h_{t+1} from h_t):

        MUT1: z = σ(W_xz x + b_z)            r = σ(W_xr x + W_hr h + b_r)
              h' = tanh(W_hh (r ⊙ h) + tanh(x) + b_h) ⊙ z + h ⊙ (1 − z)
        MUT2: z = σ(W_xz x + W_hz h + b_z)   r = σ(x + W_hr h + b_r)
              h' = tanh(W_hh (r ⊙ h) + W_xh x + b_h) ⊙ z + h ⊙ (1 − z)
        MUT3: z = σ(W_xz x + W_hz tanh(h) + b_z)   r = σ(W_xr x + W_hr h + b_r)
              h' = tanh(W_hh (r ⊙ h) + W_xh x + b_h) ⊙ z + h ⊙ (1 − z)

    b_k is bias_ih's block plus bias_hh's where the gate has both. Returns (y [T, B, d], h_T).
    """
    name = f"mut{number}"
    d = h0.shape[1]
    Wx, bx = _blocks(params["weight_ih_l0"], params["bias_ih_l0"], INPUT_ORDER[name], d)
    Wh, bh = _blocks(params["weight_hh_l0"], params["bias_hh_l0"], RECURRENT_ORDER[name], d)

    def b(gate):
        return bx.get(gate, 0.0) + bh.get(gate, 0.0)

    h = h0
    outputs = []
    for x_t in x:
        if number == 1:
            z = sigmoid(x_t @ Wx["z"].T + b("z"))
            r = sigmoid(x_t @ Wx["r"].T + h @ Wh["r"].T + b("r"))
            h_new = np.tanh((r * h) @ Wh["n"].T + np.tanh(x_t) + b("n")) * z + h * (1.0 - z)
        elif number == 2:
            z = sigmoid(x_t @ Wx["z"].T + h @ Wh["z"].T + b("z"))
            r = sigmoid(x_t + h @ Wh["r"].T + b("r"))
            h_new = np.tanh((r * h) @ Wh["n"].T + x_t @ Wx["n"].T + b("n")) * z + h * (1.0 - z)
        else:
            z = sigmoid(x_t @ Wx["z"].T + np.tanh(h) @ Wh["z"].T + b("z"))
            r = sigmoid(x_t @ Wx["r"].T + h @ Wh["r"].T + b("r"))
            h_new = np.tanh((r * h) @ Wh["n"].T + x_t @ Wx["n"].T + b("n")) * z + h * (1.0 - z)
        h = h_new
        outputs.append(h)
    return np.stack(outputs), h


def greff_fgr(x, params, y0, c0, i0, f0, o0):
    """FGR (Greff et al. 2015, section 3): eqs. (1)–(6) with no peepholes (as the other
    built-in variants, NP plus the change) and full gate recurrence,

        i_t = σ(W_i x_t + R_i y_{t−1} + b_i + R_ii i_{t−1} + R_fi f_{t−1} + R_oi o_{t−1})

    and likewise f_t and o_t. Storage: weight_ih is i, f, g, o; weight_hh is R_i, R_f, R_z
    (torch's g), R_o, then R_{jk} for each target k in (i, f, o) and source j in (i, f, o),
    block "k_j". Returns (y [T, B, d], [y_T, c_T, i_T, f_T, o_T]).
    """
    d = y0.shape[1]
    W, bx = _blocks(params["weight_ih_l0"], params["bias_ih_l0"], "ifgo", d)
    order = ["i", "f", "g", "o"] + [f"{k}_{j}" for k in "ifo" for j in "ifo"]
    R, bh = _blocks(params["weight_hh_l0"], params["bias_hh_l0"], order, d)
    y, c, previous = y0, c0, {"i": i0, "f": f0, "o": o0}
    outputs = []
    for x_t in x:
        def gate(k):
            total = x_t @ W[k].T + bx[k] + y @ R[k].T + bh[k]
            for j in "ifo":
                total = total + previous[j] @ R[f"{k}_{j}"].T + bh[f"{k}_{j}"]
            return sigmoid(total)

        i_t, f_t, o_t = gate("i"), gate("f"), gate("o")
        z_t = np.tanh(x_t @ W["g"].T + bx["g"] + y @ R["g"].T + bh["g"])
        c = z_t * i_t + c * f_t
        y = np.tanh(c) * o_t
        previous = {"i": i_t, "f": f_t, "o": o_t}
        outputs.append(y)
    return np.stack(outputs), [y, c, previous["i"], previous["f"], previous["o"]]


def depth_gated_lstm(x, params, h0, c0, num_layers):
    """Yao et al. 2015, "Depth-Gated LSTM", eqs. (1)–(7), a stack of ``num_layers`` layers over
    x [T, B, n]; layer L + 1's input is h^L and its depth gate reads c_t^L (the first layer's
    lower cell is 0):

        d_t^{L+1} = σ(b_d + W_xd x_t^{L+1} + w_cd ⊙ c_{t−1}^{L+1} + w_ld ⊙ c_t^L)
        c_t^{L+1} = d_t^{L+1} ⊙ c_t^L + f_t ⊙ c_{t−1}^{L+1} + i_t ⊙ tanh(W_xc x_t + W_hc h_{t−1} + b_c)

    with peephole gates i, f (c_{t−1}) and o (c_t). Storage: weight_ih_l{k} blocks i, f, g, o, d;
    weight_hh_l{k} blocks i, f, g, o. h0, c0: [L, B, d]. Returns (y [T, B, d], h_T, c_T)."""
    d = h0.shape[2]
    layer_input, lower_cells = x, np.zeros((x.shape[0],) + h0.shape[1:])
    h_final, c_final = np.empty_like(h0), np.empty_like(c0)
    for layer in range(num_layers):
        k = f"_l{layer}"
        W, bx = _blocks(params["weight_ih" + k], params["bias_ih" + k], "ifgod", d)
        R, bh = _blocks(params["weight_hh" + k], params["bias_hh" + k], "ifgo", d)
        p = {name: params[name + k] for name in ("weight_ci", "weight_cf", "weight_co", "weight_cd", "weight_ld")}
        h, c = h0[layer], c0[layer]
        outputs, cells = [], []
        for x_t, c_below in zip(layer_input, lower_cells):
            i = sigmoid(x_t @ W["i"].T + bx["i"] + h @ R["i"].T + bh["i"] + p["weight_ci"] * c)
            f = sigmoid(x_t @ W["f"].T + bx["f"] + h @ R["f"].T + bh["f"] + p["weight_cf"] * c)
            depth = sigmoid(bx["d"] + x_t @ W["d"].T + p["weight_cd"] * c + p["weight_ld"] * c_below)
            c = depth * c_below + f * c + i * np.tanh(x_t @ W["g"].T + bx["g"] + h @ R["g"].T + bh["g"])
            o = sigmoid(x_t @ W["o"].T + bx["o"] + h @ R["o"].T + bh["o"] + p["weight_co"] * c)
            h = o * np.tanh(c)
            outputs.append(h)
            cells.append(c)
        layer_input, lower_cells = np.stack(outputs), np.stack(cells)
        h_final[layer], c_final[layer] = h, c
    return layer_input, h_final, c_final


def _one_state(reference):
    def run(x, params, states):
        y, h = reference(x, params, states[0])
        return y, [h]
    return run


# name -> reference(x, params, [initial state per state of the cell]) -> (y, [final states])
STAGED_REFERENCES = {
    "gru_reset_before": _one_state(cho_gru),
    "mut1": _one_state(lambda x, params, h0: mut(1, x, params, h0)),
    "mut2": _one_state(lambda x, params, h0: mut(2, x, params, h0)),
    "mut3": _one_state(lambda x, params, h0: mut(3, x, params, h0)),
    "lstm_fgr": lambda x, params, states: greff_fgr(x, params, *states),
    "depth_gated_lstm": lambda x, params, states: (lambda y, h, c: (y, [h[0], c[0]]))(
        *depth_gated_lstm(x, params, states[0][None], states[1][None], 1)),
}


def clockwork_rnn(x, params, h0, periods):
    """Koutník et al. 2014, "A Clockwork RNN", eqs. (1)–(2) with f_H = tanh: the hidden units
    form len(periods) modules of equal size, sorted by increasing period T_i; W_H is block
    upper-triangular (module i receives from the modules j with T_j >= T_i); at step t
    (t = 1, 2, ...) module i is executed when t mod T_i = 0 and keeps its output otherwise.
    torch's RNN storage (two biases). Returns (y [T, B, d], h_T).
    """
    d = h0.shape[1]
    unit_period = np.repeat(np.asarray(periods), d // len(periods))
    W_H = params["weight_hh_l0"] * (unit_period[None, :] >= unit_period[:, None])
    h, outputs = h0, []
    for t, x_t in enumerate(x, start=1):
        executed = t % unit_period == 0
        candidate = np.tanh(x_t @ params["weight_ih_l0"].T + params["bias_ih_l0"] + h @ W_H.T + params["bias_hh_l0"])
        h = np.where(executed, candidate, h)
        outputs.append(h)
    return np.stack(outputs), h
