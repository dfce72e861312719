"""Course tooling: ``python -m lstmkit.course {all,figures,execute,html,student}`` (the Makefile's targets).

- ``figures``: redraw every diagram of :mod:`lstmkit.diagrams` into ``figures/``.
- ``execute``: run every chapter (``notebooks/[0-9]*.ipynb``) in order with nbclient and write
  the outputs back; fail on a cell error or on anything written to stderr; warn about slow chapters.
- ``html``: render every chapter to ``build/<name>.html`` plus ``build/index.html``. The pages
  open offline: MathJax is copied into ``build/mathjax`` (from the ``jupyter-server-mathjax``
  package), require.js, mermaid and widget scripts are left out, and images are embedded.
- ``student``: copies of the chapters in ``build/student/`` with the ``solution`` cells emptied
  and the ``check`` cells kept, so students can test their answers.
- ``all``: the four, in that order.

Only the course tooling uses this module; the library never imports it.
"""
from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
BUILD = ROOT / "build"
FIGURES = ROOT / "figures"

SLOW_CHAPTER_S = 60.0          # a chapter should run in well under a minute on two cores
CELL_TIMEOUT_S = 600           # a cell that runs longer than this is stuck
SOLUTION_TAG, CHECK_TAG = "solution", "check"
SOLUTION_PLACEHOLDER = "# Your answer here\n"
MARKDOWN_PLACEHOLDER = "*Your answer here.*"
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"   # a combined configuration the package ships


class CourseError(RuntimeError):
    """A step of the course build failed; the message says which notebook and why."""


def chapters(notebook_dir=NOTEBOOKS):
    """The chapter notebooks, in reading order: numbered chapters, then appendices (A1, A2, ...)."""
    folder = Path(notebook_dir)
    return sorted(folder.glob("[0-9]*.ipynb")) + sorted(folder.glob("A[0-9]*.ipynb"))


# ---------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------
def figures(figure_dir=FIGURES):
    """Redraw every diagram; chapter plots (chNN_*.png, saved by the notebooks) are left alone."""
    from . import diagrams

    paths = diagrams.draw_all(figure_dir)
    for path in paths:
        print(f"  {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    print(f"drew {len(paths)} diagrams")
    return paths


# ---------------------------------------------------------------------------------------
# execute
# ---------------------------------------------------------------------------------------
@dataclass
class RunResult:
    path: Path
    seconds: float
    problems: list = field(default_factory=list)    # empty: the chapter ran cleanly

    @property
    def ok(self):
        return not self.problems


def _stderr_outputs(nb):
    """(cell index, text) for every stream output a cell wrote to stderr."""
    found = []
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                found.append((index, "".join(output.get("text", "")).strip()))
    return found


def execute_notebook(path, timeout=CELL_TIMEOUT_S, write=True):
    """Run one notebook top to bottom (kernel python3, cwd = its folder).

    The outputs are written back into the file only if no cell failed and nothing went to
    stderr, so a broken run never replaces the committed outputs.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor

    from traitlets.config import Config

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    problems = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lstmkit-kernel-") as socket_dir:
        # talk to the kernel over Unix sockets in a private folder, not over local TCP
        config = Config({"KernelManager": {"transport": "ipc", "ip": str(Path(socket_dir) / "kernel")}}
                        if os.name == "posix" else {})
        client = NotebookClient(nb, kernel_name="python3", timeout=timeout, record_timing=False,
                                config=config, resources={"metadata": {"path": str(path.parent)}})
        try:
            client.execute()
        except CellExecutionError as error:
            problems.append(f"a cell raised an error:\n{_indent(str(error))}")
        except (CellTimeoutError, DeadKernelError) as error:
            problems.append(f"{type(error).__name__}: {error}")
    seconds = time.perf_counter() - start
    for index, text in _stderr_outputs(nb):
        problems.append(f"cell {index} wrote to stderr:\n{_indent(text)}")
    if write and not problems:
        # one stream output where the kernel flushed a print in pieces: the file then does
        # not depend on when the kernel happened to flush
        CoalesceStreamsPreprocessor().preprocess(nb, {})
        nbformat.write(nb, path)
    return RunResult(path, seconds, problems)


def _indent(text, prefix="    ", max_lines=40):
    lines = text.splitlines()
    if len(lines) > max_lines:
        lines = lines[:max_lines // 2] + ["..."] + lines[-max_lines // 2:]
    return "\n".join(prefix + line for line in lines)


def execute(paths, slow_s=SLOW_CHAPTER_S, timeout=CELL_TIMEOUT_S, out=sys.stdout):
    """Run the chapters in order, print a table of wall times; raise CourseError if any failed."""
    from tqdm import tqdm

    results = []
    for path in tqdm(paths, desc="chapters", unit="nb", file=sys.stderr):
        results.append(execute_notebook(path, timeout=timeout))
    width = max([len(r.path.name) for r in results] + [len("notebook")])
    print(f"{'notebook':<{width}}  {'seconds':>8}  status", file=out)
    for r in results:
        status = "ok" if r.ok else "FAILED"
        if r.ok and r.seconds > slow_s:
            status = f"ok, but slow (over {slow_s:.0f} s)"
        print(f"{r.path.name:<{width}}  {r.seconds:8.1f}  {status}", file=out)
    print(f"{'total':<{width}}  {sum(r.seconds for r in results):8.1f}", file=out)
    for r in results:
        if r.ok and r.seconds > slow_s:
            print(f"WARNING: {r.path.name} took {r.seconds:.1f} s; a chapter should run in well under "
                  f"{slow_s:.0f} s on two cores (move long experiments into the library).", file=out)
    failed = [r for r in results if not r.ok]
    if failed:
        report = "\n".join(f"{r.path.name} (left unchanged on disk):\n" + "\n".join(_indent(p) for p in r.problems)
                           for r in failed)
        raise CourseError(f"{len(failed)} of {len(results)} notebook(s) failed:\n{report}")
    return results


# ---------------------------------------------------------------------------------------
# html
# ---------------------------------------------------------------------------------------
# MathJax 2 settings: Jupyter's, including the HTML-CSS ones it uses with this MathJax build,
# which ships the STIX-Web fonts only.
MATHJAX_SETTINGS = """<script type="text/x-mathjax-config">
MathJax.Hub.Config({
  tex2jax: {inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]], displayMath: [["$$", "$$"], ["\\\\[", "\\\\]"]],
            processEscapes: true, processEnvironments: true},
  TeX: {equationNumbers: {autoNumber: "AMS", useLabelIds: true}},
  displayAlign: "center",
  messageStyle: "none",
  "HTML-CSS": {availableFonts: [], imageFont: null, preferredFont: null, webFont: "STIX-Web",
               linebreaks: {automatic: true}}
});
</script>"""

# nbconvert's lab template minus everything it would fetch from a CDN: require.js and the
# widget manager (only interactive widgets need them, and those need a kernel anyway),
# mermaid, and MathJax, which comes from the local copy instead.
OFFLINE_TEMPLATE = (
    "{%- extends 'index.html.j2' -%}\n"
    "{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}\n"
    "{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}\n"
    "{% block jupyter_widgets %}{% endblock jupyter_widgets %}\n"
    "{%- block html_head_js_mathjax -%}\n{% raw %}" + MATHJAX_SETTINGS + "{% endraw %}\n"
    '<script src="{{ resources.mathjax_url | e }}"></script>\n'
    "{%- endblock html_head_js_mathjax -%}\n"
)


def mathjax_source():
    """The MathJax 2 tree that the jupyter-server-mathjax package ships."""
    try:
        import jupyter_server_mathjax
    except ImportError as error:
        raise CourseError("rendering offline HTML needs MathJax from the 'jupyter-server-mathjax' package: "
                          "pip install -e '.[course]'") from error
    source = Path(jupyter_server_mathjax.__file__).parent / "static"
    if not (source / "MathJax.js").is_file():
        raise CourseError(f"expected MathJax.js in {source}")
    return source


def copy_mathjax(build_dir):
    """Copy MathJax into build_dir/mathjax (once); returns the script URL relative to build_dir."""
    target = Path(build_dir) / "mathjax"
    if not (target / "MathJax.js").is_file():
        shutil.copytree(mathjax_source(), target, dirs_exist_ok=True)
    return f"mathjax/MathJax.js?config={MATHJAX_CONFIG}"


def html_exporter(mathjax_url):
    from nbconvert import HTMLExporter

    return HTMLExporter(template_name="lab", raw_template=OFFLINE_TEMPLATE, embed_images=True,
                        mathjax_url=mathjax_url)


EXTERNAL_SOURCE = re.compile(
    r"""<(?:script|img|iframe|audio|video|source)\b[^>]*\bsrc\s*=\s*["']?\s*(?:https?:)?//"""
    r"""|<link\b[^>]*\bhref\s*=\s*["']?\s*(?:https?:)?//"""
    r"""|@import\s+(?:url\()?\s*["']?\s*(?:https?:)?//"""
    r"""|\bimport\(\s*["'](?:https?:)?//""",
    re.IGNORECASE)


def external_sources(page):
    """Every place where ``page`` (HTML text) would load a script, style or image from the network.

    Hyperlinks (``<a href=...>``) are fine: following one is the reader's choice.
    """
    return [page[m.start():m.start() + 120] for m in EXTERNAL_SOURCE.finditer(page)]


def notebook_title(nb, fallback):
    """The text of the notebook's first markdown heading, or ``fallback``."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            match = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
            if match and match.group(1):
                return match.group(1)
    return fallback


def render_html(path, build_dir, exporter=None):
    """Render one notebook to build_dir/<name>.html; returns (html path, title)."""
    import nbformat

    path, build_dir = Path(path), Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    exporter = exporter or html_exporter(copy_mathjax(build_dir))
    nb = nbformat.read(path, as_version=4)
    title = notebook_title(nb, path.stem)
    nb.metadata["title"] = _plain(title)     # the page's <title>
    page, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": path.stem,
                                                                      "path": str(path.parent)}})
    leaks = external_sources(page)
    if leaks:
        raise CourseError(f"{path.name}: the HTML would load from the network (an image from a URL?):\n"
                          + "\n".join(_indent(leak) for leak in leaks))
    target = build_dir / f"{path.stem}.html"
    target.write_text(page, encoding="utf-8")
    return target, title


def _plain(title):
    """A heading without markdown emphasis, code marks or math delimiters, for <title>."""
    return re.sub(r"\*\*|__|[*`$]", "", title)


INDEX_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>lstmkit: a course on LSTM networks</title>
{mathjax}
<style>
body {{ font-family: "DejaVu Sans", system-ui, sans-serif; max-width: 46em; margin: 3em auto; padding: 0 1em;
        line-height: 1.5; color: #222; }}
h1 {{ font-weight: 600; }}
ol {{ padding-left: 0; list-style: none; }}
li {{ margin: 0.5em 0; }}
.number {{ display: inline-block; width: 2.2em; color: #888; font-variant-numeric: tabular-nums; }}
a {{ color: #1f5fa8; text-decoration: none; }}
a:hover {{ text-decoration: underline; }}
.note {{ color: #666; font-size: 0.9em; }}
</style>
</head>
<body>
<h1>lstmkit: a course on LSTM networks</h1>
<p>Read the chapters in order. Every number on these pages was computed when the notebooks last ran.</p>
<ol>
{items}
</ol>
<p class="note">Notebooks for students (solutions removed, checks kept) are in <code>student/</code>
after <code>make student</code>.</p>
</body>
</html>
"""


def index_page(entries, mathjax_url):
    """The contents page: ``entries`` are (html file name, title) in reading order."""
    items = []
    for file_name, title in entries:
        number = re.match(r"\d+", file_name)
        items.append(f'<li><span class="number">{number.group(0) if number else ""}</span>'
                     f'<a href="{html.escape(file_name, quote=True)}">{html.escape(title)}</a></li>')
    mathjax = f'{MATHJAX_SETTINGS}\n<script src="{html.escape(mathjax_url, quote=True)}"></script>'
    return INDEX_PAGE.format(mathjax=mathjax, items="\n".join(items))


def render_site(paths, build_dir=BUILD):
    """Every chapter to HTML plus index.html, MathJax alongside; returns the index path."""
    from tqdm import tqdm

    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    mathjax_url = copy_mathjax(build_dir)
    exporter = html_exporter(mathjax_url)
    entries = []
    for path in tqdm(paths, desc="html", unit="nb", file=sys.stderr):
        target, title = render_html(path, build_dir, exporter)
        entries.append((target.name, title))
    index = build_dir / "index.html"
    index.write_text(index_page(entries, mathjax_url), encoding="utf-8")
    print(f"wrote {len(entries)} chapter page(s) and {index}")
    return index


# ---------------------------------------------------------------------------------------
# student edition
# ---------------------------------------------------------------------------------------
def student_notebook(nb):
    """Empty the cells tagged ``solution`` (in place), clear their outputs and the checks' outputs.

    Returns a list of (cell index, first line of what was removed). The ``check`` cells stay,
    so a student can test an answer; their outputs go, since they may print the answer.
    """
    removed = []
    for index, cell in enumerate(nb.cells):
        tags = set(cell.metadata.get("tags", []))
        if SOLUTION_TAG in tags and CHECK_TAG in tags:
            raise CourseError(f"cell {index} is tagged both '{SOLUTION_TAG}' and '{CHECK_TAG}'; "
                              "a check must stay and a solution must go, so split the cell")
        if SOLUTION_TAG in tags:
            first_line = next((line for line in cell.source.splitlines() if line.strip()), "")
            removed.append((index, first_line))
            cell.source = SOLUTION_PLACEHOLDER if cell.cell_type == "code" else MARKDOWN_PLACEHOLDER
        if cell.cell_type == "code" and tags & {SOLUTION_TAG, CHECK_TAG}:
            cell.outputs = []
            cell.execution_count = None
    return removed


def student(paths, build_dir=BUILD):
    """Write the student edition of every chapter to build_dir/student/; print what was removed."""
    import nbformat

    target_dir = Path(build_dir) / "student"
    target_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        removed = student_notebook(nb)
        nbformat.validate(nb)
        target = target_dir / Path(path).name
        nbformat.write(nb, target)
        written.append(target)
        print(f"{Path(path).name}: emptied {len(removed)} solution cell(s)")
        for index, first_line in removed:
            print(f"    cell {index}: {first_line[:70]}")
    print(f"wrote {len(written)} student notebook(s) to {target_dir}")
    return written


# ---------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lstmkit.course", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["all", "figures", "execute", "html", "student"])
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS, help="folder of the chapter notebooks")
    parser.add_argument("--build", type=Path, default=BUILD, help="output folder for html and student/")
    parser.add_argument("--figures", type=Path, default=FIGURES, help="folder the diagrams go to")
    parser.add_argument("only", nargs="*", type=Path, help="particular notebooks (default: every chapter)")
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in args.only] if args.only else chapters(args.notebooks)
    if args.command != "figures" and not paths:
        print(f"note: no chapter notebooks ([0-9]*.ipynb) in {args.notebooks}")
    steps = ["figures", "execute", "html", "student"] if args.command == "all" else [args.command]
    try:
        for step in steps:
            if step == "figures":
                figures(args.figures)
            elif step == "execute":
                execute(paths)
            elif step == "html":
                render_site(paths, args.build)
            elif step == "student":
                student(paths, args.build)
    except CourseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
