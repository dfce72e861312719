"""The course's diagrams, drawn by code: the figure sequence of colah's *Understanding LSTM Networks*.

``python -m lstmkit.course figures`` (``make figures``) calls :func:`draw_all`, which
writes every diagram in :data:`DIAGRAMS` to ``figures/<name>.png``. One diagram:

    >>> from lstmkit import diagrams
    >>> diagrams.save("lstm_forget_gate", "/tmp")          # doctest: +SKIP

The PNGs are reproducible byte for byte: fixed size and dpi, fixed fonts (DejaVu Sans,
which matplotlib ships, for text and mathtext) and no metadata that changes between runs.

Visual language (colah's): yellow boxes are learned layers (a matrix, a bias, then the
activation written in the box); pink circles are pointwise operations; lines carry vectors;
lines that merge concatenate, lines that fork copy. A stage being explained is drawn in
colour and the rest of the cell in grey.

Only the course tooling and teachers use this module; the library never imports it.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Ellipse, FancyArrowPatch, FancyBboxPatch
from matplotlib.path import Path as MplPath
from matplotlib.transforms import Bbox

from .notebook import PNG_METADATA   # no version string: the bytes depend on the drawing only

__all__ = ["DIAGRAMS", "DPI", "draw", "save", "draw_all"]

DPI = 150
UNIT = 0.4               # inches per diagram unit; every diagram is drawn in these units
FONT = "DejaVu Sans"     # ships with matplotlib, so every machine renders the same glyphs

# Everything that affects rendering is pinned here, so a user's matplotlibrc cannot change the bytes.
STYLE = {
    "font.family": "sans-serif",
    "font.sans-serif": [FONT],
    "mathtext.fontset": "dejavusans",
    "font.size": 11,
    "text.usetex": False,
    "text.antialiased": True,
    "lines.antialiased": True,
    "patch.antialiased": True,
    "lines.solid_joinstyle": "miter",
    "lines.solid_capstyle": "butt",
    "path.simplify": False,
    "savefig.facecolor": "white",
    "savefig.transparent": False,
    "figure.facecolor": "white",
    "axes.unicode_minus": True,
    "hatch.linewidth": 1.0,
}

# colah's palette: yellow layers, pink pointwise operations, green modules, blue inputs, purple outputs.
COLOURS = {
    "module": ("#d6ecd0", "#5a9a4c"),     # (fill, edge)
    "layer": ("#fde38c", "#c89a10"),
    "pointwise": ("#f8bfd0", "#c0506f"),
    "input": ("#b9d5f2", "#3f78b0"),
    "output": ("#e0c5ee", "#8a55a8"),
    "wire": "#222222",
    "accent": "#d4521a",                  # what a variant adds to the LSTM
    "text": "#111111",
}
DIM = {"fill": "#f2f2f2", "edge": "#c4c4c4", "wire": "#c8c8c8", "text": "#b0b0b0", "module": "#f7f7f7"}
WIRE_WIDTH = 1.8


class Diagram:
    """One figure: an axes in diagram units (equal aspect, no frame) with drawing primitives.

    Every primitive takes ``on``: True draws it in colour, False in grey (the parts of a
    cell that the figure is not about).
    """

    def __init__(self, xlim, ylim, crop=True):
        self.crop = crop
        width, height = xlim[1] - xlim[0], ylim[1] - ylim[0]
        self.fig = Figure(figsize=(width * UNIT, height * UNIT), dpi=DPI)
        FigureCanvasAgg(self.fig)
        self.ax = self.fig.add_axes((0, 0, 1, 1))
        self.ax.set_xlim(*xlim)
        self.ax.set_ylim(*ylim)
        self.ax.set_aspect("equal")
        self.ax.axis("off")

    # -- text -----------------------------------------------------------------------------
    def text(self, x, y, s, on=True, size=11, colour=None, **kwargs):
        kwargs.setdefault("ha", "center")
        kwargs.setdefault("va", "center")
        colour = colour or COLOURS["text"]
        return self.ax.text(x, y, s, fontsize=size, fontfamily=FONT, zorder=6,
                            color=colour if on else DIM["text"], **kwargs)

    # -- shapes ---------------------------------------------------------------------------
    def box(self, x, y, width, height, kind, on=True, rounding=0.12, zorder=3, linewidth=1.4):
        fill, edge = COLOURS[kind]
        patch = FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                               boxstyle=f"round,pad=0,rounding_size={rounding}",
                               facecolor=fill if on else DIM["fill"], edgecolor=edge if on else DIM["edge"],
                               linewidth=linewidth, zorder=zorder)
        self.ax.add_patch(patch)
        return patch

    def module(self, x0, y0, width, height, on=True, label=None):
        """The repeating module: a big green rounded box (lower-left corner at x0, y0)."""
        fill, edge = COLOURS["module"]
        self.ax.add_patch(FancyBboxPatch((x0, y0), width, height, boxstyle="round,pad=0,rounding_size=0.45",
                                         facecolor=fill if on else DIM["module"],
                                         edgecolor=edge if on else DIM["edge"], linewidth=1.6, zorder=0))
        if label:
            self.text(x0 + width / 2, y0 + height / 2, label, on=on, size=20)

    def layer(self, x, y, label, on=True, width=1.2, height=0.72, size=11):
        """A neural-network layer (yellow box): matrix, bias, then the activation written in it."""
        self.box(x, y, width, height, "layer", on)
        self.text(x, y, label, on=on, size=size)

    def pointwise(self, x, y, op, on=True, radius=0.32):
        """A pointwise operation (pink): a circle for ×, +, and a wider ellipse for tanh or 1−."""
        fill, edge = COLOURS["pointwise"]
        style = dict(facecolor=fill if on else DIM["fill"], edgecolor=edge if on else DIM["edge"],
                     linewidth=1.4, zorder=3)
        if op in ("×", "+"):
            self.ax.add_patch(Circle((x, y), radius, **style))
            self.text(x, y - 0.02, op, on=on, size=15, fontweight="bold")
        else:
            self.ax.add_patch(Ellipse((x, y), 2.9 * radius, 1.6 * radius, **style))
            self.text(x, y, op, on=on, size=10)

    def node(self, x, y, label, kind, on=True, radius=0.5):
        """An input (blue) or output (purple) vector of the sequence, e.g. x_t or h_t."""
        fill, edge = COLOURS[kind]
        long_label = len(label) > 6          # e.g. "$h_{t-1}$": smaller text in a wider circle
        self.ax.add_patch(Circle((x, y), radius * (1.2 if long_label else 1.0),
                                 facecolor=fill if on else DIM["fill"],
                                 edgecolor=edge if on else DIM["edge"], linewidth=1.4, zorder=3))
        self.text(x, y, label, on=on, size=10.5 if long_label else 13)

    # -- wires ----------------------------------------------------------------------------
    def wire(self, points, on=True, arrow=True, colour=None, width=WIRE_WIDTH, zorder=1):
        """A polyline carrying a vector, with an arrowhead at its last point."""
        colour = (colour or COLOURS["wire"]) if on else DIM["wire"]
        patch = FancyArrowPatch(path=MplPath(points),
                                arrowstyle="-|>,head_length=0.45,head_width=0.22" if arrow else "-",
                                mutation_scale=18, color=colour, linewidth=width,
                                joinstyle="miter", capstyle="butt", zorder=zorder, shrinkA=0, shrinkB=0)
        self.ax.add_patch(patch)
        return patch

    def crossing(self, x, y, vertical=True, background=None):
        """Where a wire passes over another without meeting it: a gap in the wire below.

        Draw the wire that passes over with ``zorder=2``; this paints the gap at ``zorder=1.5``.
        """
        half = 0.2
        ends = [(x, y - half), (x, y + half)] if vertical else [(x - half, y), (x + half, y)]
        self.ax.plot(*zip(*ends), color=background or COLOURS["module"][0], linewidth=WIRE_WIDTH + 8,
                     solid_capstyle="butt", zorder=1.5)

    def drawn_extent(self, pad=0.12):
        """The box (inches) around everything drawn, plus ``pad``: limits only need to be generous."""
        renderer = self.fig.canvas.get_renderer()
        drawn = [*self.ax.patches, *self.ax.lines, *(t for t in self.ax.texts if t.get_text())]
        extents = [artist.get_window_extent(renderer) for artist in drawn]
        return Bbox.union(extents).transformed(self.fig.dpi_scale_trans.inverted()).padded(pad)

    def save(self, path):
        self.fig.savefig(path, dpi=DPI, metadata=PNG_METADATA, facecolor="white",
                         bbox_inches=self.drawn_extent() if self.crop else None)


# ---------------------------------------------------------------------------------------
# Recurrent networks as black boxes
# ---------------------------------------------------------------------------------------
MODULE_W, MODULE_H = 2.2, 2.2


def _black_box(d, x, label_in, label_out, on_in=True, on_out=True):
    """Module A at column x with its input x below and output h above."""
    d.module(x - MODULE_W / 2, 0, MODULE_W, MODULE_H, label="A")
    d.node(x, -1.9, label_in, "input", on=on_in)
    d.wire([(x, -1.3), (x, 0)], on=on_in)
    d.wire([(x, MODULE_H), (x, MODULE_H + 1.3)], on=on_out, zorder=2)
    d.node(x, MODULE_H + 1.9, label_out, "output", on=on_out)


def draw_rnn_rolled_unrolled():
    d = Diagram((-2.1, 22.2), (-2.8, 5.0))
    # rolled: a loop feeds the module's output back into it
    _black_box(d, 0, "$x_t$", "$h_t$")
    d.wire([(MODULE_W / 2, 1.1), (1.75, 1.1), (1.75, 2.75), (-1.75, 2.75), (-1.75, 1.1), (-MODULE_W / 2, 1.1)])
    d.crossing(0, 2.75, background="white")       # h_t passes over the loop
    d.text(3.2, 1.1, "=", size=26)
    # unrolled: one copy of the module per time step, each passing h to the next
    columns = [5.2, 9.2, 13.2, 20.0]
    labels = ["1", "2", "3", "t"]                 # h_0 = 0 is the state before the first step
    for x, t in zip(columns, labels):
        _black_box(d, x, f"$x_{t}$", f"$h_{t}$")
    for left, right in zip(columns[:2], columns[1:3]):
        d.wire([(left + MODULE_W / 2, 1.1), (right - MODULE_W / 2, 1.1)])
    d.wire([(columns[2] + MODULE_W / 2, 1.1), (15.6, 1.1)])
    d.text(16.6, 1.1, "…", size=20)
    d.wire([(17.4, 1.1), (columns[3] - MODULE_W / 2, 1.1)])
    return d


def _gap_figure(columns, labels, inputs_on, output_on, dots_after=None):
    d = Diagram((columns[0] - 1.7, columns[-1] + 1.7), (-2.8, 5.0))
    for k, (x, t) in enumerate(zip(columns, labels)):
        _black_box(d, x, f"$x_{{{t}}}$", f"$h_{{{t}}}$", on_in=k in inputs_on, on_out=k == output_on)
    for k in range(len(columns) - 1):
        left, right = columns[k] + MODULE_W / 2, columns[k + 1] - MODULE_W / 2
        if k == dots_after:
            middle = (left + right) / 2
            d.wire([(left, 1.1), (middle - 0.8, 1.1)])
            d.text(middle, 1.1, "…", size=20)
            d.wire([(middle + 0.8, 1.1), (right, 1.1)])
        else:
            d.wire([(left, 1.1), (right, 1.1)])
    return d


def draw_rnn_short_gap():
    # h_3 needs x_0 and x_1: a short gap, which a plain RNN bridges
    return _gap_figure([0, 4, 8, 12, 16], ["0", "1", "2", "3", "4"], inputs_on={0, 1}, output_on=3)


def draw_rnn_long_gap():
    # h_{t+1} needs x_0 and x_1: a long gap, across which a plain RNN's gradient vanishes
    return _gap_figure([0, 4, 11, 15, 19], ["0", "1", "t-1", "t", "t+1"], inputs_on={0, 1}, output_on=4,
                       dots_after=1)


# ---------------------------------------------------------------------------------------
# Inside the module: one RNN step, one LSTM step
# ---------------------------------------------------------------------------------------
# Shared layout (module-local units, lower-left corner of the module at 0, 0): the hidden
# state enters at the bottom left and is concatenated with x_t; the cell state runs along the top.
H_Y = 1.0            # hidden-state line [h_{t-1}, x_t]
C_Y = 5.0            # cell-state line (the conveyor belt)
LAYER_Y = 2.3        # centre of the yellow layers
LAYER_W, LAYER_H = 1.2, 0.72
LAYER_TOP, LAYER_BOTTOM = LAYER_Y + LAYER_H / 2, LAYER_Y - LAYER_H / 2
R = 0.32             # radius of a pointwise circle
X_X = 1.0            # where x_t enters
LEAD = 1.2           # how far wires reach outside the module (half the gap between modules)


def _end_labels(d, ox, width, lines, lit, entry, exit):
    """Labels at the ends of a module's state lines: C_{t-1}, h_{t-1} in, C_t, h_t out."""
    for y, name in lines:
        if entry:
            d.text(ox - LEAD - 0.15, y, f"${name}_{{t-1}}$", on=lit(f"{name.lower()}_in"), ha="right", size=13)
        if exit:
            d.text(ox + width + LEAD + 0.15, y, f"${name}_t$", on=lit(f"{name.lower()}_out"), ha="left", size=13)


def _lit(on):
    """on=None lights every part; otherwise only the named ones."""
    return (lambda part: True) if on is None else (lambda part: part in on)


RNN_W, RNN_H = 6.0, 4.6


def rnn_cell(d, ox=0.0, on=None, time="t", entry_labels=True, exit_labels=True, exit_arrows=True):
    """A tanh RNN step: h_t = tanh(W·[h_{t-1}, x_t] + b), its module's lower-left corner at (ox, 0).

    ``on``: the lit parts (h_in, x_in, layer, h_out), None for all. In a chain of modules
    the exits of one run into the entries of the next (spacing width + 2·LEAD), so every
    module but the last is drawn with ``exit_arrows=False``.
    """
    lit = _lit(on)
    def P(x, y):   # module-local units to figure units
        return (ox + x, y)

    layer_x, out_x, out_y = 3.0, 4.6, 3.4
    d.module(ox, 0, RNN_W, RNN_H)
    d.wire([P(-LEAD, H_Y), P(X_X, H_Y), P(layer_x, H_Y), P(layer_x, LAYER_BOTTOM)], on=lit("h_in"))
    d.wire([P(X_X, -0.6), P(X_X, H_Y)], on=lit("x_in"), arrow=False)
    d.node(ox + X_X, -1.1, f"$x_{{{time}}}$", "input", on=lit("x_in"))
    d.layer(ox + layer_x, LAYER_Y, "tanh", on=lit("layer"))
    d.wire([P(layer_x, LAYER_TOP), P(layer_x, out_y), P(out_x, out_y), P(out_x, H_Y), P(RNN_W + LEAD, H_Y)],
           on=lit("h_out"), arrow=exit_arrows)
    d.wire([P(out_x, out_y), P(out_x, RNN_H + 0.6)], on=lit("h_out"))
    d.node(ox + out_x, RNN_H + 1.1, f"$h_{{{time}}}$", "output", on=lit("h_out"))
    _end_labels(d, ox, RNN_W, [(H_Y, "h")], lit, entry_labels, exit_labels)


LSTM_W, LSTM_H = 10.0, 6.0
F_X, I_X, G_X, O_X = 2.2, 3.7, 5.1, 6.6     # columns of the forget, input, candidate, output layers
IG_Y = 3.6                                  # height of i_t ⊙ C̃_t
TANH_X, TANH_Y, OUT_Y = 8.0, 4.3, 3.25       # tanh(C_t) and o_t ⊙ tanh(C_t)
HOUT_X = 9.1                                # where h_t turns down (next step) and up (output)


def lstm_cell(d, ox=0.0, on=None, variant="lstm", time="t", stage_labels=True,
              entry_labels=True, exit_labels=True, exit_arrows=True):
    """One LSTM step in colah's layout. ``on`` is the set of lit parts (None: all of them).

    Parts: c_in, forget_mul, c_mid, add, c_out, h_in, x_in, bus_f, bus_i, bus_g, bus_o,
    f_layer, i_layer, g_layer, o_layer, f_out, i_out, g_out, ig_mul, ig_out, c_tanh, o_out,
    o_mul, h_out; variants add peepholes (``variant="peephole"``) or the coupled 1 − f_t
    (``variant="coupled"``), drawn in the accent colour. Chains: see :func:`rnn_cell`.
    """
    lit = _lit(on)
    def P(x, y):   # module-local units to figure units
        return (ox + x, y)

    accent = COLOURS["accent"]
    coupled = variant == "coupled"
    d.module(ox, 0, LSTM_W, LSTM_H)

    # the cell state: straight along the top, touched only by × and +
    d.wire([P(-LEAD, C_Y), P(F_X - R, C_Y)], on=lit("c_in"))
    d.pointwise(ox + F_X, C_Y, "×", on=lit("forget_mul"))
    d.wire([P(F_X + R, C_Y), P(G_X - R, C_Y)], on=lit("c_mid"))
    d.pointwise(ox + G_X, C_Y, "+", on=lit("add"))
    # where h_t crosses the cell state, the lit line passes over (drawn on top, the gap in the other)
    belt_on_top = lit("c_out") and not lit("h_out")
    d.wire([P(G_X + R, C_Y), P(LSTM_W + LEAD, C_Y)], on=lit("c_out"), arrow=exit_arrows,
           zorder=2 if belt_on_top else 1)

    # [h_{t-1}, x_t] along the bottom, copied into every layer
    d.wire([P(-LEAD, H_Y), P(X_X, H_Y)], on=lit("h_in"), arrow=False)
    d.wire([P(X_X, -0.6), P(X_X, H_Y)], on=lit("x_in"), arrow=False)
    d.node(ox + X_X, -1.1, f"$x_{{{time}}}$", "input", on=lit("x_in"))
    d.wire([P(X_X, H_Y), P(F_X, H_Y)], on=lit("bus_f"), arrow=False)
    d.wire([P(F_X, H_Y), P(F_X, LAYER_BOTTOM)], on=lit("bus_f"))
    if coupled:
        d.wire([P(F_X, H_Y), P(G_X, H_Y)], on=lit("bus_g"), arrow=False)
    else:
        d.wire([P(F_X, H_Y), P(I_X, H_Y)], on=lit("bus_i"), arrow=False)
        d.wire([P(I_X, H_Y), P(I_X, LAYER_BOTTOM)], on=lit("bus_i"))
        d.wire([P(I_X, H_Y), P(G_X, H_Y)], on=lit("bus_g"), arrow=False)
    d.wire([P(G_X, H_Y), P(G_X, LAYER_BOTTOM)], on=lit("bus_g"))
    d.wire([P(G_X, H_Y), P(O_X, H_Y), P(O_X, LAYER_BOTTOM)], on=lit("bus_o"))

    # the four layers and what they feed
    d.layer(ox + F_X, LAYER_Y, r"$\sigma$", on=lit("f_layer"), size=13)
    d.wire([P(F_X, LAYER_TOP), P(F_X, C_Y - R)], on=lit("f_out"))
    if coupled:      # i_t = 1 − f_t: the forget gate's output, flipped, gates the candidate
        d.wire([P(F_X, IG_Y), P(I_X - 1.45 * R, IG_Y)], on=lit("one_minus"), colour=accent)
        d.pointwise(ox + I_X, IG_Y, "1−", on=lit("one_minus"))
        d.wire([P(I_X + 1.45 * R, IG_Y), P(G_X - R, IG_Y)], on=lit("one_minus"), colour=accent)
    else:
        d.layer(ox + I_X, LAYER_Y, r"$\sigma$", on=lit("i_layer"), size=13)
        d.wire([P(I_X, LAYER_TOP), P(I_X, IG_Y), P(G_X - R, IG_Y)], on=lit("i_out"))
    d.layer(ox + G_X, LAYER_Y, "tanh", on=lit("g_layer"))
    d.wire([P(G_X, LAYER_TOP), P(G_X, IG_Y - R)], on=lit("g_out"))
    d.pointwise(ox + G_X, IG_Y, "×", on=lit("ig_mul"))
    d.wire([P(G_X, IG_Y + R), P(G_X, C_Y - R)], on=lit("ig_out"))
    d.layer(ox + O_X, LAYER_Y, r"$\sigma$", on=lit("o_layer"), size=13)
    d.wire([P(O_X, LAYER_TOP), P(O_X, OUT_Y), P(TANH_X - R, OUT_Y)], on=lit("o_out"))

    # h_t = o_t ⊙ tanh(C_t), copied to the next step and out of the module
    d.wire([P(TANH_X, C_Y), P(TANH_X, TANH_Y + 0.8 * R)], on=lit("c_tanh"))
    d.pointwise(ox + TANH_X, TANH_Y, "tanh", on=lit("c_tanh"))
    d.wire([P(TANH_X, TANH_Y - 0.8 * R), P(TANH_X, OUT_Y + R)], on=lit("c_tanh"))
    d.pointwise(ox + TANH_X, OUT_Y, "×", on=lit("o_mul"))
    d.wire([P(TANH_X + R, OUT_Y), P(HOUT_X, OUT_Y), P(HOUT_X, H_Y), P(LSTM_W + LEAD, H_Y)],
           on=lit("h_out"), arrow=exit_arrows)
    d.wire([P(HOUT_X, OUT_Y), P(HOUT_X, LSTM_H + 0.6)], on=lit("h_out"), zorder=1 if belt_on_top else 2)
    d.crossing(ox + HOUT_X, C_Y, vertical=not belt_on_top)
    d.node(ox + HOUT_X, LSTM_H + 1.1, f"$h_{{{time}}}$", "output", on=lit("h_out"))

    if variant == "peephole":   # the gates also look at the cell state (C_{t-1} for f, i; C_t for o)
        d.wire([P(0.6, C_Y), P(0.6, 4.0), P(I_X - 0.4, 4.0), P(I_X - 0.4, LAYER_TOP)],
               on=lit("peepholes"), colour=accent)
        d.wire([P(F_X - 0.4, 4.0), P(F_X - 0.4, LAYER_TOP)], on=lit("peepholes"), colour=accent)
        d.wire([P(O_X - 0.4, C_Y), P(O_X - 0.4, LAYER_TOP)], on=lit("peepholes"), colour=accent)
        d.wire([P(F_X, LAYER_TOP), P(F_X, C_Y - R)], on=lit("f_out"), zorder=2)   # f_t passes over
        d.crossing(ox + F_X, 4.0)

    if stage_labels:
        label = dict(size=12)
        d.text(ox + F_X + 0.18, 3.25, "$f_t$", on=lit("f_out"), ha="left", **label)
        if not coupled:
            d.text(ox + I_X + 0.55, IG_Y + 0.3, "$i_t$", on=lit("i_out"), **label)
        d.text(ox + G_X + 0.26, 3.0, r"$\tilde{C}_t$", on=lit("g_out"), ha="left", **label)
        d.text(ox + O_X + 0.55, OUT_Y + 0.3, "$o_t$", on=lit("o_out"), **label)
    _end_labels(d, ox, LSTM_W, [(C_Y, "C"), (H_Y, "h")], lit, entry_labels, exit_labels)


GRU_W, GRU_H = 12.2, 7.4
TOP_Y = 6.4                                 # the GRU's single state line
GRU_COPY_X = 0.4                            # h_{t-1} copied down to meet x_t
# columns: the update and reset gates first (so [h_{t-1}, x_t] ends before the candidate), then
# the candidate's W_{h,h} and W_{h,x}, its tanh, z_t ⊙ h_{t-1} and (1 − z_t) ⊙ h̃_t
GZ_X, GR_X, HN_X, N_X, NT_X, ZM_X, ONE_X, NM_X = 1.9, 3.2, 4.6, 6.0, 7.4, 8.6, 9.6, 10.6
N_Y = 3.3                                   # the candidate's row
HN_Y = 4.4                                  # W_{h,h} h_{t-1} + b_{h,h}
Z_Y = 5.45                                  # the row that carries z_t to the right
X_TAP_Y = 0.45                              # x_t alone, under the gates, to W_{h,x}
GRU_OUT_X = 11.4


def gru_cell(d, ox=0.0, on=None):
    """A GRU step as torch.nn.GRU (and lstmkit) computes it: the reset gate scales W_{h,h} h_{t-1} + b_{h,h}.

    h̃_t = tanh(W_{h,x} x_t + b_{h,x} + r_t ⊙ (W_{h,h} h_{t-1} + b_{h,h})),
    h_t = z_t ⊙ h_{t-1} + (1 − z_t) ⊙ h̃_t. The two yellow boxes labelled with a matrix are
    linear layers (no activation). The gates come first, so only one wire crosses another.
    """
    lit = _lit(on)
    def P(x, y):   # module-local units to figure units
        return (ox + x, y)

    background = COLOURS["module"][0]
    d.module(ox, 0, GRU_W, GRU_H)
    # state line: h_{t-1} → × z_t → + (1 − z_t) ⊙ h̃_t → h_t
    d.wire([P(-LEAD, TOP_Y), P(ZM_X - R, TOP_Y)], on=lit("h_in"))
    d.pointwise(ox + ZM_X, TOP_Y, "×", on=lit("z_mul"))
    d.wire([P(ZM_X + R, TOP_Y), P(NM_X - R, TOP_Y)], on=lit("h_mid"))
    d.pointwise(ox + NM_X, TOP_Y, "+", on=lit("add"))
    d.wire([P(NM_X + R, TOP_Y), P(GRU_W + LEAD, TOP_Y)], on=lit("h_out"))
    d.wire([P(GRU_OUT_X, TOP_Y), P(GRU_OUT_X, GRU_H + 0.6)], on=lit("h_out"))
    d.node(ox + GRU_OUT_X, GRU_H + 1.1, "$h_t$", "output", on=lit("h_out"))
    # [h_{t-1}, x_t] feeds the two gates
    d.wire([P(GRU_COPY_X, TOP_Y), P(GRU_COPY_X, H_Y), P(X_X, H_Y)], on=lit("h_in"), arrow=False)
    d.wire([P(X_X, -0.6), P(X_X, H_Y)], on=lit("x_in"), arrow=False)
    d.node(ox + X_X, -1.1, "$x_t$", "input", on=lit("x_in"))
    d.wire([P(X_X, H_Y), P(GZ_X, H_Y), P(GZ_X, LAYER_BOTTOM)], on=lit("gates_in"))
    d.wire([P(GZ_X, H_Y), P(GR_X, H_Y), P(GR_X, LAYER_BOTTOM)], on=lit("gates_in"))
    d.layer(ox + GZ_X, LAYER_Y, r"$\sigma$", on=lit("z_layer"), size=13)
    d.layer(ox + GR_X, LAYER_Y, r"$\sigma$", on=lit("r_layer"), size=13)
    # candidate: tanh(W_{h,x} x_t + b_{h,x} + r_t ⊙ (W_{h,h} h_{t-1} + b_{h,h}))
    d.wire([P(HN_X, TOP_Y), P(HN_X, HN_Y + LAYER_H / 2)], on=lit("candidate"))
    d.layer(ox + HN_X, HN_Y, "$W_{h,h}$", on=lit("candidate"), size=11)
    d.wire([P(HN_X, HN_Y - LAYER_H / 2), P(HN_X, N_Y + R)], on=lit("candidate"))
    d.wire([P(GR_X, LAYER_TOP), P(GR_X, N_Y), P(HN_X - R, N_Y)], on=lit("r_out"))
    d.pointwise(ox + HN_X, N_Y, "×", on=lit("candidate"))
    d.wire([P(HN_X + R, N_Y), P(N_X - R, N_Y)], on=lit("candidate"))
    d.wire([P(X_X, X_TAP_Y), P(N_X, X_TAP_Y), P(N_X, LAYER_BOTTOM)], on=lit("candidate"))
    d.layer(ox + N_X, LAYER_Y, "$W_{h,x}$", on=lit("candidate"), size=11)
    d.wire([P(N_X, LAYER_TOP), P(N_X, N_Y - R)], on=lit("candidate"))
    d.pointwise(ox + N_X, N_Y, "+", on=lit("candidate"))
    d.wire([P(N_X + R, N_Y), P(NT_X - 1.45 * R, N_Y)], on=lit("candidate"))
    d.pointwise(ox + NT_X, N_Y, "tanh", on=lit("candidate"))
    d.wire([P(NT_X + 1.45 * R, N_Y), P(NM_X, N_Y), P(NM_X, Z_Y - R)], on=lit("n_out"))
    # update gate: z_t keeps the old state, 1 − z_t lets the candidate in; its row passes over W_{h,h}'s line
    d.wire([P(GZ_X, LAYER_TOP), P(GZ_X, Z_Y), P(ZM_X, Z_Y), P(ZM_X, TOP_Y - R)], on=lit("z_out"), zorder=2)
    d.crossing(ox + HN_X, Z_Y, vertical=False, background=background)
    d.wire([P(ZM_X, Z_Y), P(ONE_X - 1.45 * R, Z_Y)], on=lit("z_out"), arrow=False)
    d.pointwise(ox + ONE_X, Z_Y, "1−", on=lit("z_out"))
    d.wire([P(ONE_X + 1.45 * R, Z_Y), P(NM_X - R, Z_Y)], on=lit("z_out"))
    d.pointwise(ox + NM_X, Z_Y, "×", on=lit("zn_mul"))
    d.wire([P(NM_X, Z_Y + R), P(NM_X, TOP_Y - R)], on=lit("zn_mul"))
    label = dict(size=12)
    d.text(ox + GZ_X + 0.55, Z_Y + 0.3, "$z_t$", on=lit("z_out"), **label)
    d.text(ox + GR_X + 0.55, N_Y + 0.3, "$r_t$", on=lit("r_out"), **label)
    d.text(ox + 8.3, N_Y - 0.35, r"$\tilde{h}_t$", on=lit("n_out"), **label)
    _end_labels(d, ox, GRU_W, [(TOP_Y, "h")], lit, True, True)


# ---------------------------------------------------------------------------------------
# The figures
# ---------------------------------------------------------------------------------------
def _equations(d, x, y, lines, size=15, spacing=1.25, on=True):
    """Equations (mathtext), left-aligned, one per line, the first centred at height y."""
    for k, line in enumerate(lines):
        d.text(x, y - k * spacing, line, ha="left", size=size, on=on)


CELL_VIEW = ((-3.3, 13.3), (-1.9, 7.9))          # one LSTM module with its labels
# the stage and variant figures share one frame, so the module stays put from one to the next
CELL_WITH_EQUATIONS = ((-3.4, 23.2), (-1.8, 7.8))
EQ_X = 14.2                                         # where equations start, right of the module
CONCAT = r"[h_{t-1},\, x_t]"


def draw_rnn_chain():
    spacing = RNN_W + 2 * LEAD
    d = Diagram((-LEAD - 0.3, 2 * spacing + RNN_W + LEAD + 0.3), (-1.9, 6.4))
    for k, time in enumerate(["t-1", "t", "t+1"]):
        rnn_cell(d, k * spacing, time=time, entry_labels=False, exit_labels=False, exit_arrows=k == 2)
    return d


def draw_lstm_chain():
    spacing = LSTM_W + 2 * LEAD
    d = Diagram((-LEAD - 0.3, 2 * spacing + LSTM_W + LEAD + 0.3), (-1.9, 7.9))
    for k, time in enumerate(["t-1", "t", "t+1"]):
        lstm_cell(d, k * spacing, time=time, stage_labels=k == 1,
                  entry_labels=False, exit_labels=False, exit_arrows=k == 2)
    return d


def draw_notation():
    d = Diagram((-0.2, 20.2), (-2.3, 1.6))
    d.layer(1.6, 0.4, "", width=1.6, height=0.9)
    d.pointwise(5.6, 0.4, "×", radius=0.42)
    d.wire([(8.2, 0.4), (10.6, 0.4)])
    d.wire([(12.4, 0.9), (13.4, 0.9), (13.4, 0.4)], arrow=False)      # concatenate: two lines merge
    d.wire([(12.4, -0.1), (13.4, -0.1), (13.4, 0.4)], arrow=False)
    d.wire([(13.4, 0.4), (14.8, 0.4)])
    d.wire([(16.4, 0.4), (17.6, 0.4), (17.6, 0.9), (19.0, 0.9)])         # copy: one line forks
    d.wire([(17.6, 0.4), (17.6, -0.1), (19.0, -0.1)])
    for x, name in [(1.6, "Neural network\nlayer"), (5.6, "Pointwise\noperation"), (9.4, "Vector\ntransfer"),
                    (13.6, "Concatenate"), (17.7, "Copy")]:
        d.text(x, -0.75, name, size=12, va="top")
    return d


def draw_cell_state():
    d = Diagram(*CELL_VIEW)
    lstm_cell(d, on={"c_in", "forget_mul", "c_mid", "add", "c_out"}, stage_labels=False)
    return d


def draw_gate():
    d = Diagram((-1.6, 8.6), (-1.9, 3.5))
    d.wire([(-0.6, 2.4), (2.0 - R, 2.4)])
    d.pointwise(2.0, 2.4, "×")
    d.wire([(2.0 + R, 2.4), (4.6, 2.4)])
    d.layer(2.0, 0.5, r"$\sigma$", size=13)
    d.wire([(2.0, -1.2), (2.0, 0.5 - LAYER_H / 2)])
    d.wire([(2.0, 0.5 + LAYER_H / 2), (2.0, 2.4 - R)])
    d.text(-0.75, 2.4, "$a$", ha="right", size=14)
    d.text(4.75, 2.4, r"$\sigma(z) \odot a$", ha="left", size=14)
    d.text(2.0, -1.5, "$z$", size=14)
    d.text(2.2, 1.45, r"$\in (0, 1)$", ha="left", size=12)
    return d


def _stage(on, lines):
    d = Diagram(*CELL_WITH_EQUATIONS, crop=False)
    lstm_cell(d, on=on)
    _equations(d, EQ_X, 3.0 + 0.6 * (len(lines) - 1), lines)
    return d


def draw_lstm_forget_gate():
    return _stage({"h_in", "x_in", "bus_f", "f_layer", "f_out", "forget_mul", "c_in"},
                  [rf"$f_t = \sigma\left(W_f \cdot {CONCAT} + b_f\right)$"])


def draw_lstm_input_gate():
    return _stage({"h_in", "x_in", "bus_f", "bus_i", "bus_g", "i_layer", "g_layer", "i_out", "g_out"},
                  [rf"$i_t = \sigma\left(W_i \cdot {CONCAT} + b_i\right)$",
                   rf"$\tilde{{C}}_t = \tanh\left(W_C \cdot {CONCAT} + b_C\right)$"])


def draw_lstm_cell_update():
    return _stage({"c_in", "forget_mul", "c_mid", "add", "c_out", "f_out", "i_out", "g_out", "ig_mul", "ig_out"},
                  [r"$C_t = f_t \odot C_{t-1} + i_t \odot \tilde{C}_t$"])


def draw_lstm_output_gate():
    return _stage({"h_in", "x_in", "bus_f", "bus_i", "bus_g", "bus_o", "o_layer", "o_out", "c_tanh", "o_mul",
                   "h_out"},
                  [rf"$o_t = \sigma\left(W_o \cdot {CONCAT} + b_o\right)$",
                   r"$h_t = o_t \odot \tanh\left(C_t\right)$"])


def draw_variant_peephole():
    d = Diagram(*CELL_WITH_EQUATIONS, crop=False)
    lstm_cell(d, variant="peephole")
    _equations(d, EQ_X, 4.2, [rf"$f_t = \sigma\left(W_f \cdot {CONCAT} + p_f \odot C_{{t-1}} + b_f\right)$",
                              rf"$i_t = \sigma\left(W_i \cdot {CONCAT} + p_i \odot C_{{t-1}} + b_i\right)$",
                              rf"$o_t = \sigma\left(W_o \cdot {CONCAT} + p_o \odot C_t + b_o\right)$"],
               size=13)
    return d


def draw_variant_coupled():
    d = Diagram(*CELL_WITH_EQUATIONS, crop=False)
    lstm_cell(d, variant="coupled")
    _equations(d, EQ_X, 3.6, [r"$i_t = 1 - f_t$",
                              r"$C_t = f_t \odot C_{t-1} + (1 - f_t) \odot \tilde{C}_t$"])
    return d


def draw_variant_gru():
    d = Diagram((-3.3, 31.0), (-1.9, 9.3))
    gru_cell(d)
    x = GRU_W + 2.8
    # the article's notation, as lstmkit.notation renders the GRU spec
    _equations(d, x, 5.9, [rf"$r_t = \sigma\left(W_r \cdot {CONCAT} + b_r\right)$",
                           rf"$z_t = \sigma\left(W_z \cdot {CONCAT} + b_z\right)$",
                           r"$\tilde{h}_t = \tanh\left(W_{h,x} \cdot x_t + b_{h,x} + r_t \odot "
                           r"(W_{h,h} \cdot h_{t-1} + b_{h,h})\right)$",
                           r"$h_t = z_t \odot h_{t-1} + (1 - z_t) \odot \tilde{h}_t$"], size=13)
    return d


# name → (drawing function, one-line description); figures/README.md lists the same names.
DIAGRAMS = {
    "rnn_rolled_unrolled": (draw_rnn_rolled_unrolled, "A recurrent network: a loop, and the same loop unrolled over time."),
    "rnn_short_gap": (draw_rnn_short_gap, "A short gap: h_3 depends on x_0 and x_1, a few steps back."),
    "rnn_long_gap": (draw_rnn_long_gap, "A long gap: h_{t+1} depends on x_0 and x_1, many steps back."),
    "rnn_chain": (draw_rnn_chain, "The repeating module of a standard RNN: a single tanh layer."),
    "lstm_chain": (draw_lstm_chain, "The repeating module of an LSTM: four interacting layers."),
    "notation": (draw_notation, "The notation: layer, pointwise operation, vector transfer, concatenate, copy."),
    "lstm_cell_state": (draw_cell_state, "The cell state, the conveyor belt along the top, touched only by × and +."),
    "gate": (draw_gate, "A gate: a sigmoid layer and a pointwise multiplication."),
    "lstm_forget_gate": (draw_lstm_forget_gate, "Stage 1, the forget gate f_t."),
    "lstm_input_gate": (draw_lstm_input_gate, "Stage 2, the input gate i_t and the candidate C̃_t."),
    "lstm_cell_update": (draw_lstm_cell_update, "Stage 3, the cell-state update C_t = f_t ⊙ C_{t−1} + i_t ⊙ C̃_t."),
    "lstm_output_gate": (draw_lstm_output_gate, "Stage 4, the output gate o_t and h_t = o_t ⊙ tanh(C_t)."),
    "variant_peephole": (draw_variant_peephole, "Variant: peephole connections (the gates see the cell state)."),
    "variant_coupled": (draw_variant_coupled, "Variant: coupled forget and input gates, i_t = 1 − f_t."),
    "variant_gru": (draw_variant_gru, "Variant: the GRU, as torch.nn.GRU and lstmkit compute it."),
}


def _drawing(name):
    if name not in DIAGRAMS:
        raise KeyError(f"no diagram named {name!r}; expected one of {', '.join(DIAGRAMS)}")
    return DIAGRAMS[name][0]


def draw(name):
    """The diagram ``name`` (a key of DIAGRAMS) as a matplotlib Figure, in the pinned style."""
    with matplotlib.rc_context(STYLE):
        return _drawing(name)().fig


def save(name, directory):
    """Draw ``name`` and write ``directory/<name>.png``; returns the path."""
    drawing = _drawing(name)
    path = Path(directory) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    # fonts and mathtext are looked up when the figure is rendered, so the style must hold here too
    with matplotlib.rc_context(STYLE):
        drawing().save(path)
    return path


def draw_all(directory, names=None):
    """Write every diagram (or the given names) to ``directory``; returns the paths."""
    return [save(name, directory) for name in (names or DIAGRAMS)]
