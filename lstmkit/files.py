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
    ``.<name>.<pid>.<random>.lstmkit-tmp`` beside ``path``; the next write to the same
    ``path`` removes those whose process has ended (a live one may still be writing).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TEMPORARY_SUFFIX,
                                         dir=path.parent)
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


def _remove_leftovers(path):
    """Delete the temporary files of writes to ``path`` by processes that no longer run."""
    prefix = f".{path.name}."
    for stale in path.parent.glob(f"{glob_escape(prefix)}*{TEMPORARY_SUFFIX}"):
        parts = stale.name[len(prefix):-len(TEMPORARY_SUFFIX)].split(".")
        if len(parts) != 2 or not parts[0].isdigit():
            continue                # not ours to judge (e.g. the temporary file of "<name>.<more>")
        if not _running(int(parts[0])):
            stale.unlink(missing_ok=True)


def _running(pid):
    if pid == os.getpid():
        return True                 # another thread of this process may be writing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True                 # exists, owned by someone else
    return True


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
