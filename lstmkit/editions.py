"""The Chinese edition: ``notebooks/zh/<chapter>.ipynb`` beside each English chapter.

The two editions have the same cells in the same order. Code cells are the English ones,
character for character, except the setup call (``nb.setup(..., lang="zh")``); their outputs are
copied from the English chapter (nbval checks the English run; the code is the same, so its
text outputs are the same). Each Chinese markdown cell carries
``metadata["lstmkit"]["translates"]``: the first 12 hex digits of the SHA-1 of the English
cell's source, so a changed English cell names the Chinese cell that is now stale.

``python -m lstmkit.course sync-zh`` copies the code over and reports what to translate.
"""
from __future__ import annotations

import ast
import copy
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

SETUP_CALL = re.compile(r"^(?P<head>.*\bnb\.setup\()(?P<args>[^)\n]*)(?P<tail>\).*)$", re.MULTILINE)
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


def source_hash(source):
    """What a translation records about the English cell it translates."""
    text = "".join(source) if isinstance(source, list) else source
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def to_chinese_code(source):
    """The Chinese edition's code: the English code with ``lang="zh"`` in the setup call."""
    def rewrite(match):
        args = re.sub(r",?\s*lang\s*=\s*[\"'][a-z]+[\"']", "", match["args"]).strip()
        args = f'{args}, lang="zh"' if args else 'lang="zh"'
        return f"{match['head']}{args}{match['tail']}"

    return SETUP_CALL.sub(rewrite, source, count=1)


def translates(cell):
    return cell.metadata.get("lstmkit", {}).get("translates")


@dataclass
class Report:
    chapter: str
    missing: list = field(default_factory=list)    # (English cell index, first line)
    stale: list = field(default_factory=list)      # (Chinese cell index, first line of the English cell)
    code_changed: list = field(default_factory=list)

    @property
    def clean(self):
        return not (self.missing or self.stale)


def _first_line(source):
    return next((line for line in source.splitlines() if line.strip()), "")[:70]


def sync(english_nb, chinese_nb=None, chapter="notebook"):
    """The Chinese notebook made to follow ``english_nb``; returns (notebook, Report).

    Cells are matched by position while both editions have the same cell types in the same
    order, otherwise by the English hash a translation records. A markdown cell with no
    translation is copied in English and marked untranslated (``translates`` = None).
    """
    report = Report(chapter)
    result = copy.deepcopy(english_nb)
    old = list(chinese_nb.cells) if chinese_nb is not None else []
    same_layout = len(old) == len(english_nb.cells) and all(
        a.cell_type == b.cell_type for a, b in zip(old, english_nb.cells))
    by_hash = {translates(c): c for c in old if c.cell_type == "markdown" and translates(c)}
    for index, cell in enumerate(result.cells):
        if cell.cell_type == "code":
            new_source = to_chinese_code(cell.source)
            if same_layout and old[index].source != new_source:
                report.code_changed.append(index)
            cell.source = new_source
            continue
        if cell.cell_type != "markdown":
            continue
        wanted = source_hash(english_nb.cells[index].source)
        translation = by_hash.get(wanted) or (old[index] if same_layout else None)
        if translation is None or translates(translation) is None:
            cell.metadata.setdefault("lstmkit", {})["translates"] = None
            report.missing.append((index, _first_line(cell.source)))
            continue
        cell.source = translation.source
        cell.metadata["lstmkit"] = dict(translation.metadata.get("lstmkit", {}))
        if translates(translation) != wanted:
            report.stale.append((index, _first_line(english_nb.cells[index].source)))
    if chinese_nb is not None:
        result.metadata = copy.deepcopy(chinese_nb.metadata) or result.metadata
    return result, report


def check_pair(english_nb, chinese_nb, chapter="notebook"):
    """Every way the Chinese edition of a chapter is out of step with the English one."""
    problems = []
    if len(english_nb.cells) != len(chinese_nb.cells):
        return [f"{chapter}: {len(chinese_nb.cells)} cells in Chinese, {len(english_nb.cells)} in English "
                "(run python -m lstmkit.course sync-zh)"]
    for index, (en, zh) in enumerate(zip(english_nb.cells, chinese_nb.cells)):
        where = f"{chapter}, Chinese cell {index}"
        if en.cell_type != zh.cell_type:
            problems.append(f"{where}: a {zh.cell_type} cell where English has a {en.cell_type} cell")
            continue
        if en.cell_type == "code":
            if zh.source != to_chinese_code(en.source):
                problems.append(f"{where}: code differs from the English cell (only the setup call may, "
                                f"with lang=\"zh\"): {_first_line(en.source)!r}")
            # a cell nbval ignores (a live timing) may print anything; every other cell's text is checked
            if text_outputs(en) != text_outputs(zh) and not en.source.startswith("# NBVAL_IGNORE_OUTPUT"):
                problems.append(f"{where}: text outputs differ from the English cell's")
        elif en.cell_type == "markdown":
            recorded = translates(zh)
            if recorded is None:
                problems.append(f"{where}: not translated yet: {_first_line(en.source)!r}")
            elif recorded != source_hash(en.source):
                problems.append(f"{where} is stale: the English cell changed since it was translated: "
                                f"{_first_line(en.source)!r}")
            elif CJK.search(zh.source) is None and re.search(r"[A-Za-z]{4}", en.source):
                problems.append(f"{where}: marked as translated but has no Chinese text")
    return problems


def text_outputs(cell):
    """The text a code cell printed or returned (images may differ: labels are translated)."""
    texts = []
    for output in cell.get("outputs", []):
        kind = output.get("output_type")
        if kind == "stream":
            texts.append((output.get("name"), "".join(output.get("text", ""))))
        elif kind in ("execute_result", "display_data"):
            data = output.get("data", {})
            for mime in ("text/plain", "text/latex", "text/markdown"):
                if mime in data and not any(m.startswith("image/") for m in data):
                    texts.append((mime, "".join(data[mime])))
        elif kind == "error":
            texts.append(("error", output.get("ename")))
    return texts


def sync_all(english_paths, zh_dir, create=(), write=True, out=None):
    """Sync every Chinese chapter that exists (and those named in ``create``); returns reports."""
    import sys

    import nbformat

    out = out or sys.stdout
    zh_dir = Path(zh_dir)
    reports = []
    for path in english_paths:
        path = Path(path)
        target = zh_dir / path.name
        if not target.is_file() and path.stem not in create and path.name not in create:
            continue
        english = nbformat.read(path, as_version=4)
        chinese = nbformat.read(target, as_version=4) if target.is_file() else None
        synced, report = sync(english, chinese, chapter=path.name)
        if write:
            zh_dir.mkdir(parents=True, exist_ok=True)
            nbformat.write(synced, target)
        reports.append(report)
        state = "up to date" if report.clean else (f"{len(report.missing)} untranslated, "
                                                   f"{len(report.stale)} stale")
        print(f"{path.name}: {state}", file=out)
        for index, line in report.missing:
            print(f"    cell {index} untranslated: {line}", file=out)
        for index, line in report.stale:
            print(f"    cell {index} stale (English now: {line})", file=out)
    if not reports:
        print(f"no Chinese chapters in {zh_dir} yet (name one to start it: sync-zh 02_forget_gate)", file=out)
    return reports


def language(nb):
    """The edition a chapter belongs to: the ``lang`` of its setup call ("en" without one)."""
    for cell in nb.cells:
        match = SETUP_CALL.search(cell.source) if cell.cell_type == "code" else None
        if match:
            lang = re.search(r"\blang\s*=\s*[\"']([a-z]+)[\"']", match["args"])
            return lang.group(1) if lang else "en"
    return "en"


def _is_translation(node):
    """``nb.t(english, chinese)``: the helper the two editions share their strings through."""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "t"
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "nb" and len(node.args) == 2)


def _literal_text(node):
    """The literal text of a string or f-string (the parts outside the braces)."""
    return "".join(part.value for part in ast.walk(node)
                   if isinstance(part, ast.Constant) and isinstance(part.value, str))


def chinese_strings(nb):
    """The Chinese side of every ``nb.t(english, chinese)`` in a chapter's code (its labels and messages)."""
    found = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            found += [_literal_text(node.args[1]) for node in ast.walk(_parse(cell.source)) if _is_translation(node)]
    return found


def _parse(source):
    # IPython lines (%magic, !shell) are not Python: blank them, keeping the line numbers
    return ast.parse(re.sub(r"(?m)^\s*[%!].*$", "", source))


def english_only_messages(nb, chapter="notebook", exercise_checks=()):
    """The messages a learner reads that the Chinese edition would show in English.

    An ``assert``'s message that is prose (a string or f-string) must be ``nb.t(english,
    chinese)`` with Chinese in its second argument; in an exercise's check cell (indices in
    ``exercise_checks``) every message must be, since a student's wrong answer raises it. A
    message that is data (a variable, a tuple of names) elsewhere is data, the same in both.
    """
    problems = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for node in ast.walk(_parse(cell.source)):
            if not isinstance(node, ast.Assert) or node.msg is None:
                continue
            where = f"{chapter}, cell {index}, line {node.lineno}"
            message = ast.get_source_segment(cell.source, node.msg) or ""
            if _is_translation(node.msg):
                if not CJK.search(_literal_text(node.msg.args[1])):
                    problems.append(f"{where}: nb.t(...) has no Chinese in its second argument: {message[:70]!r}")
            elif isinstance(node.msg, (ast.Constant, ast.JoinedStr)) or index in exercise_checks:
                problems.append(f"{where}: a learner reads this message in English only; write it as "
                                f"nb.t(english, chinese): {message[:70]!r}")
    return problems
