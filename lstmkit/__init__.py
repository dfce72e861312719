"""lstmkit: LSTM cells as SymPy equations, with generated Numba kernels.

The pipeline, one straight line (see DESIGN.md):

    CellSpec (SymPy equations)  →  derive()  →  kernel_source()  →  kernel module
        →  driver (BLAS + kernels over time)  →  layers (torch.nn conventions)
"""
from .cells import BUILTIN_CELLS, get_cell, gru_spec, lstm_spec, rnn_spec
from .codegen import kernel_source, load_kernels
from .layers import GRU, LSTM, RNN, CoupledLSTM, PeepholeLSTM, RecurrentLayer
from .symbolic import CellSpec, CellSpecError, Derivation, derive, relu, sigmoid, tanh

# the training stack, as submodules: lstmkit.nn, .models, .optim, .train, .checkpoint, .tasks, .experiments
from . import checkpoint, experiments, models, nn, optim, tasks, train

__version__ = "0.1.0"

__all__ = [
    "BUILTIN_CELLS", "CellSpec", "CellSpecError", "CoupledLSTM", "Derivation", "GRU", "LSTM",
    "PeepholeLSTM", "RNN", "RecurrentLayer", "derive", "get_cell", "gru_spec", "kernel_source",
    "load_kernels", "lstm_spec", "relu", "rnn_spec", "sigmoid", "tanh",
]
