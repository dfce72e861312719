"""Save and load a model's parameters, its optimizer's and its scheduler's state as one ``.npz`` file.

The file holds only plain arrays (``np.load(..., allow_pickle=False)`` reads
it): ``format``, ``architecture`` (a JSON string: class, cell, readout, …),
``model/<param name>`` and, when an optimizer is saved,
``optimizer/class`` and ``optimizer/<entry>``, and when a learning-rate
scheduler is saved, ``scheduler/class`` and ``scheduler/<entry>``. Loading
checks the whole file against the model before it changes anything: a
checkpoint of another architecture, or a truncated or corrupt file, raises
:class:`CheckpointError` and leaves the model, the optimizer and the scheduler
as they were.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from .files import atomic_write

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "architecture_of"]

FORMAT = "lstmkit-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into this model: wrong architecture, truncated or corrupt."""


def architecture_of(model):
    """What, besides parameter names and shapes, a checkpoint must match (a JSON-able dict)."""
    if hasattr(model, "architecture"):          # layers and models
        return model.architecture()
    return {"class": type(model).__name__}


def save_checkpoint(path, model, optimizer=None, scheduler=None, **extra):
    """Write ``model``'s parameters (and ``optimizer``'s and ``scheduler``'s state) to ``path`` (.npz).

    ``extra`` numbers or arrays (e.g. ``step=1200``) are stored as
    ``extra/<name>`` and returned by :func:`load_checkpoint`. The file is
    written beside its destination and renamed into place, so an interrupted
    save never leaves a half-written checkpoint under ``path``.
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"checkpoint path must end in .npz (np.savez would append it), got {path}")
    arrays = {"format": np.array(FORMAT),
              "architecture": np.array(json.dumps(architecture_of(model), sort_keys=True))}
    arrays.update({f"model/{name}": value for name, value in model.state_dict().items()})
    if optimizer is not None:
        arrays["optimizer/class"] = np.array(type(optimizer).__name__)
        arrays.update({f"optimizer/{key}": value for key, value in optimizer.state_dict().items()})
    if scheduler is not None:
        if optimizer is None or getattr(scheduler, "optimizer", None) is not optimizer:
            raise ValueError("a scheduler is saved with the optimizer it schedules: "
                             "save_checkpoint(path, model, optimizer, scheduler)")
        arrays["scheduler/class"] = np.array(type(scheduler).__name__)
        arrays.update({f"scheduler/{key}": value for key, value in scheduler.state_dict().items()})
    for name, value in extra.items():
        value = np.asarray(value)
        if value.dtype.kind not in "biufU":
            raise TypeError(f"extra {name!r}: only numbers, booleans and strings can be stored "
                            f"without pickling, got dtype {value.dtype}")
        arrays[f"extra/{name}"] = value
    return atomic_write(path, lambda file: np.savez(file, **arrays))


def _read(path):
    """Every array in the file, read eagerly so corruption shows up here, not later."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            # np.load reads a plain .npy whatever its name: a single array is no checkpoint
            raise CheckpointError(f"{path} is a single .npy array, not an .npz checkpoint archive")
        with loaded as archive:
            return {key: archive[key] for key in archive.files}
    except (FileNotFoundError, CheckpointError):
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as error:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): "
                              f"{type(error).__name__}: {error}") from error


def _section(arrays, path, name, target):
    """The saved state of ``target`` (an optimizer or a scheduler), checked to be of its class."""
    if f"{name}/class" not in arrays:
        raise CheckpointError(f"{path} holds no {name} state")
    saved_class = str(arrays[f"{name}/class"])
    if saved_class != type(target).__name__:
        raise CheckpointError(f"{path} holds {saved_class} state, not {type(target).__name__}")
    return {key[len(name) + 1:]: value for key, value in arrays.items()
            if key.startswith(f"{name}/") and key != f"{name}/class"}


def load_checkpoint(path, model, optimizer=None, scheduler=None):
    """Load ``path`` into ``model`` (and ``optimizer``, ``scheduler``); returns the ``extra``
    values saved with it.

    Raises :class:`CheckpointError` naming what differs when the file does
    not fit; nothing is changed in that case.
    """
    arrays = _read(path)
    if "format" not in arrays or str(arrays["format"]) != FORMAT:
        raise CheckpointError(f"{path} is not an lstmkit checkpoint (expected format {FORMAT!r})")
    try:
        saved_architecture = json.loads(str(arrays["architecture"]))
    except (KeyError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: the architecture record is missing or damaged") from error
    if not isinstance(saved_architecture, dict):
        raise CheckpointError(f"{path}: the architecture record must be a JSON object, got "
                              f"{type(saved_architecture).__name__} {saved_architecture!r:.80}")
    expected_architecture = json.loads(json.dumps(architecture_of(model)))
    if saved_architecture != expected_architecture:
        differences = {key: (saved_architecture.get(key), expected_architecture.get(key))
                       for key in sorted(set(saved_architecture) | set(expected_architecture))
                       if saved_architecture.get(key) != expected_architecture.get(key)}
        raise CheckpointError(f"{path} holds a different architecture; (saved, this model): {differences}")

    parameters = {key[len("model/"):]: value for key, value in arrays.items() if key.startswith("model/")}
    shapes = model.parameter_shapes()
    missing = [name for name in shapes if name not in parameters]
    unexpected = [name for name in parameters if name not in shapes]
    wrong_shape = {name: (parameters[name].shape, shapes[name]) for name in shapes
                   if name in parameters and parameters[name].shape != tuple(shapes[name])}
    if missing or unexpected or wrong_shape:
        raise CheckpointError(f"{path} does not match {model!r}: missing {missing}, unexpected {unexpected}, "
                              f"shape (saved, expected) {wrong_shape}")

    optimizer_state = _section(arrays, path, "optimizer", optimizer) if optimizer is not None else None
    scheduler_state = None
    if scheduler is not None:
        if optimizer is None or getattr(scheduler, "optimizer", None) is not optimizer:
            raise ValueError("a scheduler is loaded with the optimizer it schedules: "
                             "load_checkpoint(path, model, optimizer, scheduler)")
        scheduler_state = _section(arrays, path, "scheduler", scheduler)
        try:
            scheduler._checked_state(scheduler_state)      # checked before anything changes
        except (KeyError, ValueError) as error:
            raise CheckpointError(f"{path} does not fit: {error}") from error

    # Each load checks everything before copying; if a later check fails after
    # the model took its values, put the model back.
    before = model.state_dict()
    try:
        model.load_state_dict(parameters)
        if optimizer is not None:
            optimizer.load_state_dict(optimizer_state)
        if scheduler is not None:
            scheduler.load_state_dict(scheduler_state)
    except (KeyError, ValueError, TypeError) as error:
        model.load_state_dict(before)
        raise CheckpointError(f"{path} does not fit: {error}") from error
    return {key[len("extra/"):]: (value.item() if value.ndim == 0 else value)
            for key, value in arrays.items() if key.startswith("extra/")}
