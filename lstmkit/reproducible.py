"""The same digits on every x86-64 processor where a chapter runs.

nbval compares a chapter's committed outputs with a new run's, and so do the student edition's
tests. lstmkit's own kernels gave the same bits on both processors below (the register tile's
elements are the same fma chains whatever its width), but OpenBLAS and NumPy choose their code by
processor: on an Intel Xeon with AVX-512, OpenBLAS's SkylakeX gemm and NumPy's AVX-512 loops
(``np.tanh``, ``np.exp``) round differently from the AVX2 code that an AMD EPYC runs, on which the
outputs were committed. There, 26 of ``make test``'s 1486 checks failed (issue 17), in six chapters and
the student edition: a difference printed as 5.6e-17 instead of 1.1e-16, a training run that ended elsewhere.

So every process that runs chapters (``lstmkit.course``, the book's build, the test suite)
starts its kernels with OpenBLAS's Haswell kernels (AVX2 and FMA, what OpenBLAS picks on an AVX2
EPYC) and NumPy's AVX-512 code paths switched off, unless the environment already says otherwise.
Both act when a process loads the libraries, so they are set before a kernel starts, never in one.
A learner's own notebook is free of them: only the committed digits need them.
"""
from __future__ import annotations

import os

__all__ = ["chapter_environment", "pin_library_code"]

OPENBLAS_CORE = "Haswell"


def _numpy_avx512_features():
    """The AVX-512 code paths this NumPy chooses among (their names change between versions)."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__
    except ImportError:          # NumPy 1
        from numpy.core._multiarray_umath import __cpu_dispatch__
    return [name for name in __cpu_dispatch__ if name.startswith("AVX512") or name == "X86_V4"]


def chapter_environment():
    """The variables a chapter's kernel needs for the committed digits: ``{name: value}``."""
    return {"OPENBLAS_CORETYPE": OPENBLAS_CORE, "NPY_DISABLE_CPU_FEATURES": " ".join(_numpy_avx512_features())}


def pin_library_code(environ=None):
    """Set :func:`chapter_environment` in ``environ`` (``os.environ``), where it is not set yet,
    for the kernels this process starts from now on."""
    environ = os.environ if environ is None else environ
    for name, value in chapter_environment().items():
        if value:
            environ.setdefault(name, value)
