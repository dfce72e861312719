"""Staged cells: a step with matrix products of values computed inside the step.

Most cells see two products, ``gx = x W_ihᵀ + b_ih`` and ``gh = h_{t−1} W_hhᵀ + b_hh``,
both known before the element-wise part runs (:mod:`lstmkit.codegen`'s fast path). A
*staged* cell may also

* let a block's recurrent product multiply another value than h_{t−1}
  (``spec.recurrent_operand("n", r * h_prev)``: Cho's GRU, Jozefowicz's MUTs), possibly
  one computed from earlier products of the same step;
* have blocks fed by the input alone or by the recurrent product alone
  (``CellSpec(..., input_gates=..., recurrent_gates=...)``): they get no weights at all
  on the other side;
* read the raw input ``x_t`` element-wise (``spec.x``; input_size == hidden_size);
* read the step number (``spec.t``) and per-unit constants the layer gives
  (``CellSpec(..., constants=...)``): the Clockwork RNN;
* read a state of the layer below at the same step (``spec.below``): the depth gate.

The recurrent blocks are grouped by the value they multiply (an *operand*): each group is
one product, on the rows of ``weight_hh`` of its blocks. A group's *stage* is 0 when its
operand needs no product of the step (h_{t−1}, tanh(h_{t−1}), x_t), else one more than the
latest stage of the products it needs; the input product ``x_t W_ihᵀ`` is stage 0. Forward
runs, for each *phase* e = 0, 1, ...: the element-wise statements that need products of
stages < e (a generated kernel ``forward_phase_<e>``, which also writes the operands of the
stage-e groups), then the stage-e products. Backward walks the stages down: a generated
kernel ``backward_stage_<s>`` gives the gradients of the stage-s products (they need only
the gradients of the new states and of the operands of later stages), then each stage-s
group's operand gradient is ``dv = d(Wv) W`` (a product), and ``backward_inputs`` gives the
gradients of the previous states, the raw input and the element-wise parameters. SymPy
derives every one of these element-wise parts (:func:`derive_staged`), and every kernel is
printed from the derivation (:func:`staged_kernel_source`); :mod:`lstmkit.staged_driver`
runs them over a sequence, with the weight gradients as whole-chunk products after the
loop (each group's operands are kept from forward).
"""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

import sympy as sp

from .symbolic import CellSpec, CellSpecError, name_activations, refuse_recomputed_activations

__all__ = ["ProductGroup", "StagedDerivation", "derive_staged", "staged_kernel_source"]


@dataclass(frozen=True)
class ProductGroup:
    """One recurrent product: the rows of ``weight_hh`` of ``gates`` times ``operand``."""

    index: int
    gates: tuple            # recurrent blocks, in the order of weight_hh's rows
    operand: sp.Expr        # the value multiplied, in the spec's symbols
    state: str | None       # the operand is this state's previous value itself (no statement)
    stage: int


@dataclass
class StagedDerivation:
    """Forward phases and backward stages of a staged cell (module docstring).

    ``forward``: ``(symbol, expression)`` statements in order, activations named;
    ``phase``: symbol → the forward phase that computes it; ``operand_symbols``: group
    index → the symbol of its computed operand; ``saved``: what forward keeps per step;
    ``backward``: ``[(stage or "inputs", cse, {gradient symbol: expression})]`` in the order
    backward runs them; ``wrt``: gradient symbol → the symbol it is the gradient of.
    """

    spec: CellSpec
    forward: list
    phase: dict
    groups: list
    operand_symbols: dict
    saved: list
    backward: list
    wrt: dict
    raw_gradients: dict
    uses_x: bool
    uses_t: bool = False

    @property
    def phases(self):
        return max([0] + list(self.phase.values()))


def _operand_symbol(group_index):
    return sp.Symbol(f"operand_{group_index}", real=True)


def derive_staged(spec: CellSpec) -> StagedDerivation:
    """Differentiate a staged cell's element-wise parts (module docstring)."""
    prev_values = set(spec.prev.values())
    # recurrent blocks grouped by the value they multiply, in the order of their first block
    operands, members = [], []
    for gate in spec.recurrent_gates:
        operand = spec.operand(gate)
        if operand in operands:
            members[operands.index(operand)].append(gate)
        else:
            operands.append(operand)
            members.append([gate])
    group_of = {spec.gh[g]: k for k, gates in enumerate(members) for g in gates}

    # each intermediate as an expression of the inputs (products, previous states, x, parameters)
    expand = {}
    for item in spec.intermediates:
        expand[sp.Symbol(item.name, real=True)] = item.expr.xreplace(expand)
    expanded_operands = [o.xreplace(expand) for o in operands]

    stages = {}

    def stage_of(k, visiting=()):
        if k in stages:
            return stages[k]
        if k in visiting:
            blocks = ", ".join(members[k])
            raise CellSpecError(f"{spec.name}: the recurrent operand of block(s) {blocks} depends on "
                                "its own product; an operand may use only products computed before it")
        stages[k] = phase_of(expanded_operands[k], visiting + (k,))
        return stages[k]

    def phase_of(expr, visiting=()):
        phase = 0
        for s in expr.free_symbols:
            if s in spec.gx.values():
                phase = max(phase, 1)        # x_t W_ihᵀ: a stage-0 product
            elif s in group_of:
                phase = max(phase, stage_of(group_of[s], visiting) + 1)
        return phase

    groups = []
    for k, gates in enumerate(members):
        state = next((s for s in spec.states if operands[k] == spec.prev[s]), None)
        groups.append(ProductGroup(k, tuple(gates), operands[k], state, stage_of(k)))

    # The program: the spec's statements, then each computed operand, then the new states.
    operand_symbols = {g.index: _operand_symbol(g.index) for g in groups if g.state is None}
    program = [(sp.Symbol(i.name, real=True), i.expr) for i in spec.intermediates]
    program += [(operand_symbols[g.index], g.operand) for g in groups if g.state is None]
    program += [(sp.Symbol(s, real=True), spec.updates[s]) for s in spec.states]
    forward, activations, replace, _ = name_activations(
        spec, program, taken=[str(s) for s in operand_symbols.values()])

    product_phase = {spec.gx[g]: 1 for g in spec.input_gates}
    product_phase.update({sym: groups[k].stage + 1 for sym, k in group_of.items()})
    phase = {}
    for sym, expr in forward:
        phase[sym] = max([0] + [phase.get(s, product_phase.get(s, 0)) for s in expr.free_symbols])

    # Gradients: the outputs of the element-wise part are the new states and the computed
    # operands, with incoming gradients d_<state> and d_operand_<k>.
    outputs = [(sp.Symbol(f"d_{s}", real=True), spec.updates[s].xreplace(expand)) for s in spec.states]
    outputs += [(sp.Symbol(f"d_{operand_symbols[g.index]}", real=True), expanded_operands[g.index])
                for g in groups if g.state is None]

    def gradient(wrt):
        total = sp.S.Zero
        for d_out, expr in outputs:
            total += d_out * sp.diff(expr, wrt)
        return total.xreplace(replace)

    uses_x = any(spec.x in e.free_symbols for _, e in outputs)
    uses_t = any(spec.t in e.free_symbols for _, e in outputs)
    if spec.below_state is not None and not any(spec.below in e.free_symbols for _, e in outputs):
        raise CellSpecError(f"{spec.name}: below={spec.below_state!r} is declared but spec.below is never used")
    raw, wrt, by_stage = {}, {}, {}
    for g in spec.input_gates:
        sym = sp.Symbol(f"d_gx_{g}", real=True)
        raw[sym], wrt[sym] = gradient(spec.gx[g]), spec.gx[g]
        by_stage.setdefault(0, []).append(sym)
    for group in groups:
        for g in group.gates:
            sym = sp.Symbol(f"d_gh_{g}", real=True)
            raw[sym], wrt[sym] = gradient(spec.gh[g]), spec.gh[g]
            by_stage.setdefault(group.stage, []).append(sym)
    inputs = [(f"d_{s}_prev", spec.prev[s]) for s in spec.states]
    inputs += [("d_x_in", spec.x)] if uses_x else []
    inputs += [("d_below_in", spec.below)] if spec.below_state is not None else []
    inputs += [(f"d_{p}", spec.param[p]) for p in spec.param_names]
    for name, symbol in inputs:
        sym = sp.Symbol(name, real=True)
        raw[sym], wrt[sym] = gradient(symbol), symbol
    refuse_recomputed_activations(spec, raw)

    backward = []
    for stage in sorted(by_stage, reverse=True):
        backward.append((stage, *_cse([(g, raw[g]) for g in by_stage[stage]])))
    backward.append(("inputs", *_cse([(sp.Symbol(n, real=True), raw[sp.Symbol(n, real=True)])
                                      for n, _ in inputs])))

    # Saved per step: what backward reads, and what a later phase reads, of the statements'
    # values and of the products (the products are read from their buffers within a step).
    read_back = set()
    for _, subexprs, gradients in backward:
        read_back |= set().union(*(e.free_symbols for _, e in subexprs), *(e.free_symbols for e in gradients.values()))
    read_later = set()
    for sym, expr in forward:
        read_later |= {s for s in expr.free_symbols if s in phase and phase[s] < phase[sym]}
    states = {sp.Symbol(s, real=True) for s in spec.states}
    saved = [sym for sym, _ in forward if sym not in states and (sym in read_back or sym in read_later)]
    saved += sorted((s for s in product_phase if s in read_back), key=str)
    return StagedDerivation(spec, forward, phase, groups, operand_symbols, saved, backward, wrt, raw, uses_x,
                            uses_t)


def _cse(assignments):
    subexprs, reduced = sp.cse([e for _, e in assignments], symbols=sp.numbered_symbols("tmp", real=True),
                               optimizations="basic", order="none")
    return subexprs, dict(zip([s for s, _ in assignments], reduced))


# --------------------------------------------------------------------------
# Printing
# --------------------------------------------------------------------------
INDENT = " " * 12  # statements inside ``for b: for j:``


def _col(position):
    return "j" if position == 0 else ("hidden + j" if position == 1 else f"{position} * hidden + j")


class _StagedLayout:
    """Names and positions the staged kernels share (module docstring)."""

    def __init__(self, der: StagedDerivation):
        self.der = der
        spec = self.spec = der.spec
        self.states = list(spec.states)
        self.params = list(spec.param_names)
        self.saved = [str(s) for s in der.saved]
        self.computed = [g for g in der.groups if g.state is None]
        self.hh_column = {g: k for k, g in enumerate(spec.recurrent_gates)}
        self.ih_column = {g: k for k, g in enumerate(spec.input_gates)}
        self.load = {}      # input symbol -> the code that reads it (b, j: a row of one step)
        for g in spec.input_gates:
            col = _col(self.ih_column[g])
            self.load[spec.gx[g]] = f"GX[b, {col}] + BIAS_IH[{col}]"
        for group in der.groups:
            for position, g in enumerate(group.gates):
                self.load[spec.gh[g]] = f"GH_{group.index}[b, {_col(position)}] + BIAS_HH[{_col(self.hh_column[g])}]"
        for s in self.states:
            self.load[spec.prev[s]] = f"{s.upper()}_PREV[b, j]"
        for p in self.params:
            self.load[spec.param[p]] = f"{p.upper()}[j]"
        self.load[spec.x] = "X_T[b, j]"
        self.load[spec.t] = "real(STEP)"
        self.below = spec.below_state
        self.load[spec.below] = "BELOW_T[b, j]"
        self.constants = list(spec.constant_names)
        for c in self.constants:
            self.load[spec.constant[c]] = f"{c.upper()}[j]"
        self.saved_column = {name: _col(k) for k, name in enumerate(self.saved)}

    # -- the element-wise kernels' parameters (one list for every phase, one for every stage)
    def forward_kernel_arguments(self):
        spec = self.spec
        names = (["X_T"] if self.der.uses_x else []) + (["BELOW_T"] if self.below else [])
        names += ["GX"] if spec.input_gates else []
        names += [f"GH_{g.index}" for g in self.der.groups] + ["BIAS_IH", "BIAS_HH"]
        names += [f"{s.upper()}_PREV" for s in self.states] + [p.upper() for p in self.params]
        names += [c.upper() for c in self.constants]
        names += [s.upper() for s in self.states] + [f"OPERAND_{g.index}" for g in self.computed]
        return names + ["SAVED"] + (["STEP"] if self.der.uses_t else [])

    def backward_kernel_arguments(self):
        spec = self.spec
        names = ["SAVED"] + [f"{s.upper()}_PREV" for s in self.states] + [p.upper() for p in self.params]
        names += [c.upper() for c in self.constants] + (["STEP"] if self.der.uses_t else [])
        names += (["X_T"] if self.der.uses_x else []) + (["BELOW_T", "D_ABOVE"] if self.below else [])
        names += ["D_OUT"] + [f"D_{s.upper()}" for s in self.states]
        names += [f"D_OPERAND_{g.index}" for g in self.computed]
        names += (["D_GX"] if spec.input_gates else []) + [f"D_GH_{g.index}" for g in self.der.groups]
        names += [f"D_{s.upper()}_PREV" for s in self.states] + (["D_X_IN"] if self.der.uses_x else [])
        names += ["D_BELOW"] if self.below else []
        return names + [f"D_{p.upper()}" for p in self.params]

    # -- the sequence functions' parameters: FORWARD_ARGS, BACKWARD_ARGS
    def forward_arguments(self):
        spec = self.spec
        names = ["X"] + (["BELOW"] if self.below else []) + (["W_IH_T_PACKED"] if spec.input_gates else [])
        names += [f"W_HH_T_PACKED_{g.index}" for g in self.der.groups] + ["BIAS_IH", "BIAS_HH"]
        names += [s.upper() for s in self.states] + [p.upper() for p in self.params]
        names += [c.upper() for c in self.constants] + (["T0"] if self.der.uses_t else [])
        return names + [f"OPERAND_{g.index}" for g in self.computed] + ["SAVED", "LENGTHS"]

    def backward_arguments(self):
        spec = self.spec
        names = ["D_OUT", "X"] + [f"W_HH_PACKED_{g.index}" for g in self.der.groups]
        names += [s.upper() for s in self.states] + [p.upper() for p in self.params]
        names += [c.upper() for c in self.constants] + (["T0"] if self.der.uses_t else []) + ["SAVED", "LENGTHS"]
        names += [f"D_{s.upper()}" for s in self.states] + (["D_GX"] if spec.input_gates else [])
        names += [f"D_GH_{g.index}" for g in self.der.groups] + (["D_X_IN"] if self.der.uses_x else [])
        # a cell that reads the layer below: that layer's value, the gradient this layer sends
        # down to it, and the one the layer above sends to this layer's state `below`
        names += ["BELOW", "D_BELOW", "D_ABOVE"] if self.below else []
        return names + [f"D_{p.upper()}" for p in self.params]


def _code(expr):
    from .codegen import _code as print_code

    return print_code(expr)


def _forward_phase(layout: _StagedLayout, phase: int):
    der, spec = layout.der, layout.spec
    statements = [(sym, expr) for sym, expr in der.forward if der.phase[sym] == phase]
    defined = {sym for sym, _ in statements}
    needed = set()
    for _, expr in statements:
        needed |= expr.free_symbols
    # products finished in the stage just before this phase are saved here, once
    saved_products = [s for s in der.saved if s in layout.load and s not in der.phase
                      and _product_phase(layout, s) == phase]
    needed |= set(saved_products)
    lines = []
    for sym, code in layout.load.items():
        if sym in needed and sym not in defined:
            lines.append(f"{sym} = {code}")
    for sym in der.saved:
        if sym in needed and sym in der.phase and der.phase[sym] < phase:
            lines.append(f"{sym} = SAVED[b, {layout.saved_column[str(sym)]}]")
    lines += [f"{sym} = {_code(expr)}" for sym, expr in statements]
    states = {sp.Symbol(s, real=True): s for s in layout.states}
    for sym, _ in statements:
        if sym in states:
            lines.append(f"{states[sym].upper()}[b, j] = {sym}")
    for k, sym in der.operand_symbols.items():
        if sym in defined:
            lines.append(f"OPERAND_{k}[b, j] = {sym}")
    for sym in der.saved:
        if sym in defined or sym in saved_products:
            lines.append(f"SAVED[b, {layout.saved_column[str(sym)]}] = {sym}")
    if not lines:
        return None
    args = layout.forward_kernel_arguments()
    needs = "no product of the step" if phase == 0 else f"the products of stages below {phase}"
    return (
        f"@numba.njit(STEP_OPTIONS)\n"
        f"def forward_phase_{phase}({', '.join(args)}):\n"
        f'    """Forward phase {phase}: the statements that need {needs}."""\n'
        f"    real = SAVED.dtype.type  # numbers in the arrays' precision\n"
        f"    batch, hidden = {layout.states[0].upper()}.shape\n"
        f"    for b in range(batch):\n"
        f"        for j in range(hidden):\n"
        + "".join(f"{INDENT}{line}\n" for line in lines)
    )


def _product_phase(layout, sym):
    spec, der = layout.spec, layout.der
    if sym in spec.gx.values():
        return 1
    for group in der.groups:
        if any(spec.gh[g] == sym for g in group.gates):
            return group.stage + 1
    return 0


def _backward_kernel(layout: _StagedLayout, stage, subexprs, gradients):
    spec, der = layout.spec, layout.der
    needed = set().union(*(e.free_symbols for _, e in subexprs), *(e.free_symbols for e in gradients.values()))
    lines = [f"{sym} = SAVED[b, {layout.saved_column[str(sym)]}]" for sym in der.saved if sym in needed]
    for s in layout.states:
        if spec.prev[s] in needed:
            lines.append(f"{s}_prev = {s.upper()}_PREV[b, j]")
    for p in layout.params:
        if spec.param[p] in needed:
            lines.append(f"{p} = {p.upper()}[j]")
    for c in layout.constants:
        if spec.constant[c] in needed:
            lines.append(f"{c} = {c.upper()}[j]")
    if spec.t in needed:
        lines.append("t_step = real(STEP)")
    if spec.x in needed:
        lines.append("x_in = X_T[b, j]")
    if spec.below in needed:
        lines.append("below_in = BELOW_T[b, j]")
    for s in layout.states:
        if sp.Symbol(f"d_{s}", real=True) in needed:
            extra = "D_OUT[b, j] + " if s == spec.output else ("D_ABOVE[b, j] + " if s == layout.below else "")
            lines.append(f"d_{s} = {extra}D_{s.upper()}[b, j]")
    for k, sym in der.operand_symbols.items():
        if sp.Symbol(f"d_{sym}", real=True) in needed:
            lines.append(f"d_{sym} = D_OPERAND_{k}[b, j]")
    lines += [f"{sym} = {_code(expr)}" for sym, expr in subexprs]
    for sym, expr in gradients.items():
        target = der.wrt[sym]
        if target in spec.gx.values():
            gate = next(g for g, s in spec.gx.items() if s == target)
            lines.append(f"D_GX[b, {_col(layout.ih_column[gate])}] = {_code(expr)}")
        elif target in spec.gh.values():
            gate = next(g for g, s in spec.gh.items() if s == target)
            group = next(g for g in der.groups if gate in g.gates)
            lines.append(f"D_GH_{group.index}[b, {_col(group.gates.index(gate))}] = {_code(expr)}")
        elif target in spec.prev.values():
            state = next(s for s, p in spec.prev.items() if p == target)
            lines.append(f"D_{state.upper()}_PREV[b, j] = {_code(expr)}")
        elif target == spec.x:
            lines.append(f"D_X_IN[b, j] = {_code(expr)}")
        elif target == spec.below:
            lines.append(f"D_BELOW[b, j] = {_code(expr)}")
        else:
            lines.append(f"D_{str(target).upper()}[j] += {_code(expr)}")
    name = f"backward_stage_{stage}" if stage != "inputs" else "backward_inputs"
    what = (f"the gradients of the stage-{stage} products" if stage != "inputs" else
            "the gradients of the previous states, the raw input and the parameters (+=)")
    args = layout.backward_kernel_arguments()
    return (
        f"@numba.njit(STEP_OPTIONS)\n"
        f"def {name}({', '.join(args)}):\n"
        f'    """One step back: {what}."""\n'
        f"    real = SAVED.dtype.type  # numbers in the arrays' precision\n"
        f"    batch, hidden = D_OUT.shape\n"
        f"    for b in range(batch):\n"
        f"        for j in range(hidden):\n"
        + "".join(f"{INDENT}{line}\n" for line in lines)
    )


def _views(views, lines):
    """``name = view`` for each of ``views`` that ``lines`` use, in the order of ``views``."""
    used = set(re.findall(r"\w+", " ".join(lines)))
    return [f"{name} = {view}" for name, view in views.items() if name in used]


def _sequence_functions(layout: _StagedLayout, phases):
    spec, der = layout.spec, layout.der
    states = [s.upper() for s in layout.states]
    out = spec.output.upper()
    fwd_args = layout.forward_arguments()
    # Each step's views of the arrays (a block of rows at step t) are taken once, into locals
    # named in mixed case (no array or generated local is), and passed to every phase and
    # product: lowering each slice where it is used made forward_rows and backward_rows the
    # largest functions LLVM optimizes (issue 17, compile time).
    forward_views = {
        "X_t": "X[t, lo:hi]", "BELOW_t": "BELOW[t, lo:hi]", "SAVED_t": "SAVED[saved, lo:hi]",
        **{f"{n}_prev": f"{n}[prev_{s}, lo:hi]" for s, n in zip(layout.states, states)},
        **{f"{n}_next": f"{n}[next_{s}, lo:hi]" for s, n in zip(layout.states, states)},
        **{f"OPERAND_{g.index}_t": f"OPERAND_{g.index}[t % OPERAND_{g.index}.shape[0], lo:hi]"
           for g in layout.computed},
    }
    forward_call = {
        "X_T": "X_t", "BELOW_T": "BELOW_t", "GX": "GX", "BIAS_IH": "BIAS_IH", "BIAS_HH": "BIAS_HH", "SAVED": "SAVED_t",
        **{f"GH_{g.index}": f"GH_{g.index}" for g in der.groups},
        **{f"{n}_PREV": f"{n}_prev" for n in states},
        **{n: f"{n}_next" for n in states},
        **{p.upper(): p.upper() for p in layout.params}, **{c.upper(): c.upper() for c in layout.constants},
        **{f"OPERAND_{g.index}": f"OPERAND_{g.index}_t" for g in layout.computed},
        "STEP": "T0 + t",    # the step number: T0 steps ran before this call
    }
    call = ", ".join(forward_call[n] for n in layout.forward_kernel_arguments())
    body = ["steps = X.shape[0]", f"hidden = {out}.shape[2]", "rows = hi - lo"]
    if spec.input_gates:
        body.append(f"GX = np.empty((rows, {len(spec.input_gates)} * hidden), X.dtype)")
    body += [f"GH_{g.index} = np.empty((rows, {len(g.gates)} * hidden), X.dtype)" for g in der.groups]
    body.append("for t in range(steps):")
    loop = [f"prev_{s}, next_{s} = t % {n}.shape[0], (t + 1) % {n}.shape[0]" for s, n in zip(layout.states, states)]
    loop.append("saved = t % SAVED.shape[0]")
    steps_loop = []
    for phase in range(der.phases + 1):
        if phase in phases:
            steps_loop.append(f"forward_phase_{phase}({call})")
        stage = phase           # the products of this stage follow this phase
        if stage == 0 and spec.input_gates:
            steps_loop.append("matmul_packed(X_t, W_IH_T_PACKED, GX)")
        for g in der.groups:
            if g.stage == stage:
                operand = f"{g.state.upper()}_prev" if g.state is not None else f"OPERAND_{g.index}_t"
                steps_loop.append(f"matmul_packed({operand}, W_HH_T_PACKED_{g.index}, GH_{g.index})")
    loop += _views(forward_views, steps_loop) + steps_loop
    loop.append("for b in range(lo, hi):")
    loop.append("    if t >= LENGTHS[b]:  # past its length a row keeps its state")
    # element by element, not a slice copy: its error message took seconds to compile (issue 17)
    loop.append("        for j in range(hidden):")
    loop += [f"            {n}[next_{s}, b, j] = {n}[prev_{s}, b, j]" for s, n in zip(layout.states, states)]
    body += ["    " + line for line in loop]
    forward_rows = (f"@numba.njit(KERNEL_OPTIONS)\ndef forward_rows({', '.join(fwd_args)}, lo, hi):\n"
                    '    """The forward phases and products over time, for the batch rows lo:hi."""\n'
                    + "".join(f"    {line}\n" for line in body))

    bwd_args = layout.backward_arguments()
    backward_views = {      # as forward_views
        "SAVED_t": "SAVED[t, lo:hi]", "X_t": "X[t, lo:hi]", "D_OUT_t": "D_OUT[t, lo:hi]", "D_GX_t": "D_GX[t, lo:hi]",
        "D_X_IN_t": "D_X_IN[t, lo:hi]", "BELOW_t": "BELOW[t, lo:hi]", "D_BELOW_t": "D_BELOW[t, lo:hi]",
        "D_ABOVE_t": "D_ABOVE[t, lo:hi]",
        **{f"{n}_prev": f"{n}[t, lo:hi]" for n in states},
        **{f"D_GH_{g.index}_t": f"D_GH_{g.index}[t, lo:hi]" for g in der.groups},
    }
    backward_call = {
        "SAVED": "SAVED_t", "X_T": "X_t", "D_OUT": "D_OUT_t", "D_GX": "D_GX_t",
        "D_X_IN": "D_X_IN_t", "BELOW_T": "BELOW_t", "D_BELOW": "D_BELOW_t", "D_ABOVE": "D_ABOVE_t",
        **{f"{n}_PREV": f"{n}_prev" for n in states},
        **{p.upper(): p.upper() for p in layout.params}, **{c.upper(): c.upper() for c in layout.constants},
        "STEP": "T0 + t",    # a chunk's steps start at T0
        **{f"D_{n}": f"D_{n}_rows" for n in states},
        **{f"D_OPERAND_{g.index}": f"D_OPERAND_{g.index}" for g in layout.computed},
        **{f"D_GH_{g.index}": f"D_GH_{g.index}_t" for g in der.groups},
        **{f"D_{n}_PREV": f"D_{n}_PREV" for n in states},
        **{f"D_{p.upper()}": f"D_{p.upper()}" for p in layout.params},
    }
    call = ", ".join(backward_call[n] for n in layout.backward_kernel_arguments())
    body = ["steps, hidden = D_OUT.shape[0], D_OUT.shape[2]", "rows = hi - lo"]
    body += [f"D_{n}_PREV = np.empty((rows, hidden), D_OUT.dtype)" for n in states]
    body += [f"HELD_D_{n} = np.empty((rows, hidden), D_OUT.dtype)" for n in states]
    body += [f"D_OPERAND_{g.index} = np.empty((rows, hidden), D_OUT.dtype)" for g in layout.computed]
    body += [f"RECURRENT_{g.index} = np.empty((rows, hidden), D_OUT.dtype)" for g in der.groups if g.state]
    body += [f"D_{n}_rows = D_{n}[lo:hi]" for n in states if f"D_{n}_rows" in call]
    body.append("for t in range(steps - 1, -1, -1):")
    loop = ["for b in range(lo, hi):",
            "    if t >= LENGTHS[b]:  # finished row: its gradient passes through this step",
            "        for j in range(hidden):"]
    loop += [f"            {line}" for n in states for line in (f"HELD_D_{n}[b - lo, j] = D_{n}[b, j]", f"D_{n}[b, j] = 0")]
    steps_loop = []
    for stage, _, _ in der.backward:
        if stage == "inputs":
            steps_loop.append(f"backward_inputs({call})")
            continue
        steps_loop.append(f"backward_stage_{stage}({call})")
        for g in der.groups:
            if g.stage == stage:
                target = f"RECURRENT_{g.index}" if g.state else f"D_OPERAND_{g.index}"
                steps_loop.append(f"matmul_packed(D_GH_{g.index}_t, W_HH_PACKED_{g.index}, {target})")
    loop += _views(backward_views, steps_loop) + steps_loop
    loop += ["for b in range(lo, hi):", "    for j in range(hidden):"]
    for s, n in zip(layout.states, states):
        parts = [f"D_{n}_PREV[b - lo, j]"] + [f"RECURRENT_{g.index}[b - lo, j]" for g in der.groups if g.state == s]
        loop.append(f"        D_{n}[b, j] = {' + '.join(parts)}")
    loop += ["    if t >= LENGTHS[b]:", "        for j in range(hidden):"]
    loop += [f"            D_{n}[b, j] = HELD_D_{n}[b - lo, j]" for n in states]
    body += ["    " + line for line in loop]
    backward_rows = (f"@numba.njit(KERNEL_OPTIONS)\ndef backward_rows({', '.join(bwd_args)}, lo, hi):\n"
                     '    """Backpropagation through time over the backward stages, for the batch rows lo:hi."""\n'
                     + "".join(f"    {line}\n" for line in body))
    return "\n\n".join([forward_rows, backward_rows])


def staged_kernel_source(der: StagedDerivation, header: str, runtime_key: str, kernel_options: str,
                         step_options: str) -> str:
    """The complete Python source of a staged cell's kernel module."""
    layout = _StagedLayout(der)
    spec = der.spec
    phases = {}
    for phase in range(der.phases + 1):
        source = _forward_phase(layout, phase)
        if source is not None:
            phases[phase] = source
    backward = [_backward_kernel(layout, stage, subexprs, gradients) for stage, subexprs, gradients in der.backward]
    equations = "\n".join(f"    [phase {der.phase[sym]}] {sym} = {expr}" for sym, expr in der.forward)
    products = "\n".join(
        f"    stage {g.stage}: gh_{', gh_'.join(g.gates)} = W_hh[{', '.join(g.gates)}] · "
        f"{g.operand}" for g in der.groups)
    if spec.input_gates:
        products = f"    stage 0: gx_{', gx_'.join(spec.input_gates)} = W_ih · x_t\n" + products
    gradients = "\n".join(f"    {sym} = {expr}" for sym, expr in der.raw_gradients.items())
    constants = textwrap.dedent(f"""\
        CELL = {spec.name!r}
        GATES = {spec.gates!r}
        STATES = {spec.states!r}
        OUTPUT = {spec.output!r}
        PARAMS = {tuple(layout.params)!r}
        SAVED = {tuple(layout.saved)!r}
        # A staged cell (lstmkit.staged): run by lstmkit.staged_driver
        STAGED = True
        # blocks with rows in weight_ih / weight_hh, in the order of those rows
        INPUT_GATES = {spec.input_gates!r}
        RECURRENT_GATES = {spec.recurrent_gates!r}
        # the recurrent products: the blocks of each (rows of weight_hh) and what they multiply:
        # a state's previous value by name, or None for an operand computed in the step
        GROUPS = {tuple(g.gates for g in der.groups)!r}
        GROUP_OPERANDS = {tuple(g.state for g in der.groups)!r}
        # the raw input enters the element-wise part (input_size must equal hidden_size)
        RAW_INPUT = {der.uses_x!r}
        # per-unit constants the layer gives (not trained), and whether the step number is read
        CONSTANTS = {tuple(layout.constants)!r}
        READS_STEP = {der.uses_t!r}
        # the state of the layer below that the cell reads at the same step (None: none)
        BELOW = {layout.below!r}
        FORWARD_ARGS = {tuple(layout.forward_arguments())!r}
        BACKWARD_ARGS = {tuple(layout.backward_arguments())!r}
        SPEC_KEY = {spec.key!r}
        RUNTIME_KEY = {runtime_key!r}
        """)
    module = (
        f"{header}"
        f'"""Kernels of the staged cell {spec.name!r}: {spec.description or spec.name}.\n\n'
        "Products (lstmkit.staged), by stage:\n\n"
        f"{products}\n\n"
        "Forward equations, by phase, with the values the forward pass saves named:\n\n"
        f"{equations}\n\n"
        "Gradients (δs = gradient of the new state s, d_operand_k of operand k), before common\n"
        "subexpressions:\n\n"
        f"{gradients}\n"
        '"""\n'
        "import math  # noqa: F401 (functions of a cell other than σ, tanh, relu)\n\n"
        "import numba\n"
        "import numpy as np\n\n"
        "from lstmkit.kernel_runtime import NoOverlapCompiler, matmul_packed, sigmoid, tanh  # noqa: F401\n\n"
        f"{constants}\n\n"
        + "\n\n".join(list(phases.values()) + backward + [_sequence_functions(layout, phases)])
    )
    return module.replace("@numba.njit(STEP_OPTIONS)", f"@numba.njit({step_options})").replace(
        "@numba.njit(KERNEL_OPTIONS", f"@numba.njit({kernel_options}")
