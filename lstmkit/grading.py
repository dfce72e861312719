"""Exercises: finding them in a chapter, grading a student's copy, checking the student edition.

The convention (notebooks/README.md): an exercise is a markdown cell tagged ``exercise``, then
one or more cells tagged ``solution`` (the answer; the student edition empties them), then one
code cell tagged ``check`` that asserts the answer and fails with an ``AssertionError`` whose
message says what is wrong. Other ``check`` cells (outside exercises) check the prose.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .course import CHECK_TAG, EXERCISE_TAG, SOLUTION_TAG, CourseError, run_notebook, student_notebook


@dataclass
class Exercise:
    title: str
    exercise_cell: int
    solution_cells: list = field(default_factory=list)
    check_cell: int | None = None


def _tags(cell):
    return set(cell.metadata.get("tags", []))


def exercise_title(source):
    """The first line of an exercise's text without markdown marks: "**Exercise 2.** Predict ..."."""
    paragraph = source.strip().split("\n\n")[0]          # a paragraph wraps over several lines
    line = " ".join(part.strip() for part in paragraph.splitlines())
    line = re.sub(r"^\s*#+\s*|\*\*|__|`", "", line).strip()
    return line if len(line) <= 90 else line[:89].rstrip() + "…"


def exercises(nb, name="notebook"):
    """The chapter's exercises, in order; raises CourseError where the convention is broken."""
    found, current, pending = [], None, None     # pending: an exercise text not yet answered
    for index, cell in enumerate(nb.cells):
        tags = _tags(cell)
        if EXERCISE_TAG in tags:
            if current is not None:
                raise CourseError(f"{name}: exercise at cell {index} starts before the solution at cell "
                                  f"{current.solution_cells[-1]} has its check cell")
            pending = pending or Exercise(exercise_title(cell.source), index)
        elif SOLUTION_TAG in tags:
            if current is None:
                if pending is None:
                    raise CourseError(f"{name}: solution cell {index} has no exercise cell before it")
                current, pending = pending, None
            current.solution_cells.append(index)
        elif CHECK_TAG in tags and current is not None:
            if cell.cell_type != "code":
                raise CourseError(f"{name}: check cell {index} is not a code cell")
            current.check_cell = index
            found.append(current)
            current = None
    if current is not None:
        raise CourseError(f"{name}: the solution at cell {current.solution_cells[-1]} has no check cell after it")
    if pending is not None:
        raise CourseError(f"{name}: exercise cell {pending.exercise_cell} has no solution cell after it")
    return found


def errors(nb):
    """{cell index: (ename, evalue)} for every code cell whose outputs hold an error."""
    found = {}
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                found[index] = (output.get("ename", ""), output.get("evalue", ""))
    return found


@dataclass
class Grade:
    exercise: Exercise
    passed: bool
    message: str = ""


def grade_notebook(nb, cwd, name="notebook", timeout=600):
    """Run a student's chapter (every cell, errors kept); returns (grades, other failing cells)."""
    found = exercises(nb, name)
    run_notebook(nb, cwd, timeout=timeout, allow_errors=True)
    failed = errors(nb)
    grades = []
    for exercise in found:
        if exercise.check_cell in failed:
            ename, evalue = failed[exercise.check_cell]
            grades.append(Grade(exercise, False, f"{ename}: {evalue}" if evalue else ename))
        else:
            grades.append(Grade(exercise, True))
    checks = {e.check_cell for e in found}
    others = {index: error for index, error in failed.items() if index not in checks}
    return grades, others


# the grader's report in each edition's language; the checks' own messages come from the
# chapter (nb.t), the exercise titles from its markdown
REPORT = {
    "en": {"none": "{name}: no exercises (cells tagged '{tag}') to grade", "count": "{name}: {n} exercise(s)",
           "passed": "passed", "failed": "FAILED", "total": "{passed} of {n} exercise(s) passed",
           "other": "note: cell {index} (not a check) raised {error}"},
    "zh": {"none": "{name}：没有可评分的练习（标签为 '{tag}' 的单元格）", "count": "{name}：{n} 个练习",
           "passed": "通过", "failed": "未通过", "total": "{n} 个练习中通过了 {passed} 个",
           "other": "注意：第 {index} 个单元格（不是检查单元格）抛出了 {error}"},
}


def grade(path, cwd=None, out=None):
    """``lstmkit course grade STUDENT.ipynb``: print each exercise as passed or failed, in the
    chapter's language; returns the number that failed (0: all passed)."""
    import nbformat

    from .editions import language

    out = out or sys.stdout      # looked up per call, so a redirected stdout is honoured
    path = Path(path)
    if not path.is_file():
        raise CourseError(f"no such notebook: {path}")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as error:          # not JSON, not a notebook
        raise CourseError(f"{path} is not a readable notebook: {error}") from error
    words = REPORT.get(language(nb), REPORT["en"])
    grades, others = grade_notebook(nb, cwd or path.parent, name=path.name)
    if not grades:
        print(words["none"].format(name=path.name, tag=EXERCISE_TAG), file=out)
        return 0
    print(words["count"].format(name=path.name, n=len(grades)), file=out)
    for g in grades:
        status = words["passed"] if g.passed else words["failed"]
        line = f"  {status}  {g.exercise.title}"
        if not g.passed:
            line += f"\n          {g.message}"
        print(line, file=out)
    for index, (ename, evalue) in sorted(others.items()):
        print("  " + words["other"].format(index=index, error=f"{ename}: {evalue}"), file=out)
    passed = sum(g.passed for g in grades)
    print(words["total"].format(passed=passed, n=len(grades)), file=out)
    return len(grades) - passed


def student_edition_failures(nb, cwd, name="notebook", timeout=600):
    """Run the student edition of ``nb`` (a copy); returns the list of ways it breaks the
    convention: a check that passes without its solution, a check that fails with anything but
    an AssertionError, or any other cell that fails. Empty: exactly the exercise checks fail."""
    import copy

    found = exercises(nb, name)
    student = copy.deepcopy(nb)
    student_notebook(student)
    run_notebook(student, cwd, timeout=timeout, allow_errors=True)
    failed = errors(student)
    problems = []
    for exercise in found:
        error = failed.get(exercise.check_cell)
        if error is None:
            problems.append(f"{name}: the check of '{exercise.title}' (cell {exercise.check_cell}) passes "
                            "with the solution removed")
        elif error[0] != "AssertionError":
            problems.append(f"{name}: the check of '{exercise.title}' (cell {exercise.check_cell}) fails with "
                            f"{error[0]}: {error[1]} instead of an AssertionError naming what is wrong")
    checks = {e.check_cell for e in found}
    for index, (ename, evalue) in sorted(failed.items()):
        if index not in checks:
            problems.append(f"{name}: cell {index} fails in the student edition: {ename}: {evalue}")
    return problems
