"""Small helpers the chapters share: rendered equations, saved figures, quiet setup.

Only the notebooks use this module; the library never imports it.
"""
from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np

__all__ = ["setup", "t", "show_equations", "show_gradients", "save_figure", "show_figure", "FIGURES"]

FIGURES = Path(__file__).resolve().parent.parent / "figures"

# Deterministic PNGs: no timestamps or version strings in the file.
PNG_METADATA = {"Software": None}


LANGUAGES = ("en", "zh")
_language = "en"


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
                                    "svg.hashsalt": "lstmkit", "figure.max_open_warning": 0})
    except ImportError:
        pass
    return np.random.default_rng(seed)


def t(english, chinese):
    """A plot's title or label in the edition's language: ``nb.t("Loss", "损失")``."""
    return chinese if _language == "zh" else english


def _math(lines):
    from IPython.display import Math

    return Math(r"\begin{aligned}" + r"\\ ".join(lines) + r"\end{aligned}")


def show_equations(spec):
    """The forward equations of a cell spec, rendered (a Math display object)."""
    return _math(spec.equations_latex())


def show_gradients(derivation, only=None):
    """The derived gradients, rendered; ``only`` selects lines containing one of the given names."""
    lines = derivation.gradients_latex()
    if only:
        lines = [line for line in lines if any(name in line for name in only)]
    return _math(lines)


def save_figure(fig, name):
    """Save a chapter's plot as figures/<name>.png (byte-stable) and return the path."""
    FIGURES.mkdir(exist_ok=True)
    path = FIGURES / f"{name}.png"
    fig.savefig(path, metadata=PNG_METADATA, bbox_inches="tight")
    return path


def show_figure(name, width=None):
    """Display figures/<name>.png, a diagram drawn by ``make figures``."""
    from IPython.display import Image

    return Image(filename=str(FIGURES / f"{name}.png"), width=width)
