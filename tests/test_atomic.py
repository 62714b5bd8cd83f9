"""Atomic writes, in the caller's thread and in the background."""

import threading
import time

import pytest

from vaecli import atomic
from vaecli.errors import OutputError


def test_background_writes_land_in_order_off_the_callers_thread(tmp_path):
    path, threads, done = tmp_path / "state.bin", [], []
    writer = atomic.BackgroundWriter()

    def slow(data: bytes):
        def make() -> bytes:
            threads.append(threading.current_thread())
            time.sleep(0.2)  # the next write() must wait for this one
            done.append(data)
            return data

        return make

    writer.write(path, slow(b"first"))
    writer.write(path, slow(b"second"))
    assert done == [b"first"]  # the second waited for the first, so at most one is in flight
    writer.wait()
    assert done == [b"first", b"second"] and path.read_bytes() == b"second"
    assert threading.main_thread() not in threads
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_failed_background_write_raises_in_the_caller_and_the_writer_goes_on(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    writer = atomic.BackgroundWriter()
    writer.write(tmp_path / "file" / "state.bin", lambda: b"lost")
    with pytest.raises(OutputError, match="cannot write"):
        writer.wait()
    writer.wait()  # the error is raised once
    writer.write(tmp_path / "file" / "again.bin", lambda: b"lost")
    writer.wait(reraise=False)  # waited for, its error dropped: for a caller already raising its own
    writer.wait()
    writer.write(tmp_path / "state.bin", lambda: b"kept")
    writer.wait()
    assert (tmp_path / "state.bin").read_bytes() == b"kept"


def test_an_error_in_making_the_bytes_reaches_the_next_write(tmp_path):
    writer = atomic.BackgroundWriter()
    writer.write(tmp_path / "a", lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        writer.write(tmp_path / "b", lambda: b"b")
    assert not (tmp_path / "a").exists()
