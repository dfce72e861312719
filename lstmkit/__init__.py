"""lstmkit: LSTM cells as SymPy equations, with generated Numba kernels.

The pipeline, one straight line (see ARCHITECTURE.md):

    CellSpec (SymPy equations)  →  derive()  →  kernel_source()  →  kernel module
        →  driver (BLAS + kernels over time)  →  layers (torch.nn conventions)
"""
import importlib

from . import compile_notice  # noqa: F401 (one line on the terminal while kernels compile the first time)
from .layers import GRU, LSTM, RNN, ClockworkRNN, CoupledLSTM, DepthGatedLSTM, PeepholeLSTM, RecurrentLayer
from .step_cells import GRUCell, LSTMCell, RNNCell

# the training stack, as submodules: lstmkit.nn, .models, .optim, .train, .checkpoint
from . import checkpoint, models, nn, optim, train

# The course layer (the chapters' data and experiments, figures, notebook tooling) sits on
# top of the library: `import lstmkit` does not import it; `lstmkit.tasks` imports it on first use.
_COURSE_MODULES = ("tasks", "experiments", "diagrams", "course", "notebook")

__version__ = "0.1.0"

# The symbolic side (SymPy) loads on first use: a layer of a built-in cell runs
# from its generated kernels alone, and importing SymPy is slow.
_LAZY = {
    "CellSpec": "symbolic", "CellSpecError": "symbolic", "Derivation": "symbolic",
    "derive": "symbolic", "relu": "symbolic", "sigmoid": "symbolic", "tanh": "symbolic", "tick": "symbolic",
    "BUILTIN_CELLS": "cells", "get_cell": "cells", "gru_spec": "cells", "lstm_spec": "cells",
    "rnn_spec": "cells", "kernel_source": "codegen", "load_kernels": "codegen",
}

__all__ = [
    "BUILTIN_CELLS", "CellSpec", "CellSpecError", "ClockworkRNN", "CoupledLSTM", "DepthGatedLSTM", "Derivation", "GRU", "GRUCell", "LSTM",
    "LSTMCell", "PeepholeLSTM", "RNN", "RNNCell", "RecurrentLayer", "derive", "get_cell", "gru_spec", "kernel_source",
    "load_kernels", "lstm_spec", "relu", "rnn_spec", "sigmoid", "tanh", "tick",
]


def __getattr__(name):
    if name in _COURSE_MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name not in _LAZY:
        raise AttributeError(f"module 'lstmkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
