"""lstmkit.files.atomic_write: the one way lstmkit replaces a file."""
import os
import subprocess
import sys

import pytest

from lstmkit.files import TEMPORARY_SUFFIX, atomic_write


def test_text_and_binary_writes_replace_the_file_whole(tmp_path):
    path = tmp_path / "deep" / "notes.txt"
    atomic_write(path, lambda file: file.write("first"), binary=False)
    atomic_write(path, lambda file: file.write("second, longer"), binary=False)
    assert path.read_text() == "second, longer"
    atomic_write(path, lambda file: file.write(b"\x00\x01"))
    assert path.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in path.parent.iterdir()) == ["notes.txt"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("old")

    def failing(file):
        file.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, failing, binary=False)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_leftovers_of_ended_processes_go_those_of_running_ones_stay(tmp_path):
    path = tmp_path / "run.npz"
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, check=True)
    dead = tmp_path / f".run.npz.{int(ended.stdout)}.abc123{TEMPORARY_SUFFIX}"
    alive = tmp_path / f".run.npz.{os.getppid()}.def456{TEMPORARY_SUFFIX}"      # pytest's parent runs
    other = tmp_path / f".run.npz.1.npz.{int(ended.stdout)}.ghi789{TEMPORARY_SUFFIX}"  # another file's
    for leftover in (dead, alive, other):
        leftover.write_bytes(b"half")
    atomic_write(path, lambda file: file.write(b"whole"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["run.npz", alive.name, other.name])
