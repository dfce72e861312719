"""The article's notation: a cell's equations and gradients as colah writes them.

:class:`lstmkit.symbolic.CellSpec` stores a cell as the library computes it:
pre-activation blocks ``gx_k = x W_ihᵀ + b_ih`` and ``gh_k = h W_hhᵀ + b_hh``
combined element-wise. A reader of *Understanding LSTM Networks* expects::

    f_t = σ(W_f · [h_{t−1}, x_t] + b_f)
    i_t = σ(W_i · [h_{t−1}, x_t] + b_i)
    C̃_t = tanh(W_C · [h_{t−1}, x_t] + b_C)
    C_t = f_t ⊙ C_{t−1} + i_t ⊙ C̃_t
    o_t = σ(W_o · [h_{t−1}, x_t] + b_o)
    h_t = o_t ⊙ tanh(C_t)

This module prints any spec that way:

- a block that only ever enters as ``gx_k + gh_k`` is ``W_k · [h_{t−1}, x_t] + b_k``,
  with ``W_k`` named after the value it feeds (``f_t`` → ``W_f``, ``C̃_t`` → ``W_C``);
  a cell with one block (the plain RNN) writes ``W · [h_{t−1}, x_t] + b``;
- a block whose two sides enter separately (torch's GRU candidate,
  ``r_t ⊙ (W_hn h + b_hn)``) is split into the columns of ``W_k`` that act on
  ``x_t`` and on ``h_{t−1}``: ``W_{k,x} · x_t + b_{k,x}`` and ``W_{k,h} · h_{t−1} + b_{k,h}``;
- element-wise products are ⊙, the gate before what it gates (``f_t ⊙ C_{t−1}``),
  a peephole weight ``weight_cf`` is ``p_f`` (``p_f ⊙ C_{t−1}``);
- the GRU's candidate is ``h̃_t`` (Cho et al. 2014, colah).

Gradients (:func:`gradient_lines`) are derived here from the spec with SymPy,
for one time step, and show every input's *whole* gradient: the one with
respect to ``h_{t−1}`` includes the matrix products through which ``h_{t−1}``
enters, ``∂L/∂h_{t−1} = W_{f,h}ᵀ · δ_f + W_{i,h}ᵀ · δ_i + …``, where
``W_{k,h}`` are the columns of ``W_k`` that multiply ``h_{t−1}`` and ``δ_k`` is
the gradient at gate ``k``'s pre-activation. A test checks these expressions
against :func:`lstmkit.symbolic.derive`.

For the chapters it also hands a layer's weights over in the article's form
(:func:`article_parameters`: ``W_f`` of shape [d, d+n] on ``[h_{t−1}, x_t]``, and
``b_f``), sets one gate (:func:`set_gate`), and computes one step of any spec in
NumPy straight from its equations (:func:`step`), so that no chapter needs the
torch layout of the weights. The library itself never imports this module.
"""
from __future__ import annotations

import re

import numpy as np
import sympy as sp

__all__ = ["CellNotation", "equation_lines", "gradient_lines", "equations_latex", "gradients_latex",
           "article_parameters", "set_gate", "step"]

_FUNCTIONS = {"sigmoid": r"\sigma", "tanh": r"\tanh", "relu": r"\operatorname{relu}"}
_SUBSCRIPT = re.compile(r"^(?:\\tilde\{)?([A-Za-z]+)\}?_(?:t|\{t\})$")


def _sub(text):
    return "{" + text + "}"


def _state(state):
    return {"c": "C"}.get(state, state)


def _default_latex(name):
    head, _, tail = str(name).partition("_")
    head = head if len(head) == 1 else rf"\mathrm{{{head}}}"   # a word, not a product of letters
    return head if not tail else rf"{head}_{{{tail}}}"


def _wrap(text):
    return r"\left(" + text + r"\right)"


class CellNotation:
    """How one cell's symbols read in the article's notation.

    Built from a spec's public attributes only (``gates``, ``states``, ``gx``,
    ``gh``, ``prev``, ``param``, ``param_names``, ``intermediates``, ``updates``).
    """

    def __init__(self, spec):
        if spec.staged:
            # the listings read every block as W_k · [h_{t−1}, x_t] + b_k; a staged cell's are not
            raise ValueError(f"notation prints cells whose blocks are W_k · [h_(t-1), x_t] + b_k; {spec.name!r} "
                             "is a staged cell (a block on one side only, a product of another value, or "
                             "the raw input): print spec.equations_latex() instead")
        self.spec = spec
        self.symbols = {}            # intermediate symbol -> its LaTeX
        self.gate_values = set()     # intermediates that are gates (σ(...) or 1 − gate)
        self.expanded = {}           # intermediate symbol -> expression of the inputs alone
        for item in spec.intermediates:
            sym = sp.Symbol(item.name, real=True)
            latex = item.latex
            if item.name == "candidate" and latex == "n_t":
                latex = r"\tilde{h}_t"   # torch's n_t: Cho et al. 2014 and colah call the GRU's candidate h̃_t
            self.symbols[sym] = latex
            self.expanded[sym] = item.expr.xreplace(self.expanded)
            if (getattr(item.expr.func, "__name__", "") == "sigmoid"
                    or (item.expr.free_symbols and item.expr.free_symbols <= self.gate_values
                        and isinstance(item.expr, sp.Add))):
                self.gate_values.add(sym)
        self.new_state = {s: spec.updates[s].xreplace(self.expanded) for s in spec.states}
        self.delta = {s: sp.Symbol(f"delta_{s}__", real=True) for s in spec.states}
        self.new_symbol = {s: sp.Symbol(f"new_{s}__", real=True) for s in spec.states}
        # −gx_k − gh_k of a summed block, gathered into −(W_k · [h_{t−1}, x_t] + b_k)
        self.pair = {g: sp.Symbol(f"pair_{g}__", real=True) for g in spec.gates}
        self._name_blocks()

    # -- names -----------------------------------------------------------------
    def _name_blocks(self):
        """Each gate block's subscript (the value it feeds), and whether it enters summed."""
        spec = self.spec
        order, names = [], {}
        for item in spec.intermediates:
            for g in spec.gates:
                if g not in names and (spec.gx[g] in item.expr.free_symbols
                                       or spec.gh[g] in item.expr.free_symbols):
                    match = _SUBSCRIPT.match(self.symbols[sp.Symbol(item.name, real=True)])
                    names[g] = match.group(1) if match else g
                    order.append(g)
        order += [g for g in spec.gates if g not in order]
        if len(spec.gates) == 1:
            names = {spec.gates[0]: None}
        elif len(set(names.get(g, g) for g in spec.gates)) != len(spec.gates):
            names = {}             # two blocks would read alike: use the spec's own names
        self.block_order = order
        self.block_name = {g: names.get(g, g) for g in spec.gates}
        self.summed = {g: self._enters_summed(g) for g in spec.gates}

    def _enters_summed(self, g):
        total = sp.Dummy("total")
        gx, gh = self.spec.gx[g], self.spec.gh[g]
        return all(gx not in expr.xreplace({gh: total - gx}).free_symbols
                   for expr in self.new_state.values())

    def weight(self, g, side=None):
        """``W_f``; with ``side`` ("x" or "h") the columns of ``W_f`` acting on x_t or h_{t−1}."""
        k = self.block_name[g]
        if side is None:
            return "W" if k is None else f"W_{_sub(k)}"
        return f"W_{_sub(side)}" if k is None else f"W_{_sub(k + ',' + side)}"

    def bias(self, g, side=None):
        k = self.block_name[g]
        if side is None:
            return "b" if k is None else f"b_{_sub(k)}"
        return f"b_{_sub(side)}" if k is None else f"b_{_sub(k + ',' + side)}"

    def delta_block(self, g):
        """δ_k: the gradient at block k's pre-activation (its x side when the block is split)."""
        k = self.block_name[g]
        return r"\delta" if k is None else rf"\delta_{_sub(k)}"

    def pre_activation(self, g):
        """What δ_k is the gradient with respect to, in LaTeX."""
        if self.summed[g]:
            return rf"{self.weight(g)} \cdot [h_{{t-1}}, x_t] + {self.bias(g)}"
        return rf"{self.weight(g, 'x')} \cdot x_t + {self.bias(g, 'x')}"

    def name(self, sym):
        """LaTeX of one symbol, or None for a gate block (printed by the sum it is part of)."""
        spec = self.spec
        if sym in self.symbols:
            return self.symbols[sym]
        for s in spec.states:
            if sym == spec.prev[s]:
                return rf"{_state(s)}_{{t-1}}"
            if sym == self.delta[s]:
                return rf"\delta {_state(s)}_t"
            if sym == self.new_symbol[s]:
                return f"{_state(s)}_t"
        for p in spec.param_names:
            if sym == spec.param[p]:
                return self.param_name(p)
        return None

    def param_name(self, p):
        match = re.fullmatch(r"weight_c(\w+)", p)
        if match:   # a peephole weight from C to gate k: p_k
            g = match.group(1)
            k = self.block_name.get(g) or g
            return f"p_{_sub(k)}"
        return _default_latex(p)

    # -- printing ----------------------------------------------------------------
    def latex(self, expr):
        return self._print(sp.sympify(expr))[0]

    def _print(self, expr):
        """(LaTeX, is_sum): is_sum tells a product to put it in parentheses."""
        spec = self.spec
        if isinstance(expr, sp.Symbol):
            for g in spec.gates:
                if expr == spec.gx[g]:
                    return self._linear(g, x=True, h=False), True
                if expr == spec.gh[g]:
                    return self._linear(g, x=False, h=True), True
            for g in spec.gates:
                if expr == self.pair[g]:
                    return self._linear(g, x=True, h=True), True
            name = self.name(expr)
            return (name if name is not None else sp.latex(expr)), False
        if isinstance(expr, sp.Number):
            return sp.latex(expr), expr.is_negative
        if isinstance(expr, sp.Add):
            return self._print_sum(expr), True
        if isinstance(expr, sp.Mul):
            return self._print_product(expr), False
        if isinstance(expr, sp.Pow):
            return self._print_power(expr), False
        func = getattr(expr.func, "__name__", "")
        if func in _FUNCTIONS and len(expr.args) == 1:
            return _FUNCTIONS[func] + _wrap(self._print(expr.args[0])[0]), False
        if func == "positive" and len(expr.args) == 1:   # relu's derivative, 1[relu(x) > 0]
            return r"\mathbb{1}\left[%s > 0\right]" % self._print(expr.args[0])[0], False
        # anything else (a user's own function): SymPy's printer with our symbol names
        names = {s: self._print(s)[0] for s in expr.free_symbols}
        return sp.latex(expr, symbol_names=names), False

    def _linear_parts(self, g, x, h):
        """The products and the biases a gate block stands for, as two lists of LaTeX terms:
        W_k · [h_{t−1}, x_t] and b_k for a summed block that has both sides, else each side's."""
        if self.summed[g] and x and h:
            return [rf"{self.weight(g)} \cdot [h_{{t-1}}, x_t]"], [self.bias(g)]
        parts, biases = [], []
        if x:
            parts.append(rf"{self.weight(g, 'x')} \cdot x_t")
            biases.append(self.bias(g, "x"))
        if h:
            parts.append(rf"{self.weight(g, 'h')} \cdot h_{{t-1}}")
            biases.append(self.bias(g, "h"))
        return parts, biases

    def _linear(self, g, x, h):
        """The weighted sum a gate block stands for."""
        parts, biases = self._linear_parts(g, x, h)
        return " + ".join(parts + biases)

    def _print_sum(self, expr):
        spec = self.spec
        terms = list(expr.args)
        for g in self.block_order:   # c·gx_k + c·gh_k of a summed block: c·(W_k · [h_{t−1}, x_t] + b_k)
            if not self.summed[g]:
                continue
            scaled = {}
            for term in terms:
                coefficient, rest = term.as_coeff_Mul()
                if rest in (spec.gx[g], spec.gh[g]) and coefficient != 1:
                    scaled[rest] = (coefficient, term)
            if len(scaled) == 2 and scaled[spec.gx[g]][0] == scaled[spec.gh[g]][0]:
                terms.remove(scaled[spec.gx[g]][1])
                terms.remove(scaled[spec.gh[g]][1])
                terms.append(scaled[spec.gx[g]][0] * self.pair[g])
        linear, biases = [], []
        for g in self.block_order:
            has_x, has_h = spec.gx[g] in terms, spec.gh[g] in terms
            if not (has_x or has_h):
                continue
            for side, present in (("x", has_x), ("h", has_h)):
                if present:
                    terms.remove(spec.gx[g] if side == "x" else spec.gh[g])
            parts, block_biases = self._linear_parts(g, has_x, has_h)
            linear += parts
            biases += block_biases
        previous = set(spec.prev.values())

        def rank(term):
            if term.is_Number:
                return 0
            if term.free_symbols & previous and not term.free_symbols & set(self.delta.values()):
                return 1      # the term carrying the old state first: f_t ⊙ C_{t−1} + i_t ⊙ C̃_t
            return 2

        printed = linear + [self._print(t)[0] for t in sorted(terms, key=rank)] + biases
        text = printed[0]
        for part in printed[1:]:
            text += " - " + part[1:].lstrip() if part.startswith("-") else " + " + part
        return text

    def _factor_rank(self, factor):
        if factor.is_Number:
            return 0
        free = factor.free_symbols
        if free & set(self.delta.values()):
            return 1          # the incoming gradient first, as the chain rule reads
        if free <= set(self.spec.param.values()) and free:
            return 2          # p_f ⊙ C_{t−1}
        if factor in self.gate_values:
            return 3          # a gate before what it gates: f_t ⊙ C_{t−1}
        if isinstance(factor, sp.Add) and free <= self.gate_values:
            return 3.5        # (1 − z_t) ⊙ h̃_t, f_t ⊙ (1 − f_t)
        return 4

    def _print_product(self, expr):
        numerator, denominator = sp.fraction(expr)
        if denominator != 1:
            return r"\frac{%s}{%s}" % (self.latex(numerator), self.latex(denominator))
        coefficient, factors = expr.as_coeff_mul()
        sign = ""
        if coefficient == -1:
            sign, coefficient = "-", sp.S.One
        elif coefficient.is_negative:
            sign, coefficient = "-", -coefficient
        parts = [] if coefficient == 1 else [sp.latex(coefficient)]
        for factor in sorted(factors, key=self._factor_rank):
            text, is_sum = self._print(factor)
            parts.append(_wrap(text) if is_sum else text)
        if coefficient != 1 and len(parts) > 1:
            return sign + parts[0] + " " + r" \odot ".join(parts[1:])
        return sign + r" \odot ".join(parts)

    def _print_power(self, expr):
        base, exponent = expr.args
        if exponent.is_negative:
            return r"\frac{1}{%s}" % self.latex(base ** -exponent)
        power = "^{%s}" % sp.latex(exponent)
        func = getattr(base.func, "__name__", "")
        if func in _FUNCTIONS and len(base.args) == 1:     # tanh^2(C_t)
            return _FUNCTIONS[func] + power + _wrap(self._print(base.args[0])[0])
        text, is_sum = self._print(base)
        return (_wrap(text) if is_sum or base.is_Function else text) + power


# ------------------------------------------------------------------------------
# The forward equations
# ------------------------------------------------------------------------------
def equation_lines(spec):
    """[(name, line)]: each forward equation in the article's notation and order.

    ``name`` is the left-hand side (``"f_t"``, ``r"\\tilde{C}_t"``, ``"C_t"``, ``"h_t"``);
    ``line`` is ``name &= right-hand side``, ready for an ``aligned`` block.
    """
    notation = CellNotation(spec)
    lines = []
    for item in spec.intermediates:
        lhs = notation.symbols[sp.Symbol(item.name, real=True)]
        lines.append((lhs, f"{lhs} &= {notation.latex(item.expr)}"))
    for s in spec.states:
        lhs, rhs = f"{_state(s)}_t", notation.latex(spec.updates[s])
        if rhs != lhs:    # an update that only names an intermediate says nothing new
            lines.append((lhs, f"{lhs} &= {rhs}"))
    return lines


def equations_latex(spec):
    """The forward equations, one LaTeX line each (no names)."""
    return [line for _, line in equation_lines(spec)]


# ------------------------------------------------------------------------------
# The gradients of one time step
# ------------------------------------------------------------------------------
def _simplify_names(notation, expr):
    """Write a derivative through the forward's named values: σ'(a_f) → f_t ⊙ (1 − f_t)."""
    by_expression = {value: notation.new_symbol[s] for s, value in notation.new_state.items()}
    by_expression.update({value: sym for sym, value in notation.expanded.items()})
    return sp.factor_terms(expr.xreplace(by_expression))


def _gradient(notation, wrt):
    """∂L/∂wrt within one step: Σ over new states s of δs_t · ∂s_t/∂wrt."""
    total = sum((notation.delta[s] * sp.diff(notation.new_state[s], wrt) for s in notation.spec.states),
                sp.S.Zero)
    return _simplify_names(notation, total)


def gradient_lines(spec):
    """[(names, line)]: the gradients of one step in the article's notation.

    ``names`` lists what selects the line in ``nb.show_gradients(..., only=...)``:
    ``r"\\delta_{f}"`` for a gate's pre-activation, ``"C_{t-1}"``, ``"h_{t-1}"``,
    ``"x_t"``, ``"p_{f}"`` for a peephole weight, ``"W"`` for the weights, and
    ``"definitions"`` for the line that says what the δ's are.
    """
    notation = CellNotation(spec)
    spec = notation.spec
    blocks = notation.block_order
    d = {g: notation.delta_block(g) for g in blocks}
    lines = []

    summed = [g for g in blocks if notation.summed[g]]
    definitions = [rf"\delta {_state(s)}_t = \frac{{\partial L}}{{\partial {_state(s)}_t}}" for s in spec.states]
    if len(summed) == 1:
        g = summed[0]
        definitions.append(rf"{d[g]} = \frac{{\partial L}}{{\partial ({notation.pre_activation(g)})}}")
    elif summed:
        ks = ", ".join(notation.block_name[g] for g in summed)
        definitions.append(r"\delta_k = \frac{\partial L}{\partial (W_k \cdot [h_{t-1}, x_t] + b_k)}"
                           rf"\ (k = {ks})")
    definitions += [rf"{d[g]} = \frac{{\partial L}}{{\partial ({notation.pre_activation(g)})}}"
                    for g in blocks if not notation.summed[g]]
    lines.append((("definitions",), r"&" + r",\quad ".join(definitions)))

    # δ at each block's pre-activation, and what reaches its h side
    h_side = {}
    for g in blocks:
        legacy = [rf"\partial g_{{{g}}}", rf"\partial g^{{x}}_{{{g}}}", rf"\partial g^{{h}}_{{{g}}}"]
        lines.append(((d[g], *legacy), rf"{d[g]} &= {notation.latex(_gradient(notation, spec.gx[g]))}"))
        if notation.summed[g]:
            h_side[g] = d[g]
            continue
        d_x, d_h = _gradient(notation, spec.gx[g]), _gradient(notation, spec.gh[g])
        factor = sp.factor(sp.cancel(d_h / d_x)) if d_x != 0 else None
        if factor is not None and not sp.fraction(factor)[1].free_symbols:
            h_side[g] = (d[g] if factor == 1
                         else _wrap(notation.latex(factor) + r" \odot " + d[g]))
        else:   # no simple factor: the h side gets a line of its own
            name = rf"\delta^{{h}}_{_sub(notation.block_name[g] or g)}"
            lines.append(((name, rf"\partial g^{{h}}_{{{g}}}"), rf"{name} &= {notation.latex(d_h)}"))
            h_side[g] = name

    # the previous states: element-wise paths, plus the matrix products for h_{t−1}
    for s in spec.states:
        lhs = rf"\frac{{\partial L}}{{\partial {_state(s)}_{{t-1}}}}"
        direct = _gradient(notation, spec.prev[s])
        terms = [] if direct == 0 else [notation.latex(direct)]
        if s == spec.output:   # h_{t−1} also enters every block through W_{k,h}
            terms += [rf"{notation.weight(g, 'h')}^\top \cdot {h_side[g]}" for g in blocks]
        rhs = " + ".join(terms) if terms else "0"
        key = f"{_state(s)}_{{t-1}}"
        lines.append(((key, rf"\partial {key}"), f"{lhs} &= {rhs}"))

    x_terms = [rf"{notation.weight(g, 'x')}^\top \cdot {d[g]}" for g in blocks]
    lines.append((("x_t", r"\partial x_t"), r"\frac{\partial L}{\partial x_t} &= " + " + ".join(x_terms)))

    for p in spec.param_names:
        name = notation.param_name(p)
        lines.append(((name, rf"\partial {_default_latex(p)}"),
                      rf"\frac{{\partial L}}{{\partial {name}}} &= {notation.latex(_gradient(notation, spec.param[p]))}"))

    # the weights and biases: every step adds its outer products
    weights = []
    if len(summed) == 1:
        g = summed[0]
        weights.append(rf"\frac{{\partial L}}{{\partial {notation.weight(g)}}} = "
                       rf"\sum_t {d[g]} \cdot [h_{{t-1}}, x_t]^\top,\quad "
                       rf"\frac{{\partial L}}{{\partial {notation.bias(g)}}} = \sum_t {d[g]}")
    elif summed:
        weights.append(r"\frac{\partial L}{\partial W_k} = \sum_t \delta_k \cdot [h_{t-1}, x_t]^\top,\quad "
                       r"\frac{\partial L}{\partial b_k} = \sum_t \delta_k")
    for g in blocks:
        if not notation.summed[g]:
            for side, delta, column in (("x", d[g], "x_t"), ("h", h_side[g], "h_{t-1}")):
                weights.append(rf"\frac{{\partial L}}{{\partial {notation.weight(g, side)}}} = "
                               rf"\sum_t {delta} \cdot {column}^\top,\quad "
                               rf"\frac{{\partial L}}{{\partial {notation.bias(g, side)}}} = \sum_t {delta}")
    lines.append((("W",), r"&" + r",\quad ".join(weights)))
    return lines


def gradients_latex(spec):
    """The gradients of one step, one LaTeX line each (no names)."""
    return [line for _, line in gradient_lines(spec)]


# ------------------------------------------------------------------------------
# A layer's parameters in the article's form, and one step computed from a spec
# ------------------------------------------------------------------------------
def _block_rows(layer, g):
    k = layer.cell.gates.index(g)
    return slice(k * layer.hidden_size, (k + 1) * layer.hidden_size)


def _block_by_name(layer, name):
    cell = CellNotation(layer.cell)
    for g in layer.cell.gates:
        if cell.block_name[g] == name or (cell.block_name[g] is None and name in ("", None)):
            return cell, g
    names = [cell.block_name[g] or "" for g in cell.block_order]
    raise ValueError(f"{layer.cell.name} has no gate {name!r}; its gates are {names}")


def article_parameters(layer, layer_index=0, gradients=False):
    """A layer's weights as the article writes them: ``{"f": (W_f, b_f), "i": ..., "C": ..., "o": ...}``.

    ``W_k`` is [d, d + n] and acts on the concatenation ``[h_{t−1}, x_t]``; ``b_k`` is [d].
    (lstmkit stores the weights as torch.nn does, stacked blocks with separate input and hidden
    parts and two biases; chapter 07 takes that layout apart.) A block whose two sides enter
    separately (the GRU's candidate) comes as ``"h,x"`` and ``"h,h"``: ``(W_{h,x}, b_{h,x})``
    on x_t and ``(W_{h,h}, b_{h,h})`` on h_{t−1}; element-wise weights such as the peepholes
    ``p_f`` come under the spec's names (``"weight_cf"``). ``gradients=True`` reads ``layer.grads``
    instead (after ``backward``): ``∂L/∂W_k`` and ``∂L/∂b_k``.
    """
    source = layer.grads if gradients else layer.params
    if gradients and not source:
        raise ValueError("the layer has no gradients yet: call layer.backward(...) after a forward pass")
    if not 0 <= layer_index < layer.num_layers:
        raise ValueError(f"layer_index must be in [0, {layer.num_layers}), got {layer_index}")
    suffix = f"_l{layer_index}"
    w_ih, w_hh = source["weight_ih" + suffix], source["weight_hh" + suffix]
    zeros = np.zeros(w_ih.shape[0], w_ih.dtype)
    b_ih, b_hh = source.get("bias_ih" + suffix, zeros), source.get("bias_hh" + suffix, zeros)
    cell = CellNotation(layer.cell)
    result = {}
    for g in cell.block_order:
        rows, k = _block_rows(layer, g), cell.block_name[g] or ""
        if cell.summed[g]:
            # ∂L/∂b_ih = ∂L/∂b_hh = ∂L/∂b_k, since b_k = b_ih + b_hh
            bias = b_ih[rows] if gradients else b_ih[rows] + b_hh[rows]
            result[k] = (np.hstack([w_hh[rows], w_ih[rows]]), bias)
        else:
            result[f"{k},x"] = (w_ih[rows].copy(), b_ih[rows].copy())
            result[f"{k},h"] = (w_hh[rows].copy(), b_hh[rows].copy())
    for p in layer.cell.param_names:   # element-wise weights (peepholes) under the spec's own names
        result[p] = source[p + suffix].copy()
    return result


def set_gate(layer, gate, weight=None, bias=None, layer_index=0):
    """Give gate ``gate`` (the article's name: "f", "i", "C", "o") the weight W [d, d + n] and bias b [d].

    Scalars broadcast: ``set_gate(layer, "f", weight=0.0, bias=12.0)`` pins f_t = σ(12) at
    every step, whatever h_{t−1} and x_t. Nothing changes unless every argument is valid.
    """
    cell, g = _block_by_name(layer, gate)
    if not cell.summed[g]:
        raise ValueError(f"gate {gate!r} of {layer.cell.name} has separate input and hidden parts")
    suffix = f"_l{layer_index}"
    # [h_{t−1}, x_t] is as wide as the weights' columns: h is p wide with a projection, and an
    # upper layer's x is the layer below's output, D times as wide
    d = layer.hidden_size
    h_width, n = layer.params["weight_hh" + suffix].shape[1], layer.params["weight_ih" + suffix].shape[1]
    updates = {}
    if weight is not None:
        weight = np.broadcast_to(np.asarray(weight, dtype=layer.dtype), (d, h_width + n))
        updates["weight_hh" + suffix], updates["weight_ih" + suffix] = weight[:, :h_width], weight[:, h_width:]
    if bias is not None:
        if "bias_ih" + suffix not in layer.params:
            raise ValueError("the layer was built with bias=False")
        updates["bias_ih" + suffix] = np.broadcast_to(np.asarray(bias, dtype=layer.dtype), (d,))
        updates["bias_hh" + suffix] = np.zeros(d, layer.dtype)
    rows = _block_rows(layer, g)
    for name, value in updates.items():
        layer.params[name][rows] = value


def step(spec, parameters, x_t, state):
    """One time step of ``spec`` computed with NumPy straight from its equations.

    ``parameters`` as :func:`article_parameters` returns them; ``x_t`` [B, n]; ``state`` one
    array [B, d] per state, in the spec's order (``(h, C)`` for the LSTM). Returns the new
    states in the same order. Slow and simple: for checking, not for training.
    """
    cell = CellNotation(spec)
    state = state if isinstance(state, (tuple, list)) else (state,)
    if len(state) != len(spec.states):
        raise ValueError(f"{spec.name} has states {spec.states}, got {len(state)} arrays")
    h_prev = state[spec.states.index(spec.output)]
    values = {}
    for g in spec.gates:
        k = cell.block_name[g] or ""
        if cell.summed[g]:
            W, b = parameters[k]
            values[spec.gx[g]] = np.hstack([h_prev, x_t]) @ W.T + b
            values[spec.gh[g]] = np.zeros_like(values[spec.gx[g]])
        else:
            (W_x, b_x), (W_h, b_h) = parameters[f"{k},x"], parameters[f"{k},h"]
            values[spec.gx[g]], values[spec.gh[g]] = x_t @ W_x.T + b_x, h_prev @ W_h.T + b_h
    for s, array in zip(spec.states, state):
        values[spec.prev[s]] = array
    for p in spec.param_names:
        values[spec.param[p]] = parameters[p]
    functions = {"sigmoid": lambda v: 1 / (1 + np.exp(-v)), "relu": lambda v: np.maximum(v, 0)}
    symbols = list(values)
    new = []
    for s in spec.states:
        function = sp.lambdify(symbols, cell.new_state[s], modules=[functions, "numpy"])
        new.append(np.broadcast_to(function(*values.values()), h_prev.shape).copy())
    return tuple(new)
