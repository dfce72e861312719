"""Chapters print the committed digits on any x86-64 processor: the kernels that run them load
OpenBLAS's Haswell code and NumPy without its AVX-512 paths (lstmkit.reproducible)."""
import json
import os
import subprocess
import sys

import nbformat

from lstmkit import course, reproducible

CHECK = """
import json
import numpy as np
from threadpoolctl import threadpool_info
try:
    from numpy._core._multiarray_umath import __cpu_features__
except ImportError:
    from numpy.core._multiarray_umath import __cpu_features__
blas = [info.get("architecture") for info in threadpool_info() if info.get("internal_api") == "openblas"]
print(json.dumps({"openblas": blas, "features": __cpu_features__}))
"""


def test_the_environment_names_only_what_this_numpy_dispatches():
    environment = reproducible.chapter_environment()
    assert environment["OPENBLAS_CORETYPE"] == "Haswell"
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    named = environment["NPY_DISABLE_CPU_FEATURES"].split()
    assert set(named) <= set(__cpu_dispatch__)
    assert all("AVX512" in name or name == "X86_V4" for name in named)
    if __cpu_features__.get("AVX512F"):         # an AVX-512 processor: its paths are named
        assert named, __cpu_dispatch__


def test_a_process_started_with_it_runs_haswell_blas_and_no_avx512_numpy():
    environment = dict(os.environ, **reproducible.chapter_environment())
    done = subprocess.run([sys.executable, "-W", "error::ImportWarning", "-c", CHECK], env=environment,
                          capture_output=True, text=True, check=True)
    assert done.stderr == ""
    seen = json.loads(done.stdout)
    assert seen["openblas"] and all(architecture == "Haswell" for architecture in seen["openblas"]), seen
    for name in reproducible.chapter_environment()["NPY_DISABLE_CPU_FEATURES"].split():
        assert seen["features"][name] is False, name


def test_a_chapter_kernel_gets_it_and_a_setting_of_the_callers_own_stays(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")          # set already: kept as it is
    monkeypatch.delenv("NPY_DISABLE_CPU_FEATURES", raising=False)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import os; print(os.environ.get('OPENBLAS_CORETYPE'), '|', os.environ.get('NPY_DISABLE_CPU_FEATURES'))")])
    assert course.run_notebook(nb, tmp_path) == []
    printed = nb.cells[0].outputs[0]["text"].strip()
    assert printed == f"Haswell | {reproducible.chapter_environment()['NPY_DISABLE_CPU_FEATURES'] or None}"

