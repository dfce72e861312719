"""Command line: ``python -m lstmkit generate [--check]``, ``python -m lstmkit compile [--jobs N]``,
``python -m lstmkit demo`` and
``lstmkit course ...`` (:mod:`lstmkit.course`)."""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

GRADIENT_TOLERANCE = 1e-6      # relative error of the float64 gradient check
TORCH_TOLERANCE = 1e-10        # relative difference from torch.nn in float64


def generate(check=False):
    from .codegen import KERNEL_DIR, write_builtin_kernels

    changed = write_builtin_kernels(check=check)
    if check:
        if changed:
            print("generated kernels are out of date:", *changed, sep="\n  ")
            return 1
        print(f"generated kernels in {KERNEL_DIR} are up to date")
        return 0
    print(f"wrote {len(changed)} file(s)" + "".join(f"\n  {p}" for p in changed))
    return 0


def demo():
    """Derive, generate, compile and check every built-in cell; print one table."""
    from . import BUILTIN_CELLS, RecurrentLayer, derive, kernel_source
    from .agreement import torch_agreement
    from .gradcheck import layer_gradcheck

    rng = np.random.default_rng(0)
    steps, batch, n_in, hidden, layers = 6, 3, 4, 5, 2
    inputs = {n_in: rng.standard_normal((steps, batch, n_in)), hidden: rng.standard_normal((steps, batch, hidden))}
    header = (f"{'cell':<26} {'params':>7} {'derive s':>9} {'emit s':>7} {'compile s':>10} "
              f"{'max grad err':>13} {'vs torch':>9}")
    print(f"Every built-in cell: input_size={n_in}, hidden_size={hidden}, num_layers={layers}, "
          f"T={steps}, B={batch}, float64\n(input_size={hidden} for the cells that read their raw input)\n")
    print(header)
    print("-" * len(header))
    worst, worst_torch = 0.0, 0.0
    for name, spec in BUILTIN_CELLS.items():
        start = time.perf_counter()
        derivation = derive(spec)
        derived = time.perf_counter()
        kernel_source(derivation)
        emitted = time.perf_counter()
        # a cell that reads its raw input element-wise (MUT1, MUT2) needs input_size == hidden_size
        cell_in = hidden if getattr(derivation, "uses_x", False) else n_in
        x = inputs[cell_in]
        layer = RecurrentLayer(spec, cell_in, hidden, num_layers=layers, dtype=np.float64, seed=0)
        layer(x)
        layer.backward(np.ones((steps, batch, hidden)))
        x32 = x.astype(np.float32)
        layer32 = RecurrentLayer(spec, cell_in, hidden, num_layers=layers, dtype=np.float32, seed=0)
        layer32(x32)
        layer32.backward(np.ones((steps, batch, hidden), np.float32))
        compiled = time.perf_counter()
        errors = layer_gradcheck(layer, x)
        err = max(errors.values())
        worst = max(worst, err)
        try:
            differences = torch_agreement(layer, x)
        except ImportError:             # torch is the test oracle, not a dependency
            differences = None
        torch_diff = None if differences is None else max(differences.values())
        worst_torch = worst_torch if torch_diff is None else max(worst_torch, torch_diff)
        torch_text = "n/a" if torch_diff is None else f"{torch_diff:.1e}"
        print(f"{name:<26} {layer.num_parameters():>7} {derived - start:>9.2f} {emitted - derived:>7.2f} "
              f"{compiled - emitted:>10.2f} {err:>13.1e} {torch_text:>9}")
    print(f"\ncompile s: first forward+backward in float64 and float32 "
          f"(Numba's on-disk cache makes later runs fast).\nworst gradient error: {worst:.1e}"
          f"\nworst relative difference from torch: {worst_torch:.1e}")
    failed = False
    if not worst < GRADIENT_TOLERANCE:
        print(f"FAILED: a gradient check ({worst:.1e}, tolerance {GRADIENT_TOLERANCE:.0e})", file=sys.stderr)
        failed = True
    if not worst_torch < TORCH_TOLERANCE:
        print(f"FAILED: torch disagrees ({worst_torch:.1e}, tolerance {TORCH_TOLERANCE:.0e})", file=sys.stderr)
        failed = True
    return 1 if failed else 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["course"]:          # lstmkit course COMMAND ...: the course tooling's own parser
        from .course import main as course_main

        return course_main(argv[1:])
    parser = argparse.ArgumentParser(prog="lstmkit", description=__doc__,
                                     epilog="lstmkit course --help: the course (site, student, grade, sync-zh)")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="regenerate the committed kernels of the built-in cells")
    gen.add_argument("--check", action="store_true", help="only report files that are out of date")
    sub.add_parser("demo", help="derive, generate, compile and gradient-check every built-in cell")
    comp = sub.add_parser("compile", help="compile every built-in cell's kernels into Numba's cache, "
                                          "on several processes at once (once per machine)")
    comp.add_argument("--jobs", type=int, default=None, help="processes (default: one per core)")
    comp.add_argument("cells", nargs="*", help="only these built-in cells (default: all)")
    from .study_cli import add_study_parser, run_command  # argparse only; the study extra loads on use
    add_study_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "study":
        return run_command(args, argv)
    if args.command == "generate":
        return generate(args.check)
    if args.command == "compile":
        from .precompile import main as compile_main

        return compile_main(args.jobs, args.cells or None)
    return demo()


if __name__ == "__main__":
    sys.exit(main())
