"""The course tooling: student edition, grading, notebook execution, the command line, diagrams.

Tiny notebooks made here stand in for the chapters, so nothing here runs a real chapter.
"""
import hashlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from lstmkit import course, diagrams

ROOT = Path(__file__).resolve().parent.parent


def write_notebook(path, cells):
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def tagged(cell, *tags):
    cell.metadata["tags"] = list(tags)
    return cell


def with_output(cell, text):
    cell.outputs = [new_output("stream", name="stdout", text=text)]
    cell.execution_count = 1
    return cell


# ---------------------------------------------------------------------------------------
# student edition
# ---------------------------------------------------------------------------------------
def test_student_edition_empties_solutions_and_keeps_checks(tmp_path, capsys):
    chapter = write_notebook(tmp_path / "03_input_gate.ipynb", [
        new_markdown_cell("# The input gate"),
        with_output(new_code_cell("x = 2\nprint(x)"), "2\n"),
        tagged(new_markdown_cell("**Exercise.** Compute the input gate."), "exercise"),
        tagged(with_output(new_code_cell("input_gate = 1 / (1 + 2.718 ** -x)\nprint(input_gate)"), "0.88\n"),
               "solution"),
        tagged(with_output(new_code_cell("# Check: the gate is in (0, 1)\nassert 0 < input_gate < 1\nprint(input_gate)"),
                           "0.88\n"), "check"),
        tagged(new_markdown_cell("The answer is 0.88."), "solution"),
    ])
    original = chapter.read_bytes()

    (written,) = course.student([chapter], tmp_path / "build" / "student")

    assert written == tmp_path / "build" / "student" / chapter.name
    assert chapter.read_bytes() == original            # the chapter itself is untouched
    cells = nbformat.read(written, as_version=4).cells
    assert len(cells) == 6
    plain, exercise, solution, check, written_answer = cells[1], cells[2], cells[3], cells[4], cells[5]
    assert solution.source == course.SOLUTION_PLACEHOLDER
    assert solution.outputs == [] and solution.execution_count is None
    assert "input_gate =" not in solution.source
    assert written_answer.source == course.MARKDOWN_PLACEHOLDER
    # the check stays, so students can test their answer; its output, which may show the answer, goes
    assert check.source.startswith("# Check: the gate is in (0, 1)") and "assert 0 < input_gate" in check.source
    assert check.metadata["tags"] == ["check"] and check.outputs == []
    assert plain.outputs[0]["text"] == "2\n" and plain.source == "x = 2\nprint(x)"
    assert exercise.source.startswith("**Exercise.**")
    report = capsys.readouterr().out
    assert "03_input_gate.ipynb: emptied 2 solution cell(s)" in report
    assert "cell 3: input_gate = 1 / (1 + 2.718 ** -x)" in report


def test_a_cell_cannot_be_both_solution_and_check():
    nb = new_notebook(cells=[tagged(new_code_cell("answer = 4\nassert answer == 4"), "solution", "check")])
    with pytest.raises(course.CourseError, match="tagged both 'solution' and 'check'"):
        course.student_notebook(nb)


# ---------------------------------------------------------------------------------------
# execution (one tiny notebook, run once by a real kernel)
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """A tiny chapter with math, a markdown image and a displayed image, executed by nbclient."""
    folder = tmp_path_factory.mktemp("chapter")
    diagrams.save("gate", folder / "figures")
    path = write_notebook(folder / "00_tiny.ipynb", [
        new_markdown_cell("# A tiny chapter\n\nThe gate $\\sigma(z) \\odot a$:\n\n![a gate](figures/gate.png)"),
        new_code_cell("from IPython.display import Image, Math, display\n"
                      "display(Math(r'f_t = \\sigma(W_f \\cdot [h_{t-1}, x_t] + b_f)'))\n"
                      "Image(filename='figures/gate.png')"),
        new_code_cell("print(round(0.5 * 3, 3))"),
        new_code_cell("print('flushed', end='', flush=True)\nprint(' in pieces')"),
    ])
    table = io.StringIO()
    results = course.execute([path], slow_s=0.0, out=table)   # slow_s=0: every run is "slow"
    return path, results, table.getvalue()


def test_execute_writes_outputs_back_and_reports_times(executed):
    path, (result,), table = executed
    assert result.ok and result.seconds > 0
    cells = nbformat.read(path, as_version=4).cells
    assert cells[2].outputs[0]["text"] == "1.5\n"
    assert "image/png" in cells[1].outputs[1]["data"]
    assert "execution" not in cells[2].metadata        # no timestamps: the files stay diff-stable
    assert [o["text"] for o in cells[3].outputs] == ["flushed in pieces\n"]   # one stream, however flushed
    assert re.search(r"^00_tiny\.ipynb\s+\d+\.\d\s+ok", table, re.MULTILINE)
    assert re.search(r"^total\s+\d+\.\d", table, re.MULTILINE)
    assert "note for the authors: 00_tiny.ipynb took" in table


def test_execute_fails_on_errors_and_stderr_and_leaves_the_files_alone(tmp_path):
    noisy = write_notebook(tmp_path / "01_noisy.ipynb", [
        new_code_cell("import sys\nprint('careful', file=sys.stderr)")])
    broken = write_notebook(tmp_path / "02_broken.ipynb", [new_code_cell("1 / 0")])
    before = {p: p.read_bytes() for p in (noisy, broken)}
    with pytest.raises(course.CourseError) as failure:
        course.execute([noisy, broken], out=io.StringIO())
    message = str(failure.value)
    assert "2 of 2 notebook(s) failed" in message
    assert "01_noisy.ipynb" in message and "cell 0 wrote to stderr" in message and "careful" in message
    assert "02_broken.ipynb" in message and "ZeroDivisionError" in message
    assert all(p.read_bytes() == before[p] for p in before)


# ---------------------------------------------------------------------------------------
# diagrams
# ---------------------------------------------------------------------------------------
def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_a_diagram_is_the_same_bytes_every_time(tmp_path):
    first = diagrams.save("lstm_forget_gate", tmp_path / "first")
    second = diagrams.save("lstm_forget_gate", tmp_path / "second")
    assert first.read_bytes() == second.read_bytes()
    assert b"Software" not in first.read_bytes() and b"matplotlib" not in first.read_bytes()
    # and in a fresh interpreter with a different hash seed
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", "import sys; from lstmkit import diagrams; "
                    "diagrams.save('lstm_forget_gate', sys.argv[1])", str(tmp_path / "third")],
                   check=True, env=env, cwd=tmp_path)
    assert sha256(tmp_path / "third" / "lstm_forget_gate.png") == sha256(first)


def test_highlighting_changes_the_picture(tmp_path):
    # guards the test above against a drawing that ignores what it is asked to draw
    forget = diagrams.save("lstm_forget_gate", tmp_path)
    output = diagrams.save("lstm_output_gate", tmp_path)
    assert forget.read_bytes() != output.read_bytes()


def test_every_diagram_is_committed_and_listed():
    listing = (ROOT / "figures" / "README.md").read_text(encoding="utf-8")
    for name in diagrams.DIAGRAMS:
        assert (ROOT / "figures" / f"{name}.png").is_file(), f"run `make figures`: figures/{name}.png is missing"
        assert f"`{name}.png`" in listing, f"figures/README.md does not list {name}.png"


def test_unknown_diagram_names_are_rejected():
    with pytest.raises(KeyError, match="no diagram named 'lstm_chian'; expected one of rnn_rolled_unrolled"):
        diagrams.draw("lstm_chian")


# ---------------------------------------------------------------------------------------
# exercises and grading
# ---------------------------------------------------------------------------------------
def exercise_chapter(path, answer_a="answer_a = 0.5", answer_b="answer_b = [1, 2]"):
    """Two exercises; the checks fail with an AssertionError that says what is wrong."""
    return write_notebook(path, [
        new_markdown_cell("# A chapter with exercises"),
        new_code_cell("import math"),
        tagged(new_markdown_cell("**Exercise 1.** Compute σ(0)."), "exercise"),
        tagged(new_code_cell(answer_a), "solution"),
        tagged(new_code_cell("# Check: exercise 1\nassert globals().get('answer_a') == 0.5, "
                             "'σ(0) is 1 / (1 + e^0) = 0.5'"), "check"),
        tagged(new_markdown_cell("### Exercise 2: two numbers"), "exercise"),
        tagged(new_code_cell(answer_b), "solution"),
        tagged(new_code_cell("# Check: exercise 2\nassert globals().get('answer_b') == [1, 2], "
                             "f\"expected [1, 2], got {globals().get('answer_b')}\""), "check"),
        tagged(new_code_cell("# Check: prose\nassert math.pi > 3"), "check"),
    ])


def test_exercises_follow_the_convention():
    nb = nbformat.read(exercise_chapter_in_memory(), as_version=4)
    from lstmkit import grading

    found = grading.exercises(nb)
    assert [(e.title, e.exercise_cell, e.solution_cells, e.check_cell) for e in found] == [
        ("Exercise 1. Compute σ(0).", 2, [3], 4), ("Exercise 2: two numbers", 5, [6], 7)]


def exercise_chapter_in_memory():
    buffer = io.StringIO()
    nb = new_notebook(cells=[
        new_markdown_cell("# A chapter"), new_code_cell("import math"),
        tagged(new_markdown_cell("**Exercise 1.** Compute σ(0)."), "exercise"),
        tagged(new_code_cell("answer_a = 0.5"), "solution"),
        tagged(new_code_cell("assert answer_a == 0.5"), "check"),
        tagged(new_markdown_cell("### Exercise 2: two numbers"), "exercise"),
        tagged(new_code_cell("answer_b = [1, 2]"), "solution"),
        tagged(new_code_cell("assert answer_b == [1, 2]"), "check"),
        tagged(new_code_cell("assert math.pi > 3"), "check")])
    nbformat.write(nb, buffer)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("cells, message", [
    ([tagged(new_code_cell("x = 1"), "solution")], "solution cell 0 has no exercise cell before it"),
    ([tagged(new_markdown_cell("Ex"), "exercise"), tagged(new_code_cell("x = 1"), "solution")],
     "the solution at cell 1 has no check cell after it"),
    ([tagged(new_markdown_cell("Ex"), "exercise")], "exercise cell 0 has no solution cell after it"),
])
def test_a_broken_exercise_is_named(cells, message):
    from lstmkit import grading

    with pytest.raises(course.CourseError, match=message):
        grading.exercises(new_notebook(cells=cells), "ch.ipynb")


def test_the_grader_prints_each_exercise_as_passed_or_failed(tmp_path, capsys):
    from lstmkit import grading

    right = exercise_chapter(tmp_path / "right.ipynb")
    wrong = exercise_chapter(tmp_path / "wrong.ipynb", answer_b="answer_b = [2, 1]")
    assert grading.grade(right) == 0
    report = capsys.readouterr().out
    assert "passed  Exercise 1. Compute σ(0)." in report and "2 of 2 exercise(s) passed" in report
    assert grading.grade(wrong) == 1
    report = capsys.readouterr().out
    assert "passed  Exercise 1. Compute σ(0)." in report
    assert "FAILED  Exercise 2: two numbers\n          AssertionError: expected [1, 2], got [2, 1]" in report
    assert "1 of 2 exercise(s) passed" in report


def test_a_chinese_chapter_is_emptied_and_graded_in_chinese(tmp_path, capsys):
    from lstmkit import grading

    chapter = write_notebook(tmp_path / "student.ipynb", [
        new_code_cell('from lstmkit import notebook as nb\nnb.setup(lang="zh")'),
        tagged(new_markdown_cell("**练习 1。** 计算 σ(0)。"), "exercise"),
        tagged(new_code_cell("answer = 1"), "solution"),
        tagged(new_code_cell('assert answer == 0.5, nb.t(f"σ(0) is 0.5, not {answer}", f"σ(0) 等于 0.5，而不是 {answer}")'),
               "check")])
    assert grading.grade(chapter) == 1
    report = capsys.readouterr().out
    assert "student.ipynb：1 个练习" in report
    assert "未通过  练习 1。 计算 σ(0)。\n          AssertionError: σ(0) 等于 0.5，而不是 1" in report
    assert "1 个练习中通过了 0 个" in report
    nb = nbformat.read(chapter, as_version=4)
    course.student_notebook(nb)
    assert nb.cells[2].source == course.PLACEHOLDERS["zh"][0] == "# 在这里写下你的答案\n"


def test_the_student_edition_fails_exactly_at_the_exercise_checks(tmp_path):
    from lstmkit import grading

    good = nbformat.read(exercise_chapter(tmp_path / "good.ipynb"), as_version=4)
    assert grading.student_edition_failures(good, tmp_path, "good.ipynb") == []
    # a check that names an undefined variable, a cell after the exercise that needs the answer,
    # and a check that passes without its solution: each is reported
    bad = nbformat.read(exercise_chapter(tmp_path / "bad.ipynb"), as_version=4)
    bad.cells[4].source = "assert answer_a == 0.5"
    bad.cells[7].source = "assert True"
    bad.cells.insert(8, new_code_cell("print(answer_b)"))
    problems = grading.student_edition_failures(bad, tmp_path, "bad.ipynb")
    assert len(problems) == 3
    assert "fails with NameError" in problems[0] and "'Exercise 1. Compute σ(0).' (cell 4)" in problems[0]
    assert "passes with the solution removed" in problems[1]
    assert "cell 8 fails in the student edition: NameError" in problems[2]


# ---------------------------------------------------------------------------------------
# the command line, from wherever a learner runs it
# ---------------------------------------------------------------------------------------
def run_course(args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "lstmkit", "course", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_without_chapters_the_command_says_where_to_get_them(tmp_path):
    result = run_course(["site"], tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert f"no chapters (notebooks/[0-9]*.ipynb) in {tmp_path}" in result.stderr
    assert "clone of the lstmkit repository" in result.stderr
    assert list(tmp_path.iterdir()) == []               # nothing written, anywhere near the package
    bad = run_course(["grade", str(tmp_path / "missing.ipynb")], tmp_path)
    assert bad.returncode == 1 and "no such notebook" in bad.stderr and "Traceback" not in bad.stderr


def test_grade_from_the_command_line(tmp_path):
    exercise_chapter(tmp_path / "student.ipynb", answer_a="answer_a = 1")
    result = run_course(["grade", "student.ipynb"], tmp_path)
    assert result.returncode == 1
    assert "FAILED  Exercise 1. Compute σ(0).\n          AssertionError: σ(0) is 1 / (1 + e^0) = 0.5" in result.stdout
    assert "1 of 2 exercise(s) passed" in result.stdout
