"""Sphinx configuration of the course's site (both editions).

``lstmkit.book`` copies this folder and the chapters of one edition into a staging folder,
writes ``book_settings.json`` beside this file (language, chapters, where the other
edition is, how to execute) and runs Sphinx on it. Edit this file, not the staged copy.
"""
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
_BUILD_START = time.time()
SETTINGS = json.loads((HERE / "book_settings.json").read_text(encoding="utf-8"))
ZH = SETTINGS["language"] == "zh_CN"

project = "lstmkit：LSTM 网络课程" if ZH else "lstmkit: a course on LSTM networks"
author = "the lstmkit authors"
copyright = "the lstmkit authors (MIT licence)"
language = SETTINGS["language"]            # zh_CN: Sphinx's search index splits Chinese with jieba
if ZH:
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)     # not its dictionary-loading chatter on the learner's screen

    import sphinx.search
    from sphinx.search.zh import SearchChinese

    class _SearchChinese(SearchChinese):
        # Sphinx 9.0's Chinese search ships english-stemmer.js (it stems the Latin words) but
        # binds `window.Stemmer = ChineseStemmer`, a name no file defines: the search page then
        # fails with "ChineseStemmer is not defined". The stemmer's class is EnglishStemmer.
        language_name = "English"

    sphinx.search.languages["zh"] = _SearchChinese
    # the glossary's terms as jieba words (lstmkit.book.search_dictionary), so they are indexed whole
    html_search_options = {"dict": str(HERE / "search_dict.txt")}
root_doc = "index"

extensions = ["myst_nb", "sphinx_togglebutton", "sphinx_copybutton"]
exclude_patterns = ["_build", "book_settings.json", "**.ipynb_checkpoints"]
templates_path = ["_templates"]
html_static_path = ["_static"]
html_favicon = "_static/favicon.svg"     # without one, the browser asks for /favicon.ico and logs a 404
html_css_files = ["lstmkit.css"]
html_title = project
html_last_updated_fmt = None
html_show_sphinx = False
html_copy_source = True                  # _sources/<chapter>.ipynb: the download button's file
html_sourcelink_suffix = ""

# --- notebooks -------------------------------------------------------------------------
nb_execution_mode = SETTINGS["execution"]            # "cache" for `make course`, "off" for the test
nb_execution_cache_path = SETTINGS["cache"]          # jupyter-cache, outside the tree (build/)
nb_execution_timeout = 600
nb_execution_raise_on_error = True                   # a failing chapter fails the build
nb_execution_show_tb = True
nb_merge_streams = True
nb_code_prompt_show = "显示{type}" if ZH else "Show code cell {type}"
nb_code_prompt_hide = "隐藏{type}" if ZH else "Hide code cell {type}"
nb_render_image_options = {"alt": ""}
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "html_image"]
myst_heading_anchors = 3
suppress_warnings = ["mystnb.unknown_mime_type"]

# --- math: MathJax 2 from the build (the jupyter-server-mathjax package), never a CDN ----
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
myst_update_mathjax = False       # MyST would add a MathJax 3 `window.MathJax`, which MathJax 2 misreads
mathjax2_config = {
    "tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]],
                "processRefs": False, "processEnvironments": False,
                "processClass": "tex2jax_process|mathjax_process|math|output_area",
                "ignoreClass": "tex2jax_ignore|mathjax_ignore|document"},
    "messageStyle": "none",
    # the quick preview draws in MathJax's TeX fonts, which this MathJax copy does not ship (404s)
    # and the hidden MathML copy for screen readers is styled in those fonts too ([mathvariant])
    "fast-preview": {"disabled": True},
    "menuSettings": {"assistiveMML": False},
    "AssistiveMML": {"disabled": True},
    "HTML-CSS": {"availableFonts": [], "imageFont": None, "preferredFont": None, "webFont": "STIX-Web",
                 # MathJax 2 declares an empty font at url('about:blank'), which Chromium now
                 # refuses with a console error; a local() source asks for nothing
                 "styles": {"@font-face": {"font-family": "MathJax_Blank", "src": "local('MathJax_Blank')"}}},
}

# --- theme -----------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_theme_options = {
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "show_toc_level": 2,
    "use_download_button": True,       # .ipynb of each chapter
    "use_fullscreen_button": False,
    "use_repository_button": False,
    "use_sidenotes": False,
    "navigation_with_keys": False,
    "search_bar_text": "搜索本课程…" if ZH else "Search the course…",
    "pygments_light_style": "tango",
    # the language switch sits in every page's header, beside the sidebar's toggle
    "article_header_start": ["toggle-primary-sidebar.html", "lang-switch.html"],
}
html_context = {"lstmkit_language": "zh" if ZH else "en", "default_mode": "light"}


def _counterpart(app, pagename, templatename, context, doctree):
    """The same page in the other edition (its index when that edition lacks the page)."""
    depth = pagename.count("/")
    other = SETTINGS["counterpart_root"]
    target = pagename if pagename in SETTINGS["counterpart_pages"] else "index"
    context["lstmkit_counterpart"] = "../" * depth + other + target + ".html"


def _progress(app, docname, source):
    """One short line per chapter on the learner's screen (Sphinx itself runs quietly)."""
    if docname not in ("index", "glossary"):
        print(f"  {SETTINGS['edition_label']} {docname} …", flush=True)


def _executed(app, doctree):
    from myst_nb.sphinx_ import NbMetadataCollector

    data = NbMetadataCollector.get_exec_data(app.env, app.env.docname)
    if data:
        # in "cache" mode a chapter run by this build and one read from an earlier build both say
        # method "cache": the cache record's time tells them apart
        ran_now = data["method"] == "inline" or (data.get("mtime") or 0) >= _BUILD_START
        runtime = f", {data['runtime']:.1f} s" if data.get("runtime") else ""
        print(f"      {'executed' + runtime if ran_now else 'from the cache'}", flush=True)


def setup(app):
    app.connect("html-page-context", _counterpart)
    if SETTINGS.get("progress"):
        app.connect("source-read", _progress)
        app.connect("doctree-read", _executed)
