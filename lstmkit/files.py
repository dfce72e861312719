"""Writing a file so that readers see the old file or the new one, never a torn one."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "TEMPORARY_SUFFIX"]

TEMPORARY_SUFFIX = ".lstmkit-tmp"


def atomic_write(path, write, *, binary=True):
    """Create ``path`` through ``write(file)``: into a temporary file beside it, flushed to disk
    (fsync), then renamed over ``path`` in one step.

    The file gets the mode a plain ``open`` would give it (0666 less the umask), not
    ``mkstemp``'s 0600. A save killed before the rename leaves a temporary
    ``.<name>.<random>.lstmkit-tmp`` beside ``path``; the next write to the same ``path``
    removes such leftovers.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob_escape(path.name)}.*{TEMPORARY_SUFFIX}"):
        stale.unlink(missing_ok=True)           # left by a save that was killed halfway
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
    try:
        os.fchmod(handle, 0o666 & ~_umask())
        with os.fdopen(handle, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def glob_escape(name):
    """``name`` with glob's special characters taken literally."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _umask():
    try:        # Linux says it without changing it
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)      # elsewhere it can only be read by setting it; set it straight back
    os.umask(mask)
    return mask


def _fsync_directory(directory):
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
