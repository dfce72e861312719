"""The command line: ``python -m lstmkit generate --check`` and ``python -m lstmkit demo``."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import lstmkit
from lstmkit import __main__ as cli
from lstmkit import codegen


def run_cli(*arguments, timeout=900):
    return subprocess.run([sys.executable, "-m", "lstmkit", *arguments], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


def test_generate_check_passes_on_the_committed_kernels():
    result = run_cli("generate", "--check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout


def test_generate_check_names_an_out_of_date_kernel_and_fails(tmp_path, monkeypatch, capsys):
    kernels = tmp_path / "kernels"
    shutil.copytree(codegen.KERNEL_DIR, kernels, ignore=shutil.ignore_patterns("__pycache__"))
    stale = kernels / "gru.py"
    stale.write_text(stale.read_text() + "\n# edited by hand\n")
    monkeypatch.setattr(codegen, "KERNEL_DIR", kernels)
    assert cli.main(["generate", "--check"]) == 1
    output = capsys.readouterr().out
    assert "out of date" in output and str(stale) in output
    assert stale.read_text().endswith("# edited by hand\n")          # --check writes nothing


def test_demo_checks_every_built_in_cell_and_exits_zero():
    result = run_cli("demo")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.split()}
    for name in lstmkit.BUILTIN_CELLS:
        assert name in rows, name
        assert float(rows[name][5]) < cli.GRADIENT_TOLERANCE            # max grad err column
    for name in ("lstm", "gru", "rnn_tanh", "rnn_relu"):                # torch has these four
        assert float(rows[name][6]) < cli.TORCH_TOLERANCE
    assert rows["peephole_lstm"][6] == "n/a"


@pytest.fixture
def two_cells(monkeypatch):
    """The demo over two cells only, to keep the failing runs short."""
    from lstmkit.cells import BUILTIN_CELLS

    monkeypatch.setattr(lstmkit, "BUILTIN_CELLS", {k: BUILTIN_CELLS[k] for k in ("lstm", "peephole_lstm")})


def test_demo_fails_when_torch_disagrees(two_cells, monkeypatch, capsys):
    from lstmkit import agreement

    honest = agreement.torch_agreement

    def off_by_a_little(layer, x, *args, **kwargs):
        differences = honest(layer, x, *args, **kwargs)
        return None if differences is None else {**differences, "output": 1e-6}

    monkeypatch.setattr(agreement, "torch_agreement", off_by_a_little)
    assert cli.main(["demo"]) == 1
    assert "torch disagrees (1.0e-06" in capsys.readouterr().err


def test_demo_passes_with_the_honest_comparison_and_fails_a_bad_gradient(two_cells, monkeypatch, capsys):
    assert cli.main(["demo"]) == 0
    assert "FAILED" not in capsys.readouterr().err
    from lstmkit import gradcheck

    monkeypatch.setattr(gradcheck, "layer_gradcheck", lambda layer, x: {"weight_ih_l0": 1e-3})
    assert cli.main(["demo"]) == 1
    assert "a gradient check (1.0e-03" in capsys.readouterr().err
