"""The course tooling: student edition, index page, offline HTML, notebook execution, diagrams.

Tiny notebooks made here stand in for the chapters, so nothing here runs a real chapter.
"""
import hashlib
import io
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
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

    (written,) = course.student([chapter], tmp_path / "build")

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
# index page
# ---------------------------------------------------------------------------------------
class LinkCollector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self._href = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._href, self._text = dict(attrs)["href"], ""

    def handle_data(self, data):
        if self._href is not None:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "a" and self._href is not None:
            self.links.append((self._href, self._text))
            self._href = None


def test_index_links_the_chapters_in_order_with_their_headings(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    # written out of order; the third has no heading, the second's heading is not in the first cell
    write_notebook(notebooks / "10_speed.ipynb", [new_code_cell("1")])
    write_notebook(notebooks / "02_forget_gate.ipynb", [new_code_cell("1"),
                                                        new_markdown_cell("intro\n\n## The forget gate $f_t$ ##")])
    write_notebook(notebooks / "00_long_term.ipynb", [new_markdown_cell("# Long-term dependencies & <RNNs>")])
    (notebooks / "helpers.ipynb").write_text("not a chapter: its name has no number")

    paths = course.chapters(notebooks)
    assert [p.name for p in paths] == ["00_long_term.ipynb", "02_forget_gate.ipynb", "10_speed.ipynb"]
    index = course.render_site(paths, tmp_path / "build")

    collector = LinkCollector()
    collector.feed(index.read_text(encoding="utf-8"))
    assert collector.links == [("00_long_term.html", "Long-term dependencies & <RNNs>"),
                               ("02_forget_gate.html", "The forget gate $f_t$"),
                               ("10_speed.html", "10_speed")]
    for href, _ in collector.links:
        assert (tmp_path / "build" / href).is_file()
    assert "<title>The forget gate f_t</title>" in (tmp_path / "build" / "02_forget_gate.html").read_text()


# ---------------------------------------------------------------------------------------
# execution and offline HTML (one tiny notebook, run once by a real kernel)
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
    assert "WARNING: 00_tiny.ipynb took" in table


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


SCRIPT_OR_STYLE_FROM_NETWORK = re.compile(
    r"<script[^>]*\ssrc=[\"']?(?:https?:)?//|<link[^>]*\shref=[\"']?(?:https?:)?//|@import\s+(?:url\()?[\"']?https?:",
    re.IGNORECASE)


def test_html_opens_offline(executed, tmp_path):
    path, _, _ = executed
    page_path, title = course.render_html(path, tmp_path / "build")
    page = page_path.read_text(encoding="utf-8")
    assert title == "A tiny chapter"
    assert not SCRIPT_OR_STYLE_FROM_NETWORK.search(page)
    assert course.external_sources(page) == []
    # MathJax is loaded from the copy next to the page, and that copy is complete enough to run
    scripts = re.findall(r"<script[^>]*\ssrc=\"([^\"]+)\"", page)
    assert scripts == [f"mathjax/MathJax.js?config={course.MATHJAX_CONFIG}"]
    mathjax = tmp_path / "build" / "mathjax"
    for config in course.MATHJAX_CONFIG.split(","):
        assert (mathjax / "config" / f"{config}.js").is_file()
    assert (mathjax / "MathJax.js").is_file()
    assert any((mathjax / "fonts" / "HTML-CSS" / "STIX-Web" / "woff").glob("*.woff"))
    # both images (the markdown one and the displayed one) are inside the page
    images = re.findall(r"<img[^>]*\ssrc=\"([^\"]{0,30})", page)
    assert len(images) == 2 and all(src.startswith("data:image/png;base64,") for src in images)


def test_the_offline_check_catches_what_nbconvert_loads_by_default(executed):
    from nbconvert import HTMLExporter

    path, _, _ = executed
    default_page, _ = HTMLExporter(template_name="lab").from_filename(str(path))
    assert SCRIPT_OR_STYLE_FROM_NETWORK.search(default_page)          # require.js and MathJax from a CDN
    assert len(course.external_sources(default_page)) >= 2
    assert course.external_sources('<img src="https://example.org/a.png">') != []
    assert course.external_sources('<a href="https://colah.github.io/">colah</a>') == []   # links are fine


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
