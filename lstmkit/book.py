"""The course as a book: Sphinx + MyST-NB + sphinx-book-theme, in English and in Chinese.

:func:`build_site` stages each edition (the Sphinx configuration shipped in
``lstmkit/course_site/`` plus that edition's chapters) under ``build/.book/<lang>/`` and runs
Sphinx on it:

- ``build/html/``     the English site (``notebooks/*.ipynb``);
- ``build/html/zh/``  the Chinese site (``notebooks/zh/*.ipynb``), language ``zh_CN`` so that
  Sphinx's search splits Chinese words (with jieba).

Every page has a language switch to the same page of the other edition. MyST-NB executes the
chapters through jupyter-cache in ``build/.jupyter_cache`` (an unchanged chapter is not run
again); chapters' ``nb.save_figure`` writes into ``build/figures``, so a build changes no
tracked file. MathJax (from the jupyter-server-mathjax package) and a CJK font are copied into
the site: it opens offline.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path

from .reproducible import pin_library_code

SITE_SOURCE = Path(__file__).resolve().parent / "course_site"   # package data, not the repository
EDITIONS = {"en": "en", "zh": "zh_CN"}
SOLUTION_TAG = "solution"
PROMPTS = {"en": ("Show solution", "Hide solution"), "zh": ("显示答案", "隐藏答案")}
CAPTIONS = {"en": ("Chapters", "Appendix"), "zh": ("章节", "附录")}
NO_CHAPTERS_YET = {"en": "", "zh": "\n各章的中文版正在翻译中；尚未译出的章节请先阅读英文版。\n"}
SPECIAL_PAGES = ("index", "search", "genindex", "glossary")
GLOSSARY_CAPTION = {"en": "Reference", "zh": "参考"}
# CJK fonts a Debian machine may have (the Makefile installs fonts-wqy-microhei); the first one
# found is copied into the site and registered with matplotlib for the Chinese edition's plots.
CJK_FONT_FILES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
)
CJK_FONT_PACKAGE = "fonts-wqy-microhei"


class SiteError(RuntimeError):
    """The site could not be built; the message says why and what to do."""


# ---------------------------------------------------------------------------------------
# fonts and MathJax
# ---------------------------------------------------------------------------------------
def cjk_font_file():
    """The first CJK font file found on this machine, or None."""
    extra = os.environ.get("LSTMKIT_CJK_FONT")
    for candidate in ([extra] if extra else []) + list(CJK_FONT_FILES):
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def copy_cjk_font(target):
    """Write the CJK font as a single-face TrueType file ``target`` (browsers do not load .ttc).

    Returns the target, or None when the machine has no CJK font (the site then falls back on
    the reader's own fonts for Chinese).
    """
    source = cjk_font_file()
    if source is None:
        return None
    target = Path(target)
    if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.suffix.lower() == ".ttc":
        from fontTools.ttLib import TTCollection

        collection = TTCollection(str(source), lazy=True)
        collection.fonts[0].save(str(target))
    else:
        shutil.copyfile(source, target)
    return target


def mathjax_source():
    """The MathJax 2 tree that the jupyter-server-mathjax package ships."""
    try:
        import jupyter_server_mathjax
    except ImportError as error:
        raise SiteError("the site's offline math needs the 'jupyter-server-mathjax' package: "
                        "pip install 'lstmkit[course]'") from error
    source = Path(jupyter_server_mathjax.__file__).parent / "static"
    if not (source / "MathJax.js").is_file():
        raise SiteError(f"expected MathJax.js in {source}")
    return source


# ---------------------------------------------------------------------------------------
# staging
# ---------------------------------------------------------------------------------------
def book_notebook(nb, lang):
    """Fold every solution away (in place): code cells get MyST-NB's ``hide-cell`` tag with a
    "Show solution" prompt, markdown solutions go inside a sphinx-togglebutton ``toggle``."""
    show, hide = PROMPTS[lang]
    for cell in nb.cells:
        tags = list(cell.metadata.get("tags", []))
        if SOLUTION_TAG not in tags:
            continue
        if cell.cell_type == "code":
            if "hide-cell" not in tags:
                cell.metadata["tags"] = tags + ["hide-cell"]
            cell.metadata.setdefault("mystnb", {}).update(code_prompt_show=show, code_prompt_hide=hide)
        elif cell.cell_type == "markdown":
            fence = "`" * max(4, 1 + max((len(m) for m in re.findall(r"`+", cell.source)), default=0))
            cell.source = f"{fence}{{toggle}}\n{cell.source}\n{fence}"
    return nb


def _write_if_changed(path, data):
    """Write bytes only when they differ, so Sphinx's incremental build sees no change."""
    path = Path(path)
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return True


def index_page(lang, stems):
    """The edition's front page with its table of contents (chapters, then appendices)."""
    text = (SITE_SOURCE / f"index.{lang}.md").read_text(encoding="utf-8")
    chapters = [s for s in stems if not s.startswith("A")]
    appendices = [s for s in stems if s.startswith("A")]
    blocks = []
    for caption, names in zip(CAPTIONS[lang], (chapters, appendices)):
        if names:
            blocks.append("```{toctree}\n:caption: " + caption + "\n:maxdepth: 1\n\n" + "\n".join(names) + "\n```\n")
    if not chapters:
        blocks.insert(0, NO_CHAPTERS_YET[lang])
    blocks.append("```{toctree}\n:caption: " + GLOSSARY_CAPTION[lang] + "\n:maxdepth: 1\n\nglossary\n```\n")
    return text.replace("{chapters}", "\n".join(blocks))


def search_dictionary():
    """A jieba user dictionary of the glossary's terms (one "word frequency tag" per line), so
    that Sphinx's Chinese index keeps 遗忘门 whole instead of 遗忘 + 门, and a search for a term
    finds it: the search box looks a query up as whole words."""
    from .glossary import TERMS

    return "".join(f"{term.zh} 100000 n\n" for term in TERMS)


def chapter_prose(paths):
    """[(stem, the chapter's markdown)] in the course's order."""
    import nbformat

    return [(Path(p).stem, "\n".join(c.source for c in nbformat.read(p, as_version=4).cells
                                     if c.cell_type == "markdown")) for p in paths]


def glossary_page(lang, introduced, stems):
    """The glossary (术语表) from :mod:`lstmkit.glossary`, each term linked to the chapter that
    introduces it (``introduced``: {term: chapter stem}, from the Chinese edition)."""
    from .glossary import TERMS

    if lang == "zh":
        lines = ["# 术语表", "",
                 "全课程每个概念只用一个中文术语；引入术语的那一章在括号里给出它的英文原文。",
                 "“引入于”一栏链接到首次使用该术语的章节。", "",
                 "| 中文 | English | 符号 | 引入于 |", "|---|---|---|---|"]
    else:
        lines = ["# Glossary", "",
                 "The Chinese edition uses one term for each idea, with the English in parentheses "
                 "where a chapter introduces it. *Introduced in* links to the first chapter that uses the term.", "",
                 "| English | 中文 | symbol | introduced in |", "|---|---|---|---|"]
    for term in TERMS:
        stem = introduced.get(term.zh)
        where = f"{{doc}}`{stem}`" if stem in stems else ""
        cells = (term.zh, term.en) if lang == "zh" else (term.en, term.zh)
        lines.append(f"| {cells[0]} | {cells[1]} | {term.symbol} | {where} |")
    return "\n".join(lines) + "\n"


def stage_edition(lang, chapter_paths, staging, *, counterpart_pages, counterpart_root,
                  execution, cache, progress, introduced=None):
    """Lay out one edition's Sphinx source in ``staging``; returns the chapter names."""
    import nbformat

    staging = Path(staging)
    staging.mkdir(parents=True, exist_ok=True)
    for name in ("conf.py",):
        _write_if_changed(staging / name, (SITE_SOURCE / name).read_bytes())
    for folder in ("_static", "_templates"):
        for source in (SITE_SOURCE / folder).rglob("*"):
            if source.is_file():
                _write_if_changed(staging / folder / source.relative_to(SITE_SOURCE / folder), source.read_bytes())
    mathjax = staging / "_static" / "mathjax"
    if not (mathjax / "MathJax.js").is_file():
        shutil.copytree(mathjax_source(), mathjax, dirs_exist_ok=True)
    copy_cjk_font(staging / "_static" / "fonts" / "cjk.ttf")
    stems = [Path(p).stem for p in chapter_paths]
    wanted = {f"{stem}.ipynb" for stem in stems}
    for old in staging.glob("*.ipynb"):             # a chapter that was removed leaves the book
        if old.name not in wanted:
            old.unlink()
    for path in chapter_paths:
        nb = book_notebook(nbformat.read(path, as_version=4), lang)
        _write_if_changed(staging / Path(path).name, nbformat.writes(nb).encode("utf-8"))
    _write_if_changed(staging / "index.md", index_page(lang, stems).encode("utf-8"))
    _write_if_changed(staging / "glossary.md", glossary_page(lang, introduced or {}, stems).encode("utf-8"))
    if lang == "zh":
        _write_if_changed(staging / "search_dict.txt", search_dictionary().encode("utf-8"))
    settings = {"language": EDITIONS[lang], "execution": execution, "cache": str(cache),
                "counterpart_pages": sorted(counterpart_pages), "counterpart_root": counterpart_root,
                "progress": progress, "edition_label": {"en": "[en]", "zh": "[中文]"}[lang]}
    _write_if_changed(staging / "book_settings.json", json.dumps(settings, indent=1).encode("utf-8"))
    return stems


def _quiet_ipython_dir(folder):
    profile = Path(folder) / "profile_default"
    _write_if_changed(profile / "ipython_kernel_config.json",
                      json.dumps({"IPKernelApp": {"log_level": "ERROR"}}).encode("utf-8"))
    return Path(folder)


@contextlib.contextmanager
def _root_logger_left_alone():
    """The root logger as it was before Sphinx ran. The theme's a11y_pygments calls
    logging.basicConfig(level=INFO) when it is imported, after which every INFO record of the
    book's kernels (nbclient's "Executing notebook ...") reached the learner's screen."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        import a11y_pygments  # noqa: F401  (imported here, so its basicConfig is undone below)
    except ImportError:
        pass
    root.handlers[:], root.level = handlers, level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def run_sphinx(source, outdir, doctrees):
    """Sphinx's html builder, quiet; returns the warnings it gave (a list of lines)."""
    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace, patch_docutils

    warnings = io.StringIO()
    with _root_logger_left_alone(), patch_docutils(source), docutils_namespace():
        app = Sphinx(str(source), str(source), str(outdir), str(doctrees), "html",
                     status=None, warning=warnings, freshenv=False, keep_going=True)
        try:
            app.build()
        except Exception as error:     # a chapter that fails to run: say which cell and why
            told = [line for line in warnings.getvalue().splitlines() if line.strip()]
            raise SiteError(f"{type(error).__name__}: {error}\n" + "\n".join(told[-40:])) from error
        failed = app.statuscode
    lines = [line for line in warnings.getvalue().splitlines() if line.strip()]
    if failed and not lines:
        lines = ["Sphinx ended with an error and no message"]
    return lines, failed


# ---------------------------------------------------------------------------------------
# the whole site
# ---------------------------------------------------------------------------------------
def build_site(english, chinese, build_dir, *, execution="cache", progress=True, figure_dir=None,
               project_dir=None, out=sys.stdout):
    """Build both editions; returns ``(index.html, warnings)``.

    ``english``/``chinese``: chapter notebooks of each edition (the Chinese list may be empty).
    ``execution``: ``"cache"`` (MyST-NB runs what the cache lacks) or ``"off"`` (the committed
    outputs as they are). Raises :class:`SiteError` when a chapter fails to run.
    """
    build_dir = Path(build_dir).resolve()
    html, staging = build_dir / "html", build_dir / ".book"
    cache = build_dir / ".jupyter_cache"
    # kernels started by MyST-NB inherit these: plots go to build/figures, diagrams are read
    # from the project's figures/ (never from a path inside the installed package)
    figure_dir = Path(figure_dir) if figure_dir else build_dir / "figures"
    saved = {key: os.environ.get(key) for key in ("LSTMKIT_FIGURE_DIR", "LSTMKIT_PROJECT", "IPYTHONDIR")}
    os.environ["LSTMKIT_FIGURE_DIR"] = str(figure_dir)
    pin_library_code()      # the chapters' digits are the committed ones on any processor
    # MyST-NB's kernels talk TCP, and ipykernel then logs a notice about encryption on the
    # learner's screen for every chapter: an IPython folder of the build's own sets their log
    # level to errors (and keeps the reader's own IPython profile out of the build)
    os.environ["IPYTHONDIR"] = str(_quiet_ipython_dir(build_dir / ".ipython"))
    if project_dir is not None:
        os.environ["LSTMKIT_PROJECT"] = str(Path(project_dir).resolve())
    en_pages = set(SPECIAL_PAGES) | {Path(p).stem for p in english}
    zh_pages = set(SPECIAL_PAGES) | {Path(p).stem for p in chinese}
    editions = [("en", english, html, en_pages, zh_pages, "zh/"),
                ("zh", chinese, html / "zh", zh_pages, en_pages, "../")]
    from .glossary import introduced_in

    introduced = introduced_in(chapter_prose(chinese))
    all_warnings = []
    try:
        for lang, paths, outdir, own, other, other_root in editions:
            start = time.perf_counter()
            if progress:
                label = "English" if lang == "en" else "Chinese (简体中文)"
                print(f"{label} edition: {len(paths)} chapter(s)", file=out, flush=True)
            source = staging / lang
            stage_edition(lang, paths, source, counterpart_pages=other, counterpart_root=other_root,
                          execution=execution, cache=cache, progress=progress, introduced=introduced)
            try:
                warnings, failed = run_sphinx(source, outdir, staging / f"doctrees-{lang}")
            except SiteError as error:     # a chapter failed to run: run_sphinx says where
                raise SiteError(f"the {lang} site could not be built: {error}") from error
            except Exception as error:     # a Sphinx error
                raise SiteError(f"the {lang} site could not be built: {type(error).__name__}: {error}") from error
            all_warnings += [f"[{lang}] {line}" for line in warnings]
            if failed:
                raise SiteError(f"the {lang} site could not be built:\n" + "\n".join(warnings[-40:]))
            if progress:
                print(f"  -> {outdir / 'index.html'} ({time.perf_counter() - start:.0f} s)", file=out, flush=True)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    log = build_dir / "site-warnings.log"
    log.write_text("".join(line + "\n" for line in all_warnings), encoding="utf-8")
    return html / "index.html", all_warnings
