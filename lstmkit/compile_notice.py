"""One line on the terminal when lstmkit's kernels compile for the first time.

A learner's first layer waits seconds while Numba compiles its kernels for the
machine; every later run loads them from Numba's cache on disk. Numba raises a
``numba:compile`` event only for a real compilation (a cache hit raises none),
so the line appears only when something compiles, once per process.

Never inside a Jupyter kernel's cell output: ipykernel forwards stderr (even
file descriptor 2) into the notebook, where a new output would change a
chapter's committed outputs, fail ``python -m lstmkit.course execute`` (which
refuses anything on stderr) and fail nbval. In a kernel the line goes to the
kernel process's own terminal (``make course`` prints it there), or nowhere if
ipykernel does not say which that is.
"""
from __future__ import annotations

import os
import sys

import numba.core.event as numba_event

__all__ = ["MESSAGE", "announced", "say_nothing"]

MESSAGE = ("lstmkit: compiling kernels for this machine (once: later runs load them from "
           "Numba's cache) ...")


def _write_line(text):
    stream = sys.stderr
    if type(stream).__module__.startswith("ipykernel"):
        terminal = getattr(stream, "_original_stdstream_copy", None)
        if terminal is not None:
            try:
                os.write(terminal, (text + "\n").encode())
            except OSError:
                pass
        return
    try:
        stream.write(text + "\n")
        stream.flush()
    except (AttributeError, OSError, ValueError):   # no stderr (pythonw) or a closed one
        pass


class _FirstCompile(numba_event.Listener):
    """Writes MESSAGE at the start of the first compilation of an lstmkit function."""

    def __init__(self):
        self.announced = False

    def on_start(self, event):
        if self.announced:
            return
        dispatcher = event.data.get("dispatcher") if isinstance(event.data, dict) else None
        module = getattr(getattr(dispatcher, "py_func", None), "__module__", "") or ""
        if module.startswith("lstmkit"):          # built-in kernels, user cells (lstmkit_user_*), the runtime
            self.announced = True
            _write_line(MESSAGE)

    def on_end(self, event):
        pass


_listener = _FirstCompile()
numba_event.register("numba:compile", _listener)


def announced():
    """Whether this process has printed the line (something of lstmkit's compiled)."""
    return _listener.announced


def say_nothing():
    """Print no line in this process: its caller shows what is compiling (lstmkit.precompile)."""
    _listener.announced = True
