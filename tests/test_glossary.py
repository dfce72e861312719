"""One term, one meaning: the Chinese edition speaks the glossary's terms (lstmkit/glossary.py)."""
from pathlib import Path

import pytest

from lstmkit import book, course, glossary

ROOT = Path(__file__).resolve().parent.parent
CHINESE = book.chapter_prose(course.chapters(ROOT / "notebooks" / "zh"))
BY_STEM = dict(CHINESE)
INTRODUCED = glossary.introduced_in(CHINESE)
# the article's terms (《LSTM模型结构讲解》) that the course must use as the article does
ARTICLE_TERMS = ("长期依赖", "细胞状态", "隐藏状态", "遗忘门", "输入门", "输出门", "候选值", "传送带", "更新门",
                 "重置门", "窥视孔连接", "耦合的遗忘门和输入门", "门控循环单元", "随时间反向传播", "梯度消失",
                 "梯度爆炸", "注意力")


def test_the_glossary_has_the_articles_terms():
    assert set(ARTICLE_TERMS) <= {t.zh for t in glossary.TERMS}


@pytest.mark.parametrize("term", glossary.TERMS, ids=lambda t: t.en)
def test_every_term_is_used_and_glossed_where_it_is_introduced(term):
    chapter = INTRODUCED[term.zh]
    assert chapter is not None, f"no Chinese chapter uses {term.zh} ({term.en})"
    assert glossary.glossed(term, BY_STEM[chapter]), (
        f"{chapter}: {term.zh} is introduced here without its English in parentheses: {term.zh} ({term.en})")


@pytest.mark.parametrize("stem", list(BY_STEM), ids=str)
def test_no_chapter_uses_a_variant_of_a_glossary_term(stem):
    assert glossary.variants_in(BY_STEM[stem]) == []


def test_a_variant_is_found_and_a_term_containing_one_is_not():
    assert glossary.variants_in("LSTM 的单元状态") == [("单元状态", "细胞状态")]
    assert glossary.variants_in("随时间反向传播 (BPTT)") == []
    assert glossary.variants_in("时间反向传播") == [("时间反向传播", "随时间反向传播")]


def test_glossed_wants_the_english_in_parentheses():
    forget = next(t for t in glossary.TERMS if t.zh == "遗忘门")
    assert glossary.glossed(forget, "**遗忘门** (forget gate) 决定")
    assert glossary.glossed(forget, "遗忘门（forget gate）决定")
    assert not glossary.glossed(forget, "遗忘门决定丢弃什么")


def test_the_articles_examples_are_in_the_chapters():
    assert "他今天有事" in BY_STEM["02_forget_gate"]       # what the forget gate drops
    assert "第一人称" in BY_STEM["05_output_gate"]           # the verb after 我
    assert "[d, d+n]" in BY_STEM["07_dimensions"]


def test_the_glossary_page_links_each_term_to_its_chapter():
    page = book.glossary_page("zh", INTRODUCED, list(BY_STEM))
    assert "| 遗忘门 | forget gate | $f_t$ | {doc}`00_long_term_dependencies` |" in page
    assert page.count("\n| ") == len(glossary.TERMS) + 1    # the header, then one row per term


def test_the_code_cells_chinese_strings_use_the_glossarys_terms():
    # the Chinese side of nb.t(...): check messages, hints and plot labels read by the learner
    from lstmkit import editions
    import nbformat

    for path in course.chapters(ROOT / "notebooks" / "zh"):
        strings = editions.chinese_strings(nbformat.read(path, as_version=4))
        assert glossary.variants_in("\n".join(strings)) == [], path.name
