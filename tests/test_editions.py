"""The Chinese edition keeps step with the English one (lstmkit/editions.py).

Every chapter has its Chinese counterpart with the same cells: the same code (but for
``lang="zh"`` in the setup call), the same text outputs (nbval checks the English run, so this
is what makes the Chinese outputs checked too), and a translation of every markdown cell that
records which English text it translates.
"""
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from lstmkit import course, editions

ROOT = Path(__file__).resolve().parent.parent
ENGLISH = course.chapters(ROOT / "notebooks")


def test_every_chapter_has_a_chinese_edition():
    chinese = {p.name for p in course.chapters(ROOT / "notebooks" / "zh")}
    assert chinese == {p.name for p in ENGLISH}


@pytest.mark.parametrize("path", ENGLISH, ids=lambda p: p.stem)
def test_the_chinese_edition_is_in_step(path):
    english = nbformat.read(path, as_version=4)
    chinese = nbformat.read(path.parent / "zh" / path.name, as_version=4)
    assert editions.check_pair(english, chinese, path.name) == []


@pytest.mark.parametrize("path", ENGLISH, ids=lambda p: p.stem)
def test_sync_of_an_edition_in_step_changes_nothing(path):
    english = nbformat.read(path, as_version=4)
    chinese = nbformat.read(path.parent / "zh" / path.name, as_version=4)
    synced, report = editions.sync(english, chinese, path.name)
    assert report.clean and not report.code_changed
    assert [c.source for c in synced.cells] == [c.source for c in chinese.cells]


def _pair():
    english = new_notebook(cells=[new_markdown_cell("The forget gate decides what the cell keeps."),
                                  new_code_cell("from lstmkit import notebook as nb\nrng = nb.setup(seed=0)")])
    chinese = new_notebook(cells=[new_markdown_cell("遗忘门决定细胞状态保留什么。"),
                                  new_code_cell('from lstmkit import notebook as nb\nrng = nb.setup(seed=0, lang="zh")')])
    chinese.cells[0].metadata["lstmkit"] = {"translates": editions.source_hash(english.cells[0].source)}
    return english, chinese


def test_a_pair_in_step_passes():
    assert editions.check_pair(*_pair()) == []


def test_a_changed_english_cell_makes_its_translation_stale():
    english, chinese = _pair()
    english.cells[0].source += " It reads h_{t-1} and x_t."
    problems = editions.check_pair(english, chinese, "ch")
    assert len(problems) == 1 and "stale" in problems[0]
    _, report = editions.sync(english, chinese, "ch")
    assert report.stale == [(0, "The forget gate decides what the cell keeps. It reads h_{t-1} and x_t.")]


def test_code_that_differs_beyond_the_setup_call_is_named():
    english, chinese = _pair()
    chinese.cells[1].source += "\nprint(1)"
    assert "code differs" in editions.check_pair(english, chinese, "ch")[0]


def test_text_outputs_that_differ_are_named():
    english, chinese = _pair()
    english.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="0.5\n")]
    chinese.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="0.6\n")]
    assert "text outputs differ" in editions.check_pair(english, chinese, "ch")[0]


def test_an_untranslated_cell_is_named():
    english, chinese = _pair()
    chinese.cells[0].metadata["lstmkit"]["translates"] = None
    assert "not translated" in editions.check_pair(english, chinese, "ch")[0]


def test_the_setup_call_gets_the_language():
    assert editions.to_chinese_code("rng = nb.setup(seed=3)") == 'rng = nb.setup(seed=3, lang="zh")'
    assert editions.to_chinese_code('rng = nb.setup(lang="en")') == 'rng = nb.setup(lang="zh")'


# ---------------------------------------------------------------------------------------
# the messages a learner reads: the check cells' code is shared, so its messages are nb.t pairs
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ENGLISH, ids=lambda p: p.stem)
def test_every_check_message_a_learner_reads_has_its_chinese(path):
    from lstmkit import grading

    chinese = nbformat.read(path.parent / "zh" / path.name, as_version=4)
    checks = {e.check_cell for e in grading.exercises(chinese, path.name)}
    assert editions.english_only_messages(chinese, path.name, checks) == []


def test_an_english_only_message_is_named():
    nb = new_notebook(cells=[new_code_cell('x = 1\nassert x == 1, nb.t("x is 1", "x 等于 1")\nassert x, "x is set"'),
                             new_code_cell('assert x == 1, f"x is {x}"'),
                             new_code_cell('assert x == 1, nb.t("x is 1", "x is 1")'),
                             new_code_cell('%time y = 2\nassert x == 1, (x, "names")')])
    problems = editions.english_only_messages(nb, "ch", exercise_checks={3})
    assert len(problems) == 4
    assert problems[0].startswith("ch, cell 0, line 3: a learner reads this message in English only")
    assert "cell 1, line 1" in problems[1] and "'f\"x is {x}\"'" in problems[1]
    assert "cell 2, line 1: nb.t(...) has no Chinese" in problems[2]
    assert "cell 3, line 2" in problems[3]                        # data, but in an exercise's check
    assert len(editions.english_only_messages(nb, "ch")) == 3      # data outside an exercise's check is data


def test_the_edition_is_read_from_the_setup_call():
    english, chinese = _pair()
    assert editions.language(english) == "en" and editions.language(chinese) == "zh"
    assert editions.language(new_notebook(cells=[new_markdown_cell("# no code")])) == "en"
