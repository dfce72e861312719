"""The course's site in a real browser: Debian's Chromium, driven by Playwright, network blocked.

Two sites are built:

- the real course, from the committed chapters with MyST-NB's execution off (their committed
  outputs are the ones nbval re-executes and compares in this same suite, so the pages show
  exactly what a run gives, without running every chapter a second time);
- a tiny course of one chapter in both editions, built with execution through the cache, so
  that the cache, a plot drawn with Chinese labels into build/, and the language switch between
  two counterparts are tested on a chapter small enough to execute here.

The Chinese edition of the real course is browsed too: its search (jieba-split) and its glossary.

Screenshots go to build/screenshots/ for a person to look at. `make test` installs Chromium
(apt-get install -y chromium) when /usr/bin/chromium is missing; this test never skips.
"""
import functools
import http.server
import shutil
import socketserver
import threading
from pathlib import Path
from urllib.parse import urljoin, urlparse

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from lstmkit import book, course, editions

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "build" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


# ---------------------------------------------------------------------------------------
# sites and a local server
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def course_site(tmp_path_factory):
    build = tmp_path_factory.mktemp("course-build")
    english = course.chapters(ROOT / "notebooks")
    chinese = course.chapters(ROOT / "notebooks" / "zh")
    index, warnings = book.build_site(english, chinese, build, execution="off", progress=False,
                                      project_dir=ROOT)
    return build / "html", english, warnings


TINY_SETUP = "from lstmkit import notebook as nb\nrng = nb.setup(seed=0)"
TINY_CELLS = [
    ("markdown", "# The forget gate\n\nThe forget gate $f_t = \\sigma(W_f \\cdot [h_{t-1}, x_t] + b_f)$ decides "
                 "what the cell state keeps.", "# 遗忘门\n\n遗忘门 (forget gate) $f_t = \\sigma(W_f \\cdot "
                 "[h_{t-1}, x_t] + b_f)$ 决定细胞状态保留什么。他今天有事，所以我……"),
    ("code", TINY_SETUP, None),
    ("code", "%matplotlib inline\nimport matplotlib.pyplot as plt\n"
             "fig, ax = plt.subplots(figsize=(3, 2))\nax.plot([0, 1], [1, 0.5])\n"
             "ax.set_title(nb.t('Forget gate', '遗忘门'))\nnb.save_figure(fig, 'tiny_forget_gate')\nplt.show()", None),
    ("markdown", "**Exercise 1.** Compute $\\sigma(0)$.", "**练习 1.** 计算 $\\sigma(0)$。"),
    ("code", "import math\nanswer = 1 / (1 + math.exp(-0.0))", None),
    ("code", "# Check: sigma(0) = 0.5\nassert answer == 0.5, 'sigma(0) is one half'\nprint('ok')", None),
]


def tiny_chapter(lang):
    cells = []
    for kind, english, chinese in TINY_CELLS:
        if kind == "code":
            source = english if lang == "en" else editions.to_chinese_code(english)
            cells.append(new_code_cell(source))
        else:
            cell = new_markdown_cell(english if lang == "en" else chinese)
            if lang == "zh":
                cell.metadata["lstmkit"] = {"translates": editions.source_hash(english)}
            cells.append(cell)
    cells[3].metadata["tags"] = ["exercise"]
    cells[4].metadata["tags"] = ["solution"]
    cells[5].metadata["tags"] = ["check"]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


@pytest.fixture(scope="module")
def tiny_site(tmp_path_factory):
    """One chapter in both editions, executed (through the cache) by the site's build."""
    project = tmp_path_factory.mktemp("tiny-course")
    (project / "notebooks" / "zh").mkdir(parents=True)
    (project / "figures").mkdir()
    nbformat.write(tiny_chapter("en"), project / "notebooks" / "02_tiny.ipynb")
    nbformat.write(tiny_chapter("zh"), project / "notebooks" / "zh" / "02_tiny.ipynb")
    build = project / "build"
    book.build_site([project / "notebooks" / "02_tiny.ipynb"], [project / "notebooks" / "zh" / "02_tiny.ipynb"],
                    build, execution="cache", progress=False, project_dir=project)
    return project, build / "html"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def serve():
    """serve(folder) -> base URL of a local HTTP server (fonts and scripts do not load over file://)."""
    servers = []

    def start(folder):
        handler = functools.partial(QuietHandler, directory=str(folder))
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    assert CHROMIUM.is_file(), "Debian's chromium is missing: `make test` installs it (apt-get install -y chromium)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS, headless=True, viewport={"width": 1280, "height": 900})
        yield context
        context.close()


class Watched:
    """A page whose console errors, page errors and attempted network requests are recorded."""

    def __init__(self, context, allowed_origin):
        self.page = context.new_page()
        self.errors, self.blocked, self.failed = [], [], []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.failed.append(r.url))
        self.page.on("response", lambda r: r.status >= 400 and self.errors.append(f"HTTP {r.status}: {r.url}"))

        def route(r):
            url = r.request.url
            if url.startswith(allowed_origin) or url.startswith(("file:", "data:", "blob:")):
                r.continue_()
            else:
                self.blocked.append(url)
                r.abort()

        self.page.route("**/*", route)

    def goto(self, url):
        self.page.goto(url, wait_until="load")
        assert self.wait_for_math(), f"MathJax did not finish typesetting {url} within a minute"
        return self.page

    def wait_for_math(self, timeout_ms=60_000):
        """Until MathJax has typeset the page (pages without math: at once); False on timeout."""
        return self.page.evaluate("""timeout => new Promise(done => {
            if (!document.querySelector('span.math, div.math')) return done(true);
            setTimeout(() => done(false), timeout);
            // MathJax.js loads async: wait for it, then for its typesetting queue to drain
            const poll = () => (window.MathJax && MathJax.Hub && MathJax.Hub.queue)
                ? MathJax.Hub.Queue(() => done(true)) : setTimeout(poll, 50);
            poll();
        })""", timeout_ms)

    def close(self):
        self.page.close()


def page_problems(page):
    """Math errors, images that did not load, unrendered math, on the current page."""
    state = page.evaluate("""() => ({
        math: document.querySelectorAll('span.math, div.math').length,
        rendered: document.querySelectorAll('.MathJax, .MathJax_Display, .MathJax_Preview + script').length,
        errors: document.querySelectorAll('.MathJax_Error, merror, .merror').length
                + (document.body.innerText.includes('Math Processing Error') ? 1 : 0),
        unloaded: [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
        images: document.images.length,
    })""")
    problems = []
    if state["math"] and not state["rendered"]:
        problems.append(f"{state['math']} math element(s), none rendered by MathJax")
    if state["errors"]:
        problems.append(f"{state['errors']} MathJax error(s)")
    if state["unloaded"]:
        problems.append(f"images not loaded: {state['unloaded'][:5]}")
    return problems, state


def toc_links(page, base):
    hrefs = page.eval_on_selector_all("nav.bd-docs-nav a.reference.internal", "els => els.map(e => e.href)")
    return [h.split("#")[0] for h in hrefs if not h.split("#")[0].endswith("/index.html")]   # the home page heads the list


def screenshot(page, name):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=False)


# ---------------------------------------------------------------------------------------
# the course
# ---------------------------------------------------------------------------------------
def test_the_site_builds_without_warnings(course_site):
    html, english, warnings = course_site
    assert warnings == []
    assert [p.stem for p in english][:3] == ["00_long_term_dependencies", "01_rnn_vs_lstm", "02_forget_gate"]
    for path in english:
        assert (html / f"{path.stem}.html").is_file()
        assert (html / "_sources" / path.name).is_file()         # the download button's notebook
    assert (html / "_static" / "mathjax" / "MathJax.js").is_file()
    assert (html / "zh" / "index.html").is_file()


def test_every_chapter_in_the_browser(course_site, browser, serve):
    html, english, _ = course_site
    base = serve(html)
    watched = Watched(browser, base)
    page = watched.goto(base + "index.html")
    screenshot(page, "en_index.png")
    pages = toc_links(page, base)
    chapters = [base + f"{p.stem}.html" for p in english]
    assert pages == chapters + [base + "glossary.html"], "the table of contents: every chapter in order, the glossary"
    problems = {}
    for number, url in enumerate(chapters):
        page = watched.goto(url)
        found, state = page_problems(page)
        previous_url = base + "index.html" if number == 0 else chapters[number - 1]
        next_url = pages[number + 1]
        prev_href = page.eval_on_selector("a.left-prev", "a => a.href")
        if prev_href.split("#")[0] != previous_url:
            found.append(f"previous link goes to {prev_href}, expected {previous_url}")
        next_links = page.eval_on_selector_all("a.right-next", "els => els.map(a => a.href)")
        if next_url and next_links[:1] != [next_url]:
            found.append(f"next link goes to {next_links}, expected {next_url}")
        download = page.eval_on_selector_all("a[href$='.ipynb']", "els => els.map(a => a.href)")
        if not any(d.endswith(f"_sources/{english[number].name}") for d in download):
            found.append(f"no download link to the notebook: {download}")
        switch = page.eval_on_selector(".lstmkit-lang-switch a", "a => a.href")
        zh_page = base + f"zh/{english[number].stem}.html"
        if switch not in (zh_page, base + "zh/index.html"):
            found.append(f"language switch goes to {switch}")
        if state["math"] == 0:
            found.append("no math on the page")
        if found:
            problems[url] = found
        if number == 2:
            screenshot(page, "en_chapter.png")
    # follow the next links from the first chapter to the last: they are the reading order
    page = watched.goto(pages[0])
    for url in pages[1:]:
        page.click("a.right-next")
        page.wait_for_load_state("load")
        assert page.url.split("#")[0] == url
    assert problems == {}
    assert watched.errors == []
    assert watched.blocked == []
    watched.close()


def test_a_solution_is_hidden_until_its_toggle_is_clicked(course_site, browser, serve):
    html, english, _ = course_site
    base = serve(html)
    watched = Watched(browser, base)
    with_solution = [p for p in english if "solution" in p.read_text(encoding="utf-8")]
    page = watched.goto(base + f"{with_solution[0].stem}.html")
    solution = page.locator(".cell.tag_solution").first
    code = solution.locator(".cell_input")
    assert code.count() == 1 and not code.is_visible()
    toggle = solution.locator("summary")
    assert "Show solution" in toggle.inner_text()
    toggle.click()
    code.wait_for(state="visible")
    assert code.is_visible()
    solution.scroll_into_view_if_needed()
    screenshot(page, "en_solution_shown.png")
    assert watched.errors == [] and watched.blocked == []
    watched.close()


def test_search_finds_the_forget_gate(course_site, browser, serve):
    html, english, _ = course_site
    base = serve(html)
    watched = Watched(browser, base)
    page = watched.goto(base + "search.html?q=forget+gate")
    page.wait_for_selector("#search-results ul.search li, ul.search li", timeout=30_000)
    results = page.eval_on_selector_all("ul.search li a", "els => els.map(a => a.href)")
    assert any("02_forget_gate.html" in r for r in results), results
    screenshot(page, "en_search.png")
    assert watched.errors == [] and watched.blocked == []
    watched.close()


# ---------------------------------------------------------------------------------------
# the Chinese edition (a tiny course, executed)
# ---------------------------------------------------------------------------------------
def test_the_chinese_edition_in_the_browser(tiny_site, browser, serve):
    project, html = tiny_site
    base = serve(html)
    watched = Watched(browser, base)
    page = watched.goto(base + "02_tiny.html")
    assert page.eval_on_selector(".lstmkit-lang-switch a", "a => a.href") == base + "zh/02_tiny.html"
    page.click(".lstmkit-lang-switch a")
    page.wait_for_load_state("load")
    watched.wait_for_math()
    assert page.url == base + "zh/02_tiny.html"
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    assert "遗忘门 (forget gate)" in page.inner_text("main")
    found, state = page_problems(page)
    assert found == [] and state["math"] > 0 and state["images"] >= 1
    # the CJK font comes from the site itself
    assert page.evaluate("""async () => { await document.fonts.load('16px "lstmkit CJK"', '遗忘门');
                                          return document.fonts.check('16px "lstmkit CJK"', '遗忘门'); }""")
    assert page.locator(".cell.tag_solution summary").first.inner_text().strip().startswith("显示答案")
    screenshot(page, "zh_chapter.png")
    page.click(".lstmkit-lang-switch a")
    page.wait_for_load_state("load")
    assert page.url == base + "02_tiny.html"
    page = watched.goto(base + "zh/index.html")
    assert toc_links(page, base) == [base + "zh/02_tiny.html", base + "zh/glossary.html"]
    screenshot(page, "zh_index.png")
    assert watched.errors == [] and watched.blocked == []
    watched.close()


def test_chinese_search_and_the_glossary(course_site, browser, serve):
    from urllib.parse import quote

    html, english, _ = course_site
    base = serve(html)
    watched = Watched(browser, base)
    page = watched.goto(base + "zh/search.html?q=" + quote("遗忘门"))       # jieba splits the index
    page.wait_for_selector("ul.search li", timeout=30_000)
    results = page.eval_on_selector_all("ul.search li a", "els => els.map(a => a.href)")
    assert any(r.endswith("zh/02_forget_gate.html") for r in results), results
    screenshot(page, "zh_search.png")
    page = watched.goto(base + "zh/glossary.html")
    rows = page.eval_on_selector_all("main table tbody tr", "rows => rows.map(r => r.innerText)")
    assert any(row.startswith("遗忘门") and "forget gate" in row for row in rows), rows
    link = page.eval_on_selector("main table tbody tr a", "a => a.href")
    assert link.startswith(base + "zh/") and link.endswith(".html"), link
    screenshot(page, "zh_glossary.png")
    page = watched.goto(base + "zh/02_forget_gate.html")            # a real chapter, in Chinese
    found, state = page_problems(page)
    assert found == [] and state["math"] > 0 and state["images"] >= 1, found
    assert "他今天有事" in page.inner_text("main")
    assert page.eval_on_selector(".lstmkit-lang-switch a", "a => a.href") == base + "02_forget_gate.html"
    screenshot(page, "zh_forget_gate.png")
    assert watched.errors == [] and watched.blocked == []
    watched.close()


def test_the_chinese_plot_was_drawn_in_chinese_into_build(tiny_site):
    project, html = tiny_site
    # nb.save_figure wrote into build/figures, never into the project's figures/
    assert (project / "build" / "figures" / "tiny_forget_gate.png").is_file()
    assert list((project / "figures").iterdir()) == []
    english_images = sorted((html / "_images").glob("*.png"))
    chinese_images = sorted((html / "zh" / "_images").glob("*.png"))
    assert len(english_images) == len(chinese_images) == 1
    assert english_images[0].read_bytes() != chinese_images[0].read_bytes()   # 遗忘门, not "Forget gate"


def test_the_blocked_network_is_really_blocked(browser, serve, tmp_path):
    # guards the tests above: a page that asks the network for a script is seen and stopped
    (tmp_path / "index.html").write_text('<script src="https://cdn.example.org/x.js"></script><p>hi</p>')
    base = serve(tmp_path)
    watched = Watched(browser, base)
    watched.page.goto(base + "index.html")
    assert watched.blocked == ["https://cdn.example.org/x.js"]
    watched.close()
