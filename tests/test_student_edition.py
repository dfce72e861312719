"""The student edition of every chapter: with the solutions removed, exactly the exercises'
check cells fail, each with an AssertionError that says what is wrong, and nothing else fails.

This runs every chapter that has exercises once more (the student edition is what a class is
handed: ``make student``), so a solution that a later cell depends on, or a check that passes
without its answer, is caught here rather than by a student.
"""
from pathlib import Path

import nbformat
import pytest

from lstmkit import course, grading

ROOT = Path(__file__).resolve().parent.parent
WITH_EXERCISES = [p for p in course.chapters(ROOT / "notebooks")
                  if grading.exercises(nbformat.read(p, as_version=4), p.name)]


def test_most_chapters_have_exercises():
    assert len(WITH_EXERCISES) >= 10, [p.name for p in WITH_EXERCISES]


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=lambda p: p.stem)
def test_the_student_edition_fails_exactly_at_the_exercise_checks(path):
    nb = nbformat.read(path, as_version=4)
    assert grading.student_edition_failures(nb, path.parent, path.name) == []


def test_a_chinese_student_reads_the_checks_in_chinese():
    # one chapter of the Chinese edition (its code is the English one's, so the checks fail at
    # the same cells): each exercise's check fails with a message in Chinese, and the emptied
    # solution cells say so in Chinese
    import copy

    from lstmkit import editions

    path = ROOT / "notebooks" / "zh" / "02_forget_gate.ipynb"
    nb = nbformat.read(path, as_version=4)
    student = copy.deepcopy(nb)
    emptied = [index for index, _ in course.student_notebook(student)]
    assert {student.cells[i].source for i in emptied} <= set(course.PLACEHOLDERS["zh"])
    course.run_notebook(student, path.parent, allow_errors=True)
    failed = grading.errors(student)
    checks = [e.check_cell for e in grading.exercises(nb, path.name)]
    assert sorted(failed) == checks
    for index in checks:
        ename, evalue = failed[index]
        assert ename == "AssertionError" and editions.CJK.search(evalue), (index, ename, evalue)
