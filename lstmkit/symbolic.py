"""A recurrent cell as SymPy equations, and the derivation of its gradients.

A cell's time step splits into a linear part (``gx = x W_ihᵀ + b_ih`` and
``gh = h W_hhᵀ + b_hh``, computed by BLAS) and an element-wise part, written
here once as SymPy expressions of scalars. Everything is per hidden unit, so
one scalar equation describes all ``batch × hidden`` elements.

:class:`CellSpec` holds the equations; :func:`derive` differentiates them and
returns a :class:`Derivation`: the forward program, the values it must save,
and the backward program, in which every derivative of an activation is
written through that activation's saved output (σ' = σ(1−σ),
tanh' = 1 − tanh²) so that backward recomputes nothing transcendental for
them. Other SymPy functions (exp, log, sin, Abs, Max, Piecewise, ...) work
too; backward recomputes their derivatives from saved gate inputs.

A spec is checked when it is written, not at the first forward: every name
against the generator's namespace (:data:`KERNEL_WORDS`, :data:`KERNEL_ARRAYS`,
:data:`KERNEL_PREFIXES`, keywords, builtins), every function against the
kernel printer (it and its derivatives must print), every number for being a
finite real. What CellSpec accepts derives, compiles and passes the gradient
check (tests/test_cell_properties.py).

This module knows nothing of Numba; :mod:`lstmkit.codegen` prints a
Derivation as kernel source (ARCHITECTURE.md describes the whole pipeline).
"""
from __future__ import annotations

import builtins
import hashlib
import keyword
import re
from dataclasses import dataclass, field

import sympy as sp

__all__ = [
    "sigmoid", "tanh", "relu", "tick", "CellSpec", "CellSpecError", "Derivation", "derive",
]


# --------------------------------------------------------------------------
# Activations: each derivative is expressed through the activation's output.
# --------------------------------------------------------------------------
class sigmoid(sp.Function):
    """σ(x) = 1 / (1 + e^{-x}); σ'(x) = σ(x) (1 − σ(x))."""

    def fdiff(self, argindex=1):
        return self * (1 - self)

    def _latex(self, printer, exp=None):
        body = r"\sigma\left(%s\right)" % printer._print(self.args[0])
        return body if exp is None else r"%s^{%s}" % (body, exp)


tanh = sp.tanh  # SymPy's own: tanh'(x) = 1 − tanh(x)²


class positive(sp.Function):
    """1 where the argument is > 0, else 0: ReLU's derivative, taken of its output."""

    def fdiff(self, argindex=1):
        return sp.S.Zero

    def _latex(self, printer, exp=None):
        return r"\mathbb{1}\left[%s > 0\right]" % printer._print(self.args[0])


class relu(sp.Function):
    """relu(x) = max(x, 0); relu'(x) = 1[relu(x) > 0]."""

    def fdiff(self, argindex=1):
        return positive(self)

    def _latex(self, printer, exp=None):
        body = r"\operatorname{relu}\left(%s\right)" % printer._print(self.args[0])
        return body if exp is None else r"%s^{%s}" % (body, exp)


class tick(sp.Function):
    """tick(n, period) = 1 where ``period`` divides the step number ``n``, else 0 (the Clockwork
    RNN's module clock). Neither argument is differentiated: its derivative is 0."""

    nargs = 2

    def fdiff(self, argindex=1):
        return sp.S.Zero

    def _latex(self, printer, exp=None):
        n, period = (printer._print(a) for a in self.args)
        return r"\mathbb{1}\left[%s \bmod %s = 0\right]" % (n, period)


ACTIVATIONS = (sigmoid, sp.tanh, relu)


def refuse_recomputed_activations(spec, gradients):
    """Every gradient must read σ, tanh and relu through their saved outputs (backward
    recomputes nothing transcendental for them): a gradient still holding one is refused."""
    for grad_sym, expr in gradients.items():
        leftover = [n for n in sp.preorder_traversal(expr) if isinstance(n, ACTIVATIONS)]
        if leftover:
            raise CellSpecError(f"{spec.name}: {grad_sym} would recompute {leftover[0]}; "
                                "σ, tanh and relu have derivatives through their saved outputs")


class CellSpecError(ValueError):
    """A cell's equations are incomplete or inconsistent."""


# --------------------------------------------------------------------------
# The generator's namespace: names a cell may not use
# --------------------------------------------------------------------------
# The kernels name their own values after a cell's names (gx_f, d_h, d_c_prev, tmp0,
# tanh_3, the arrays H, D_H, PARTIAL_D_<param>, ...) and use words of their own (real,
# batch, b, j, ...). A cell's gate, state, parameter and intermediate names are checked
# against all of them when the spec is written, so that no generated name can mean two
# things: an intermediate called d_h would be overwritten by the incoming gradient d_h.
KERNEL_WORDS = frozenset({
    # scalars and loop variables of the generated functions
    "real", "batch", "hidden", "b", "j", "t", "lo", "hi", "steps", "block", "batch_rows", "rows",
    # modules and run-time functions the kernel modules import
    "math", "np", "numba", "sigmoid", "tanh", "relu", "expm1", "matmul_packed",
    "NoOverlapCompiler", "positive",
    # the kernel modules' functions
    "forward_step", "backward_step", "forward_rows", "backward_rows", "forward_sequence",
    "backward_sequence",
})
# arrays the kernels name whatever the cell (a state or parameter ``s`` is the array S)
KERNEL_ARRAYS = frozenset({
    "X", "GX", "GH", "W_IH_T_PACKED", "W_HH_T_PACKED", "W_HH_PACKED", "BIAS_IH", "BIAS_HH",
    "SAVED", "LENGTHS", "BLOCKS", "D_OUT", "D_GX", "D_GH", "RECURRENT",
})
# generated names start so (compared in lower case: arrays are names in capitals); and
# <state>_prev is the previous value of a state
KERNEL_PREFIXES = ("d_", "gx_", "gh_", "sigmoid_", "tanh_", "relu_", "prev_", "next_", "held_",
                   "partial_", "operand_")
_CSE_NAME = re.compile(r"tmp\d*")   # sympy.cse's tmp0, tmp1, ...


def _check_name(cell, kind, name, taken=(), states=()):
    """Raise CellSpecError unless ``name`` can name a cell's ``kind`` in the generated kernels.

    ``taken``: the cell's names so far; two names may not differ by case alone, because
    states and parameters become arrays named in capitals. ``states``: the cell's states,
    whose previous values are <state>_prev.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise CellSpecError(f"{cell}: {kind} name {name!r} is not a Python identifier")
    problem = None
    low = name.lower()
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        problem = "is a Python keyword"
    elif hasattr(builtins, name):
        problem = "is a Python builtin the kernels may call"
    elif name in KERNEL_WORDS or low in {w.lower() for w in KERNEL_WORDS}:
        problem = "is a name the generated kernels use"
    elif low in ("x_in", "t_step", "below_in"):
        problem = "is the symbol of the " + {"x_in": "raw input (spec.x)", "t_step": "step number (spec.t)",
                                             "below_in": "layer below's value (spec.below)"}[low]
    elif name.upper() in KERNEL_ARRAYS:
        problem = f"would name the kernels' array {name.upper()}"
    elif low.startswith(KERNEL_PREFIXES) or _CSE_NAME.fullmatch(low):
        problem = ("starts like the names the generator makes "
                   f"(prefixes {', '.join(KERNEL_PREFIXES)}; tmp<number>)")
    elif low in {f"{s.lower()}_prev" for s in states}:
        problem = f"is the name of the previous value of the state {low[:-5]!r}"
    else:
        clash = [other for other in taken if other.lower() == low]
        if clash:
            problem = f"differs from the name {clash[0]!r} by case alone (arrays are names in capitals)"
    if problem:
        raise CellSpecError(f"{cell}: {kind} name {name!r} {problem}; choose another name")
    return name


def _unprintable(expr):
    """Why the kernel printer cannot print ``expr``, or None (lstmkit.codegen prints it)."""
    from .codegen import unprintable

    return unprintable(expr)


_function_verdicts = {}    # (function class, number of arguments) -> None or why it is refused


def _function_verdict(node):
    """Why the kernels cannot compute ``node``'s function, or None. Decided once per function
    class, on dummy arguments (a Piecewise, whose arguments are pairs, on the node itself)."""
    if isinstance(node, sp.Piecewise):
        probe, key = node, None
    else:
        key = (node.func, len(node.args))
        if key in _function_verdicts:
            return _function_verdicts[key]
        probe = node.func(*(sp.Dummy(f"u{k}", real=True) for k in range(len(node.args))))
    reason = _unprintable(probe)
    if reason is None:
        for symbol in sorted(probe.free_symbols, key=str):
            derivative = probe.diff(symbol)
            if derivative.has(sp.Derivative, sp.Subs, sp.DiracDelta):
                reason = f"SymPy gives its derivative only as {derivative}"
            else:
                reason = _unprintable(derivative)
                if reason is not None:
                    reason = f"its derivative {derivative} cannot be printed: {reason}"
            if reason is not None:
                break
    if key is not None:
        _function_verdicts[key] = reason
    return reason


def _check_functions(cell, what, expr):
    """Every function in ``expr`` must print as kernel code, and so must its derivatives.

    SymPy differentiates most functions, but some only to a ``Derivative`` it cannot
    evaluate (floor, Mod) or to a ``DiracDelta`` (sign, Heaviside); the printer has no
    code for a few (LambertW). Those are refused here, when the equation is written,
    rather than as a Numba error at the first forward or backward. (Powers print and
    differentiate whatever their base and exponent; numbers are checked below.)
    """
    for node in sorted(expr.atoms(sp.Function), key=sp.default_sort_key):
        reason = _function_verdict(node)
        if reason is not None:
            raise CellSpecError(f"{cell}: {what} uses {node}, which the generated kernels cannot "
                                f"compute: {reason}")
    for number in expr.atoms():
        if number.is_number and not (number.is_extended_real and number.is_finite):
            raise CellSpecError(f"{cell}: {what} contains the number {number}; the kernels compute "
                                "with finite real numbers only")


# --------------------------------------------------------------------------
# The description of a cell
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Intermediate:
    """A named value computed inside a step, e.g. ``forget_gate = σ(gx_f + gh_f)``."""

    name: str
    expr: sp.Expr
    latex: str


class CellSpec:
    """The element-wise part of one time step of a recurrent cell.

    Parameters
    ----------
    name:
        identifier of the cell (a valid Python name; generated files use it).
    gates:
        names of the pre-activation blocks, in the order they are stacked in
        ``weight_ih``/``weight_hh`` (torch's LSTM: ``"ifgo"``; GRU: ``"rzn"``).
        Block ``k`` appears in the equations as ``gx_k`` and ``gh_k``.
    states:
        names of the recurrent states, in torch's order (LSTM: ``("h", "c")``).
        The previous value of state ``s`` is the symbol ``s_prev``.
    output:
        the state that is also the layer's output at each step (``"h"``).
    params:
        element-wise parameters (one value per hidden unit), e.g. peephole weights.
    """

    def __init__(self, name, gates, states=("h",), output="h", params=(), description="",
                 input_gates=None, recurrent_gates=None, constants=(), below=None):
        if not str(name).isidentifier():
            raise CellSpecError(f"cell name must be a Python identifier, got {name!r}")
        self.name = str(name)
        self.description = description
        self.gates = tuple(gates)
        self.states = tuple(states)
        self.output = output
        self.param_names = tuple(params)
        if not self.gates:
            raise CellSpecError(f"{name}: a cell needs at least one gate block")
        if len(set(self.gates)) != len(self.gates):
            raise CellSpecError(f"{name}: gate names must be distinct, got {self.gates}")
        if not self.states:
            raise CellSpecError(f"{name}: a cell needs at least one state")
        for gate in self.gates:      # a gate appears only inside gx_<gate>, gh_<gate>, d_gx_<gate>
            if not isinstance(gate, str) or not gate.isidentifier():
                raise CellSpecError(f"{name}: gate name {gate!r} is not a Python identifier")
        taken = []
        self.constant_names = tuple(constants)
        for kind, names in (("state", self.states), ("parameter", self.param_names),
                            ("constant", self.constant_names)):
            for item in names:
                taken.append(_check_name(name, kind, item, taken, self.states))
        if output not in self.states:
            raise CellSpecError(f"{name}: output {output!r} is not one of the states {self.states}")
        # blocks with rows in weight_ih (fed by x_t) and in weight_hh (a recurrent product);
        # by default every block has both. A block with one of them only is a staged cell's.
        self.input_gates = self._gate_subset("input_gates", input_gates)
        self.recurrent_gates = self._gate_subset("recurrent_gates", recurrent_gates)
        for gate in self.gates:
            if gate not in self.input_gates and gate not in self.recurrent_gates:
                raise CellSpecError(f"{name}: gate block {gate!r} is in neither input_gates nor "
                                    "recurrent_gates, so nothing would feed it")
        self.gx = {g: sp.Symbol(f"gx_{g}", real=True) for g in self.input_gates}
        self.gh = {g: sp.Symbol(f"gh_{g}", real=True) for g in self.recurrent_gates}
        # the raw input x_t, element-wise (staged cells; needs input_size == hidden_size)
        self.x = sp.Symbol("x_in", real=True)
        # the step number, 0 at a direction's first step (staged cells)
        self.t = sp.Symbol("t_step", real=True)
        # per-unit values that are not trained (the layer gives them; the Clockwork RNN's periods)
        self.constant = {c: sp.Symbol(c, real=True) for c in self.constant_names}
        # the value of the state ``below`` of the layer below, at the same step (a depth gate)
        if below is not None and below not in self.states:
            raise CellSpecError(f"{name}: below={below!r} is not one of the states {self.states}")
        self.below_state = below
        self.below = sp.Symbol("below_in", real=True)
        # gate -> the value its recurrent product multiplies, where not the output's previous value
        self.operands: dict[str, sp.Expr] = {}
        self.prev = {s: sp.Symbol(f"{s}_prev", real=True) for s in self.states}
        self.param = {p: sp.Symbol(p, real=True) for p in self.param_names}
        self.intermediates: list[Intermediate] = []
        self.updates: dict[str, sp.Expr] = {}
        self._names = {str(s) for s in self.input_symbols}
        if len(self._names) != len(self.input_symbols):
            raise CellSpecError(f"{name}: gate, state and parameter names collide: {sorted(self._names)}")
        self._user_names = taken     # states, parameters, then intermediates: no two alike

    def _gate_subset(self, what, gates):
        if gates is None:
            return self.gates
        gates = tuple(gates)
        unknown = [g for g in gates if g not in self.gates]
        if unknown or len(set(gates)) != len(gates):
            raise CellSpecError(f"{self.name}: {what} must be distinct gate blocks of {self.gates}, got {gates}")
        return tuple(g for g in self.gates if g in gates)     # in the order of the blocks

    # -- building -----------------------------------------------------------
    @property
    def input_symbols(self):
        return (list(self.gx.values()) + list(self.gh.values())
                + list(self.prev.values()) + list(self.param.values()) + [self.x, self.t, self.below]
                + list(getattr(self, "constant", {}).values()))

    def recurrent_operand(self, gate, expr):
        """Let block ``gate``'s recurrent product multiply ``expr`` instead of the output's
        previous value: ``gh_gate = W_hh,gate · expr + b_hh,gate``, e.g. Cho's GRU,
        ``W_hn (r ⊙ h_{t−1})``. ``expr`` may use values computed earlier in the step (then the
        step runs in stages; ARCHITECTURE.md), but not ``gh_gate`` or anything computed from it.
        """
        if gate not in self.recurrent_gates:
            raise CellSpecError(f"{self.name}: {gate!r} is not one of the recurrent gate blocks "
                                f"{self.recurrent_gates}")
        if gate in self.operands:
            raise CellSpecError(f"{self.name}: the recurrent operand of block {gate!r} is already given")
        self.operands[gate] = self._check_expr(f"the recurrent operand of block {gate!r}", expr)
        return self

    @property
    def staged(self):
        """Whether the cell needs the staged kernels: a block fed by x or h alone, a recurrent
        product of some other value than h_{t−1}, or the raw input."""
        expressions = [item.expr for item in self.intermediates] + [*self.updates.values(), *self.operands.values()]
        uses_x_or_t = any(self.x in e.free_symbols or self.t in e.free_symbols for e in expressions)
        return (self.input_gates != self.gates or self.recurrent_gates != self.gates
                or bool(self.operands) or uses_x_or_t or bool(self.constant_names) or self.below_state is not None)

    def operand(self, gate):
        """The value block ``gate``'s recurrent product multiplies (h_{t−1} unless given)."""
        return self.operands.get(gate, self.prev[self.output])

    @property
    def symbols(self):
        """Every symbol an equation may use: inputs, then intermediates defined so far."""
        table = {str(s): s for s in self.input_symbols}
        table.update({i.name: sp.Symbol(i.name, real=True) for i in self.intermediates})
        return table

    def let(self, name, expr, latex=None):
        """Define an intermediate value; returns its symbol for later equations."""
        if not isinstance(name, str) or not name.isidentifier() or name in self.symbols:
            raise CellSpecError(f"{self.name}: {name!r} is not a new Python identifier")
        _check_name(self.name, "intermediate", name, self._user_names, self.states)
        expr = self._check_expr(name, expr)
        self.intermediates.append(Intermediate(name, expr, latex or _default_latex(name)))
        self._user_names.append(name)
        return sp.Symbol(name, real=True)

    def update(self, state, expr):
        """Define the new value of a state."""
        if state not in self.states:
            raise CellSpecError(f"{self.name}: {state!r} is not one of the states {self.states}")
        self.updates[state] = self._check_expr(f"new {state}", expr)
        return self

    def _check_expr(self, what, expr):
        if isinstance(expr, str):
            raise CellSpecError(f"{self.name}: {what} is the string {expr!r}; write it with the "
                                "spec's symbols (spec.gx, spec.gh, spec.prev, ...), not as text")
        try:
            expr = sp.sympify(expr, strict=True)
        except sp.SympifyError:
            raise CellSpecError(f"{self.name}: {what} is not a SymPy expression: {expr!r}") from None
        if not isinstance(expr, sp.Expr):
            raise CellSpecError(f"{self.name}: {what} must be a scalar SymPy expression, got {expr!r}")
        known = set(self.symbols.values())
        unbound = sorted(str(s) for s in expr.free_symbols if s not in known)
        if unbound:
            raise CellSpecError(
                f"{self.name}: {what} uses unbound symbol(s) {unbound}; known symbols are "
                f"{sorted(self.symbols)}")
        _check_functions(self.name, what, expr)
        return expr

    def validate(self):
        """Raise :class:`CellSpecError` unless the spec is complete and consistent."""
        missing = [s for s in self.states if s not in self.updates]
        if missing:
            raise CellSpecError(f"{self.name}: no update given for state(s) {missing}")
        used = self._inputs_used()
        if self.staged:      # a staged cell's every product is used: no weights with zero gradient
            unused = [str(s) for s in [*self.gx.values(), *self.gh.values()] if s not in used]
            if unused:
                raise CellSpecError(
                    f"{self.name}: the product(s) {unused} are declared but never used; leave the block "
                    "out of input_gates or recurrent_gates so that it gets no weights")
        unused_blocks = [g for g in self.gates if self.gx.get(g) not in used and self.gh.get(g) not in used]
        if unused_blocks:
            raise CellSpecError(
                f"{self.name}: gate block(s) {unused_blocks} are declared but never used; "
                f"the cell has {len(self.gates)} blocks {self.gates}, so weight_ih must have "
                f"{len(self.gates)}·hidden_size rows")
        return self

    def _inputs_used(self):
        """The input symbols the new states depend on, following intermediates by name.

        Free symbols only, no substitution: linear in the size of the equations.
        """
        depends = {}
        for item in self.intermediates:
            symbols = set()
            for s in item.expr.free_symbols:
                symbols |= depends.get(s, {s})
            depends[sp.Symbol(item.name, real=True)] = symbols
        used = set()
        for state in self.states:
            if state in self.updates:
                for s in self.updates[state].free_symbols:
                    used |= depends.get(s, {s})
        # a used recurrent product uses what its operand uses
        pending = [g for g in self.operands if self.gh[g] in used]
        while pending:
            for s in self.operands[pending.pop()].free_symbols:
                for u in depends.get(s, {s}):
                    if u not in used:
                        used.add(u)
                        pending += [g for g, sym in self.gh.items() if sym == u and g in self.operands]
        return used

    # -- views ----------------------------------------------------------------
    def expanded_updates(self):
        """Each new state as an expression of the inputs alone."""
        values = {}
        for item in self.intermediates:
            values[sp.Symbol(item.name, real=True)] = item.expr.xreplace(values)
        return {s: self.updates[s].xreplace(values) for s in self.states if s in self.updates}

    @property
    def key(self):
        """A hash of the equations: names the cached kernel file of a user cell."""
        text = repr((self.name, self.gates, self.states, self.output, self.param_names,
                     [(i.name, sp.srepr(i.expr)) for i in self.intermediates],
                     [(s, sp.srepr(self.updates.get(s))) for s in self.states]))
        if self.staged:
            text += repr((self.input_gates, self.recurrent_gates,
                          [(g, sp.srepr(self.operand(g))) for g in self.recurrent_gates]))
            if self.constant_names or self.below_state:
                text += repr((self.constant_names, self.below_state))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def latex_names(self):
        names = {self.x: "x_t", self.t: "t", self.below: rf"{_state_latex(self.below_state or 'c')}^{{L-1}}_t", **{c: _default_latex(n) for n, c in self.constant.items()}}
        for g in self.input_gates:
            names[self.gx[g]] = rf"g^{{x}}_{{{g}}}"
        for g in self.recurrent_gates:
            names[self.gh[g]] = rf"g^{{h}}_{{{g}}}"
        for s in self.states:
            names[self.prev[s]] = rf"{_state_latex(s)}_{{t-1}}"
        for p in self.param_names:
            names[self.param[p]] = _default_latex(p)
        for item in self.intermediates:
            names[sp.Symbol(item.name, real=True)] = item.latex
        return names

    def equations_latex(self):
        """The forward equations, one LaTeX line each."""
        names = self.latex_names()
        lines = [rf"{item.latex} &= {sp.latex(item.expr, symbol_names=names)}"
                 for item in self.intermediates]
        for s in self.states:
            lhs, rhs = rf"{_state_latex(s)}_t", sp.latex(self.updates[s], symbol_names=names)
            if rhs != lhs:  # an update that only names an intermediate says nothing new
                lines.append(rf"{lhs} &= {rhs}")
        return lines

    def _repr_latex_(self):
        return r"$\begin{aligned}" + r"\\ ".join(self.equations_latex()) + r"\end{aligned}$"

    def __repr__(self):
        return f"CellSpec({self.name!r}, gates={''.join(self.gates)!r}, states={self.states})"


def _state_latex(state):
    return {"c": "C"}.get(state, state)


def _default_latex(name):
    parts = name.split("_", 1)
    return parts[0] if len(parts) == 1 else rf"{parts[0]}_{{{parts[1]}}}"


# --------------------------------------------------------------------------
# The derivation
# --------------------------------------------------------------------------
@dataclass
class Derivation:
    """Forward and backward programs of one cell, ready to print as code or LaTeX.

    ``forward`` is a list of ``(symbol, expr)`` assignments: the saved
    activations in order, then the new states. ``saved`` lists every value
    backward reads that is not a previous state or a parameter.
    ``backward_cse`` are the common subexpressions of the gradients and
    ``gradients`` maps each gradient symbol (``d_gx_i``, ``d_c_prev``,
    ``d_<param>``, ...) to its expression; ``wrt`` maps it to the symbol it is
    the gradient with respect to (``gx_i``, ``c_prev``, the parameter, ...).

    ``hidden_factors`` (gate → polynomial in saved values), where every block's
    ``d_gh`` is its ``d_gx`` times a factor: then ``gradients`` leaves the
    ``d_gh`` out, and the kernels write d/dgh as that one product of d/dgx.
    None when the blocks are summed (``summed_blocks``: every factor is 1) or
    when some block has no such factor.
    """

    spec: CellSpec
    forward: list
    saved: list
    activations: dict
    summed_blocks: bool
    backward_cse: list
    gradients: dict
    raw_gradients: dict = field(repr=False)
    wrt: dict = field(repr=False, default_factory=dict)
    hidden_factors: dict = None

    @property
    def grad_out(self):
        """Symbols of the incoming gradients, one per new state (d_h, d_c, ...)."""
        return {s: sp.Symbol(f"d_{s}", real=True) for s in self.spec.states}

    def backward_inputs(self):
        """Saved values, previous states and parameters that backward reads, in a fixed order."""
        spec = self.spec
        used = set()
        for _, expr in self.backward_cse:
            used |= expr.free_symbols
        for expr in self.gradients.values():
            used |= expr.free_symbols
        prev = [spec.prev[s] for s in spec.states if spec.prev[s] in used]
        params = [spec.param[p] for p in spec.param_names]
        return prev, params

    def gradients_latex(self):
        """Every gradient in LaTeX, written through saved forward values."""
        names = self.spec.latex_names()
        for sym, expr in self.activations.items():
            # an unnamed activation such as tanh(C_t) is shown as what it is
            names.setdefault(sym, sp.latex(expr, symbol_names=names))
        for s, sym in self.grad_out.items():
            names[sym] = rf"\delta {_state_latex(s)}_t"
        lines = []
        for sym, expr in self.raw_gradients.items():
            target = str(sym)[2:]   # d_g_i: the summed gx_i + gh_i, shown as one g_i
            target_sym = sp.Symbol(target, real=True)
            lhs = r"\frac{\partial L}{\partial %s}" % names.get(target_sym, _default_latex(target))
            lines.append(rf"{lhs} &= {sp.latex(sp.factor_terms(expr), symbol_names=names)}")
        return lines

    def _repr_latex_(self):
        return r"$\begin{aligned}" + r"\\ ".join(self.gradients_latex()) + r"\end{aligned}$"


def name_activations(spec, program, taken=()):
    """The forward program: ``program``'s statements ``(target, expr)`` in order, each
    activation node in them named (the statement's own target when the whole statement is
    that activation): these are the values the forward saves.

    Returns ``(forward, activations, replace, expand)``: the named statements; saved symbol →
    activation of earlier program values; activation node over the inputs alone → saved
    symbol; statement target → its expression of the inputs.
    """
    expand = {}            # intermediate symbol -> expression of the inputs
    forward = []
    activations = {}       # saved symbol -> activation of earlier program values
    replace = {}           # activation node over the inputs alone -> saved symbol
    taken = set(spec.symbols) | set(spec.states) | set(taken)
    for target, expr in program:
        local = {}         # activation node in this statement -> saved symbol
        for node in sp.postorder_traversal(expr):
            if not isinstance(node, ACTIVATIONS) or node in local:
                continue
            inner = node.xreplace(local)
            if inner == expr and str(target) not in spec.states:
                sym = target
            else:
                func = {sigmoid: "sigmoid", sp.tanh: "tanh", relu: "relu"}[node.func]
                arg = node.args[0]
                name = f"{func}_{arg}" if isinstance(arg, sp.Symbol) else f"{func}_{len(activations)}"
                while name in taken:
                    name += "_"
                sym = sp.Symbol(name, real=True)
            taken.add(str(sym))
            local[node] = sym
            activations[sym] = inner
            replace[node.xreplace(expand)] = sym
            forward.append((sym, inner))
        if expr.xreplace(local) != target:
            forward.append((target, expr.xreplace(local)))
        expand[target] = expr.xreplace(expand)
    return forward, activations, replace, expand


def derive(spec: CellSpec) -> Derivation:
    """Differentiate a cell's element-wise part with SymPy.

    1. Expand every new state into an expression of the inputs.
    2. Name every activation node σ(·), tanh(·), relu(·): these are the values
       the forward pass saves.
    3. For each input u: ∂L/∂u = Σ_s δs · ∂s/∂u (SymPy's ``diff``), then
       replace each activation node by its saved name, so σ' becomes s(1−s).
       The blocks are "summed" (one gradient for gx_k and gh_k) when the two
       derivatives are the same expression.
    4. Factor common subexpressions out of all gradients together (``cse``).
    """
    spec.validate()
    if spec.staged:
        from .staged import derive_staged

        return derive_staged(spec)
    expanded = spec.expanded_updates()
    program = [(sp.Symbol(i.name, real=True), i.expr) for i in spec.intermediates]
    program += [(sp.Symbol(s, real=True), spec.updates[s]) for s in spec.states]
    forward, activations, replace, _ = name_activations(spec, program)

    grad_out = {s: sp.Symbol(f"d_{s}", real=True) for s in spec.states}

    def gradient(wrt):
        total = sp.S.Zero
        for state in spec.states:
            total += grad_out[state] * sp.diff(expanded[state], wrt)
        return total.xreplace(replace)

    # Do the gx and gh blocks only ever appear as gx_k + gh_k? Then d/dgx_k == d/dgh_k, and
    # backward keeps one gradient array for both. Compared on the derivatives as SymPy
    # builds them (the same chain rule through the same nodes): substituting gx + gh into
    # the equations instead re-evaluates every nested function, exponential in the depth.
    by_gx = {g: gradient(spec.gx[g]) for g in spec.gates}
    by_gh = {g: gradient(spec.gh[g]) for g in spec.gates}
    summed = all(by_gx[g] == by_gh[g] for g in spec.gates)

    raw = {}                # gradient symbol -> expression
    wrt = {}                # gradient symbol -> the symbol it is the gradient with respect to
    blocks = ([("d_g_", spec.gx, by_gx)] if summed
              else [("d_gx_", spec.gx, by_gx), ("d_gh_", spec.gh, by_gh)])
    for prefix, inputs, gradients in blocks:
        for g in spec.gates:
            sym = sp.Symbol(f"{prefix}{g}", real=True)
            raw[sym], wrt[sym] = gradients[g], inputs[g]
    for name, symbol in [(f"d_{s}_prev", spec.prev[s]) for s in spec.states] + \
            [(f"d_{p}", spec.param[p]) for p in spec.param_names]:
        sym = sp.Symbol(name, real=True)
        raw[sym], wrt[sym] = gradient(symbol), symbol
    refuse_recomputed_activations(spec, raw)

    # Any gate input that backward still reads must be saved too (e.g. the GRU's gh_n).
    gate_inputs = set(spec.gx.values()) | set(spec.gh.values())
    used = set().union(*(e.free_symbols for e in raw.values()))
    saved = list(activations) + sorted((s for s in gate_inputs if s in used), key=str)
    saved = [s for s in saved if s in used]

    factors = None if summed else _hidden_factors(spec, raw, saved)
    computed = [g for g in raw if factors is None or not str(g).startswith("d_gh_")]
    if factors is not None:    # the factors are all backward reads of what it no longer computes
        used = set().union(*(raw[g].free_symbols for g in computed), *(f.free_symbols for f in factors.values()))
        saved = [s for s in saved if s in used]
    subexprs, reduced = sp.cse([raw[g] for g in computed], symbols=sp.numbered_symbols("tmp", real=True),
                               optimizations="basic", order="none")
    gradients = dict(zip(computed, reduced))
    return Derivation(spec, forward, saved, activations, summed, subexprs, gradients, raw, wrt, factors)


def _hidden_factors(spec, raw, saved):
    """{gate: f} with d_gh = f · d_gx for every gate block, f a polynomial in saved values;
    None if some block has none (then backward keeps d/dgh in an array of its own).

    A polynomial, because a quotient could be 0/0 where an activation saturates."""
    factors = {}
    for g in spec.gates:
        d_gx, d_gh = raw[sp.Symbol(f"d_gx_{g}", real=True)], raw[sp.Symbol(f"d_gh_{g}", real=True)]
        if d_gx == 0:
            if d_gh != 0:
                return None
            factors[g] = sp.S.One
            continue
        factor = sp.factor(sp.cancel(d_gh / d_gx))
        if (not factor.free_symbols <= set(saved) or not factor.is_polynomial(*saved)
                or sp.expand(factor * d_gx - d_gh) != 0):
            return None
        factors[g] = factor
    return factors
