"""A process's standard streams between fifos (as containerd makes them) and the process."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from inclavare.shim.stdio import ProcessIO


def _fifos(directory: Path) -> tuple[str, str, str]:
    paths = tuple(str(directory / name) for name in ("stdin", "stdout", "stderr"))
    for path in paths:
        os.mkfifo(path)
    return paths  # type: ignore[return-value]


class Reader(threading.Thread):
    """containerd's side of an output fifo: open for reading, read to end-of-file."""

    def __init__(self, path: str) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.data = b""
        self.start()

    def run(self) -> None:
        with open(self.path, "rb") as fifo:
            self.data = fifo.read()


def _spawn(io: ProcessIO, *argv: str) -> int:
    actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(io.child_stdio)]
    pid = os.posix_spawnp(argv[0], list(argv), dict(os.environ), file_actions=actions)
    io.started()
    return pid


@pytest.mark.parametrize("close_io_too", [False, True])
def test_input_to_end_of_file_and_both_outputs(tmp_path: Path, close_io_too: bool) -> None:
    stdin, stdout, stderr = _fifos(tmp_path)
    readers = Reader(stdout), Reader(stderr)
    io = ProcessIO(stdin, stdout, stderr, terminal=False)
    pid = _spawn(io, "sh", "-c", "cat; echo done >&2")
    with open(stdin, "wb") as writer:
        writer.write(b"line one\nline two\n")
    if close_io_too:
        io.close_stdin()  # containerd's CloseIO, racing the fifo's end-of-file
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert io.wait_outputs(10)
    for reader in readers:
        reader.join(10)
    io.close()
    assert readers[0].data == b"line one\nline two\n"
    assert readers[1].data == b"done\n"


def test_output_written_before_the_reader_opens_is_kept(tmp_path: Path) -> None:
    """The reader may open the fifo late (containerd's client opens it in the background);
    the shim waits for it before writing, as it must not drop what the process said."""
    _, stdout, _ = _fifos(tmp_path)
    late: list[Reader] = []
    timer = threading.Timer(0.3, lambda: late.append(Reader(stdout)))
    timer.start()
    io = ProcessIO("", stdout, "", terminal=False)
    pid = _spawn(io, "echo", "early")
    os.waitpid(pid, 0)
    assert io.wait_outputs(10)
    timer.join()
    late[0].join(10)
    io.close()
    assert late[0].data == b"early\n"


def test_a_missing_fifo_leaks_nothing(tmp_path: Path) -> None:
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(FileNotFoundError):
        ProcessIO(str(tmp_path / "nope"), "", "", terminal=False)
    assert set(os.listdir("/proc/self/fd")) == before
