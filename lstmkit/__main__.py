"""Command line: ``python -m lstmkit generate [--check]``, ``python -m lstmkit demo`` and
``lstmkit course ...`` (:mod:`lstmkit.course`)."""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


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


def torch_agreement(layer, x, seed=0):
    """Max abs difference of outputs, states and every gradient against torch; None without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch_class = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn_tanh": torch.nn.RNN,
                   "rnn_relu": torch.nn.RNN}.get(layer.cell.name)
    if torch_class is None:
        return None
    kwargs = {"nonlinearity": "relu"} if layer.cell.name == "rnn_relu" else {}
    reference = torch_class(layer.input_size, layer.hidden_size, num_layers=layer.num_layers,
                            bias=layer.bias, batch_first=layer.batch_first,
                            bidirectional=layer.bidirectional, dtype=torch.float64, **kwargs)
    layer.load_state_dict({k: v.detach().numpy() for k, v in reference.state_dict().items()})
    rng = np.random.default_rng(seed)
    y, final = layer(x)
    finals = final if isinstance(final, tuple) else (final,)
    dy = rng.standard_normal(y.shape)
    d_finals = tuple(rng.standard_normal(f.shape) for f in finals)
    dx, _ = layer.backward(dy, d_finals if len(d_finals) > 1 else d_finals[0])
    x_t = torch.tensor(x, requires_grad=True)
    y_t, final_t = reference(x_t)
    finals_t = final_t if isinstance(final_t, tuple) else (final_t,)
    loss = (y_t * torch.tensor(dy)).sum() + sum((f * torch.tensor(d)).sum()
                                                for f, d in zip(finals_t, d_finals))
    loss.backward()
    diffs = [np.abs(y - y_t.detach().numpy()).max(), np.abs(dx - x_t.grad.numpy()).max()]
    diffs += [np.abs(f - f_t.detach().numpy()).max() for f, f_t in zip(finals, finals_t)]
    diffs += [np.abs(layer.grads[k] - p.grad.numpy()).max() for k, p in reference.named_parameters()]
    return float(max(diffs))


def demo():
    """Derive, generate, compile and check every built-in cell; print one table."""
    from . import BUILTIN_CELLS, RecurrentLayer, derive, kernel_source
    from .gradcheck import layer_gradcheck

    rng = np.random.default_rng(0)
    steps, batch, n_in, hidden, layers = 6, 3, 4, 5, 2
    x = rng.standard_normal((steps, batch, n_in))
    header = (f"{'cell':<26} {'params':>7} {'derive s':>9} {'emit s':>7} {'compile s':>10} "
              f"{'max grad err':>13} {'vs torch':>9}")
    print(f"Every built-in cell: input_size={n_in}, hidden_size={hidden}, num_layers={layers}, "
          f"T={steps}, B={batch}, float64\n")
    print(header)
    print("-" * len(header))
    worst = 0.0
    for name, spec in BUILTIN_CELLS.items():
        start = time.perf_counter()
        derivation = derive(spec)
        derived = time.perf_counter()
        kernel_source(derivation)
        emitted = time.perf_counter()
        layer = RecurrentLayer(spec, n_in, hidden, num_layers=layers, dtype=np.float64, seed=0)
        layer(x)
        layer.backward(np.ones((steps, batch, hidden)))
        x32 = x.astype(np.float32)
        layer32 = RecurrentLayer(spec, n_in, hidden, num_layers=layers, dtype=np.float32, seed=0)
        layer32(x32)
        layer32.backward(np.ones((steps, batch, hidden), np.float32))
        compiled = time.perf_counter()
        errors = layer_gradcheck(layer, x)
        err = max(errors.values())
        worst = max(worst, err)
        torch_diff = torch_agreement(layer, x)
        torch_text = "n/a" if torch_diff is None else f"{torch_diff:.1e}"
        print(f"{name:<26} {layer.num_parameters():>7} {derived - start:>9.2f} {emitted - derived:>7.2f} "
              f"{compiled - emitted:>10.2f} {err:>13.1e} {torch_text:>9}")
    print(f"\ncompile s: first forward+backward in float64 and float32 "
          f"(Numba's on-disk cache makes later runs fast).\nworst gradient error: {worst:.1e}")
    return 0 if worst < 1e-6 else 1


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
    args = parser.parse_args(argv)
    if args.command == "generate":
        return generate(args.check)
    return demo()


if __name__ == "__main__":
    sys.exit(main())
