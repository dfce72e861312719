"""What ``import lstmkit`` loads, and what it must not."""
import os
import subprocess
import sys

COURSE_LAYER = ("experiments", "tasks", "diagrams", "course", "notebook")


def test_import_lstmkit_loads_the_numeric_core_and_the_training_stack_only():
    script = ("import sys, lstmkit; print(' '.join(sorted(m for m in sys.modules "
              "if m.split('.')[0] in ('lstmkit', 'torch', 'sympy', 'matplotlib'))))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=dict(os.environ), check=True)
    loaded = set(result.stdout.split())
    for part in ("layers", "driver", "kernels", "module", "nn", "optim", "train", "checkpoint", "models"):
        assert f"lstmkit.{part}" in loaded, part
    assert not loaded & {f"lstmkit.{name}" for name in COURSE_LAYER}, loaded
    assert not loaded & {"torch", "sympy", "matplotlib"}, loaded          # nor the oracle, nor SymPy


def test_the_course_layer_loads_on_first_use():
    script = "import lstmkit; lstmkit.tasks.adding_problem; import sys; print('lstmkit.tasks' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=dict(os.environ), check=True)
    assert result.stdout.strip() == "True"
