"""Print a :class:`~lstmkit.symbolic.Derivation` as the source of Numba kernels.

A kernel module holds:

* ``forward_step`` / ``backward_step``: the element-wise part of one step,
  printed from the derivation (one fused pass over ``batch × hidden``);
* ``forward_rows`` / ``backward_rows``: the loop over time for a block of
  batch rows, from the template ``templates/sequence.py.tmpl`` (filled in
  with the cell's arrays by ``_sequence_functions``): the products ``x_t W_ihᵀ`` and
  ``h_{t−1} W_hhᵀ``, then the step kernel, and in backward
  ``dh_{t−1} += dg_t W_hh``. The products are ``kernel_runtime.matmul_packed``,
  a SIMD register tile on weights packed into panels once per sequence by
  the driver;
  Each row's recurrence is its own, so the driver runs several blocks of rows
  at once, one thread each (``driver._on_threads``), that never wait for one
  another inside the loop over time.
* ``hidden_gradient_rows`` (template
  ``templates/hidden_gradient.py.tmpl``), for a cell whose d/dgh is, block by
  block, a factor times d/dgx (the GRU: 1, 1 and r): the loop keeps only
  d/dgx for the steps it runs (d/dgh of each step goes to the recurrent
  product alone), and these turn it into d/dgh in place afterwards. That
  saves a second gradient array; a cell without such factors gets one.

The step kernels call ``sigmoid``, ``tanh`` and ``expm1`` of
:mod:`lstmkit.kernel_runtime`, written with arithmetic alone for the precision
of their argument so that LLVM vectorizes the step loops (``math.exp`` and
``math.tanh`` are library calls, one element at a time); any other function of
a cell prints as ``math.*``.

The kernels are compiled with ``error_model="numpy"`` (a division by zero
gives inf or NaN, as in NumPy, instead of a check that stops vectorization)
and with the ``contract`` fast-math flag alone (fused multiply-add); every
other IEEE rule, inf and NaN included, holds. The step kernels also declare
that no two of their array arguments overlap (``NoOverlapCompiler``): a step
touches so many arrays that LLVM would otherwise give up on the run-time
overlap checks and leave the loop scalar. Numbers in the printed equations
are written ``real(1)``: ``real`` is the arrays' own scalar type, so float32
arithmetic stays float32.

Module constants describe the calling convention to the driver
(:mod:`lstmkit.driver`), so nothing downstream parses the source: above all
``FORWARD_ARGS`` and ``BACKWARD_ARGS``, the arrays of the sequence functions in
order (ARCHITECTURE.md, "The calling convention").

Built-in cells are written to ``lstmkit/kernels/<name>.py`` by
``python -m lstmkit generate``; user cells go to a cache directory, in a file
named by the hash of their equations, and are loaded with importlib, so that
Numba's ``cache=True`` works for both. A cached file that the same generator
wrote is imported without deriving anything.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import string
import sys
import textwrap
from pathlib import Path

import sympy as sp
from sympy.printing.pycode import PythonCodePrinter

from .files import atomic_write
from .kernel_runtime import JIT_OPTIONS, repair_cache_indexes
from .symbolic import KERNEL_ARRAYS, KERNEL_WORDS, CellSpec, Derivation, derive

__all__ = ["kernel_source", "write_builtin_kernels", "load_kernels", "KERNEL_DIR",
           "user_cache_dir", "REGENERATE_COMMAND"]

KERNEL_DIR = Path(__file__).parent / "kernels"
REGENERATE_COMMAND = "python -m lstmkit generate"
INDENT = " " * 12  # statements inside ``for b: for j:``
# the generator's own words and arrays: defined in symbolic, where CellSpec checks names against them
RESERVED = KERNEL_WORDS
FIXED_ARRAYS = tuple(sorted(KERNEL_ARRAYS))


class KernelPrinter(PythonCodePrinter):
    """Python source for scalar code inside @njit: the vectorizable activations of the
    generated module, and numbers as ``real(...)`` in the arrays' precision.

    Other functions print as PythonCodePrinter prints them (``math.exp``, ``abs``,
    ``max``, a conditional expression for ``Piecewise``); the kernel modules import math.
    """

    def _print(self, expr, **settings):
        # a number that is not a plain integer, fraction or float (π, e, √2, log 2, 2π):
        # its value, in the arrays' precision, rather than math.pi in double precision
        if (isinstance(expr, sp.Expr) and expr.is_number and not expr.is_Rational
                and not expr.is_Float and expr.is_extended_real and expr.is_finite):
            return _real(float(expr))
        return super()._print(expr, **settings)

    def _print_sigmoid(self, expr):
        return f"sigmoid({self._print(expr.args[0])})"

    def _print_tanh(self, expr):
        return f"tanh({self._print(expr.args[0])})"

    def _print_relu(self, expr):
        return f"max({self._print(expr.args[0])}, real(0))"

    def _print_positive(self, expr):
        return f"(real(1) if {self._print(expr.args[0])} > real(0) else real(0))"

    def _print_tick(self, expr):   # the Clockwork RNN's clock: 1 where the period divides n
        n, period = (self._print(a) for a in expr.args)
        return f"(real(1) if int({n}) % int({period}) == 0 else real(0))"

    def _print_sign(self, expr):   # |x|' (PythonCodePrinter's would mix in double precision)
        x = self._print(expr.args[0])
        return f"(real(1) if {x} > real(0) else (-real(1) if {x} < real(0) else real(0)))"

    def _print_Integer(self, expr):
        return _real(int(expr))

    def _print_Rational(self, expr):
        return _real(float(expr))

    def _print_Float(self, expr):
        return _real(float(expr))

    def _print_Pow(self, expr, rational=False):
        base, exponent = expr.args
        if exponent == 2:
            b = self._print(base)
            return f"{b} * {b}" if base.is_Symbol else f"({b}) * ({b})"
        if exponent == -1:
            return f"real(1) / ({self._print(base)})"
        return super()._print_Pow(expr, rational)


def _real(number):
    """``real(2)``; a negative number as ``-real(2)``, so that sums print as differences."""
    return f"-real({-number!r})" if number < 0 else f"real({number!r})"


_printer = KernelPrinter({"standard": "python3"})


def _code(expr):
    return _printer.doprint(expr)


def unprintable(expr):
    """Why ``expr`` cannot be printed as kernel code, or None if it can.

    CellSpec asks this of every function in an equation, and of its derivatives."""
    try:
        code = _code(expr)
    except Exception as error:      # PrintMethodNotImplementedError and friends
        return str(error).splitlines()[0]
    if "Not supported" in code:
        return code.splitlines()[0]
    return None


def _column(block, width="hidden"):
    return "j" if block == 0 else (f"{width} + j" if block == 1 else f"{block} * {width} + j")


def _array(name):
    """Arrays are [batch, hidden] (or [hidden]) and written in capitals; scalars in lower case."""
    return name.upper()


class _Layout:
    """Names and positions the kernels share."""

    def __init__(self, derivation: Derivation):
        spec = derivation.spec
        self.derivation = derivation
        self.spec = spec
        self.gate_index = {g: k for k, g in enumerate(spec.gates)}
        self.saved = [str(s) for s in derivation.saved]
        self.states = list(spec.states)
        self.params = list(spec.param_names)
        prev, _ = derivation.backward_inputs()
        self.backward_prev = [s for s in self.states if spec.prev[s] in prev]
        self.factors = derivation.hidden_factors
        # how backward gets d/dgh (see HIDDEN_GRADIENTS in kernel_source); factors that are
        # all 1 are blocks that enter as sums, written so that SymPy did not see it
        all_ones = self.factors is not None and all(f == 1 for f in self.factors.values())
        self.hidden_gradients = ("same" if derivation.summed_blocks or all_ones
                                 else "in place" if self.factors is not None else "own array")
        # the gradients of the pre-activations that the loop fills for the steps it runs
        self.gradient_arrays = ["D_GX"] + (["D_GH"] if self.hidden_gradients == "own array" else [])
        # states whose gradient does not flow to the previous step through the step kernel
        # (the LSTM's h: only through the recurrent product): nothing to write or add
        self.zero_prev = [s for s in self.states
                          if derivation.gradients[sp.Symbol(f"d_{s}_prev", real=True)] == 0]
        names = {str(sym) for sym, _ in derivation.forward} | {str(sym) for sym, _ in derivation.backward_cse}
        names |= {str(s) for s in spec.input_symbols}
        clash = sorted(names & RESERVED)
        if clash:    # CellSpec refuses these names; a second line of defence
            raise ValueError(f"{spec.name}: the name(s) {clash} are used by the generated kernels; "
                             "rename them in the cell spec")
        # every array the kernels name after a state or a parameter, next to the fixed ones
        arrays = list(FIXED_ARRAYS)
        for s in self.states:
            arrays += [_array(s), f"{_array(s)}_PREV", f"D_{_array(s)}", f"D_{_array(s)}_PREV",
                       f"HELD_D_{_array(s)}"]
        for p in self.params:
            arrays += [_array(p), f"D_{_array(p)}"]
        clash = sorted({a for a in arrays if arrays.count(a) > 1})
        if clash:
            raise ValueError(f"{spec.name}: state or parameter names give the kernel arrays {clash} "
                             "twice (array names are the names in capitals); rename them in the cell spec")

    # -- the calling convention: every function's parameters, in order ----------------------
    def forward_arguments(self):
        """forward_rows (then lo, hi): FORWARD_ARGS."""
        return (["X", "W_IH_T_PACKED", "W_HH_T_PACKED", "BIAS_IH", "BIAS_HH"]
                + [_array(s) for s in self.states] + [_array(p) for p in self.params] + ["SAVED", "LENGTHS"])

    def backward_arguments(self):
        """backward_rows (then lo, hi): BACKWARD_ARGS.

        Only the state histories backward reads (the LSTM's C, not H)."""
        return (["D_OUT", "W_HH_PACKED"] + [_array(s) for s in self.backward_prev]
                + [_array(p) for p in self.params] + ["SAVED", "LENGTHS"]
                + [f"D_{_array(s)}" for s in self.states] + self.gradient_arrays
                + [f"D_{_array(p)}" for p in self.params])

    # each step kernel's parameters, with what the loop over time passes for them
    def forward_step_arguments(self):
        arguments = [("GX", "GX_T"), ("GH", "GH"), ("BIAS_IH", "BIAS_IH"), ("BIAS_HH", "BIAS_HH")]
        arguments += [(f"{_array(s)}_PREV", f"{_array(s)}[prev_{s}, lo:hi]") for s in self.states]
        arguments += [(_array(p), _array(p)) for p in self.params]
        arguments += [(_array(s), f"{_array(s)}[next_{s}, lo:hi]") for s in self.states]
        return arguments + [("SAVED", "SAVED[t % SAVED.shape[0], lo:hi]")]

    def backward_step_arguments(self):
        arguments = [("SAVED", "SAVED[t, lo:hi]")]
        arguments += [(f"{_array(s)}_PREV", f"{_array(s)}[t, lo:hi]") for s in self.backward_prev]
        arguments += [(_array(p), _array(p)) for p in self.params]
        arguments += [("D_OUT", "D_OUT[t, lo:hi]")]
        arguments += [(f"D_{_array(s)}", f"D_{_array(s)}[lo:hi]") for s in self.states]
        arguments += [(g, f"{g}[t, lo:hi]") for g in self.gradient_arrays]
        if self.hidden_gradients == "in place":
            arguments += [("D_GH", "D_GH")]      # this step's alone, for the recurrent product
        arguments += [(f"D_{_array(s)}_PREV",) * 2 for s in self.states if s not in self.zero_prev]
        return arguments + [(f"D_{_array(p)}",) * 2 for p in self.params]

    # gradient symbols -> where they are written: (array, block, code, operator)
    def gradient_targets(self):
        spec = self.spec
        gx = {sym: g for g, sym in spec.gx.items()}
        gh = {sym: g for g, sym in spec.gh.items()}
        prev = {sym: s for s, sym in spec.prev.items()}
        out = []
        for sym, expr in self.derivation.gradients.items():
            wrt = self.derivation.wrt[sym]
            if wrt in gx:      # also d/dgh when the blocks are summed: one array
                out.append(("D_GX", self.gate_index[gx[wrt]], _code(expr), "="))
            elif wrt in gh:
                out.append(("D_GH", self.gate_index[gh[wrt]], _code(expr), "="))
            elif wrt in prev:
                if prev[wrt] not in self.zero_prev:
                    out.append((f"D_{_array(prev[wrt])}_PREV", None, _code(expr), "="))
            else:              # element-wise parameter: summed over the batch
                out.append((f"D_{_array(str(wrt))}", "param", _code(expr), "+="))
        if self.factors is not None and self.hidden_gradients != "same":
            # d/dgh = factor · d/dgx, the product hidden_gradient_rows makes too
            after_d_gx = sum(1 for array, *_ in out if array == "D_GX")
            # from the values _backward_step holds in locals: reading D_GX back after storing
            # it kept LLVM from vectorizing the GRU's backward step (issue 17: 2.7 against
            # 0.63 ns a unit at B = 32, d = 128, the same bits)
            out[after_d_gx:after_d_gx] = [("D_GH", k, self.times_factor(g, f"d_gx_{g}"), "=")
                                          for k, g in enumerate(self.spec.gates)]
        return out

    def times_factor(self, gate, array):
        """The code of ``factor · array[...]`` for one gate block (``array`` has a {} for its column)."""
        factor = self.factors[gate]
        value = array.format(_column(self.gate_index[gate]))
        if factor == 1:
            return value
        if factor == 0:          # a block that gh does not enter (a gate fed by gx alone)
            return "real(0)"
        code = _code(factor)
        return f"{code} * {value}" if factor.is_Symbol else f"({code}) * {value}"


# Every kernel is compiled with these options (see the module docstring); the step
# kernels also declare that their array arguments never overlap. No kernel is passed to
# another as a first-class function, so none gets the C wrapper Numba would compile for that
# (no_cfunc_wrapper; issue 17, compile time: part of the 0.1-0.3 s each kernel saved with
# INTERNAL_OPTIONS below).
KERNEL_OPTIONS = ("cache=True, nogil=True, " + ", ".join(f"{k}={v!r}" for k, v in JIT_OPTIONS.items())
                  + ", no_cfunc_wrapper=True")
STEP_OPTIONS = KERNEL_OPTIONS + ", pipeline_class=NoOverlapCompiler"
# Kernels that only other kernels call (a staged cell's phases and stages): no CPython
# wrapper either, whose unboxing of a dozen arrays cost 0.1-0.3 s of a 0.35-0.8 s compile
# (mut3's forward phases, interleaved, issue 17).
INTERNAL_OPTIONS = STEP_OPTIONS + ", no_cpython_wrapper=True"

def _forward_step(layout: _Layout):
    spec, der = layout.spec, layout.derivation
    used = set()
    for _, expr in der.forward:
        used |= expr.free_symbols
    lines = []
    for g in spec.gates:
        col = _column(layout.gate_index[g])
        if spec.gx[g] in used:
            lines.append(f"gx_{g} = GX[b, {col}] + BIAS_IH[{col}]")
        if spec.gh[g] in used:
            lines.append(f"gh_{g} = GH[b, {col}] + BIAS_HH[{col}]")
    for s in layout.states:
        if spec.prev[s] in used:
            lines.append(f"{s}_prev = {_array(s)}_PREV[b, j]")
    for p in layout.params:
        lines.append(f"{p} = {_array(p)}[j]")
    lines += [f"{sym} = {_code(expr)}" for sym, expr in der.forward]
    lines += [f"{_array(s)}[b, j] = {s}" for s in layout.states]
    lines += [f"SAVED[b, {_column(k)}] = {name}" for k, name in enumerate(layout.saved)]

    args = [name for name, _ in layout.forward_step_arguments()]
    first = _array(layout.states[0])
    return (
        f"@numba.njit({STEP_OPTIONS})\n"
        f"def forward_step({', '.join(args)}):\n"
        f'    """One step, element-wise: new states and the values backward needs (SAVED).\n\n'
        f"    GX, GH: [batch, G·hidden] products x_t W_ihᵀ and h_(t−1) W_hhᵀ, without biases.\n"
        f'    """\n'
        f"    real = GX.dtype.type  # numbers in the arrays' precision\n"
        f"    batch, hidden = {first}.shape\n"
        f"    for b in range(batch):\n"
        f"        for j in range(hidden):\n"
        + "".join(f"{INDENT}{line}\n" for line in lines)
    )


def _backward_step(layout: _Layout):
    spec, der = layout.spec, layout.derivation
    lines = [f"{name} = SAVED[b, {_column(k)}]" for k, name in enumerate(layout.saved)]
    lines += [f"{s}_prev = {_array(s)}_PREV[b, j]" for s in layout.backward_prev]
    lines += [f"{p} = {_array(p)}[j]" for p in layout.params]
    for s in layout.states:
        extra = "D_OUT[b, j] + " if s == spec.output else ""
        lines.append(f"d_{s} = {extra}D_{_array(s)}[b, j]")
    lines += [f"{sym} = {_code(expr)}" for sym, expr in der.backward_cse]
    for array, where, code, op in layout.gradient_targets():
        index = "j" if where == "param" else ("b, j" if where is None else f"b, {_column(where)}")
        if array == "D_GX" and layout.hidden_gradients == "in place":   # D_GH reads it
            local = f"d_gx_{layout.spec.gates[where]}"
            lines.append(f"{local} = {code}")
            code = local
        lines.append(f"{array}[{index}] {op} {code}")

    args = [name for name, _ in layout.backward_step_arguments()]
    return (
        f"@numba.njit({STEP_OPTIONS})\n"
        f"def backward_step({', '.join(args)}):\n"
        f'    """One step back: gradients of the pre-activations and of the previous states.\n\n'
        f"    D_OUT is the gradient of this step's output, D_<state> that of each new\n"
        f"    state from later steps; parameter gradients are accumulated (+=).\n"
        f'    """\n'
        f"    real = SAVED.dtype.type  # numbers in the arrays' precision\n"
        f"    batch, hidden = D_OUT.shape\n"
        f"    for b in range(batch):\n"
        f"        for j in range(hidden):\n"
        + "".join(f"{INDENT}{line}\n" for line in lines)
    )


TEMPLATE_DIR = Path(__file__).parent / "templates"


def _fill(template: str, values: dict) -> str:
    """string.Template substitution; a placeholder alone on its line may be given a list of
    lines, each written at the placeholder's indentation (none: the line is dropped)."""
    out = []
    for line in template.splitlines():
        name = line.strip()
        if name.startswith("${") and name.endswith("}") and isinstance(values.get(name[2:-1]), list):
            indent = line[:len(line) - len(line.lstrip())]
            out += [indent + item for item in values[name[2:-1]]]
        else:
            out.append(string.Template(line).substitute(values))
    return "\n".join(out) + "\n"


def _sequence_functions(layout: _Layout):
    """forward_rows and backward_rows: the loops over time
    of templates/sequence.py.tmpl, filled in with this cell's arrays."""
    states = [_array(s) for s in layout.states]
    out = _array(layout.spec.output)
    d_out = f"D_{out}"

    def carry(s):
        """d/ds_(t−1): from the step kernel, plus the recurrent product for the output state."""
        d_state = f"D_{_array(s)}"
        parts = ([] if s in layout.zero_prev else [f"{d_state}_PREV[b - lo, j]"]) \
            + (["RECURRENT[b - lo, j]"] if d_state == d_out else [])
        return f"{d_state}[b, j] = {' + '.join(parts) or '0'}"

    step_buffers = []
    for s in layout.states:
        if s not in layout.zero_prev:
            step_buffers.append(f"D_{_array(s)}_PREV = np.empty((hi - lo, hidden), D_OUT.dtype)")
        step_buffers.append(f"HELD_D_{_array(s)} = np.empty((hi - lo, hidden), D_OUT.dtype)")
    filled = {"same": "filled with the gradient of the\n    pre-activations (d/dgx = d/dgh)",
              "in place": "filled with d/dgx; hidden_gradient_rows turns\n"
                          "    it into d/dgh once the input side is done with it",
              "own array": "filled with the gradients of the\n    pre-activations"}[layout.hidden_gradients]
    recurrent_buffers = ["RECURRENT = np.empty((hi - lo, hidden), D_OUT.dtype)"]
    if layout.hidden_gradients == "in place":
        recurrent_buffers.append("D_GH = np.empty((hi - lo, D_GX.shape[2]), D_OUT.dtype)  # d/dgh of one step")
    backward_args = layout.backward_arguments()
    values = {
        "kernel_options": KERNEL_OPTIONS,
        "forward_args": ", ".join(layout.forward_arguments()),
        "state_arrays": ", ".join(states),
        "gate_count": len(layout.spec.gates),
        "output": layout.spec.output,
        "output_array": out,
        "ring_slots": [f"prev_{s}, next_{s} = t % {n}.shape[0], (t + 1) % {n}.shape[0]"
                       for s, n in zip(layout.states, states)],
        "forward_step_call": ", ".join(passed for _, passed in layout.forward_step_arguments()),
        "hold_states": [f"{n}[next_{s}, b, j] = {n}[prev_{s}, b, j]" for s, n in zip(layout.states, states)],
        "backward_args": ", ".join(backward_args),
        "gradient_state_arrays": ", ".join(f"D_{n}" for n in states),
        "pre_activation_gradients": " and ".join(layout.gradient_arrays),
        "filled": filled,
        "step_buffers": step_buffers,
        "hold_gradients": [line for n in states for line in
                           (f"HELD_D_{n}[b - lo, j] = D_{n}[b, j]", f"D_{n}[b, j] = 0")],
        "backward_step_call": ", ".join(passed for _, passed in layout.backward_step_arguments()),
        "recurrent_buffers": recurrent_buffers,
        "hidden_side_gradient": "D_GH" if layout.hidden_gradients == "in place" else f"{layout.gradient_arrays[-1]}[t, lo:hi]",
        "carry_gradients": [carry(s) for s in layout.states],
        "release_gradients": [f"D_{n}[b, j] = HELD_D_{n}[b - lo, j]" for n in states],
    }
    return _fill((TEMPLATE_DIR / "sequence.py.tmpl").read_text(), values)


def _hidden_gradient_functions(layout: _Layout):
    """hidden_gradient_rows (templates/hidden_gradient.py.tmpl): d/dgx → d/dgh in
    place over the steps of a chunk, where every block has a factor and some are not 1."""
    if layout.hidden_gradients != "in place":
        return ""
    changed = [g for g in layout.spec.gates if layout.factors[g] != 1]
    reads = {str(s) for g in changed for s in layout.factors[g].free_symbols}
    loads = [f"{name} = SAVED[t, b, {_column(k)}]" for k, name in enumerate(layout.saved) if name in reads]
    statements = loads + [f"D_G[t, b, {_column(layout.gate_index[g])}] = "
                          f"{layout.times_factor(g, 'D_G[t, b, {}]')}" for g in changed]
    blocks = (f"the {changed[0]} block differs: it is" if len(changed) == 1
              else f"the {', '.join(changed)} blocks differ: each is")
    values = {"step_options": STEP_OPTIONS, "kernel_options": KERNEL_OPTIONS, "blocks": blocks,
              "saved_count": len(layout.saved), "statements": statements}
    return _fill((TEMPLATE_DIR / "hidden_gradient.py.tmpl").read_text(), values)


def runtime_key() -> str:
    """A hash of kernel_runtime.py, which every kernel module compiles into its own code."""
    return hashlib.sha256((Path(__file__).parent / "kernel_runtime.py").read_bytes()).hexdigest()[:16]


def kernel_source(cell: CellSpec | Derivation, *, header: str | None = None) -> str:
    """The complete Python source of a cell's kernel module."""
    from .staged import StagedDerivation, staged_kernel_source

    derivation = cell if isinstance(cell, (Derivation, StagedDerivation)) else derive(cell)
    if header is None:
        header = (f"# Generated by lstmkit.codegen from the cell spec {derivation.spec.name!r}. Do not edit.\n"
                  f"# Regenerate with: {REGENERATE_COMMAND}\n")
    if isinstance(derivation, StagedDerivation):     # products of values of the step: lstmkit.staged
        return staged_kernel_source(derivation, header, runtime_key(), KERNEL_OPTIONS, INTERNAL_OPTIONS)
    layout = _Layout(derivation)
    spec = layout.spec
    sequence = _sequence_functions(layout)
    hidden = _hidden_gradient_functions(layout)
    equations = "\n".join(f"#   {sym} = {expr}" for sym, expr in derivation.forward)
    gradients = "\n".join(f"#   {sym} = {expr}" for sym, expr in derivation.raw_gradients.items())
    constants = textwrap.dedent(f"""\
        CELL = {spec.name!r}
        GATES = {spec.gates!r}
        STATES = {spec.states!r}
        OUTPUT = {spec.output!r}
        PARAMS = {tuple(layout.params)!r}
        SAVED = {tuple(layout.saved)!r}
        BACKWARD_READS_STATES = {tuple(layout.backward_prev)!r}
        # d/dgh of the pre-activations: "same" as d/dgx (one gradient array, D_GX); "in place":
        # each block is a factor times d/dgx, so the one array becomes d/dgh once the
        # input side is done with it (hidden_gradient_rows); "own array": a second array, D_GH
        HIDDEN_GRADIENTS = {layout.hidden_gradients!r}
        # The calling convention: the arrays each function takes, in order; a state or
        # parameter s is the array S, its gradient D_S. *_rows take lo, hi after them: the
        # block of batch rows they run (the driver runs several blocks at once on threads).
        FORWARD_ARGS = {tuple(layout.forward_arguments())!r}
        BACKWARD_ARGS = {tuple(layout.backward_arguments())!r}
        FORWARD_STEP_ARGS = {tuple(name for name, _ in layout.forward_step_arguments())!r}
        BACKWARD_STEP_ARGS = {tuple(name for name, _ in layout.backward_step_arguments())!r}
        SPEC_KEY = {spec.key!r}
        # kernel_runtime.py as this file was generated: Numba's cache follows a kernel's own
        # file only, so a change there must change this file for the kernels to recompile
        RUNTIME_KEY = {runtime_key()!r}
        """)
    return (
        f"{header}"
        f'"""Kernels of the {spec.name!r} cell: {spec.description or spec.name}.\n\n'
        "Forward equations, with the values the forward pass saves named:\n\n"
        f"{equations.replace('#   ', '    ')}\n\n"
        "Gradients (δs = gradient of the new state s), before common subexpressions:\n\n"
        f"{gradients.replace('#   ', '    ')}\n\n"
        "Compiled with error_model=\"numpy\" and the \"contract\" fast-math flag alone; the\n"
        "docstring of lstmkit.codegen says why.\n"
        '"""\n'
        "import math  # noqa: F401 (functions of a cell other than σ, tanh, relu)\n\n"
        "import numba\n"
        "import numpy as np\n\n"
        "from lstmkit.kernel_runtime import (INPUT_AHEAD_BYTES, TILE_ROWS, NoOverlapCompiler,  # noqa: F401\n"
        "                                    matmul_packed, matmul_packed_steps, sigmoid, tanh)\n\n"
        f"{constants}\n\n"
        f"{_forward_step(layout)}\n\n"
        f"{_backward_step(layout)}\n\n"
        f"{sequence}"
        + (f"\n\n{hidden}" if hidden else "")
    )


# --------------------------------------------------------------------------
# Files: committed built-ins and the user-cell cache
# --------------------------------------------------------------------------
def write_builtin_kernels(directory: Path | None = None, check: bool = False):
    """Write (or with ``check=True`` compare) the kernel file of every built-in cell.

    Returns the list of files that were written, or that differ when checking.
    """
    from .cells import BUILTIN_CELLS

    directory = Path(directory or KERNEL_DIR)
    changed = []
    expected = {f"{name}.py": kernel_source(spec) for name, spec in BUILTIN_CELLS.items()}
    expected["__init__.py"] = (
        f"# Generated by lstmkit.codegen. Do not edit. Regenerate with: {REGENERATE_COMMAND}\n"
        '"""Generated kernels of the built-in cells, one module per cell."""\n'
        "import importlib\n\n"
        "from lstmkit.kernel_runtime import repair_cache_indexes\n\n"
        f"BUILTIN = {tuple(BUILTIN_CELLS)!r}\n"
        "_CHECKED = set()   # modules whose Numba cache indexes were read (repair_cache_indexes)\n\n\n"
        "def load(name):\n"
        '    """The kernel module of the built-in cell ``name`` (without SymPy); a Numba cache index\n'
        '    of it that cannot be read is reset, with a warning, and its kernels compile again."""\n'
        "    if name not in BUILTIN:\n"
        '        raise ValueError(f"no built-in cell {name!r}; choose one of {sorted(BUILTIN)}")\n'
        '    module = importlib.import_module(f"{__name__}.{name}")\n'
        "    if name not in _CHECKED:\n"
        '        repair_cache_indexes(list(vars(module).items()), f"the built-in cell {name!r}")\n'
        "        _CHECKED.add(name)\n"
        "    return module\n")
    for filename, source in expected.items():
        path = directory / filename
        current = path.read_text() if path.exists() else None
        if current != source:
            changed.append(path)
            if not check:
                _atomic_write(path, source)
    return changed


def user_cache_dir() -> Path:
    """Where user-cell kernels are written: $LSTMKIT_CACHE_DIR, else ~/.cache/lstmkit."""
    root = os.environ.get("LSTMKIT_CACHE_DIR")
    base = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lstmkit"
    return base / "kernels"


def _atomic_write(path: Path, text: str):
    """A kernel module written whole or not at all (a killed write never leaves half a module
    for the next import to find)."""
    atomic_write(path, lambda handle: handle.write(text), binary=False)


_loaded = {}
GENERATOR_FILES = ("symbolic.py", "codegen.py", "staged.py", "kernel_runtime.py", "templates/sequence.py.tmpl",
                   "templates/hidden_gradient.py.tmpl")


def generator_key() -> str:
    """A hash of the files that make a kernel module: a cached user cell written by another
    version of them is written again."""
    digest = hashlib.sha256()
    for name in GENERATOR_FILES:
        path = Path(__file__).parent / name
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()[:16]


def _user_header(spec: CellSpec) -> str:
    return (f"# Generated by lstmkit.codegen from the user cell spec {spec.name!r}. Do not edit.\n"
            f"# Written to lstmkit's kernel cache by load_kernels; generator {generator_key()}\n")


def load_kernels(cell: CellSpec | str):
    """The kernel module of a cell: a built-in by name or spec, or a user spec.

    A user spec's module is written once to the cache directory as
    ``<name>_<hash of the equations>.py`` and imported from there. A file already
    there that the same generator wrote is imported as it is: no derivation, no
    printing, so a cached cell loads without SymPy's work (the hash of the equations
    aside). A Numba cache index there that cannot be read is reset, with a warning
    that names its directory, and the kernels are compiled again.
    """
    from . import kernels

    if isinstance(cell, str):
        return kernels.load(cell)
    key = cell.key
    if cell.name in kernels.BUILTIN:        # the built-in cell itself: its committed kernels
        builtin = kernels.load(cell.name)
        if builtin.SPEC_KEY == key:
            return builtin
    if key in _loaded:
        return _loaded[key]
    module_name = f"lstmkit_user_{cell.name}_{key}"
    path = user_cache_dir() / f"{module_name}.py"
    header = _user_header(cell)
    try:
        current = path.read_text().startswith(header)
    except (OSError, UnicodeDecodeError):
        current = False
    if not current:
        _atomic_write(path, kernel_source(cell, header=header))
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    repair_cache_indexes(list(vars(module).items()), f"the user cell {cell.name!r}")
    _loaded[key] = module
    return module
