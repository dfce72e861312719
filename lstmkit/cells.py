"""The built-in cells, each written once as equations.

Symbols: ``gx_k``/``gh_k`` are block ``k`` of ``x W_ihᵀ + b_ih`` and
``h W_hhᵀ + b_hh``; ``s_prev`` is state ``s`` at t−1. Gate order and the
GRU's ``r ⊙ (W_hn h + b_hn)`` follow ``torch.nn``.
"""
from __future__ import annotations

from .symbolic import CellSpec, relu, sigmoid, tanh, tick

__all__ = ["BUILTIN_CELLS", "lstm_spec", "gru_spec", "gru_reset_before_spec", "mut_spec", "lstm_fgr_spec", "clockwork_spec", "depth_gated_lstm_spec", "rnn_spec", "get_cell"]


def rnn_spec(nonlinearity="tanh"):
    """Elman RNN: h_t = act(gx + gh), as ``torch.nn.RNN``."""
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    act = tanh if nonlinearity == "tanh" else relu
    spec = CellSpec(f"rnn_{nonlinearity}", gates="h", states=("h",),
                    description=f"Elman RNN with {nonlinearity} (torch.nn.RNN)")
    spec.update("h", act(spec.gx["h"] + spec.gh["h"]))
    return spec


def lstm_spec(name="lstm", *, input_gate=True, forget_gate=True, output_gate=True,
              input_activation=True, output_activation=True, peepholes=False, coupled=False,
              description="LSTM (torch.nn.LSTM)"):
    """The LSTM and the variants of Greff et al. 2015, all from one set of equations.

    ``coupled=True`` is CIFG (i = 1 − f); ``peepholes=True`` lets i and f
    see C_{t−1} and o see C_t (Gers & Schmidhuber 2000). A removed gate is
    the constant 1 and has no weight block.
    """
    if coupled and not (input_gate and forget_gate):
        raise ValueError("a coupled cell needs both the input and the forget gate")
    gates = ("i" if input_gate and not coupled else "") + ("f" if forget_gate else "") + "g" \
        + ("o" if output_gate else "")
    params = [p for p, on in (("weight_ci", input_gate and not coupled), ("weight_cf", forget_gate),
                              ("weight_co", output_gate)) if peepholes and on]
    spec = CellSpec(name, gates=gates, states=("h", "c"), params=params, description=description)
    gx, gh, p = spec.gx, spec.gh, spec.param
    c_prev = spec.prev["c"]

    def pre(block, peephole_param=None, cell=c_prev):
        total = gx[block] + gh[block]
        return total + p[peephole_param] * cell if peepholes and peephole_param in p else total

    f = spec.let("forget_gate", sigmoid(pre("f", "weight_cf")), r"f_t") if forget_gate else 1
    if coupled:
        i = spec.let("input_gate", 1 - f, r"i_t")
    elif input_gate:
        i = spec.let("input_gate", sigmoid(pre("i", "weight_ci")), r"i_t")
    else:
        i = 1
    g_pre = gx["g"] + gh["g"]
    g = spec.let("candidate", tanh(g_pre) if input_activation else g_pre, r"\tilde{C}_t")
    c = spec.let("cell", f * c_prev + i * g, r"C_t")
    o = spec.let("output_gate", sigmoid(pre("o", "weight_co", cell=c)), r"o_t") if output_gate else 1
    spec.update("c", c)
    spec.update("h", o * (tanh(c) if output_activation else c))
    return spec


def gru_spec():
    """GRU as ``torch.nn.GRU``: n = tanh(gx_n + r ⊙ (W_hn h + b_hn))."""
    spec = CellSpec("gru", gates="rzn", states=("h",), description="GRU (torch.nn.GRU)")
    gx, gh = spec.gx, spec.gh
    r = spec.let("reset_gate", sigmoid(gx["r"] + gh["r"]), r"r_t")
    z = spec.let("update_gate", sigmoid(gx["z"] + gh["z"]), r"z_t")
    n = spec.let("candidate", tanh(gx["n"] + r * gh["n"]), r"n_t")
    spec.update("h", (1 - z) * n + z * spec.prev["h"])
    return spec


def gru_reset_before_spec():
    """Cho et al. 2014's GRU (Keras's ``reset_after=False``): the reset gate acts before the
    recurrent product, n = tanh(W_in x + b_in + W_hn (r ⊙ h_{t−1}) + b_hn). torch's
    parameter names, shapes and gate order r, z, n."""
    spec = CellSpec("gru_reset_before", gates="rzn", states=("h",),
                    description="GRU of Cho et al. 2014, reset before the product (reset_after=False)")
    gx, gh, h_prev = spec.gx, spec.gh, spec.prev["h"]
    r = spec.let("reset_gate", sigmoid(gx["r"] + gh["r"]), r"r_t")
    z = spec.let("update_gate", sigmoid(gx["z"] + gh["z"]), r"z_t")
    spec.recurrent_operand("n", r * h_prev)
    n = spec.let("candidate", tanh(gx["n"] + gh["n"]), r"n_t")
    spec.update("h", (1 - z) * n + z * h_prev)
    return spec


def mut_spec(number):
    """MUT1, MUT2 or MUT3: the three best architectures of Jozefowicz, Zaremba & Sutskever 2015
    ("An Empirical Exploration of Recurrent Network Architectures", section 3), their equations:

    MUT1:  z = σ(W_xz x_t + b_z)
           r = σ(W_xr x_t + W_hr h_t + b_r)
           h_{t+1} = tanh(W_hh (r ⊙ h_t) + tanh(x_t) + b_h) ⊙ z + h_t ⊙ (1 − z)
    MUT2:  z = σ(W_xz x_t + W_hz h_t + b_z)
           r = σ(x_t + W_hr h_t + b_r)
           h_{t+1} = tanh(W_hh (r ⊙ h_t) + W_xh x_t + b_h) ⊙ z + h_t ⊙ (1 − z)
    MUT3:  z = σ(W_xz x_t + W_hz tanh(h_t) + b_z)
           r = σ(W_xr x_t + W_hr h_t + b_r)
           h_{t+1} = tanh(W_hh (r ⊙ h_t) + W_xh x_t + b_h) ⊙ z + h_t ⊙ (1 − z)

    Blocks z, r, n (n: the paper's h block). A block has rows in ``weight_ih`` only where the
    paper has a W_x· for it, in ``weight_hh`` only where it has a W_h·; each product has its
    bias (``bias_ih``, ``bias_hh``), so a block with both has two, summed, as torch's GRU.
    MUT1 (tanh(x_t)) and MUT2 (x_t in r) read the raw input: input_size must equal hidden_size.
    """
    if number not in (1, 2, 3):
        raise ValueError(f"MUT number must be 1, 2 or 3, got {number!r}")
    sides = {1: ("zr", "rn"), 2: ("zn", "zrn"), 3: ("zrn", "zrn")}[number]
    spec = CellSpec(f"mut{number}", gates="zrn", states=("h",), input_gates=sides[0], recurrent_gates=sides[1],
                    description=f"MUT{number} (Jozefowicz, Zaremba & Sutskever 2015)")
    gx, gh, h_prev = spec.gx, spec.gh, spec.prev["h"]
    if number == 3:
        spec.recurrent_operand("z", tanh(h_prev))
    z = spec.let("update_gate", sigmoid(gx["z"] + gh["z"]) if number != 1 else sigmoid(gx["z"]), r"z_t")
    r = spec.let("reset_gate", sigmoid((spec.x if number == 2 else gx["r"]) + gh["r"]), r"r_t")
    spec.recurrent_operand("n", r * h_prev)
    n = spec.let("candidate", tanh(gh["n"] + (tanh(spec.x) if number == 1 else gx["n"])), r"n_t")
    spec.update("h", n * z + h_prev * (1 - z))
    return spec


def lstm_fgr_spec():
    """FGR, full gate recurrence (Greff et al. 2015, "LSTM: A Search Space Odyssey", section 3):
    the gates see the previous step's gate activations through matrices of their own,

        i_t = σ(W_i x_t + R_i h_{t−1} + b_i + R_ii i_{t−1} + R_fi f_{t−1} + R_oi o_{t−1})
        f_t = σ(W_f x_t + R_f h_{t−1} + b_f + R_if i_{t−1} + R_ff f_{t−1} + R_of o_{t−1})
        o_t = σ(W_o x_t + R_o h_{t−1} + b_o + R_io i_{t−1} + R_fo f_{t−1} + R_oo o_{t−1})

    with g_t, c_t and h_t as the LSTM's. As lstmkit's other Greff variants, it starts from
    torch's LSTM (no peepholes: Greff's NP plus this change). The previous activations are
    states (``i_gate``, ``f_gate``, ``o_gate``, zero at the start unless given); R_kj, from
    gate j into gate k, is the block ``k_j`` of ``weight_hh``, after the blocks i, f, g, o.
    """
    recurrence = [f"{target}_{source}" for target in "ifo" for source in "ifo"]
    spec = CellSpec("lstm_fgr", gates=("i", "f", "g", "o", *recurrence),
                    states=("h", "c", "i_gate", "f_gate", "o_gate"), input_gates="ifgo",
                    description="Greff et al. 2015: FGR (full gate recurrence)")
    gx, gh = spec.gx, spec.gh
    for block in recurrence:
        spec.recurrent_operand(block, spec.prev[f"{block[2]}_gate"])

    def gate(k):
        return sigmoid(gx[k] + gh[k] + sum(gh[f"{k}_{source}"] for source in "ifo"))

    f = spec.let("forget_gate", gate("f"), r"f_t")
    i = spec.let("input_gate", gate("i"), r"i_t")
    g = spec.let("candidate", tanh(gx["g"] + gh["g"]), r"\tilde{C}_t")
    c = spec.let("cell", f * spec.prev["c"] + i * g, r"C_t")
    o = spec.let("output_gate", gate("o"), r"o_t")
    spec.update("c", c)
    spec.update("h", o * tanh(c))
    spec.update("i_gate", i)
    spec.update("f_gate", f)
    spec.update("o_gate", o)
    return spec


def clockwork_spec():
    """The Clockwork RNN's step (Koutník et al. 2014, eqs. 1–2): the hidden units form modules,
    module i runs at the steps t (counted from 1, as the paper) where its period T_i divides t,
    and keeps its value otherwise,

        h_t = a ⊙ tanh(W_I x_t + W_H h_{t−1} + b) + (1 − a) ⊙ h_{t−1},   a_j = 1[t mod T_(module of j) = 0].

    ``period`` is a per-unit constant the layer gives (lstmkit.ClockworkRNN); W_H's block
    upper-triangular structure is the layer's weight mask. Not a built-in: without periods it
    would be an Elman RNN, so its kernels are generated into the cache on first use.
    """
    spec = CellSpec("clockwork_rnn", gates="h", states=("h",), constants=("period",),
                    description="Clockwork RNN (Koutník et al. 2014)")
    active = spec.let("active", tick(spec.t + 1, spec.constant["period"]), r"a_t")
    candidate = spec.let("candidate", tanh(spec.gx["h"] + spec.gh["h"]), r"\tilde{h}_t")
    spec.update("h", active * candidate + (1 - active) * spec.prev["h"])
    return spec


def depth_gated_lstm_spec():
    """The Depth-Gated LSTM of Yao et al. 2015 ("Depth-Gated LSTM", arXiv:1508.03790, eqs. 1–7),
    one layer L + 1 of a stack, their equations:

        i_t = σ(W_xi x_t + W_hi h_{t−1} + w_ci ⊙ c_{t−1} + b_i)
        f_t = σ(W_xf x_t + W_hf h_{t−1} + w_cf ⊙ c_{t−1} + b_f)
        d_t = σ(b_d + W_xd x_t + w_cd ⊙ c_{t−1} + w_ld ⊙ c_t^L)          the depth gate
        c_t = d_t ⊙ c_t^L + f_t ⊙ c_{t−1} + i_t ⊙ tanh(W_xc x_t + W_hc h_{t−1} + b_c)
        o_t = σ(W_xo x_t + W_ho h_{t−1} + w_co ⊙ c_t + b_o)
        h_t = o_t ⊙ tanh(c_t)

    c_t^L is the cell of the layer below at the same step (``spec.below``, ``below="c"``); the
    first layer has none (zeros). Blocks i, f, g (torch's name for the block input), o, d:
    d is fed by x_t alone (no ``weight_hh`` rows); the peepholes and the depth gate's
    element-wise weights are ``weight_ci``, ``weight_cf``, ``weight_co``, ``weight_cd``, ``weight_ld``.
    """
    spec = CellSpec("depth_gated_lstm", gates="ifgod", states=("h", "c"), recurrent_gates="ifgo",
                    params=("weight_ci", "weight_cf", "weight_co", "weight_cd", "weight_ld"), below="c",
                    description="Depth-Gated LSTM (Yao et al. 2015)")
    gx, gh, p, c_prev = spec.gx, spec.gh, spec.param, spec.prev["c"]
    i = spec.let("input_gate", sigmoid(gx["i"] + gh["i"] + p["weight_ci"] * c_prev), r"i_t")
    f = spec.let("forget_gate", sigmoid(gx["f"] + gh["f"] + p["weight_cf"] * c_prev), r"f_t")
    d = spec.let("depth_gate", sigmoid(gx["d"] + p["weight_cd"] * c_prev + p["weight_ld"] * spec.below), r"d_t")
    g = spec.let("candidate", tanh(gx["g"] + gh["g"]), r"\tilde{C}_t")
    c = spec.let("cell", d * spec.below + f * c_prev + i * g, r"C_t")
    o = spec.let("output_gate", sigmoid(gx["o"] + gh["o"] + p["weight_co"] * c), r"o_t")
    spec.update("c", c)
    spec.update("h", o * tanh(c))
    return spec


def _builtins():
    cells = [
        rnn_spec("tanh"),
        rnn_spec("relu"),
        lstm_spec(),
        gru_spec(),
        gru_reset_before_spec(),
        mut_spec(1),
        mut_spec(2),
        mut_spec(3),
        lstm_spec("peephole_lstm", peepholes=True,
                  description="LSTM with peepholes (Gers & Schmidhuber 2000)"),
        lstm_spec("coupled_lstm", coupled=True, description="coupled input/forget gates (CIFG)"),
        lstm_spec("lstm_no_input_gate", input_gate=False, description="Greff et al. 2015: NIG"),
        lstm_spec("lstm_no_forget_gate", forget_gate=False, description="Greff et al. 2015: NFG"),
        lstm_spec("lstm_no_output_gate", output_gate=False, description="Greff et al. 2015: NOG"),
        lstm_spec("lstm_no_input_activation", input_activation=False,
                  description="Greff et al. 2015: NIAF"),
        lstm_spec("lstm_no_output_activation", output_activation=False,
                  description="Greff et al. 2015: NOAF"),
        lstm_fgr_spec(),
        depth_gated_lstm_spec(),
    ]
    return {cell.name: cell for cell in cells}


BUILTIN_CELLS = _builtins()


def get_cell(name):
    """A built-in cell spec by name."""
    try:
        return BUILTIN_CELLS[name]
    except KeyError:
        raise ValueError(f"no built-in cell {name!r}; choose one of {sorted(BUILTIN_CELLS)}") from None
