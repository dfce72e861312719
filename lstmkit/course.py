"""Course tooling: ``python -m lstmkit.course COMMAND`` (also ``lstmkit course COMMAND``).

- ``site`` (``make course``): the book, both editions, into ``build/html/`` (see :mod:`lstmkit.book`);
  chapters are executed through MyST-NB's cache, so an unchanged chapter is not run again.
- ``student``: the student edition in ``build/student/`` (and ``build/student/zh/``): the
  ``solution`` cells emptied, the ``check`` cells kept.
- ``grade STUDENT.ipynb``: run a submitted chapter and print each exercise as passed or failed.
- ``sync-zh``: copy the code cells (and outputs) of the English chapters into ``notebooks/zh/``,
  keep the translations, report the missing and stale ones.
- ``execute`` (``make notebooks``): re-run chapters and write their outputs back into the files
  (the outputs nbval checks); fail on a cell error or anything on stderr.
- ``figures`` (``make figures``): redraw the diagrams and re-run the chapters with their plots
  going to ``figures/``: the only command that writes into ``figures/``.

The course's folder is the current directory, or ``--project DIR``: nothing here derives a
path from where the package is installed, and nothing is written into it.
Only the course tooling uses this module; the library never imports it.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SLOW_CHAPTER_S = 60.0          # a chapter should run in well under a minute on two cores
CELL_TIMEOUT_S = 600           # a cell that runs longer than this is stuck
SOLUTION_TAG, CHECK_TAG, EXERCISE_TAG = "solution", "check", "exercise"
SOLUTION_PLACEHOLDER = "# Your answer here\n"
MARKDOWN_PLACEHOLDER = "*Your answer here.*"
# what an emptied solution cell says, in each edition's language: (code, markdown)
PLACEHOLDERS = {"en": (SOLUTION_PLACEHOLDER, MARKDOWN_PLACEHOLDER),
                "zh": ("# 在这里写下你的答案\n", "*在这里写下你的答案。*")}
WHERE_TO_GET_THE_CHAPTERS = (
    "The chapters are not inside the installed package: they come with the course's source, a "
    "clone of the lstmkit repository or its source distribution (lstmkit-VERSION.tar.gz), in its "
    "notebooks/ folder. Run this command in the folder that holds notebooks/, or pass --project DIR.")


class CourseError(RuntimeError):
    """A step of the course build failed; the message says which notebook and why."""


def chapters(notebook_dir):
    """The chapter notebooks, in reading order: numbered chapters, then appendices (A1, A2, ...)."""
    folder = Path(notebook_dir)
    return sorted(folder.glob("[0-9]*.ipynb")) + sorted(folder.glob("A[0-9]*.ipynb"))


# ---------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------
def figures(project, paths=()):
    """Redraw every diagram into figures/, then run ``paths`` (chapters) with their plots saved
    into figures/ too. Nothing else writes there; the chapters' files are not rewritten."""
    from . import diagrams

    figure_dir = Path(project) / "figures"
    drawn = diagrams.draw_all(figure_dir)
    print(f"drew {len(drawn)} diagrams into {figure_dir}")
    previous = os.environ.get("LSTMKIT_FIGURE_DIR")
    os.environ["LSTMKIT_FIGURE_DIR"] = str(figure_dir)
    try:
        for path in paths:
            result = execute_notebook(path, write=False)
            if not result.ok:
                raise CourseError(f"{Path(path).name} failed:\n" + "\n".join(_indent(p) for p in result.problems))
            print(f"  {Path(path).name}: plots saved ({result.seconds:.0f} s)")
    finally:
        if previous is None:
            os.environ.pop("LSTMKIT_FIGURE_DIR", None)
        else:
            os.environ["LSTMKIT_FIGURE_DIR"] = previous
    return drawn


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


def run_notebook(nb, cwd, timeout=CELL_TIMEOUT_S, allow_errors=False):
    """Execute ``nb`` in place (kernel python3, working directory ``cwd``); returns the problems.

    With ``allow_errors`` every cell runs and errors stay in the outputs (for grading).
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    from traitlets.config import Config

    from .reproducible import pin_library_code

    pin_library_code()      # the kernel's OpenBLAS and NumPy give the committed digits on any processor
    problems = []
    with tempfile.TemporaryDirectory(prefix="lstmkit-kernel-") as socket_dir:
        # talk to the kernel over Unix sockets in a private folder, not over local TCP
        config = Config({"KernelManager": {"transport": "ipc", "ip": str(Path(socket_dir) / "kernel")}}
                        if os.name == "posix" else {})
        client = NotebookClient(nb, kernel_name="python3", timeout=timeout, record_timing=False,
                                allow_errors=allow_errors, config=config,
                                resources={"metadata": {"path": str(cwd)}})
        try:
            client.execute()
        except CellExecutionError as error:
            problems.append(f"a cell raised an error:\n{_indent(str(error))}")
        except (CellTimeoutError, DeadKernelError) as error:
            problems.append(f"{type(error).__name__}: {error}")
    return problems


def execute_notebook(path, timeout=CELL_TIMEOUT_S, write=True):
    """Run one notebook top to bottom (cwd = its folder).

    The outputs are written back into the file only if no cell failed and nothing went to
    stderr, so a broken run never replaces the committed outputs.
    """
    import nbformat
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    problems = run_notebook(nb, path.parent, timeout=timeout)
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
    for r in results:      # `make notebooks` is an author's command: this note is for authors
        if r.ok and r.seconds > slow_s:
            print(f"note for the authors: {r.path.name} took {r.seconds:.1f} s; a chapter should run in "
                  f"well under {slow_s:.0f} s on two cores", file=out)
    failed = [r for r in results if not r.ok]
    if failed:
        report = "\n".join(f"{r.path.name} (left unchanged on disk):\n" + "\n".join(_indent(p) for p in r.problems)
                           for r in failed)
        raise CourseError(f"{len(failed)} of {len(results)} notebook(s) failed:\n{report}")
    return results


# ---------------------------------------------------------------------------------------
# student edition
# ---------------------------------------------------------------------------------------
def student_notebook(nb):
    """Empty the cells tagged ``solution`` (in place), clear their outputs and the checks' outputs.

    Returns a list of (cell index, first line of what was removed). The ``check`` cells stay,
    so a student can test an answer; their outputs go, since they may print the answer. The
    placeholder left in an emptied cell is in the chapter's language (its setup call's ``lang``).
    """
    from .editions import language

    code_placeholder, markdown_placeholder = PLACEHOLDERS.get(language(nb), PLACEHOLDERS["en"])
    removed = []
    for index, cell in enumerate(nb.cells):
        tags = set(cell.metadata.get("tags", []))
        if SOLUTION_TAG in tags and CHECK_TAG in tags:
            raise CourseError(f"cell {index} is tagged both '{SOLUTION_TAG}' and '{CHECK_TAG}'; "
                              "a check must stay and a solution must go, so split the cell")
        if SOLUTION_TAG in tags:
            first_line = next((line for line in cell.source.splitlines() if line.strip()), "")
            removed.append((index, first_line))
            cell.source = code_placeholder if cell.cell_type == "code" else markdown_placeholder
        if cell.cell_type == "code" and tags & {SOLUTION_TAG, CHECK_TAG}:
            cell.outputs = []
            cell.execution_count = None
    return removed


def student(paths, target_dir):
    """Write the student edition of every chapter into target_dir; print what was removed."""
    import nbformat

    target_dir = Path(target_dir)
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
COMMANDS = ("site", "html", "student", "grade", "sync-zh", "execute", "figures", "check-student")


def _project(args):
    project = (args.project or Path.cwd()).resolve()
    notebooks = project / "notebooks"
    if not chapters(notebooks):
        raise CourseError(f"no chapters (notebooks/[0-9]*.ipynb) in {project}.\n{WHERE_TO_GET_THE_CHAPTERS}")
    return project, notebooks


def _paths(args, notebooks):
    return [p.resolve() for p in args.paths] if args.paths else chapters(notebooks)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="lstmkit course", description=__doc__.split("\n\n")[0],
                                     epilog="site: the book; student: the student edition; grade STUDENT.ipynb; "
                                            "sync-zh [CHAPTER ...]; execute / figures: for the authors")
    parser.add_argument("command", choices=COMMANDS, nargs="?", default="site",
                        help="what to do (default: site, the book)")
    parser.add_argument("paths", nargs="*", type=Path,
                        help="grade: the student's notebook; execute/figures/sync-zh: particular chapters")
    parser.add_argument("--project", type=Path, default=None,
                        help="the course's folder (with notebooks/ and figures/); default: the current directory")
    parser.add_argument("--build", type=Path, default=None, help="output folder (default: PROJECT/build)")
    parser.add_argument("--execution", choices=("cache", "off"), default="cache",
                        help="site: run the chapters through the cache (default) or show the committed outputs")
    args = parser.parse_args(argv)
    try:
        if args.command == "grade":
            from .grading import grade

            if len(args.paths) != 1:
                raise CourseError("grade takes one notebook: lstmkit course grade STUDENT.ipynb")
            # a submission may sit anywhere: its chapter reads the course's diagrams from the
            # course folder, --project or the current directory (when it is one)
            course_folder = (args.project or Path.cwd()).resolve()
            if (course_folder / "figures").is_dir() and "LSTMKIT_PROJECT" not in os.environ:
                os.environ["LSTMKIT_PROJECT"] = str(course_folder)
            failed = grade(args.paths[0])
            return 1 if failed else 0
        project, notebooks = _project(args)
        build = (args.build or project / "build").resolve()
        if args.command in ("site", "html"):
            from .book import SiteError, build_site

            start = time.perf_counter()
            try:
                index, _ = build_site(chapters(notebooks), chapters(notebooks / "zh"), build,
                                      execution=args.execution, project_dir=project)
            except SiteError as error:
                raise CourseError(str(error)) from error
            print(f"the course is ready ({time.perf_counter() - start:.0f} s): open {index}")
        elif args.command == "student":
            student(_paths(args, notebooks), build / "student")
            zh = chapters(notebooks / "zh")
            if zh:
                student(zh, build / "student" / "zh")
        elif args.command == "check-student":
            from .grading import student_edition_failures
            import nbformat

            problems = []
            for path in _paths(args, notebooks):
                problems += student_edition_failures(nbformat.read(path, as_version=4), path.parent, path.name)
                print(f"{path.name}: {'ok' if not problems else 'see below'}")
            if problems:
                raise CourseError("\n".join(problems))
        elif args.command == "sync-zh":
            from .editions import sync_all

            wanted = {p.stem for p in args.paths}
            reports = sync_all(chapters(notebooks), notebooks / "zh", create=wanted)
            return 0 if all(r.clean for r in reports) else 1
        elif args.command == "execute":
            execute(_paths(args, notebooks))
        elif args.command == "figures":
            figures(project, _paths(args, notebooks))
    except CourseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
