"""Small helpers the chapters share: rendered equations, saved figures, quiet setup.

Only the notebooks use this module; the library never imports it.

Where files go: a chapter's plots (:func:`save_figure`) land in ``$LSTMKIT_FIGURE_DIR``, by
default ``build/figures`` of the project, so running a chapter (nbval, the site's build, a
learner in Jupyter) changes no tracked file; ``make figures`` points that variable at
``figures/`` to refresh the committed plots. The committed diagrams (:func:`show_figure`) are
read from the project's ``figures/``. The project is ``$LSTMKIT_PROJECT``, or else the nearest
folder, from the current directory up, that has both ``notebooks/`` and ``figures/``.
"""
from __future__ import annotations

import os
import random
import warnings
from pathlib import Path

import numpy as np

__all__ = ["setup", "t", "show_equations", "show_gradients", "save_figure", "show_figure",
           "project_dir", "figure_dir"]

# Deterministic PNGs: no timestamps or version strings in the file (diagrams.py uses it too).
PNG_METADATA = {"Software": None}


def project_dir():
    """The course's folder: ``$LSTMKIT_PROJECT``, or the nearest one up from the current
    directory with ``notebooks/`` and ``figures/`` in it (a chapter runs in ``notebooks/``)."""
    configured = os.environ.get("LSTMKIT_PROJECT")
    if configured:
        return Path(configured)
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "notebooks").is_dir() and (folder / "figures").is_dir():
            return folder
    raise FileNotFoundError(f"no course folder (one with notebooks/ and figures/) at or above {here}; "
                            "run the chapter from the course's notebooks/ folder or set LSTMKIT_PROJECT")


def figure_dir():
    """Where :func:`save_figure` writes: ``$LSTMKIT_FIGURE_DIR``, else ``build/figures``."""
    configured = os.environ.get("LSTMKIT_FIGURE_DIR")
    if configured:
        return Path(configured)
    try:
        return project_dir() / "build" / "figures"
    except FileNotFoundError:
        return Path.cwd() / "build" / "figures"


def __getattr__(name):
    if name == "FIGURES":       # the committed figures (the old module constant)
        return project_dir() / "figures"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


LANGUAGES = ("en", "zh")
_language = "en"
_LATIN_FONTS = ["DejaVu Sans"]


def _use_cjk_font(matplotlib):
    """Labels in a CJK font (its Latin letters included), DejaVu Sans for the glyphs it lacks."""
    from matplotlib import font_manager

    from .book import CJK_FONT_PACKAGE, cjk_font_file

    path = cjk_font_file()
    if path is None:
        warnings.warn(f"no CJK font found: Chinese plot labels will show as boxes "
                      f"(apt-get install {CJK_FONT_PACKAGE}, or set LSTMKIT_CJK_FONT to a font file)",
                      stacklevel=3)
        return
    font_manager.fontManager.addfont(str(path))
    name = font_manager.FontProperties(fname=str(path)).get_name()
    # The CJK font first: a label that mixes text and $math$ is laid out by mathtext, which sets
    # its plain text in the first family alone (no fallback), and the CJK font has Latin letters
    # too. Plain labels fall back glyph by glyph along the list for anything it lacks.
    matplotlib.rcParams["font.family"] = [name] + _LATIN_FONTS


def setup(seed=0, lang="en"):
    """Seed every generator, fix print options and matplotlib's style; ``lang`` picks the edition.

    The English and Chinese editions of a chapter run the same code; only this call differs
    (``lang="zh"``), and it changes nothing but the strings :func:`t` returns.
    """
    global _language
    if lang not in LANGUAGES:
        raise ValueError(f"lang must be one of {LANGUAGES}, got {lang!r}")
    _language = lang
    random.seed(seed)
    np.random.seed(seed)
    np.set_printoptions(precision=4, suppress=True, linewidth=100)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        import matplotlib

        matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "font.size": 10,
                                    "axes.grid": True, "grid.alpha": 0.3,
                                    "svg.hashsalt": "lstmkit", "figure.max_open_warning": 0,
                                    "font.family": "sans-serif", "font.sans-serif": list(_LATIN_FONTS)})
        if lang == "zh":
            _use_cjk_font(matplotlib)
    except ImportError:
        pass
    return np.random.default_rng(seed)


def t(english, chinese):
    """A string in the edition's language: a plot's title or label, ``nb.t("Loss", "损失")``, or
    the message of a check that fails, ``assert ok, nb.t(f"got {x}", f"得到的是 {x}")``."""
    return chinese if _language == "zh" else english


def _math(lines):
    from IPython.display import Math

    return Math(r"\begin{aligned}" + r"\\ ".join(lines) + r"\end{aligned}")


def _select(named_lines, only, what):
    """The lines whose names include one of ``only`` (all lines if ``only`` is empty)."""
    if not only:
        return [line for _, line in named_lines]
    if isinstance(only, str):
        only = [only]

    def selects(name, names):   # the older r"\partial ..." names also match as a part of a name
        return any(name == n or (name.startswith("\\partial") and name in n) for n in names)

    known = [names for names, _ in named_lines]
    unknown = [name for name in only if not any(selects(name, names) for names in known)]
    if unknown:
        choices = ", ".join(repr(names[0]) for names in known)
        raise ValueError(f"{what}: no line named {unknown}; the lines are named {choices}")
    return [line for names, line in named_lines if any(selects(name, names) for name in only)]


def show_equations(spec, only=None):
    """The forward equations of a cell spec in the article's notation (a Math display object).

    ``only`` picks lines by their left-hand side, e.g. ``only=["f_t", "C_t"]``
    or ``only=[r"\\tilde{C}_t"]``. See :mod:`lstmkit.notation`.
    """
    from .notation import equation_lines

    named = [((lhs,), line) for lhs, line in equation_lines(spec)]
    return _math(_select(named, only, f"show_equations({spec.name})"))


def show_gradients(derivation, only=None):
    """The gradients of one time step in the article's notation, rendered.

    ``derivation`` is a :class:`lstmkit.symbolic.Derivation` or a CellSpec. The
    listing starts with what each δ means; ``∂L/∂h_{t−1}`` is the whole gradient,
    matrix products included. ``only`` picks lines: ``r"\\delta_{f}"`` (a gate's
    pre-activation), ``"C_{t-1}"``, ``"h_{t-1}"``, ``"x_t"``, ``"p_{f}"`` (a
    peephole weight), ``"W"`` (weights and biases); the definitions line is always shown.
    """
    from .notation import gradient_lines

    spec = getattr(derivation, "spec", derivation)
    named = gradient_lines(spec)
    lines = _select(named[1:], only, f"show_gradients({spec.name})")
    return _math([named[0][1]] + lines)


def save_figure(fig, name):
    """Save a chapter's plot as ``<figure_dir()>/<name>.png`` (byte-stable); returns the path.

    By default that is ``build/figures``, not the committed ``figures/`` (see the module's
    docstring); ``make figures`` refreshes those.
    """
    folder = figure_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, metadata=PNG_METADATA, bbox_inches="tight")
    return path


def show_figure(name, width=None):
    """Display figures/<name>.png, a diagram drawn by ``make figures``."""
    from IPython.display import Image

    return Image(filename=str(project_dir() / "figures" / f"{name}.png"), width=width)
